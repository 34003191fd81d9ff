package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Plan works out what the next run of each job would do, without doing
// it: it gathers what package plan decides from (the catalog's records of
// the job, what the source reports of its VMs or what its selectors pick
// now, what the target holds of their replicas) and, with proxies, where
// the job's disks would move. The source and the target are reached as
// the job's sessions reach them (see Source). A source or a target that
// cannot be asked is said in the plan, not returned: Plan fails only when
// the catalog cannot be read. `ferry plan` and ferry server's GET
// /v1/plan call it.
func (e *Engine) Plan(ctx context.Context, jobs []*config.Job) ([]plan.Plan, error) {
	plans := make([]plan.Plan, 0, len(jobs))
	for _, job := range jobs {
		in, err := e.planInputs(ctx, job)
		if err != nil {
			return nil, err
		}
		plans = append(plans, plan.Make(in))
	}
	if pv, ok := e.Proxies.(previewer); ok {
		planProxies(ctx, pv, jobs, plans)
	}
	return plans, nil
}

// planInputs gathers what a job's plan is made from, as a session
// gathers it at its start (see run.start) and at each VM's turn.
func (e *Engine) planInputs(ctx context.Context, job *config.Job) (plan.Inputs, error) {
	in := plan.Inputs{Job: job, Fingerprint: Fingerprint(job), Points: map[string][]plan.Point{},
		Source: map[string]*sdk.VM{}, SourceErrors: map[string]error{}}
	var err error
	if in.Replicas, err = e.Catalog.Replicas(job.Name); err != nil {
		return in, err
	}
	for _, r := range in.Replicas {
		if in.Points[r.VM], err = e.Catalog.RestorePoints(job.Name, r.VM); err != nil {
			return in, err
		}
	}
	if st, err := e.Catalog.JobState(job.Name); err == nil {
		in.Last = st
	}
	src, caps, where, err := e.Source(ctx, job)
	if where != "" {
		e.log().Info("the source's calls run on a proxy", "job", job.Name, "proxy", where)
	}
	if err != nil {
		in.SourceErr = err
		return in, nil
	}
	in.SourceCaps = &caps
	tgt, where, err := e.Target(ctx, job)
	if where != "" {
		e.log().Info("the target's calls run on a proxy", "job", job.Name, "proxy", where)
	}
	if err != nil {
		in.TargetErr = err
		return in, nil
	}
	if job.Selects() {
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
		in.Selection, in.SelectionErr = selection.Resolve(ctx, src, job, known, last)
	}
	// The VMs the run would take up, each described as the session will
	// at its turn (a selected VM as the selection described it).
	vms := map[string]*sdk.VM{}
	for _, v := range plan.DecideJob(in.JobFacts()).VMs {
		if in.Selection != nil {
			if v.VM != nil {
				vms[v.Key] = v.VM
			}
			continue
		}
		desc, derr := src.DescribeVM(ctx, v.Key)
		if derr != nil {
			in.SourceErrors[v.Key] = derr
			continue
		}
		in.Source[v.Key], vms[v.Key] = desc, desc
	}
	e.askTarget(ctx, job, tgt, vms, &in)
	return in, nil
}

// askTarget asks the job's target for the replica of each VM the source
// described and its restore points, as a session asks at the start of each
// VM, so that the plan decides from what the run will decide from: a
// replica gone, replaced or another job's, the change ids of its newest
// point. A replica the target cannot say of leaves the catalog's word.
func (e *Engine) askTarget(ctx context.Context, job *config.Job, tgt sdk.Target, vms map[string]*sdk.VM, in *plan.Inputs) {
	found := map[string]*sdk.Replica{}
	listed := map[string][]plan.Point{}
	for name, vm := range vms {
		r, err := tgt.GetReplica(ctx, job.ReplicaName(name, vm.Name))
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			found[name] = nil
		case err == nil:
			found[name] = r
			if points, err := tgt.ListRestorePoints(ctx, r.ID); err == nil {
				listed[name] = PlanPoints(points)
			}
		}
	}
	in.Target, in.TargetPoints = found, listed
	in.Owner = func(vm *sdk.VM) sdk.ReplicaOwner { return Owner(job, vm) }
}

// previewer says where a task would run without running it
// (core/proxy.Pool); the engine's Proxies that can are asked by Plan.
type previewer interface {
	Greet(ctx context.Context, names []string) map[string]error
	Preview(ctx context.Context, t proxy.Task) (proxy.Placement, datamover.Codec, error)
}

var _ previewer = (*proxy.Pool)(nil)

// planProxies greets the proxies and says in each plan where the job's
// disks would move: those of the first VM the run would copy, as a disk
// task of the run is made (ProxyTask) and placed (the pool's rule).
func planProxies(ctx context.Context, pv previewer, jobs []*config.Job, plans []plan.Plan) {
	bad := pv.Greet(ctx, nil)
	for i, job := range jobs {
		if plans[i].Overall.Fail != nil {
			continue // the run would move no disk
		}
		vm := ""
		for _, d := range plans[i].VMs {
			if d.Verdict == plan.VerdictCreate || d.Verdict == plan.VerdictIncremental {
				vm = d.VM
				break
			}
		}
		t := ProxyTask(job, vm)
		x := &plan.Proxies{}
		for _, name := range slices.Sorted(maps.Keys(bad)) {
			if len(t.Proxies) == 0 || slices.Contains(t.Proxies, name) {
				x.Skipped = append(x.Skipped, fmt.Sprintf("proxy %s: %v", name, bad[name]))
			}
		}
		pl, codec, err := pv.Preview(ctx, t)
		if err != nil {
			x.Error = err.Error()
		} else {
			x.Source, x.Target, x.SourceWhy, x.TargetWhy, x.Compression = pl.Source, pl.Target, pl.SourceWhy, pl.TargetWhy, codec.String()
		}
		plans[i].Proxies = x
	}
}
