package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/engine"
)

func init() {
	register(&command{
		name: "seed",
		summary: `Start replicas from a seed: the first full copy carried by removable storage
or a folder instead of the WAN.

  ferry seed export JOB --to DIR [VM...]
                        at the production site: snapshot each VM of the job
                        (those it names one by one, or the VMs given), write
                        its disks and description into DIR, verified against
                        what was read, and DIR/seed.json last
  ferry seed import DIR at the DR site (the same configuration): create each
                        VM's replica on the job's target from the seed, as a
                        run would (name, owner, network map), checking every
                        image before and the replica after

The job's first run after the import compares every block of each replica
with its source and sends only what changed since the export. A VM the job
has a replica of already is refused: a seed only starts a replica.`,
		usage: "ferry [--config DIR] seed export JOB --to DIR [VM...] | seed import DIR",
		setup: func(fs *pflag.FlagSet) runFunc {
			to := fs.String("to", "", "with export: the `DIR` the seed is written into")
			return func(e *env, args []string) error { return runSeed(e, args, *to) }
		},
		complete: func(dir string, args []string) []string {
			switch len(args) {
			case 0:
				return []string{"export", "import"}
			case 1:
				if args[0] == "export" {
					return completeJobs(dir, nil)
				}
			}
			return nil
		},
	})
}

func runSeed(e *env, args []string, to string) error {
	if len(args) == 0 || args[0] != "export" && args[0] != "import" {
		return usagef("say export or import")
	}
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		return usagef("a seed is written and read where its folder is: run 'ferry seed' without --server (or FERRY_ADDR)")
	}
	ctx := context.Background()
	progress := func(format string, a ...any) { fmt.Fprintf(e.stdout, "  "+format+"\n", a...) }
	switch args[0] {
	case "export":
		if len(args) < 2 {
			return usagef("name the job to export")
		}
		if to == "" {
			return usagef("say where the seed goes: --to DIR")
		}
		if args[1] == "" {
			return usagef("name the job to export")
		}
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		job, err := w.job(args[1])
		if err != nil {
			return err
		}
		vms := args[2:]
		if len(vms) == 0 {
			if job.Selects() {
				return usagef("job %q selects VMs by folder or tag: name the VMs to seed", job.Name)
			}
			vms = job.VMs
		}
		for _, vm := range vms {
			if !contains(job.VMs, vm) && !job.Selects() {
				return usagef("job %q has no VM %q (its VMs: %v)", job.Name, vm, job.VMs)
			}
		}
		eng, err := w.controlEngine()
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "seed of job %s into %s:\n", job.Name, to)
		m, err := eng.SeedExport(ctx, job, vms, to, progress)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "seed written: %d VMs; carry %s to the DR site and run 'ferry seed import %s' there\n", len(m.VMs), to, to)
		return nil
	default:
		if len(args) != 2 {
			return usagef("name the seed folder to import")
		}
		dir := args[1]
		m, err := engine.ReadSeed(dir)
		if err != nil {
			return err
		}
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		job, err := w.job(m.Job)
		if err != nil {
			return err
		}
		eng, err := w.controlEngine()
		if err != nil {
			return err
		}
		known := func(vm string) bool {
			_, err := w.cat.Replica(job.Name, vm)
			return err == nil
		}
		fmt.Fprintf(e.stdout, "seed of job %s from %s (exported %s):\n", job.Name, dir, m.Created.Local().Format("2006-01-02 15:04"))
		if _, err := eng.SeedImport(ctx, job, dir, known, progress); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "replicas seeded: %d VMs; the next 'ferry run %s' compares them with their sources and sends what changed since\n", len(m.VMs), job.Name)
		return nil
	}
}
