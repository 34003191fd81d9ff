//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/ferry-dr/ferry/bench"
)

const floorUsage = `usage: ferry-bench floor hash DISK
       ferry-bench floor copy EXTENTS NEW COPY

The floors of ferry's runs, which the bench runs as tools beside ferry:
  hash  reads DISK with one reader per CPU, each on its own range, and
        computes the xxh3-128 of every 4 KiB block (a digest run's floor)
  copy  reads the extents listed in EXTENTS ("OFFSET LENGTH" a line) from
        NEW, 16 reads in flight, writes them at the same offsets into COPY
        and syncs COPY once (a tracked run's floor)`

// runFloor runs one floor: `ferry-bench floor KIND ARGS`.
func runFloor(args []string, stdout, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "ferry-bench floor: %v\n", err)
		return 1
	}
	switch {
	case len(args) == 2 && args[0] == "hash":
		f, err := os.Open(args[1])
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fail(err)
		}
		s, err := bench.HashFloor(f, fi.Size(), runtime.GOMAXPROCS(0))
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "hashed %d bytes, %d blocks, fold %016x%016x\n", s.Bytes, s.Blocks, s.Fold.Hi, s.Fold.Lo)
		return 0
	case len(args) == 4 && args[0] == "copy":
		ef, err := os.Open(args[1])
		if err != nil {
			return fail(err)
		}
		es, err := bench.ReadExtents(ef)
		ef.Close()
		if err != nil {
			return fail(fmt.Errorf("%s: %w", args[1], err))
		}
		src, err := os.Open(args[2])
		if err != nil {
			return fail(err)
		}
		defer src.Close()
		dst, err := os.OpenFile(args[3], os.O_WRONLY, 0)
		if err != nil {
			return fail(err)
		}
		defer dst.Close()
		n, err := bench.CopyFloor(src, dst, es, bench.CopyInflight)
		if err != nil {
			return fail(err)
		}
		if err := dst.Close(); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "copied %d bytes in %d extents\n", n, len(es))
		return 0
	}
	fmt.Fprintln(stderr, floorUsage)
	return 2
}
