package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// testFlags are the flags of 'ferry failover ... --test'.
type testFlags struct {
	test, cleanup bool
	keep          time.Duration
}

// check refuses --keep and --cleanup without --test, and --test with
// undo or commit.
func (t testFlags) check(pos []string) error {
	switch {
	case !t.test && (t.keep != 0 || t.cleanup):
		return usagef("--keep and --cleanup go with --test")
	case t.keep < 0:
		return usagef("--keep %s: a duration to keep the test VMs, such as 30m", t.keep)
	case t.test && t.cleanup && t.keep != 0:
		return usagef("--cleanup removes test VMs; it keeps none")
	}
	if t.test {
		rest := pos
		if len(rest) > 0 && rest[0] == "plan" {
			rest = rest[1:]
		}
		if len(rest) > 0 && (rest[0] == "undo" || rest[0] == "commit") {
			return usagef("--test starts and removes test VMs by itself: there is nothing to %s", rest[0])
		}
	}
	return nil
}

// runTestFailover runs 'ferry failover plan NAME --test' and 'ferry
// failover JOB VM --test' here: test VMs on the targets, replicas
// untouched; the result is kept in the catalog ('ferry status' shows it).
func runTestFailover(e *env, pos []string, point string, t testFlags) error {
	plan := len(pos) > 0 && pos[0] == "plan"
	if plan {
		pos = pos[1:]
		if len(pos) != 1 {
			return usagef("name a failover plan")
		}
	} else if len(pos) != 2 {
		return usagef("name a job and a VM, or a failover plan: ferry failover plan NAME --test")
	}
	var at time.Time
	if plan && point != "" && point != "latest" {
		pt, err := parsePointTime(point)
		if err != nil {
			return usagef("--point %q: %v", point, err)
		}
		at = pt
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		switch {
		case plan && t.cleanup:
			return runCleanupRemote(ctx, e, c, pos[0], "", "")
		case plan:
			return runTestFailoverRemote(ctx, e, c, pos[0], at, t.keep)
		case t.cleanup:
			return runCleanupRemote(ctx, e, c, "", pos[0], pos[1])
		}
		return runTestVMRemote(ctx, e, c, pos[0], pos[1], point, t.keep)
	}
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	eng, err := w.controlEngine()
	if err != nil {
		return err
	}
	var mu sync.Mutex
	name := ""
	if plan {
		name = pos[0]
	} else {
		name = pos[0] + "/" + pos[1]
	}
	r := &recovery.Runner{
		Jobs: w.cfg.Jobs, Tests: eng, Results: w.cat, Catalog: w.cat, Dir: w.cfg.Dir,
		Progress: func(s recovery.Step) {
			mu.Lock()
			defer mu.Unlock()
			planStep(e.stdout, name, s)
			flush(e.stdout) // a kept test is watched as it goes
		},
	}
	var res *recovery.TestResult
	what := "test failover of " + name
	if plan {
		p, ok := w.cfg.FailoverPlans[pos[0]]
		if !ok {
			names := slices.Sorted(maps.Keys(w.cfg.FailoverPlans))
			if len(names) == 0 {
				return usagef("no failover plan %q: the configuration declares none (see failover_plan in docs/configuration.md)", pos[0])
			}
			return usagef("no failover plan %q (plans: %s)", pos[0], strings.Join(names, ", "))
		}
		what = "test of failover plan " + p.Name
		// One test of a plan at a time, with a ferry server's too: its
		// cleanup would remove this one's test VMs, and this one's its.
		host, _ := os.Hostname()
		release, lerr := w.cat.LockTest(p.Name, catalog.TestHolder{What: "ferry failover plan " + p.Name + " --test", PID: os.Getpid(), Host: host, Since: time.Now().UTC()})
		if lerr != nil {
			return lerr
		}
		defer release()
		if t.cleanup {
			removed, err := r.Cleanup(ctx, p)
			return cleanupEnded(e, what, removed, err)
		}
		fmt.Fprintf(e.stdout, "%s: starting test VMs in isolated networks; replication goes on\n", what)
		flush(e.stdout)
		res, err = r.Test(ctx, p, recovery.TestOptions{At: at, Keep: t.keep})
	} else {
		if _, err := w.job(pos[0]); err != nil {
			return err
		}
		// One test of the VM alone at a time, with a ferry server's too:
		// a test removes the test VMs of the VM's earlier tests first.
		host, _ := os.Hostname()
		how := "--test"
		if t.cleanup {
			how = "--test --cleanup"
		}
		release, lerr := w.cat.LockTestVM(pos[0], pos[1], catalog.TestHolder{What: "ferry failover " + pos[0] + " " + pos[1] + " " + how, PID: os.Getpid(), Host: host, Since: time.Now().UTC()})
		if lerr != nil {
			return lerr
		}
		defer release()
		if t.cleanup {
			removed, err := r.CleanupVM(ctx, pos[0], pos[1])
			return cleanupEnded(e, what, removed, err)
		}
		fmt.Fprintf(e.stdout, "%s: starting a test VM in an isolated network; replication goes on\n", what)
		flush(e.stdout)
		res, err = r.TestVM(ctx, pos[0], pos[1], point, t.keep)
	}
	var pe *engine.PointError
	if errors.As(err, &pe) {
		return usagef("%v", pe)
	}
	return testEnded(e, what, res, err)
}

// runTestFailoverRemote asks a ferry server to test the plan and shows
// what it did as a test here shows it (the steps once the test ended).
func runTestFailoverRemote(ctx context.Context, e *env, c *client.Client, name string, at time.Time, keep time.Duration) error {
	point := ""
	if !at.IsZero() {
		point = at.Format(time.RFC3339)
	}
	if _, err := c.FailoverPlan(ctx, name); errors.Is(err, errdefs.ErrNotFound) {
		return usagef("%v on ferry server at %s", err, c.Address())
	} else if err != nil {
		return remoteError(err)
	}
	what := "test of failover plan " + name
	fmt.Fprintf(e.stdout, "%s: starting test VMs in isolated networks on ferry server at %s; replication goes on\n", what, c.Address())
	flush(e.stdout)
	run, err := c.TestFailoverPlan(ctx, name, point, keep)
	if run == nil {
		if ctx.Err() != nil {
			return &interruptedError{msg: fmt.Sprintf("stopped waiting for the %s: it goes on on ferry server at %s, which removes its test VMs ('ferry status' shows its result)", what, c.Address())}
		}
		return remoteError(err)
	}
	for _, s := range run.Steps {
		planStep(e.stdout, name, s)
	}
	if err != nil {
		err = remoteError(err)
	}
	return testEnded(e, what, &run.TestResult, err)
}

// runTestVMRemote asks a ferry server to test one VM alone, as
// runTestFailoverRemote does a plan.
func runTestVMRemote(ctx context.Context, e *env, c *client.Client, job, vm, point string, keep time.Duration) error {
	if err := remoteJob(ctx, c, job); err != nil {
		return err
	}
	name := job + "/" + vm
	what := "test failover of " + name
	fmt.Fprintf(e.stdout, "%s: starting a test VM in an isolated network on ferry server at %s; replication goes on\n", what, c.Address())
	flush(e.stdout)
	run, err := c.TestFailoverVM(ctx, job, vm, point, keep)
	if run == nil {
		if ctx.Err() != nil {
			return &interruptedError{msg: fmt.Sprintf("stopped waiting for the %s: it goes on on ferry server at %s, which removes its test VM ('ferry status' shows its result)", what, c.Address())}
		}
		return remoteError(err)
	}
	for _, s := range run.Steps {
		planStep(e.stdout, name, s)
	}
	return testEnded(e, what, &run.TestResult, remoteError(err))
}

// runCleanupRemote asks a ferry server to remove the test VMs that tests
// of a plan (plan), or of vm of job alone, left behind.
func runCleanupRemote(ctx context.Context, e *env, c *client.Client, plan, job, vm string) error {
	what := "test of failover plan " + plan
	if plan == "" {
		if err := remoteJob(ctx, c, job); err != nil {
			return err
		}
		what = "test failover of " + job + "/" + vm
	} else if _, err := c.FailoverPlan(ctx, plan); errors.Is(err, errdefs.ErrNotFound) {
		return usagef("%v on ferry server at %s", err, c.Address())
	} else if err != nil {
		return remoteError(err)
	}
	removed, err := c.CleanupTests(ctx, plan, job, vm)
	return cleanupEnded(e, what, removed, remoteError(err))
}

// testEnded says how a test ended: its verdict and recovery time, and
// what it left behind.
func testEnded(e *env, what string, res *recovery.TestResult, err error) error {
	if res != nil && len(res.VMs) > 0 {
		verdict := "FAILED"
		if res.Passed {
			verdict = fmt.Sprintf("passed; recovery time %s", seconds(res.RecoverySeconds))
		}
		fmt.Fprintf(e.stdout, "%s: %s (%d test VMs, %d groups up, in %s)\n", what, verdict, len(res.VMs), len(res.Ready), seconds(res.TookSeconds))
		if len(res.NotRemoved) > 0 {
			fmt.Fprintf(e.stdout, "test VMs left on the target: %s; remove them with --test --cleanup\n", strings.Join(res.NotRemoved, ", "))
		}
	}
	return err
}

func cleanupEnded(e *env, what string, removed []string, err error) error {
	if len(removed) > 0 {
		fmt.Fprintf(e.stdout, "%s: removed %d test VMs left behind: %s\n", what, len(removed), strings.Join(removed, ", "))
	} else if err == nil {
		fmt.Fprintf(e.stdout, "%s: no test VM was left behind\n", what)
	}
	return err
}

func seconds(s float64) time.Duration {
	d := time.Duration(s * float64(time.Second))
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
