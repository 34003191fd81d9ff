package local

import (
	"context"
	"errors"
	"fmt"
	"io"
)

const usageVMWrite = "ferry-plugin-local vm write SITE NAME DISK_INDEX OFFSET < data"

var cmdVMWrite = &command{
	usage: usageVMWrite,
	help: `Writes standard input into a disk at OFFSET as tracked writes: through the
change tracker and, while snapshots exist, into the newest snapshot's delta
layer, so snapshots stay frozen. OFFSET takes units (1MiB).`,
	nargs: 4,
	run:   runVMWrite,
}

// writeChunk is the most one tracked write carries.
const writeChunk = 4 << 20

func runVMWrite(ctx context.Context, c *cliCall) error {
	siteDir, name := c.args[0], c.args[1]
	disk, err := diskIndex(usageVMWrite, c.args[2])
	if err != nil {
		return err
	}
	off, err := ParseSize(c.args[3])
	if err != nil {
		return usagef(usageVMWrite, "vm write: offset: %v", err)
	}
	if err := checkFolder(siteDir, false); err != nil {
		return fmt.Errorf("write vm %q: %w", name, err)
	}
	s := newSite(siteDir)
	buf := make([]byte, writeChunk)
	var total int64
	for {
		n, rerr := io.ReadFull(c.stdin, buf)
		if n > 0 {
			if err := s.trackedWrite(ctx, name, disk, off+total, buf[:n]); err != nil {
				return err
			}
			total += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("write vm %q: read standard input: %w", name, rerr)
		}
	}
	_, err = fmt.Fprintf(c.stderr, "wrote %d bytes at %d to disk %d of vm %s\n", total, off, disk, name)
	return err
}
