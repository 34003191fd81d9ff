package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// runFailoverPlan runs 'ferry failover plan [undo|commit] NAME [--point
// latest|TIME]', here or through a ferry server.
func runFailoverPlan(e *env, pos []string, point string) error {
	action := "start"
	if len(pos) > 0 && (pos[0] == "undo" || pos[0] == "commit") {
		action, pos = pos[0], pos[1:]
	}
	if len(pos) != 1 {
		return usagef("name a failover plan")
	}
	var at time.Time
	if point != "" && point != "latest" {
		if action != "start" {
			return usagef("--point only applies when starting a plan")
		}
		t, err := parsePointTime(point)
		if err != nil {
			return usagef("--point %q: %v", point, err)
		}
		at = t
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		return runFailoverPlanRemote(ctx, e, c, pos[0], action, at)
	}
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	p, err := w.plan(pos[0])
	if err != nil {
		return err
	}
	eng, err := w.controlEngine()
	if err != nil {
		return err
	}
	var mu sync.Mutex
	r := &recovery.Runner{
		Jobs: w.cfg.Jobs,
		Failover: func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
			return eng.Failover(ctx, job, vm, engine.FailoverAction(action), point)
		},
		Catalog: w.cat,
		Dir:     w.cfg.Dir,
		Progress: func(s recovery.Step) {
			mu.Lock()
			defer mu.Unlock()
			planStep(e.stdout, p.Name, s)
		},
	}
	planStarting(e, p.Name, action)
	var res *recovery.Result
	switch action {
	case "start":
		res, err = r.Start(ctx, p, at)
	case "undo":
		res, err = r.Undo(ctx, p)
	default:
		res, err = r.Commit(ctx, p)
	}
	return planEnded(e, p.Name, action, res.VMs, len(res.Ready), res.Took, err)
}

// plan returns the failover plan named, or a usage error that lists those
// there are.
func (w *workspace) plan(name string) (*config.FailoverPlan, error) {
	p, ok := w.cfg.FailoverPlans[name]
	if !ok {
		names := slices.Sorted(maps.Keys(w.cfg.FailoverPlans))
		if len(names) == 0 {
			return nil, usagef("no failover plan %q: the configuration declares none (see failover_plan in docs/configuration.md)", name)
		}
		return nil, usagef("no failover plan %q (plans: %s)", name, strings.Join(names, ", "))
	}
	return p, nil
}

// runFailoverPlanRemote asks a ferry server to run the plan and shows
// what it did as a run here shows it (the steps once the plan ended).
func runFailoverPlanRemote(ctx context.Context, e *env, c *client.Client, name, action string, at time.Time) error {
	point := ""
	if !at.IsZero() {
		point = at.Format(time.RFC3339)
	}
	if _, err := c.FailoverPlan(ctx, name); errors.Is(err, errdefs.ErrNotFound) {
		return usagef("%v on ferry server at %s", err, c.Address())
	} else if err != nil {
		return remoteError(err)
	}
	planStarting(e, name, action)
	apiAction := action
	if action == "start" {
		apiAction = "failover"
	}
	run, err := c.RunFailoverPlan(ctx, name, apiAction, point)
	if run == nil {
		if ctx.Err() != nil {
			return &interruptedError{msg: fmt.Sprintf("stopped waiting for failover plan %s: it goes on on ferry server at %s ('ferry status' shows its VMs)", name, c.Address())}
		}
		return remoteError(err)
	}
	for _, s := range run.Steps {
		planStep(e.stdout, name, s)
	}
	if err != nil {
		err = remoteError(err)
	}
	return planEnded(e, name, action, run.VMs, len(run.Ready), time.Duration(run.TookSeconds*float64(time.Second)), err)
}

// planStarting says what a plan's action begins.
func planStarting(e *env, name, action string) {
	fmt.Fprintf(e.stdout, "failover plan %s: %s\n", name, map[string]string{"start": "starting", "undo": "undoing", "commit": "committing"}[action])
	flush(e.stdout)
}

// planStep shows a step of a plan.
func planStep(w io.Writer, plan string, s recovery.Step) {
	where := "plan " + plan
	switch {
	case s.VM != "":
		where = s.VM
	case s.Group != "":
		where = "group " + s.Group
	}
	fmt.Fprintf(w, "  %s %s: %s", s.Time.Local().Format(time.TimeOnly), where, s.What)
	if s.Message != "" {
		fmt.Fprintf(w, " (%s)", s.Message)
	}
	fmt.Fprintln(w)
}

// planEnded says how a plan's action ended: err, after the VMs a start
// that stopped had started; or what it did.
func planEnded(e *env, name, action string, vms []recovery.VMResult, ready int, took time.Duration, err error) error {
	if err != nil {
		if action == "start" {
			var started []string
			for _, vm := range vms {
				if vm.Error == "" {
					started = append(started, vm.VM)
				}
			}
			if len(started) > 0 {
				fmt.Fprintf(e.stdout, "started before it stopped: %s; return them with 'ferry failover plan undo %s'\n", strings.Join(started, ", "), name)
			}
		}
		return err
	}
	switch action {
	case "start":
		fmt.Fprintf(e.stdout, "failover plan %s: %d VMs failed over, %d groups up, in %s; undo with 'ferry failover plan undo %s', or make it permanent with 'ferry failover plan commit %s'\n",
			name, len(vms), ready, took.Round(100*time.Millisecond), name, name)
	case "undo":
		fmt.Fprintf(e.stdout, "failover plan %s: %d VMs returned to replication\n", name, len(vms))
	default:
		fmt.Fprintf(e.stdout, "failover plan %s: %d VMs committed: they are production VMs now and have left their jobs\n", name, len(vms))
	}
	return nil
}

// parsePointTime reads a point in time: RFC 3339, or a local date and
// time ("2026-12-06 14:30", seconds optional).
func parsePointTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{time.DateTime, "2006-01-02 15:04", "2006-01-02T15:04", time.DateOnly} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("write latest, or a time such as 2026-12-06 14:30 or 2026-12-06T14:30:00Z")
}
