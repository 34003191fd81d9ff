package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var cmdStatus = &command{
	usage: "ferry lab status [--dir DIR] [--json]",
	help: `Shows the lab in DIR and the VMs of its two sites as the simulated
vCenters report them through the vSphere API: power state, the address
VMware Tools report (a replica that failed over shows its new one), NICs
with their networks, disks and snapshots. Exit status 1 when the lab is
not running or its simulator reported a problem.`,
	flags: func(fs *flag.FlagSet, c *call) {
		fs.BoolVar(&c.json, "json", false, "print JSON")
	},
	run: runStatus,
}

func runStatus(ctx context.Context, c *call) error {
	_, resp, err := askLab(ctx, c, request{Op: opStatus})
	if err != nil {
		return err
	}
	st := resp.Status
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			return err
		}
	} else {
		printStatus(c, st)
	}
	if len(st.Problems) > 0 {
		return classf(errdefs.ErrFailedPrecondition, "the lab in %s had problems, it may no longer behave like vSphere:\n  %s", c.dir, strings.Join(st.Problems, "\n  "))
	}
	return nil
}

func printStatus(c *call, st *Status) {
	fmt.Fprintf(c.stdout, "The lab in %s is running (server pid %d, up %s); configuration %s\n",
		st.Dir, st.PID, time.Since(st.Started).Round(time.Second), st.Config)
	for _, s := range st.Sites {
		hv := s.Kind == siteHyperVSim
		what := ""
		if hv {
			what = "  (a simulated Hyper-V host, not Hyper-V)"
		}
		fmt.Fprintf(c.stdout, "\nsite %s  %s%s\n", s.Name, s.URL, what)
		if len(s.VMs) == 0 {
			fmt.Fprintln(c.stdout, "  no VMs")
			continue
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		if hv {
			fmt.Fprintln(tw, "  VM\tSTATE\tGUEST IP\tNICS\tDISKS\tCHECKPOINTS\tGEN\tBOOT ORDER")
		} else {
			fmt.Fprintln(tw, "  VM\tPOWER\tGUEST IP\tNICS\tDISKS\tSNAPSHOTS")
		}
		for _, vm := range s.VMs {
			var nics, disks []string
			for _, n := range vm.NICs {
				nic := n.Network
				if len(n.Addresses) > 0 {
					nic += " " + strings.Join(n.Addresses, " ")
				}
				nics = append(nics, nic)
			}
			for _, d := range vm.Disks {
				disks = append(disks, size(d))
			}
			ip := vm.IPAddress
			if ip == "" {
				ip = "-"
			}
			if hv {
				boot := strings.Join(vm.BootOrder, ", ")
				if boot == "" {
					boot = "-"
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", vm.Name, vm.PowerState, ip, strings.Join(nics, "; "), strings.Join(disks, ", "), vm.Snapshots, vm.Generation, boot)
				continue
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\n", vm.Name, vm.PowerState, ip, strings.Join(nics, "; "), strings.Join(disks, ", "), vm.Snapshots)
		}
		tw.Flush()
	}
}
