package recovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Failback of a whole plan: every VM of the plan whose replica is failed
// over (or whose failback is under way) goes home by the per-VM failback
// (the Failback function, the engine's), so a plan's failback resumes
// where a killed one stopped as a VM's does. Syncs run several VMs at once
// (the replicas keep running); the switch starts production group by
// group in the order the plan starts its groups on failover, since
// production has the same dependencies, each group judged up by its
// readiness check against production's addresses before the groups that
// depend on it switch. A VM that fails stops the switch: no group switches
// after it, and the result gives every VM's state.

// FailbackFunc runs a failback action of a job's VM (the engine's
// Failback) and says what it left.
type FailbackFunc func(ctx context.Context, job *config.Job, vm string, action failback.Action) (*FailbackVM, error)

// FailbackVM is what a failback action left of one VM.
type FailbackVM struct {
	// State is the failback's state; "" once a commit or undo ended it.
	State      string
	Production string
	// Addresses are production's, once it runs (after a switch).
	Addresses []string
	// Sent is what the action's syncs sent, in bytes.
	Sent int64
}

// Failbacks reads the failbacks under way: the catalog's Failback.
type Failbacks interface {
	Failback(job, vm string) (*catalog.Failback, error)
}

// DefaultFailbackParallel is how many VMs of a plan sync at once unless
// Runner.FailbackParallel says.
const DefaultFailbackParallel = 4

// failbackVMs are the VMs of the plan a failback acts on, with the state
// of each one's failback (failback.None for a failed-over VM in none), in
// the order the plan writes them; skipped are those it leaves alone (in
// no failback, and not failed over).
func (r *Runner) failbackVMs(p *config.FailoverPlan) (vms, skipped []planVM, err error) {
	if r.Failback == nil || r.Failbacks == nil {
		return nil, nil, fmt.Errorf("failover plan %q: this ferry cannot fail back: %w", p.Name, errdefs.ErrUnimplemented)
	}
	for _, g := range p.Groups {
		for _, vm := range g.VMs {
			fb, err := r.Failbacks.Failback(vm.Job, vm.VM)
			switch {
			case err == nil:
				vms = append(vms, planVM{PlanVM: vm, group: g.Name, state: failback.State(fb.State), production: fb.Production})
				continue
			case !errors.Is(err, errdefs.ErrNotFound):
				return nil, nil, err
			}
			rep, err := r.Catalog.Replica(vm.Job, vm.VM)
			if err == nil && rep.State == sdk.ReplicaFailedOver {
				vms = append(vms, planVM{PlanVM: vm, group: g.Name})
			} else if err == nil || errors.Is(err, errdefs.ErrNotFound) {
				skipped = append(skipped, planVM{PlanVM: vm, group: g.Name})
			} else {
				return nil, nil, err
			}
		}
	}
	return vms, skipped, nil
}

// planVM is a VM of a plan a failback acts on.
type planVM struct {
	config.PlanVM
	group      string
	state      failback.State
	production string
}

// FailbackSync syncs every VM of the plan that is failed over or in a
// failback, FailbackParallel at a time, while their replicas run.
func (r *Runner) FailbackSync(ctx context.Context, p *config.FailoverPlan) (*Result, error) {
	start := time.Now()
	res := &Result{Plan: p.Name}
	vms, err := r.failbackOf(p)
	if err != nil {
		return res, err
	}
	err = r.syncAll(ctx, p, vms, res)
	res.Took = time.Since(start)
	return res, err
}

// failbackOf is failbackVMs, with progress for the VMs left alone, and
// an error when the plan has no VM to fail back.
func (r *Runner) failbackOf(p *config.FailoverPlan) ([]planVM, error) {
	vms, skipped, err := r.failbackVMs(p)
	if err != nil {
		return nil, err
	}
	for _, vm := range skipped {
		r.progress(vm.group, vm.String(), "skipped", "not failed over")
	}
	if len(vms) == 0 {
		return nil, fmt.Errorf("failover plan %q: no VM of the plan is failed over or in a failback: %w", p.Name, errdefs.ErrFailedPrecondition)
	}
	return vms, nil
}

// syncAll syncs vms, at most FailbackParallel at once, and records each in
// res. It returns every failure.
func (r *Runner) syncAll(ctx context.Context, p *config.FailoverPlan, vms []planVM, res *Result) error {
	n := r.FailbackParallel
	if n <= 0 {
		n = DefaultFailbackParallel
	}
	slots := make(chan struct{}, n)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, vm := range vms {
		wg.Go(func() {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-slots }()
			out, err := r.failbackVM(ctx, vm, failback.Sync, "synced")
			mu.Lock()
			defer mu.Unlock()
			res.VMs = append(res.VMs, out)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("failover plan %q: failback sync: %w", p.Name, vmErrors(errs))
	}
	return ctx.Err()
}

// failbackVM runs a failback action of one VM and says what it did.
func (r *Runner) failbackVM(ctx context.Context, vm planVM, action failback.Action, did string) (VMResult, error) {
	out := VMResult{VM: vm.String(), Group: vm.group, State: string(vm.state)}
	job := r.Jobs[vm.Job]
	if job == nil {
		out.Error = fmt.Sprintf("job %q is not in the configuration", vm.Job)
		r.progress(vm.group, out.VM, "failed", "%s", out.Error)
		return out, fmt.Errorf("%s: %s", out.VM, out.Error)
	}
	fb, err := r.Failback(ctx, job, vm.VM, action)
	if fb != nil {
		out.State, out.Addresses = fb.State, fb.Addresses
		if fb.Production != "" {
			vm.production = fb.Production
		}
	}
	if err != nil {
		if now, ferr := r.Failbacks.Failback(vm.Job, vm.VM); ferr == nil {
			out.State = now.State // where the failed action left it
		}
		out.Error = err.Error()
		r.progress(vm.group, out.VM, "failed", "%s", out.Error)
		return out, fmt.Errorf("%s: %w", out.VM, err)
	}
	msg := "production vm " + vm.production
	if fb != nil && fb.Sent > 0 {
		msg += fmt.Sprintf(", %d bytes sent", fb.Sent)
	}
	if action == failback.Switch {
		msg += "; addresses " + orNone(out.Addresses)
	}
	r.progress(vm.group, out.VM, did, "%s", msg)
	return out, nil
}

// FailbackSwitch brings the plan's VMs home: first a sync of those not
// synced yet, all together while their replicas run, then the switch of
// each group (its replicas stop, a final sync, production starts) once
// the groups it depends on switched and passed their readiness checks.
// A failure stops it: no group switches after it. Every VM of the plan
// the failback acts on is in the result, with its state.
func (r *Runner) FailbackSwitch(ctx context.Context, p *config.FailoverPlan) (*Result, error) {
	start := time.Now()
	res := &Result{Plan: p.Name}
	vms, err := r.failbackOf(p)
	if err != nil {
		return res, err
	}
	var unsynced []planVM
	for _, vm := range vms {
		if vm.state == failback.None || vm.state == failback.Syncing {
			unsynced = append(unsynced, vm)
		}
	}
	if len(unsynced) > 0 {
		r.progress("", "", "started", "syncing %d VMs while their replicas run", len(unsynced))
		if err := r.syncAll(ctx, p, unsynced, res); err != nil {
			res.Took = time.Since(start)
			r.reportStates(p, vms, res)
			return res, fmt.Errorf("%w; no VM was switched", err)
		}
	}
	res.VMs = nil // the syncs' results give way to the switch's
	byGroup := map[string][]planVM{}
	for _, vm := range vms {
		byGroup[vm.group] = append(byGroup[vm.group], vm)
	}
	rr := *r
	rr.failingBack = true
	err = rr.runGroups(ctx, p, res, func(g *config.PlanGroup) ([]VMResult, error) { return rr.switchGroup(ctx, p, g, byGroup[g.Name]) })
	res.Took = time.Since(start)
	r.reportStates(p, vms, res)
	if err != nil {
		return res, fmt.Errorf("failover plan %q: failback switch stopped: %w", p.Name, err)
	}
	return res, nil
}

// switchGroup switches a group's VMs together, then runs its readiness
// check against production's addresses. A group with none in failback is
// up at once.
func (r *Runner) switchGroup(ctx context.Context, p *config.FailoverPlan, g *config.PlanGroup, vms []planVM) ([]VMResult, error) {
	if len(vms) == 0 {
		r.progress(g.Name, "", "ready", "no VM of the group is failed over")
		return nil, nil
	}
	r.progress(g.Name, "", "started", "switching %d VMs to production", len(vms))
	results := make([]VMResult, len(vms))
	errs := make([]error, len(vms))
	var wg sync.WaitGroup
	for i, vm := range vms {
		wg.Go(func() { results[i], errs[i] = r.failbackVM(ctx, vm, failback.Switch, "switched") })
	}
	wg.Wait()
	return r.groupUp(ctx, p, g, results, errs, " at production")
}

// reportStates adds to res each VM of vms it lacks (those of groups that
// did not switch), with its failback's state as the catalog has it now.
func (r *Runner) reportStates(p *config.FailoverPlan, vms []planVM, res *Result) {
	have := map[string]bool{}
	for _, v := range res.VMs {
		have[v.VM] = true
	}
	for _, vm := range vms {
		if have[vm.String()] {
			continue
		}
		out := VMResult{VM: vm.String(), Group: vm.group, State: string(vm.state)}
		if fb, err := r.Failbacks.Failback(vm.Job, vm.VM); err == nil {
			out.State = fb.State
		}
		res.VMs = append(res.VMs, out)
	}
}

// FailbackCommit commits the failback of every VM of the plan in one
// (switched, or committing after a kill): each replica returns to
// replication. It goes on past a VM that fails and returns every failure.
func (r *Runner) FailbackCommit(ctx context.Context, p *config.FailoverPlan) (*Result, error) {
	return r.failbackEach(ctx, p, failback.Commit, "committed")
}

// FailbackUndo undoes the failback of every VM of the plan in one:
// production gets back what the failback overwrote, and the replicas run
// failed over again, in the order the plan starts its groups (a replica
// starts after those it depends on). It goes on past a VM that fails and
// returns every failure.
func (r *Runner) FailbackUndo(ctx context.Context, p *config.FailoverPlan) (*Result, error) {
	return r.failbackEach(ctx, p, failback.Undo, "undone")
}

func (r *Runner) failbackEach(ctx context.Context, p *config.FailoverPlan, action failback.Action, did string) (*Result, error) {
	start := time.Now()
	res := &Result{Plan: p.Name}
	vms, _, err := r.failbackVMs(p)
	if err != nil {
		return res, err
	}
	in := map[string][]planVM{}
	for _, vm := range vms {
		if vm.state != failback.None {
			in[vm.group] = append(in[vm.group], vm)
		}
	}
	if len(in) == 0 {
		return res, fmt.Errorf("failover plan %q: no VM of the plan is in a failback: %w", p.Name, errdefs.ErrNotFound)
	}
	var errs []error
	for _, g := range startOrder(p.Groups) {
		for _, vm := range in[g.Name] {
			if ctx.Err() != nil {
				break
			}
			out, err := r.failbackVM(ctx, vm, action, did)
			res.VMs = append(res.VMs, out)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	res.Took = time.Since(start)
	if len(errs) > 0 {
		return res, fmt.Errorf("failover plan %q: failback %s: %w", p.Name, action, vmErrors(errs))
	}
	return res, ctx.Err()
}

// startOrder sorts groups so that each comes after the groups it depends
// on: the order a plan starts them in.
func startOrder(groups []*config.PlanGroup) []*config.PlanGroup {
	out := order(groups)
	slices.Reverse(out)
	return out
}

// FailbackPlan runs a failback action of the plan: FailbackSync,
// FailbackSwitch, FailbackCommit or FailbackUndo.
func (r *Runner) FailbackPlan(ctx context.Context, p *config.FailoverPlan, action failback.Action) (*Result, error) {
	switch action {
	case failback.Sync:
		return r.FailbackSync(ctx, p)
	case failback.Switch:
		return r.FailbackSwitch(ctx, p)
	case failback.Commit:
		return r.FailbackCommit(ctx, p)
	case failback.Undo:
		return r.FailbackUndo(ctx, p)
	}
	return &Result{Plan: p.Name}, fmt.Errorf("no failback action %q: %w", action, errdefs.ErrInvalidArgument)
}

// FailbackVMOf is what a failback action left of a VM: its failback (nil
// once a commit or undo ended it), the syncs the action ran, and
// production as the action left it (nil when it did not say).
func FailbackVMOf(fb *catalog.Failback, syncs []catalog.FailbackSync, production *sdk.VM) *FailbackVM {
	out := &FailbackVM{}
	if fb != nil {
		out.State, out.Production = fb.State, fb.Production
	}
	for _, s := range syncs {
		for _, d := range s.Disks {
			out.Sent += d.Sent
		}
	}
	if production != nil && production.PowerState == "on" {
		for _, n := range production.NICs {
			out.Addresses = append(out.Addresses, n.Addresses...)
		}
	}
	return out
}
