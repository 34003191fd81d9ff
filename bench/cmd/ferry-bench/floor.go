//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/ferry-dr/ferry/bench"
	"github.com/ferry-dr/ferry/plugins/local"
)

const floorUsage = `usage: ferry-bench floor hash DISK
       ferry-bench floor copy EXTENTS NEW COPY
       ferry-bench floor tls BYTES
       ferry-bench floor write IMAGE OUT

The floors of ferry's runs, which the bench runs as tools beside ferry:
  hash  reads DISK with one reader per CPU, each on its own range, and
        computes the xxh3-128 of every 4 KiB block (a digest run's floor)
  copy  reads the extents listed in EXTENTS ("OFFSET LENGTH" a line) from
        NEW, 16 reads in flight, writes them at the same offsets into COPY
        and syncs COPY once (a tracked run's floor)
  tls   pushes BYTES from a client to a server over TLS 1.3 on loopback,
        both in this process (a stage of a copy through two proxies)
  write writes every 4 KiB block of IMAGE that is not all zeros into a
        new file OUT of the same size and syncs it once (the same)`

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
	case len(args) == 2 && args[0] == "tls":
		n, err := local.ParseSize(args[1])
		if err != nil {
			return fail(err)
		}
		res, err := bench.TLSFloor(n)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "pushed %d bytes over %s, %s\n", res.Bytes, res.Version, res.CipherSuite)
		return 0
	case len(args) == 3 && args[0] == "write":
		src, err := os.Open(args[1])
		if err != nil {
			return fail(err)
		}
		defer src.Close()
		fi, err := src.Stat()
		if err != nil {
			return fail(err)
		}
		dst, err := os.OpenFile(args[2], os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fail(err)
		}
		defer dst.Close()
		n, err := bench.WriteFloor(src, fi.Size(), dst)
		if err != nil {
			return fail(err)
		}
		if err := dst.Close(); err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "wrote %d bytes of %d\n", n, fi.Size())
		return 0
	}
	fmt.Fprintln(stderr, floorUsage)
	return 2
}
