package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/recovery"
)

func init() {
	register(&command{
		name: "plan",
		summary: `Show what the next run of each job would do, without doing it.

The plan compares the configuration and what the source reports now with
the catalog of earlier runs: replicas to create, disks that grew or were
added, VMs missing at the source or gone from the job, failed-over replicas,
restore points retention will delete, and settings that changed since the
last run. For a job with folder or tag selectors it shows what each
selector matches now, the VMs new in them, those that left them or are
excluded, and selectors that match nothing. Lines start with + (create), ~ (change), - (delete or leave),
! (cannot be done as asked). Without JOB, every job is planned.`,
		usage: "ferry [--config DIR] plan [--json] [JOB...]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runPlan(e, args, *asJSON) }
		},
		complete: completeJobs,
	})
}

func runPlan(e *env, args []string, asJSON bool) error {
	ctx := context.Background()
	var plans []plan.Plan
	var failoverPlans []*recovery.Preview
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		for _, name := range args {
			if err := remoteJob(ctx, c, name); err != nil {
				return err
			}
		}
		if plans, err = c.Plan(ctx, args...); err != nil {
			return remoteError(err)
		}
		if len(args) == 0 && !asJSON {
			// Every job planned: the failover plans too, as here.
			list, err := c.FailoverPlans(ctx)
			if err != nil {
				return remoteError(err)
			}
			for _, fp := range list {
				one, err := c.FailoverPlan(ctx, fp.Name)
				if err != nil {
					return remoteError(err)
				}
				if one.Preview != nil {
					failoverPlans = append(failoverPlans, one.Preview)
				}
			}
		}
	} else {
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		names := args
		if len(names) == 0 {
			names = w.jobNames()
		}
		jobs := make([]*config.Job, 0, len(names))
		for _, name := range names {
			job, err := w.job(name)
			if err != nil {
				return err
			}
			jobs = append(jobs, job)
		}
		eng, err := w.controlEngine()
		if err != nil {
			return err
		}
		if plans, err = eng.Plan(ctx, jobs); err != nil {
			return err
		}
		if len(args) == 0 {
			// Every job planned: the failover plans too.
			r := &recovery.Runner{Jobs: w.cfg.Jobs, Catalog: w.cat}
			for _, name := range slices.Sorted(maps.Keys(w.cfg.FailoverPlans)) {
				pv, err := r.Preview(w.cfg.FailoverPlans[name])
				if err != nil {
					return err
				}
				failoverPlans = append(failoverPlans, pv)
			}
		}
	}
	if asJSON {
		if plans == nil {
			plans = []plan.Plan{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(plans)
	}
	for _, p := range plans {
		p.Write(e.stdout)
	}
	for _, pv := range failoverPlans {
		fmt.Fprintln(e.stdout)
		pv.Write(e.stdout)
	}
	return nil
}
