package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var cmdVerify = &command{
	usage: "ferry lab verify [--dir DIR] VM [--json]",
	help: `Compares each disk of a prod VM, as its guest sees it now, with the
same disk of its replica (VM_replica) on dr, byte for byte, and prints
their SHA-256 digests. On a simulated Hyper-V host (the mixed lab) the
replica's newest restore point (its newest checkpoint) is read through
its VHDX chain with ferry's VHDX reader, and the chain's files are
listed, top first, for another reader (such as libvhdi) to judge. On a
simulated vCenter the replica is read as it is now: its newest restore
point, or the point a failover started it on. Exit status 1 when a disk
differs.`,
	nargs: 1,
	flags: func(fs *flag.FlagSet, c *call) {
		fs.BoolVar(&c.json, "json", false, "print JSON")
	},
	run: runVerify,
}

func runVerify(ctx context.Context, c *call) error {
	_, resp, err := askLab(ctx, c, request{Op: opVerify, VM: c.args[0]})
	if err != nil {
		return err
	}
	v := resp.Verify
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return err
		}
	} else {
		printVerify(c, v)
	}
	var differ []string
	for _, d := range v.Disks {
		if !d.Equal {
			differ = append(differ, fmt.Sprint(d.Disk))
		}
	}
	if len(differ) > 0 {
		return classf(errdefs.ErrDataLoss, "%s and %s differ: disk %s", v.VM, v.Replica, strings.Join(differ, ", "))
	}
	return nil
}

func printVerify(c *call, v *Verify) {
	for _, d := range v.Disks {
		verdict := "the same"
		if !d.Equal {
			verdict = "DIFFERENT"
		}
		fmt.Fprintf(c.stdout, "%s disk %d (%s): sha256 %s\n", v.VM, d.Disk, size(d.Size), d.Source)
		at := ""
		if v.Point != "" {
			at = fmt.Sprintf(" at checkpoint %q", v.Point)
		}
		fmt.Fprintf(c.stdout, "%s disk %d%s: sha256 %s: %s\n", v.Replica, d.Disk, at, d.Replica, verdict)
		if len(d.Chain) > 0 {
			names := make([]string, len(d.Chain))
			for i, p := range d.Chain {
				names[i] = filepath.Base(p)
			}
			fmt.Fprintf(c.stdout, "  read through the VHDX chain %s (in %s)\n", strings.Join(names, " -> "), filepath.Dir(d.Chain[0]))
		}
	}
}
