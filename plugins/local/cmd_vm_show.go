package local

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

const usageVMShow = "ferry-plugin-local vm show SITE NAME [--json]"

var cmdVMShow = &command{
	usage: usageVMShow,
	help: `Shows a VM's description: CPUs, memory, disks, NICs, and its snapshots. On
a replica folder of a target it also shows the replica state and restore
points. --json prints vm.json as ferry reads it.`,
	nargs: 2,
	flags: func(fs *flag.FlagSet, c *cliCall) {
		fs.BoolVar(&c.json, "json", false, "print the description as JSON")
	},
	run: runVMShow,
}

func runVMShow(ctx context.Context, c *cliCall) error {
	siteDir, name := c.args[0], c.args[1]
	if err := checkFolder(siteDir, false); err != nil {
		return fmt.Errorf("show vm %q: %w", name, err)
	}
	dir := filepath.Join(siteDir, name)
	if !validName(name) {
		return fmt.Errorf("show vm %q: not a valid folder name: %w", name, errdefs.ErrInvalidArgument)
	}
	vm, err := readVM(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("show vm %q: no %s: %w", name, filepath.Join(dir, vmFile), errdefs.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(diskFile(dir, 0)); err == nil || len(vm.Disks) == 0 {
		fixCapacities(dir, vm)
	}
	if c.json {
		data, err := json.MarshalIndent(vm, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.stdout, "%s\n", data)
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "vm\t%s\t(id %s)\n", vm.Name, vm.ID)
	fmt.Fprintf(tw, "cpus\t%d\n", vm.CPUs)
	fmt.Fprintf(tw, "memory\t%d MiB\n", vm.MemoryMiB)
	if vm.Firmware != "" {
		fmt.Fprintf(tw, "firmware\t%s\n", vm.Firmware)
	}
	if vm.GuestOS != "" {
		fmt.Fprintf(tw, "guest os\t%s\n", vm.GuestOS)
	}
	if vm.PowerState != "" {
		fmt.Fprintf(tw, "power\t%s\n", vm.PowerState)
	}
	fmt.Fprintf(tw, "folder\t%s\n", vm.Folder)
	if len(vm.Tags) > 0 {
		fmt.Fprintf(tw, "tags\t%s\n", strings.Join(vm.Tags, " "))
	}
	for _, d := range vm.Disks {
		fmt.Fprintf(tw, "disk %d\t%s\t%s\n", d.Index, FormatSize(d.Capacity), d.Name)
	}
	for _, n := range vm.NICs {
		line := fmt.Sprintf("nic %d\t%s\t%s\t%s", n.Index, n.Network, n.MAC, strings.Join(n.Addresses, " "))
		if n.Gateway != "" {
			line += "\tgateway " + n.Gateway
		}
		if len(n.DNS) > 0 {
			line += "\tdns " + strings.Join(n.DNS, " ")
		}
		fmt.Fprintln(tw, line)
	}
	keys := make([]string, 0, len(vm.Attributes))
	for k := range vm.Attributes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "attribute\t%s=%s\n", k, vm.Attributes[k])
	}
	if st, err := loadState(dir); err == nil {
		for _, sn := range st.Snapshots {
			note := ""
			if sn.Removing {
				note = "\t(being removed)"
			}
			fmt.Fprintf(tw, "snapshot %s\t%s\t%s%s\n", sn.ID, sn.Name, sn.Created.Local().Format(time.DateTime), note)
		}
	}
	if rs, err := loadReplica(dir); err == nil {
		fmt.Fprintf(tw, "replica\t%s\tstate %s\tsource %s\n", rs.ID, rs.State, rs.SourceVM)
		if rs.FailoverPoint != "" {
			fmt.Fprintf(tw, "running from\t%s\n", rs.FailoverPoint)
		}
		for _, p := range rs.livePoints() {
			var labels []string
			for k, v := range p.Labels {
				labels = append(labels, k+"="+v)
			}
			sort.Strings(labels)
			fmt.Fprintf(tw, "point %s\t%s\t%s\n", p.ID, p.Created.Local().Format(time.DateTime), strings.Join(labels, " "))
		}
	}
	return tw.Flush()
}
