//go:build linux

// Command ferry-bench runs ferry's benchmarks side by side with cp and
// rsync and prints the figures and the goals (see bench/README.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/bench"
	"github.com/ferry-dr/ferry/plugins/local"
)

func main() {
	bench.ServeSpawn()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "floor" {
		return runFloor(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("ferry-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	size := fs.String("size", "4GiB", "the disk's `size` (units as in ferry-plugin-local: 256MiB, 4GiB)")
	quick := fs.Bool("quick", false, "a smoke run on a 256 MiB disk and a 1 GiB sparse one, and a server run of 10 jobs of 3 VMs every 20s (unless the flags of those are given)")
	big := fs.Bool("big", true, "also replicate a big sparse disk, for memory (-big-size)")
	bigSize := fs.String("big-size", "64GiB", "the big sparse disk's `size`")
	direct := fs.Bool("direct", true, "run the direct scenarios: ferry without proxies beside cp, rsync and the floors")
	proxies := fs.Bool("proxies", true, "run the scenarios through two ferry proxies (issue 12), beside zstd | ssh and the stages alone")
	served := fs.Bool("served", true, "run the change scenarios again through ferry server (scheduled incrementals), after the direct ones")
	vhdx := fs.Bool("vhdx", true, "time the VHDX library (issue 14) against a raw file on the image")
	server := fs.Bool("server", true, "run ferry server at scale (issue 13) last: -server-jobs jobs of -server-vms VMs on schedules of -server-every, for their first runs and one cycle")
	serverJobs := fs.Int("server-jobs", bench.ServerJobs, "the server run's `number` of jobs")
	serverVMs := fs.Int("server-vms", bench.ServerVMs, "the server run's `number` of VMs per job")
	serverEvery := fs.Duration("server-every", bench.ServerEvery, "the server run's schedule `period`: whole minutes dividing an hour are staggered by minute, anything else falls due at once")
	seed := fs.Uint64("seed", 1, "the `seed` of the image and the changes")
	dir := fs.String("dir", "", "make the scratch folder in `DIR` (default $TMPDIR or /tmp)")
	keep := fs.Bool("keep", false, "keep the scratch folder")
	bin := fs.String("bin", "", "the `folder` holding ferry and ferry-plugin-local (default: beside ferry-bench, else bin)")
	jsonOut := fs.String("json", "", "also write the results as JSON to `FILE`")
	cold := fs.Bool("cold", false, "drop the page cache before every timed run (needs root) instead of reading each tool's files into it")
	verify := fs.Bool("verify", true, "check that every replica and copy equals the source after each scenario")
	perf := fs.String("perf", "", "record each ferry run with perf record -g into `DIR` (slows ferry)")
	strict := fs.Bool("strict", false, "exit 1 when a goal fails")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: ferry-bench [flags]\n       ferry-bench floor ... (see ferry-bench floor)\n\nRuns ferry side by side with cp --sparse=always and rsync --inplace on a generated\ndisk, then through two ferry proxies beside zstd | ssh, then ferry server with many\nscheduled jobs, and reports ratios and goals.\nExit status: 0 done (goals may fail unless -strict), 1 a scenario or a goal (-strict)\nfailed, 2 usage.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferry-bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *quick && !set["size"] {
		*size = "256MiB"
	}
	if *quick && !set["big-size"] {
		*bigSize = "1GiB"
	}
	if *quick && !set["server-jobs"] {
		*serverJobs = 10
	}
	if *quick && !set["server-vms"] {
		*serverVMs = 3
	}
	if *quick && !set["server-every"] {
		*serverEvery = 20 * time.Second
	}
	if *serverJobs < 1 || *serverVMs < 1 || *serverEvery < time.Second || *serverEvery%time.Second != 0 {
		fmt.Fprintf(stderr, "ferry-bench: -server-jobs and -server-vms want at least 1, -server-every whole seconds (%d, %d, %s)\n", *serverJobs, *serverVMs, *serverEvery)
		return 2
	}
	n, err := local.ParseSize(*size)
	if err != nil {
		fmt.Fprintf(stderr, "ferry-bench: -size: %v\n", err)
		return 2
	}
	var bigN int64
	if *big {
		if bigN, err = local.ParseSize(*bigSize); err != nil || bigN < 1<<20 {
			fmt.Fprintf(stderr, "ferry-bench: -big-size %s: want at least 1MiB (%v)\n", *bigSize, err)
			return 2
		}
	}
	if *bin == "" {
		*bin = defaultBin()
	}
	absBin, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintf(stderr, "ferry-bench: -bin: %v\n", err)
		return 2
	}

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "ferry-bench: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, bench.Config{
		Size: n, Seed: *seed, Dir: *dir, Keep: *keep, Bin: absBin, Warm: !*cold, Verify: *verify,
		Direct: *direct, Proxies: *proxies, VHDX: *vhdx, Served: *served, Server: *server, ServerJobs: *serverJobs, ServerVMs: *serverVMs, ServerEvery: *serverEvery, Perf: *perf, Spawner: self, Floors: self, BigSize: bigN, Command: "ferry-bench " + strings.Join(args, " "), Log: stderr,
	})
	if rep == nil {
		fmt.Fprintf(stderr, "ferry-bench: %v\n", err)
		return 1
	}
	if werr := rep.WriteText(stdout); werr != nil {
		fmt.Fprintf(stderr, "ferry-bench: %v\n", werr)
		return 1
	}
	if *jsonOut != "" {
		b, jerr := json.MarshalIndent(rep, "", "  ")
		if jerr == nil {
			jerr = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
		}
		if jerr != nil {
			fmt.Fprintf(stderr, "ferry-bench: -json: %v\n", jerr)
			return 1
		}
	}
	if rep.Scratch != "" {
		fmt.Fprintf(stderr, "ferry-bench: kept the scratch folder %s\n", rep.Scratch)
	}
	if rep.Big != nil && rep.Big.Scratch != "" {
		fmt.Fprintf(stderr, "ferry-bench: kept the big disk's scratch folder %s\n", rep.Big.Scratch)
	}
	if rep.Server != nil && rep.Server.Log != "" {
		fmt.Fprintf(stderr, "ferry-bench: kept the server run's scratch folder %s\n", filepath.Dir(rep.Server.Log))
	}
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "ferry-bench: %v\n", err)
		return 1
	case rep.Failed():
		fmt.Fprintln(stderr, "ferry-bench: a scenario failed; its figures are not comparable")
		return 1
	case *strict && !rep.Passed():
		fmt.Fprintln(stderr, "ferry-bench: a goal failed (-strict)")
		return 1
	}
	return 0
}

// defaultBin is the folder of this executable when ferry is there (make
// bench builds all three into bin/), else bin.
func defaultBin() string {
	if exe, err := os.Executable(); err == nil {
		d := filepath.Dir(exe)
		if _, err := os.Stat(filepath.Join(d, "ferry")); err == nil {
			return d
		}
	}
	return "bin"
}
