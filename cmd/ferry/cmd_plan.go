package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk/errdefs"

	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
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
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	names := args
	if len(names) == 0 {
		names = w.jobNames()
	}
	var plans []plan.Plan
	for _, name := range names {
		job, err := w.job(name)
		if err != nil {
			return err
		}
		in := plan.Inputs{Job: job, Fingerprint: engine.Fingerprint(job), Points: map[string][]plan.Point{},
			Source: map[string]*sdk.VM{}, SourceErrors: map[string]error{}}
		if in.Replicas, err = w.cat.Replicas(job.Name); err != nil {
			return err
		}
		for _, r := range in.Replicas {
			if in.Points[r.VM], err = w.cat.RestorePoints(job.Name, r.VM); err != nil {
				return err
			}
		}
		if st, err := w.cat.JobState(job.Name); err == nil {
			in.Last = st
		}
		src, caps, err := w.source(ctx, job)
		if err == nil {
			in.SourceCaps = &caps
		}
		if err != nil && job.Selects() {
			in.SelectionErr = fmt.Errorf("%s: %w", job.Source.Address(), err)
		}
		if err == nil && job.Selects() {
			known := map[string]string{}
			for _, r := range in.Replicas {
				if r.SourceID != "" {
					known[r.SourceID] = r.VM
				}
			}
			var last map[string][]string
			if in.Last != nil {
				last = in.Last.Selected
			}
			if in.Selection, in.SelectionErr = selection.Resolve(ctx, src, job, known, last); in.SelectionErr == nil {
				askTarget(ctx, w, job, &in)
				plans = append(plans, plan.Make(in))
				continue
			}
			in.SelectionErr = fmt.Errorf("%s: %w", job.Source.Address(), in.SelectionErr)
		}
		for _, vm := range job.VMs {
			if err != nil {
				in.SourceErrors[vm] = fmt.Errorf("%s: %w", job.Source.Address(), err)
				continue
			}
			desc, derr := src.DescribeVM(ctx, vm)
			if derr != nil {
				in.SourceErrors[vm] = fmt.Errorf("%s: %w", job.Source.Address(), derr)
				continue
			}
			in.Source[vm] = desc
		}
		askTarget(ctx, w, job, &in)
		plans = append(plans, plan.Make(in))
	}
	if len(w.cfg.Proxies) > 0 {
		if err := planProxies(ctx, w, plans); err != nil {
			return err
		}
	}
	if asJSON {
		out := make([]planJSON, len(plans))
		for i, p := range plans {
			out[i] = planView(p)
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for _, p := range plans {
		p.Write(e.stdout)
	}
	return nil
}

// planJSON is one job's plan in 'ferry plan --json': the command line's
// own shape, in snake_case as ferry's other JSON, documented in
// docs/cli.md and kept when package plan's types change.
type planJSON struct {
	Job     string       `json:"job"`
	Changes []changeJSON `json:"changes"`
	// Selection is what each selector and exclusion of the job matches;
	// absent for a job that names its VMs.
	Selection []selectedJSON `json:"selection,omitempty"`
	// Proxies is where the job's disks would move; absent without proxies.
	Proxies *proxiesJSON `json:"proxies,omitempty"`
}

type changeJSON struct {
	Action string `json:"action"`         // create, update, delete, warn or keep
	VM     string `json:"vm,omitempty"`   // absent for the job as a whole
	Disk   *int   `json:"disk,omitempty"` // the disk's index; absent for a VM or the job
	What   string `json:"what"`
}

type selectedJSON struct {
	Selector string   `json:"selector"`
	Exclude  bool     `json:"exclude,omitempty"`
	VMs      []string `json:"vms"`
	Why      string   `json:"why,omitempty"` // for a selector that matches nothing
}

type proxiesJSON struct {
	Source      string   `json:"source,omitempty"`
	SourceWhy   string   `json:"source_why,omitempty"`
	Target      string   `json:"target,omitempty"`
	TargetWhy   string   `json:"target_why,omitempty"`
	Compression string   `json:"compression,omitempty"`
	Skipped     []string `json:"skipped,omitempty"` // the proxies that cannot be used now, and why
	Error       string   `json:"error,omitempty"`   // why no proxy can take the job's disks
}

// actionNames are the words of plan's actions in JSON.
var actionNames = map[plan.Action]string{
	plan.Create: "create", plan.Update: "update", plan.Delete: "delete", plan.Warn: "warn", plan.Keep: "keep",
}

// planView is the JSON of a plan.
func planView(p plan.Plan) planJSON {
	out := planJSON{Job: p.Job, Changes: []changeJSON{}}
	for _, c := range p.Changes {
		cj := changeJSON{Action: actionNames[c.Action], VM: c.VM, What: c.What}
		if c.Disk >= 0 {
			cj.Disk = &c.Disk
		}
		out.Changes = append(out.Changes, cj)
	}
	for _, s := range p.Selection {
		vms := s.VMs
		if vms == nil {
			vms = []string{}
		}
		out.Selection = append(out.Selection, selectedJSON{Selector: s.Selector, Exclude: s.Exclude, VMs: vms, Why: s.Why})
	}
	if x := p.Proxies; x != nil {
		out.Proxies = &proxiesJSON{Source: x.Source, SourceWhy: x.SourceWhy, Target: x.Target, TargetWhy: x.TargetWhy,
			Compression: x.Compression, Skipped: x.Skipped, Error: x.Error}
	}
	return out
}

// askTarget asks the job's target for the replica of each VM the source
// described, so that the plan can tell a replica that is gone, replaced or
// another job's from the one the catalog knows. A target that cannot be
// asked leaves the catalog's word.
func askTarget(ctx context.Context, w *workspace, job *config.Job, in *plan.Inputs) {
	tgt, err := w.target(ctx, job)
	if err != nil {
		return
	}
	vms := in.Source
	if in.Selection != nil {
		vms = map[string]*sdk.VM{}
		for _, v := range in.Selection.VMs {
			if v.VM != nil && v.Err == nil {
				vms[v.Key] = v.VM
			}
		}
	}
	found := map[string]*sdk.Replica{}
	for name, vm := range vms {
		r, err := tgt.GetReplica(ctx, job.ReplicaName(name, vm.Name))
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			found[name] = nil
		case err == nil:
			found[name] = r
		}
	}
	in.Target = found
	in.Owner = func(vm *sdk.VM) sdk.ReplicaOwner { return engine.Owner(job, vm) }
}

// planProxies greets the configured proxies and says in each plan where
// the job's disks would move.
func planProxies(ctx context.Context, w *workspace, plans []plan.Plan) error {
	pool, err := w.proxyPool()
	if err != nil {
		return err
	}
	defer pool.Close()
	bad := pool.Greet(ctx, nil)
	for i := range plans {
		job := w.cfg.Jobs[plans[i].Job]
		vm := ""
		if len(job.VMs) > 0 {
			vm = job.VMs[0] // how the proxies reach the job's disks: its first VM's
		}
		t := engine.ProxyTask(job, vm)
		x := &plan.Proxies{}
		for _, name := range slices.Sorted(maps.Keys(bad)) {
			if len(t.Proxies) == 0 || slices.Contains(t.Proxies, name) {
				x.Skipped = append(x.Skipped, fmt.Sprintf("proxy %s: %v", name, bad[name]))
			}
		}
		pl, codec, err := pool.Preview(ctx, t)
		if err != nil {
			x.Error = err.Error()
		} else {
			x.Source, x.Target, x.SourceWhy, x.TargetWhy, x.Compression = pl.Source, pl.Target, pl.SourceWhy, pl.TargetWhy, codec.String()
		}
		plans[i].Proxies = x
	}
	return nil
}
