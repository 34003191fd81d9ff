package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sort"
	"strings"
)

const usageWrite = "ferry lab write [--dir DIR] VM [--disk N] [--count N] [--json]"

var cmdWrite = &command{
	usage: usageWrite,
	help: `Changes some of a prod VM's data as its guest would: N writes (16 by
default) of 4 to 64 KiB of disk-like data at random 4 KiB-aligned places,
on disk N or spread over its disks (each gets one at least, when there
are writes enough). Changed block tracking sees them, so the next
'ferry run' sends only these blocks. Prints what it changed.`,
	nargs: 1,
	flags: func(fs *flag.FlagSet, c *call) {
		fs.IntVar(&c.disk, "disk", -1, "write only to disk `N` (0 is the first; default any)")
		fs.IntVar(&c.count, "count", 16, "how many `writes`")
		fs.BoolVar(&c.json, "json", false, "print the writes as JSON")
	},
	run: runWrite,
}

func runWrite(ctx context.Context, c *call) error {
	vm := c.args[0]
	if c.disk < -1 {
		return usagef(usageWrite, "write: --disk %d: a disk number from 0 up", c.disk)
	}
	if c.count < 1 {
		return usagef(usageWrite, "write: --count %d: at least one write", c.count)
	}
	_, resp, err := askLab(ctx, c, request{Op: opWrite, VM: vm, Disk: c.disk, Count: c.count})
	if err != nil {
		return err
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(resp.Writes)
	}
	printWrites(c, vm, resp.Writes)
	return nil
}

// printWrites says per disk how much was written and where.
func printWrites(c *call, vm string, writes []Write) {
	perDisk := map[int][]Write{}
	var total int64
	for _, w := range writes {
		perDisk[w.Disk] = append(perDisk[w.Disk], w)
		total += w.Length
	}
	fmt.Fprintf(c.stdout, "%s: %d guest writes, %s of new data, seen by changed block tracking\n", vm, len(writes), size(total))
	disks := make([]int, 0, len(perDisk))
	for d := range perDisk {
		disks = append(disks, d)
	}
	sort.Ints(disks)
	for _, d := range disks {
		ws := perDisk[d]
		sort.Slice(ws, func(i, j int) bool { return ws[i].Offset < ws[j].Offset })
		var n int64
		var at []string
		for i, w := range ws {
			n += w.Length
			if i < 8 {
				at = append(at, fmt.Sprintf("%s (%s)", size(w.Offset), size(w.Length)))
			}
		}
		if len(ws) > 8 {
			at = append(at, fmt.Sprintf("and %d more", len(ws)-8))
		}
		fmt.Fprintf(c.stdout, "  disk %d: %d writes, %s, at %s\n", d, len(ws), size(n), strings.Join(at, ", "))
	}
}
