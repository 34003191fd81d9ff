package local

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/ferry-dr/ferry/sdk"
)

const usageVMCreate = "ferry-plugin-local vm create SITE NAME --disk SIZE [--disk SIZE] [--nic NETWORK=ADDRESS/PREFIX] [--cpus N] [--memory MIB] [--folder PATH] [--tag TAG]"

var cmdVMCreate = &command{
	usage: usageVMCreate,
	help: `Creates the VM folder SITE/NAME with vm.json and one empty sparse disk image
per --disk (disk0.img, disk1.img, ...). SITE is created when missing. A
--nic with no address (--nic NETWORK) makes a NIC without one. --folder
puts the VM in an inventory folder (a path like /prod/web; the root, /,
by default) and each --tag gives it a tag (Category/Name or Name), for jobs
that select VMs by folder or tag; both live in vm.json.`,
	nargs: 2,
	flags: func(fs *flag.FlagSet, c *cliCall) {
		fs.Var(&c.disks, "disk", "a disk of SIZE (repeat for more disks)")
		fs.Var(&c.nics, "nic", "a NIC on NETWORK with ADDRESS/PREFIX (repeatable)")
		fs.IntVar(&c.cpus, "cpus", 1, "virtual CPUs")
		fs.Int64Var(&c.memory, "memory", 1024, "memory in MiB")
		fs.StringVar(&c.folder, "folder", "", "the inventory folder, like /prod/web (default /)")
		fs.Var(&c.tags, "tag", "a tag, Category/Name or Name (repeatable)")
	},
	run: runVMCreate,
}

func runVMCreate(ctx context.Context, c *cliCall) error {
	siteDir, name := c.args[0], c.args[1]
	if len(c.disks) == 0 {
		return usagef(usageVMCreate, "vm create: at least one --disk is needed")
	}
	if c.cpus < 1 || c.memory < 1 {
		return usagef(usageVMCreate, "vm create: --cpus and --memory must be at least 1")
	}
	spec := VMSpec{Name: name, CPUs: c.cpus, MemoryMiB: c.memory, Disks: c.disks, Folder: c.folder, Tags: c.tags}
	for _, n := range c.nics {
		nic, err := parseNIC(n)
		if err != nil {
			return usagef(usageVMCreate, "vm create: %v", err)
		}
		spec.NICs = append(spec.NICs, nic)
	}
	vm, err := newSite(siteDir).createVM(ctx, spec)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.stdout, "created vm %s in %s with %d disk(s)\n", vm.Name, siteDir, len(vm.Disks))
	return err
}

// parseNIC parses NETWORK=ADDRESS/PREFIX or NETWORK.
func parseNIC(s string) (sdk.NIC, error) {
	network, addr, hasAddr := strings.Cut(s, "=")
	if network == "" {
		return sdk.NIC{}, fmt.Errorf("nic %q: no network name", s)
	}
	nic := sdk.NIC{Network: network}
	if hasAddr {
		p, err := netip.ParsePrefix(addr)
		if err != nil {
			return sdk.NIC{}, fmt.Errorf("nic %q: address: %v", s, err)
		}
		nic.Addresses = []string{p.String()}
	}
	return nic, nil
}
