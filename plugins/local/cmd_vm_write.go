package local

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

const usageVMWrite = "ferry-plugin-local vm write SITE NAME DISK_INDEX OFFSET [--extents FILE] < data"

var cmdVMWrite = &command{
	usage: usageVMWrite,
	help: `Writes standard input into a disk at OFFSET as tracked writes: through the
change tracker and, while snapshots exist, into the newest snapshot's delta
layer, so snapshots stay frozen. OFFSET takes units (1MiB).

With --extents, FILE lists writes, one "OFFSET LENGTH" line each (bytes,
counted from OFFSET): each takes its LENGTH bytes of standard input in
turn, so many scattered writes are one call.`,
	nargs: 4,
	run:   runVMWrite,
	flags: func(fs *flag.FlagSet, c *cliCall) {
		fs.StringVar(&c.extents, "extents", "", "write at the extents FILE lists, one \"OFFSET LENGTH\" line each")
	},
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
	if c.extents != "" {
		return writeExtents(ctx, c, s, name, disk, off, buf)
	}
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

// writeExtents writes, for each "OFFSET LENGTH" line of the extents file,
// the next LENGTH bytes of standard input at base+OFFSET.
func writeExtents(ctx context.Context, c *cliCall, s *site, name string, disk int, base int64, buf []byte) error {
	f, err := os.Open(c.extents)
	if err != nil {
		return fmt.Errorf("write vm %q: %w", name, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var total, writes int64
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		fields := strings.Fields(text)
		var off, n int64
		if len(fields) == 2 {
			off, err = strconv.ParseInt(fields[0], 10, 64)
			if err == nil {
				n, err = strconv.ParseInt(fields[1], 10, 64)
			}
		}
		if len(fields) != 2 || err != nil || off < 0 || n < 0 {
			return usagef(usageVMWrite, "vm write: %s line %d: %q is not \"OFFSET LENGTH\" in bytes", c.extents, line, text)
		}
		for done := int64(0); done < n; {
			k := min(n-done, int64(len(buf)))
			if _, err := io.ReadFull(c.stdin, buf[:k]); err != nil {
				return fmt.Errorf("write vm %q: %s line %d: standard input ends before its %d bytes: %w", name, c.extents, line, n, err)
			}
			if err := s.trackedWrite(ctx, name, disk, base+off+done, buf[:k]); err != nil {
				return err
			}
			done += k
		}
		total += n
		writes++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("write vm %q: read %s: %w", name, c.extents, err)
	}
	_, err = fmt.Fprintf(c.stderr, "wrote %d bytes in %d writes to disk %d of vm %s\n", total, writes, disk, name)
	return err
}
