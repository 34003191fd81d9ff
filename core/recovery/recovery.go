// Package recovery runs failover plans: the VMs of an application, in
// groups that fail over in the order their dependencies say, each group
// judged up by its readiness check before the groups that depend on it
// start; groups with no path between them start together.
//
// A plan stops at its first failure (a VM that does not fail over, a check
// that does not pass, a script that fails): no group starts after it, the
// groups already under way finish their step, and the result lists every
// VM that was started, so that Undo can return them all (Undo and Commit
// act on every VM of the plan whose replica is failed over, whatever
// started it). It never decides how a VM fails over: the Failover function
// (the engine's) does.
//
// It also brings a plan's VMs home after a failover (FailbackSync,
// FailbackSwitch, FailbackCommit, FailbackUndo), by the per-VM failback
// (the Failback function, the engine's): see failback.go.
package recovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Runner runs plans.
type Runner struct {
	// Jobs are the configuration's jobs, by name.
	Jobs map[string]*config.Job
	// Failover starts ("start"), undoes ("undo") or commits ("commit")
	// the failover of a job's VM: engine.Engine.Failover.
	Failover func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error)
	// Catalog gives the restore points (for a point in time) and the
	// replicas' states (for undo and commit).
	Catalog interface {
		RestorePoints(job, vm string) ([]catalog.RestorePoint, error)
		Replica(job, vm string) (*catalog.Replica, error)
	}
	// Dir is where scripts run (the configuration folder).
	Dir string
	// Progress hears each step; nil hears nothing. It is called from
	// several goroutines.
	Progress func(Step)
	// Dial opens the TCP readiness checks' connections; nil uses a
	// net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Tests runs test VMs, for Test; nil refuses tests.
	Tests Tests
	// Results keeps the results of Test and TestVM; nil keeps none.
	Results TestResults
	// Failback runs the failback actions of VMs (the engine's), and
	// Failbacks reads the failbacks under way (the catalog), for the
	// Failback methods; nil refuses them.
	Failback  FailbackFunc
	Failbacks Failbacks
	// FailbackParallel is how many VMs sync at once in a plan's failback;
	// 0 means DefaultFailbackParallel.
	FailbackParallel int

	// testing says the checks run against test VMs (scripts see
	// FERRY_TEST=1).
	testing bool
	// failingBack says the checks run against production VMs a failback
	// switched to (scripts see FERRY_FAILBACK=1).
	failingBack bool
}

// Step is something that happened in a plan.
type Step struct {
	Time  time.Time `json:"time"`
	Group string    `json:"group,omitempty"` // "" for the plan as a whole
	VM    string    `json:"vm,omitempty"`    // JOB/VM, "" for the group or the plan
	// What: "started", "failed over", "checking", "ready", "failed",
	// "undone", "committed", "skipped"; in a test also "test started",
	// "passed", "kept", "removed".
	What    string `json:"what"`
	Message string `json:"message,omitempty"`
}

// Result is what running a plan (or its undo or commit) did.
type Result struct {
	Plan string
	// VMs are those acted on, in the order they finished.
	VMs []VMResult
	// Groups are the groups that came up (ready), in order.
	Ready []string
	Took  time.Duration
}

// VMResult is one VM's part.
type VMResult struct {
	VM        string   `json:"vm"` // JOB/VM
	Group     string   `json:"group"`
	State     string   `json:"state,omitempty"`
	Point     string   `json:"point,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Error     string   `json:"error,omitempty"`
}

func (r *Runner) progress(group, vm, what, format string, args ...any) {
	if r.Progress != nil {
		r.Progress(Step{Time: time.Now(), Group: group, VM: vm, What: what, Message: fmt.Sprintf(format, args...)})
	}
}

// Start fails the plan's VMs over to the newest restore point at or
// before at (the newest of all when at is zero).
func (r *Runner) Start(ctx context.Context, p *config.FailoverPlan, at time.Time) (*Result, error) {
	start := time.Now()
	res := &Result{Plan: p.Name}
	points, err := r.choosePoints(p, at)
	if err != nil {
		return res, err
	}
	if len(p.PreScript) > 0 {
		r.progress("", "", "started", "pre_script %s", strings.Join(p.PreScript, " "))
		if err := r.script(ctx, p.PreScript, config.DefaultReadyTimeout, p.Name, "", nil); err != nil {
			r.progress("", "", "failed", "pre_script: %v", err)
			return res, fmt.Errorf("failover plan %q: pre_script: %w; no VM was started", p.Name, err)
		}
	}
	firstErr := r.runGroups(ctx, p, res, func(g *config.PlanGroup) ([]VMResult, error) { return r.startGroup(ctx, p, g, points) })
	res.Took = time.Since(start)
	if firstErr != nil {
		return res, fmt.Errorf("failover plan %q stopped: %w", p.Name, firstErr)
	}
	if len(p.PostScript) > 0 {
		r.progress("", "", "started", "post_script %s", strings.Join(p.PostScript, " "))
		if err := r.script(ctx, p.PostScript, config.DefaultReadyTimeout, p.Name, "", res.VMs); err != nil {
			r.progress("", "", "failed", "post_script: %v", err)
			return res, fmt.Errorf("failover plan %q: every group is up, but post_script failed: %w", p.Name, err)
		}
	}
	return res, nil
}

// runGroups runs start on each group of the plan once the groups it
// depends on are up, groups with no path between them together, and
// stops starting groups at the first failure. It records in res the VMs
// each group acted on and the groups that came up, and returns the first
// failure (or ctx's error).
func (r *Runner) runGroups(ctx context.Context, p *config.FailoverPlan, res *Result, start func(g *config.PlanGroup) ([]VMResult, error)) error {
	var mu sync.Mutex
	var firstErr error
	stop := make(chan struct{}) // closed at the first failure
	up := map[string]chan struct{}{}
	for _, g := range p.Groups {
		up[g.Name] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for _, g := range p.Groups {
		wg.Go(func() {
			for _, d := range g.DependsOn {
				select {
				case <-up[d]:
				case <-stop:
				case <-ctx.Done():
				}
			}
			mu.Lock()
			stopped := firstErr != nil
			mu.Unlock()
			if stopped || ctx.Err() != nil {
				r.progress(g.Name, "", "skipped", "not started: the plan stopped")
				return
			}
			vms, err := start(g)
			mu.Lock()
			res.VMs = append(res.VMs, vms...)
			if err != nil {
				if firstErr == nil {
					firstErr = err
					close(stop) // no group starts after this
				}
				mu.Unlock()
				return
			}
			res.Ready = append(res.Ready, g.Name)
			mu.Unlock()
			close(up[g.Name])
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// choosePoints picks each VM's restore point: "" (the newest) when at is
// zero, else the newest at or before at. A VM without one fails the plan
// before anything starts.
func (r *Runner) choosePoints(p *config.FailoverPlan, at time.Time) (map[string]string, error) {
	out := map[string]string{}
	if at.IsZero() {
		return out, nil
	}
	var missing []string
	for _, g := range p.Groups {
		for _, vm := range g.VMs {
			points, err := r.Catalog.RestorePoints(vm.Job, vm.VM)
			if err != nil {
				return nil, err
			}
			best := ""
			for _, pt := range points {
				if !pt.Created.After(at) {
					best = pt.ID // oldest first: the last that fits is the newest
				}
			}
			if best == "" {
				missing = append(missing, vm.String())
			}
			out[vm.String()] = best
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("failover plan %q: no restore point at or before %s for %s; no VM was started: %w", p.Name, at.Local().Format(time.DateTime), strings.Join(missing, ", "), errdefs.ErrFailedPrecondition)
	}
	return out, nil
}

// startGroup fails a group's VMs over together, then runs its readiness
// check.
func (r *Runner) startGroup(ctx context.Context, p *config.FailoverPlan, g *config.PlanGroup, points map[string]string) ([]VMResult, error) {
	r.progress(g.Name, "", "started", "failing over %d VMs", len(g.VMs))
	results := make([]VMResult, len(g.VMs))
	errs := make([]error, len(g.VMs))
	var wg sync.WaitGroup
	for i, vm := range g.VMs {
		wg.Go(func() {
			res := VMResult{VM: vm.String(), Group: g.Name}
			job := r.Jobs[vm.Job]
			if job == nil {
				res.Error = fmt.Sprintf("job %q is not in the configuration", vm.Job)
				errs[i] = fmt.Errorf("%s: %s", res.VM, res.Error)
			} else if rep, err := r.Failover(ctx, job, vm.VM, "start", points[vm.String()]); err != nil {
				res.Error = err.Error()
				errs[i] = fmt.Errorf("%s: %w", res.VM, err)
			} else {
				res.State, res.Point = string(rep.State), rep.FailoverPoint
				for _, n := range rep.VM.NICs {
					res.Addresses = append(res.Addresses, n.Addresses...)
				}
			}
			if res.Error != "" {
				r.progress(g.Name, res.VM, "failed", "%s", res.Error)
			} else {
				r.progress(g.Name, res.VM, "failed over", "restore point %s; addresses %s", res.Point, orNone(res.Addresses))
			}
			results[i] = res
		})
	}
	wg.Wait()
	return r.groupUp(ctx, p, g, results, errs, "")
}

// groupUp ends the start of a group whose VMs started (or failed to) with
// results and errs: it fails when a VM did, else when the group's
// readiness check does (where says where the group was to come up: ""
// for the replicas, " at production" for a failback).
func (r *Runner) groupUp(ctx context.Context, p *config.FailoverPlan, g *config.PlanGroup, results []VMResult, errs []error, where string) ([]VMResult, error) {
	if failed := vmErrors(slices.DeleteFunc(errs, func(err error) bool { return err == nil })); len(failed) > 0 {
		return results, fmt.Errorf("group %q: %w", g.Name, failed)
	}
	if g.Ready != nil {
		if err := r.ready(ctx, p, g, results); err != nil {
			r.progress(g.Name, "", "failed", "%v", err)
			return results, fmt.Errorf("group %q is not ready%s: %w", g.Name, where, err)
		}
	}
	r.progress(g.Name, "", "ready", "up%s", where)
	return results, nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// ready runs a group's readiness check: the TCP port on every VM's
// addresses, the script, then the delay.
func (r *Runner) ready(ctx context.Context, p *config.FailoverPlan, g *config.PlanGroup, vms []VMResult) error {
	c := g.Ready
	if c.TCPPort > 0 {
		r.progress(g.Name, "", "checking", "port %d on every VM, for at most %s", c.TCPPort, c.Timeout)
		if err := r.tcp(ctx, c, vms); err != nil {
			return err
		}
	}
	if len(c.Script) > 0 {
		r.progress(g.Name, "", "checking", "script %s, for at most %s", strings.Join(c.Script, " "), c.Timeout)
		if err := r.script(ctx, c.Script, c.Timeout, p.Name, g.Name, vms); err != nil {
			return err
		}
	}
	if c.Delay > 0 {
		r.progress(g.Name, "", "checking", "waiting %s", c.Delay)
		select {
		case <-time.After(c.Delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// tcp waits until every VM accepts a connection on the port at one of its
// addresses.
func (r *Runner) tcp(ctx context.Context, c *config.ReadyCheck, vms []VMResult) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	dial := r.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	for _, vm := range vms {
		var addrs []string
		for _, a := range vm.Addresses {
			if pfx, err := netip.ParsePrefix(a); err == nil {
				addrs = append(addrs, pfx.Addr().String())
			} else if ip, err := netip.ParseAddr(a); err == nil {
				addrs = append(addrs, ip.String())
			}
		}
		if len(addrs) == 0 {
			return fmt.Errorf("%s has no address to check port %d on", vm.VM, c.TCPPort)
		}
		for {
			var last error
			for _, a := range addrs {
				dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
				conn, err := dial(dctx, "tcp", net.JoinHostPort(a, fmt.Sprint(c.TCPPort)))
				dcancel()
				if err == nil {
					conn.Close()
					last = nil
					break
				}
				last = err
			}
			if last == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: port %d did not answer within %s: %v", vm.VM, c.TCPPort, c.Timeout, last)
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// script runs a program in the configuration folder and waits at most
// timeout for it to exit 0.
func (r *Runner) script(ctx context.Context, argv []string, timeout time.Duration, plan, group string, vms []VMResult) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = r.Dir
	var names, addrs []string
	for _, vm := range vms {
		names = append(names, vm.VM)
		addrs = append(addrs, vm.Addresses...)
	}
	cmd.Env = append(os.Environ(), "FERRY_PLAN="+plan, "FERRY_GROUP="+group, "FERRY_VMS="+strings.Join(names, " "), "FERRY_ADDRESSES="+strings.Join(addrs, " "))
	if r.testing {
		cmd.Env = append(cmd.Env, "FERRY_TEST=1")
	}
	if r.failingBack {
		cmd.Env = append(cmd.Env, "FERRY_FAILBACK=1")
	}
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s did not exit within %s", argv[0], timeout)
	}
	if err != nil {
		tail := strings.TrimSpace(string(out))
		if len(tail) > 500 {
			tail = "..." + tail[len(tail)-500:]
		}
		if tail != "" {
			return fmt.Errorf("%s: %v: %s", argv[0], err, tail)
		}
		return fmt.Errorf("%s: %v", argv[0], err)
	}
	return nil
}

// Undo undoes the failover of every VM of the plan whose replica is
// failed over, the groups that started last first.
func (r *Runner) Undo(ctx context.Context, p *config.FailoverPlan) (*Result, error) {
	return r.finish(ctx, p, "undo", "undone")
}

// Commit makes the failover of every failed-over VM of the plan
// permanent.
func (r *Runner) Commit(ctx context.Context, p *config.FailoverPlan) (*Result, error) {
	return r.finish(ctx, p, "commit", "committed")
}

func (r *Runner) finish(ctx context.Context, p *config.FailoverPlan, action, did string) (*Result, error) {
	start := time.Now()
	res := &Result{Plan: p.Name}
	var errs []error
	for _, g := range order(p.Groups) {
		for _, vm := range g.VMs {
			rec, err := r.Catalog.Replica(vm.Job, vm.VM)
			if err != nil || rec.State != sdk.ReplicaFailedOver {
				continue // never started, or undone already
			}
			out := VMResult{VM: vm.String(), Group: g.Name}
			job := r.Jobs[vm.Job]
			var verr error
			if job == nil {
				out.Error = fmt.Sprintf("job %q is not in the configuration", vm.Job)
				verr = errors.New(out.Error)
			} else if rep, err := r.Failover(ctx, job, vm.VM, action, ""); err != nil {
				out.Error, verr = err.Error(), err
			} else {
				out.State = string(rep.State)
			}
			if out.Error != "" {
				errs = append(errs, fmt.Errorf("%s: %w", out.VM, verr))
				r.progress(g.Name, out.VM, "failed", "%s", out.Error)
			} else {
				r.progress(g.Name, out.VM, did, "%s", out.State)
			}
			res.VMs = append(res.VMs, out)
		}
	}
	res.Took = time.Since(start)
	if len(errs) > 0 {
		return res, fmt.Errorf("failover plan %q: %s: %w", p.Name, action, vmErrors(errs))
	}
	return res, nil
}

// order sorts groups so that each comes before the groups it depends on
// (the reverse of starting): dependents first.
func order(groups []*config.PlanGroup) []*config.PlanGroup {
	byName := map[string]*config.PlanGroup{}
	for _, g := range groups {
		byName[g.Name] = g
	}
	var out []*config.PlanGroup
	done := map[string]bool{}
	var visit func(g *config.PlanGroup)
	visit = func(g *config.PlanGroup) {
		if done[g.Name] {
			return
		}
		done[g.Name] = true
		// Those that depend on g go first.
		for _, h := range groups {
			if slices.Contains(h.DependsOn, g.Name) {
				visit(h)
			}
		}
		out = append(out, g)
	}
	for _, g := range groups {
		visit(g)
	}
	return out
}

// vmErrors are the failures of several VMs: one line, "; " between them,
// each keeping its class (errors.Is sees through to every one).
type vmErrors []error

func (e vmErrors) Error() string {
	parts := make([]string, len(e))
	for i, err := range e {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

func (e vmErrors) Unwrap() []error { return e }
