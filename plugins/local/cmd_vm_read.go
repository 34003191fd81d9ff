package local

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

const usageVMRead = "ferry-plugin-local vm read SITE NAME DISK_INDEX [--point ID] > data"

var cmdVMRead = &command{
	usage: usageVMRead,
	help: `Prints a disk's current view (the base image under every snapshot's delta
layer). With --point, SITE is a target folder, NAME a replica, and it
prints that restore point's disk.`,
	nargs: 3,
	flags: func(fs *flag.FlagSet, c *cliCall) {
		fs.StringVar(&c.point, "point", "", "read restore point ID of replica NAME in target folder SITE")
	},
	run: runVMRead,
}

func runVMRead(ctx context.Context, c *cliCall) error {
	dir, name := c.args[0], c.args[1]
	disk, err := diskIndex(usageVMRead, c.args[2])
	if err != nil {
		return err
	}
	if err := checkFolder(dir, false); err != nil {
		return fmt.Errorf("read vm %q: %w", name, err)
	}
	out := bufio.NewWriterSize(c.stdout, copyChunk)
	if c.point == "" {
		if err := newSite(dir).readCurrent(ctx, name, disk, out); err != nil {
			return err
		}
		return out.Flush()
	}
	t, err := NewTarget(dir)
	if err != nil {
		return err
	}
	r, err := t.OpenRestorePointDisk(ctx, name, c.point, disk)
	if err != nil {
		return err
	}
	buf := make([]byte, copyChunk)
	for off := int64(0); off < r.Size(); off += copyChunk {
		n, err := r.ReadAt(buf[:min(int64(copyChunk), r.Size()-off)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			r.Close()
			return fmt.Errorf("read restore point %q of replica %q disk %d: %w", c.point, name, disk, err)
		}
		if _, err := out.Write(buf[:n]); err != nil {
			r.Close()
			return err
		}
	}
	if err := r.Close(); err != nil {
		return err
	}
	return out.Flush()
}
