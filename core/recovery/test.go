package recovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
)

// Labels a test VM carries, so that a later test (or a cleanup) finds the
// leftovers of one whose process died.
const (
	LabelTestPlan = "ferry.test.plan" // the plan's name; "" for a test of one VM
	LabelTestJob  = "ferry.test.job"
	LabelTestVM   = "ferry.test.vm"
	LabelTestRun  = "ferry.test.run" // one id for every test VM of a run
)

// Tests starts, lists and removes test VMs on a job's target: the
// engine's StartTest, ListTests and StopTest. A target that cannot run
// test failovers answers errdefs.ErrUnimplemented.
type Tests interface {
	StartTest(ctx context.Context, job *config.Job, vm, id, point string, testMap []config.NetworkMapping, labels map[string]string) (*sdk.TestVM, error)
	ListTests(ctx context.Context, job *config.Job) ([]sdk.TestVM, error)
	StopTest(ctx context.Context, job *config.Job, id string) error
}

// TestOptions say how a test runs.
type TestOptions struct {
	// At picks each VM's newest restore point at or before it; zero: the
	// newest.
	At time.Time
	// Keep keeps the test VMs running this long once the checks ended
	// (or until ctx is done), then removes them; zero removes them at
	// once.
	Keep time.Duration
}

// TestResult is what a test of a plan (or of one VM) did: the record the
// catalog keeps (Runner.Results).
type TestResult = catalog.TestResult

// TestVMResult is one VM's part of a test.
type TestVMResult = catalog.TestVMResult

// TestResults keeps the results of tests: the catalog's PutTestResult.
type TestResults interface {
	PutTestResult(r *catalog.TestResult) error
}

// Test rehearses a plan: it starts a test VM of each VM from a restore
// point, in the isolated networks (the plan's test_network_map, else the
// target's isolated network), group by group as Start would, runs the
// groups' readiness checks against the test VMs, then removes them (after
// opts.Keep). The replicas, their restore points and replication are never
// touched: a test claims no job. pre_script and post_script do not run
// (they act on the world outside the test); readiness scripts see
// FERRY_TEST=1. Test VMs left behind by an earlier test of the plan whose
// process died are removed first. The result is returned whether or not
// the test passed; err says why it did not. It is kept with r.Results,
// when set, once the test VMs are removed; an error keeping it is joined
// to err.
func (r *Runner) Test(ctx context.Context, p *config.FailoverPlan, opts TestOptions) (*TestResult, error) {
	points, err := r.choosePoints(p, opts.At)
	if err != nil {
		res := &TestResult{Plan: p.Name, Run: newRunID(), Started: time.Now().UTC(), Error: err.Error()}
		return res, r.keep(res, err)
	}
	res, err := r.test(ctx, p, points, opts.Keep)
	return res, r.keep(res, err)
}

// keep records res with r.Results; it returns err, joined with the error
// of keeping res if any.
func (r *Runner) keep(res *TestResult, err error) error {
	if r.Results == nil {
		return err
	}
	if kerr := r.Results.PutTestResult(res); kerr != nil {
		return errors.Join(err, fmt.Errorf("keep the result of test %s: %w", res.Run, kerr))
	}
	return err
}

// TestVM rehearses the failover of one VM of a job, as Test does for a
// plan of one group without checks. point is a restore point's id or an
// unambiguous start of one; "" is the newest. Its result is kept under the
// job and VM.
func (r *Runner) TestVM(ctx context.Context, job, vm, point string, keep time.Duration) (*TestResult, error) {
	res, err := r.test(ctx, singleVM(job, vm), map[string]string{job + "/" + vm: point}, keep)
	res.Job, res.VM = job, vm
	return res, r.keep(res, err)
}

// singleVM is the plan of a test of one VM: no name, one group.
func singleVM(job, vm string) *config.FailoverPlan {
	return &config.FailoverPlan{Groups: []*config.PlanGroup{{Name: vm, VMs: []config.PlanVM{{Job: job, VM: vm}}}}}
}

func (r *Runner) test(ctx context.Context, p *config.FailoverPlan, points map[string]string, keep time.Duration) (*TestResult, error) {
	began := time.Now()
	res := &TestResult{Plan: p.Name, Run: newRunID(), Started: began.UTC()}
	what := testName(p)
	fail := func(err error) (*TestResult, error) {
		res.Error = err.Error()
		res.TookSeconds = time.Since(began).Seconds()
		return res, err
	}
	if r.Tests == nil {
		return fail(fmt.Errorf("%s: this ferry cannot run test failovers here", what))
	}
	// Leftovers first: this also finds a target that cannot run tests
	// before anything starts.
	left, err := r.cleanup(ctx, p)
	res.Leftovers = left
	if err != nil {
		return fail(fmt.Errorf("%s: %w; no test VM was started", what, err))
	}
	rr := *r
	rr.testing = true
	var mu sync.Mutex
	var started []TestVMResult
	var plan Result
	start := time.Now()
	firstErr := rr.runGroups(ctx, p, &plan, func(g *config.PlanGroup) ([]VMResult, error) {
		vms, tvs, err := rr.startTestGroup(ctx, p, g, res.Run, points)
		mu.Lock()
		started = append(started, tvs...)
		mu.Unlock()
		return vms, err
	})
	if firstErr == nil {
		res.Passed = true
		res.RecoverySeconds = time.Since(start).Seconds()
		r.progress("", "", "passed", "every group is up; recovery time %s", roundDuration(time.Since(start)))
	}
	res.VMs, res.Ready = started, plan.Ready
	if keep > 0 && ctx.Err() == nil && len(started) > 0 {
		r.progress("", "", "kept", "the test VMs run for %s (Ctrl-C removes them now)", keep)
		select {
		case <-time.After(keep):
		case <-ctx.Done():
		}
	}
	// Remove them even when ctx is done: a test never outlives its run
	// unless the process dies (and then the next test removes them).
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	var stopErrs []error
	for _, g := range order(p.Groups) {
		for _, v := range started {
			if v.Group != g.Name || v.Test == "" {
				continue
			}
			if err := r.Tests.StopTest(sctx, r.Jobs[jobOf(v.VM)], v.Test); err != nil {
				res.NotRemoved = append(res.NotRemoved, v.Test)
				stopErrs = append(stopErrs, fmt.Errorf("remove test VM %s of %s: %w", v.Test, v.VM, err))
				r.progress(g.Name, v.VM, "failed", "remove test VM %s: %v", v.Test, err)
				continue
			}
			r.progress(g.Name, v.VM, "removed", "test VM %s", v.Test)
		}
	}
	res.TookSeconds = time.Since(began).Seconds()
	if firstErr != nil {
		res.Passed = false
		return fail(errors.Join(fmt.Errorf("%s failed: %w", what, firstErr), vmErrorsOrNil(stopErrs)))
	}
	if len(stopErrs) > 0 {
		// The rehearsal passed; what is left is housekeeping.
		err := fmt.Errorf("%s passed, but its test VMs were not all removed (the next test or --cleanup removes them): %w", what, vmErrors(stopErrs))
		res.Error = err.Error()
		return res, err
	}
	return res, nil
}

func vmErrorsOrNil(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return vmErrors(errs)
}

func testName(p *config.FailoverPlan) string {
	if p.Name == "" {
		return "test failover of " + p.Groups[0].VMs[0].String()
	}
	return fmt.Sprintf("test of failover plan %q", p.Name)
}

func jobOf(vm string) string {
	job, _, _ := strings.Cut(vm, "/")
	return job
}

// startTestGroup starts a group's test VMs together, then runs its
// readiness check against them.
func (r *Runner) startTestGroup(ctx context.Context, p *config.FailoverPlan, g *config.PlanGroup, run string, points map[string]string) ([]VMResult, []TestVMResult, error) {
	r.progress(g.Name, "", "started", "starting %d test VMs", len(g.VMs))
	results := make([]VMResult, len(g.VMs))
	tests := make([]TestVMResult, len(g.VMs))
	errs := make([]error, len(g.VMs))
	var wg sync.WaitGroup
	for i, vm := range g.VMs {
		wg.Go(func() {
			res := VMResult{VM: vm.String(), Group: g.Name}
			tv := TestVMResult{VM: vm.String(), Group: g.Name, Test: TestID(vm.VM, run)}
			labels := map[string]string{LabelTestPlan: p.Name, LabelTestJob: vm.Job, LabelTestVM: vm.VM, LabelTestRun: run}
			job := r.Jobs[vm.Job]
			if job == nil {
				tv.Test = "" // nothing was started
				res.Error = fmt.Sprintf("job %q is not in the configuration", vm.Job)
				errs[i] = fmt.Errorf("%s: %s", res.VM, res.Error)
			} else if v, err := r.Tests.StartTest(ctx, job, vm.VM, tv.Test, points[vm.String()], p.TestNetworkMap, labels); err != nil {
				res.Error = err.Error()
				errs[i] = fmt.Errorf("%s: %w", res.VM, err)
			} else {
				res.State, res.Point = "test", v.Point
				for _, n := range v.VM.NICs {
					res.Addresses = append(res.Addresses, n.Addresses...)
					tv.Networks = append(tv.Networks, n.Network)
				}
				tv.Point, tv.Addresses = v.Point, res.Addresses
			}
			tv.Error = res.Error
			if res.Error != "" {
				r.progress(g.Name, res.VM, "failed", "%s", res.Error)
			} else {
				r.progress(g.Name, res.VM, "test started", "test VM %s from restore point %s; networks %s; addresses %s", tv.Test, tv.Point, orNone(tv.Networks), orNone(tv.Addresses))
			}
			results[i], tests[i] = res, tv
		})
	}
	wg.Wait()
	var failed vmErrors
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return results, tests, fmt.Errorf("group %q: %w", g.Name, failed)
	}
	if g.Ready != nil {
		if err := r.ready(ctx, p, g, results); err != nil {
			r.progress(g.Name, "", "failed", "%v", err)
			return results, tests, fmt.Errorf("group %q is not ready: %w", g.Name, err)
		}
	}
	r.progress(g.Name, "", "ready", "up")
	return results, tests, nil
}

// Cleanup removes the test VMs that tests of the plan left behind (a
// process that died during a test, a removal that failed) and returns
// their ids.
func (r *Runner) Cleanup(ctx context.Context, p *config.FailoverPlan) ([]string, error) {
	if r.Tests == nil {
		return nil, fmt.Errorf("%s: this ferry cannot run test failovers here", testName(p))
	}
	return r.cleanup(ctx, p)
}

// CleanupVM removes the test VMs that tests of one VM left behind.
func (r *Runner) CleanupVM(ctx context.Context, job, vm string) ([]string, error) {
	return r.Cleanup(ctx, singleVM(job, vm))
}

// cleanup lists the test VMs of each target the plan's jobs use and
// removes those a test of this plan (of this VM, for a plan without a
// name) started.
func (r *Runner) cleanup(ctx context.Context, p *config.FailoverPlan) ([]string, error) {
	mine := func(v sdk.TestVM) bool {
		if v.Labels[LabelTestPlan] != p.Name || v.Labels[LabelTestRun] == "" {
			return false
		}
		if p.Name != "" {
			return true
		}
		vm := p.Groups[0].VMs[0]
		return v.Labels[LabelTestJob] == vm.Job && v.Labels[LabelTestVM] == vm.VM
	}
	var removed []string
	seen := map[string]bool{} // targets by address
	for _, g := range p.Groups {
		for _, vm := range g.VMs {
			job := r.Jobs[vm.Job]
			if job == nil {
				return removed, fmt.Errorf("job %q is not in the configuration", vm.Job)
			}
			if seen[job.Target.Address()] {
				continue
			}
			seen[job.Target.Address()] = true
			tests, err := r.Tests.ListTests(ctx, job)
			if err != nil {
				return removed, fmt.Errorf("list the test VMs of target %s: %w", job.Target.Address(), err)
			}
			for _, v := range tests {
				if !mine(v) {
					continue
				}
				if err := r.Tests.StopTest(ctx, job, v.ID); err != nil {
					return removed, fmt.Errorf("remove test VM %s left by test %s: %w", v.ID, v.Labels[LabelTestRun], err)
				}
				removed = append(removed, v.ID)
				r.progress("", v.Labels[LabelTestJob]+"/"+v.Labels[LabelTestVM], "removed", "test VM %s left behind by test %s", v.ID, v.Labels[LabelTestRun])
			}
		}
	}
	return removed, nil
}

// TestID names a VM's test VM in a test run: the VM's name (letters,
// digits, '-', '_' and '.' kept, others '-', at most 40 characters),
// "-test-" and the run.
func TestID(vm, run string) string {
	var b strings.Builder
	for _, c := range vm {
		switch {
		case b.Len() >= 40:
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.' && b.Len() > 0:
			b.WriteRune(c)
		default:
			b.WriteByte('-')
		}
	}
	return b.String() + "-test-" + run
}

func newRunID() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
