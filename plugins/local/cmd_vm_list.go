package local

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
)

const usageVMList = "ferry-plugin-local vm list SITE"

var cmdVMList = &command{
	usage: usageVMList,
	help:  "Lists the VMs of a site folder.",
	nargs: 1,
	run:   runVMList,
}

func runVMList(ctx context.Context, c *cliCall) error {
	if err := checkFolder(c.args[0], false); err != nil {
		return fmt.Errorf("list site: %w", err)
	}
	vms, err := newSite(c.args[0]).listVMs()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCPUS\tMEMORY\tDISKS\tPOWER\tFOLDER\tTAGS")
	for _, vm := range vms {
		var total int64
		for _, d := range vm.Disks {
			total += d.Capacity
		}
		fmt.Fprintf(tw, "%s\t%d\t%d MiB\t%d (%s)\t%s\t%s\t%s\n", vm.Name, vm.CPUs, vm.MemoryMiB, len(vm.Disks), FormatSize(total), vm.PowerState,
			vm.Folder, strings.Join(vm.Tags, " "))
	}
	return tw.Flush()
}
