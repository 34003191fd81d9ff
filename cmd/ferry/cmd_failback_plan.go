package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// runFailbackPlan runs 'ferry failback plan [switch|commit|undo] NAME
// [--switch]', here or through a ferry server.
func runFailbackPlan(e *env, pos []string, sw, asJSON bool) error {
	action := failback.Sync
	if len(pos) > 0 {
		switch pos[0] {
		case "switch", "commit", "undo":
			action, pos = failback.Action(pos[0]), pos[1:]
		}
	}
	if len(pos) != 1 {
		return usagef("name a failover plan")
	}
	switch {
	case sw && action != failback.Sync:
		return usagef("--switch goes with a sync ('ferry failback plan NAME --switch'); 'ferry failback plan %s' needs none", action)
	case sw:
		action = failback.Switch
	}
	name := pos[0]
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		return runFailbackPlanRemote(ctx, e, c, name, action, asJSON)
	}
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	p, err := w.plan(name)
	if err != nil {
		return err
	}
	release, err := w.holdJobs(fmt.Sprintf("ferry failback plan %s %s", action, name), p.Jobs()...)
	if err != nil {
		return fmt.Errorf("failback of failover plan %q: %w", name, err)
	}
	defer release()
	eng, err := w.controlEngine()
	if err != nil {
		return err
	}
	out := &server.PlanRun{Plan: name, Action: string(action), VMs: []recovery.VMResult{}, Steps: []recovery.Step{}}
	var mu sync.Mutex
	r := &recovery.Runner{
		Jobs:      w.cfg.Jobs,
		Catalog:   w.cat,
		Failback:  eng.FailbackVM,
		Failbacks: w.cat,
		Dir:       w.cfg.Dir,
		Progress: func(s recovery.Step) {
			mu.Lock()
			defer mu.Unlock()
			out.Steps = append(out.Steps, s)
			if !asJSON {
				planStep(e.stdout, name, s)
				flush(e.stdout)
			}
		},
	}
	if !asJSON {
		failbackPlanStarting(e, name, action)
	}
	res, err := r.FailbackPlan(ctx, p, action)
	mu.Lock()
	defer mu.Unlock()
	out.Record(res, err)
	if asJSON {
		if jerr := writeJSON(e, out); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	return failbackPlanEnded(e, out, err)
}

// runFailbackPlanRemote asks a ferry server to run the plan's failback and
// shows what it did as a run here shows it.
func runFailbackPlanRemote(ctx context.Context, e *env, c *client.Client, name string, action failback.Action, asJSON bool) error {
	if _, err := c.FailoverPlan(ctx, name); errors.Is(err, errdefs.ErrNotFound) {
		return usagef("%v on ferry server at %s", err, c.Address())
	} else if err != nil {
		return remoteError(err)
	}
	if !asJSON {
		failbackPlanStarting(e, name, action)
	}
	run, err := c.FailbackPlan(ctx, name, string(action))
	if run == nil {
		if ctx.Err() != nil {
			return &interruptedError{msg: fmt.Sprintf("stopped waiting for the failback of plan %s: it goes on on ferry server at %s ('ferry status' shows its VMs)", name, c.Address())}
		}
		return remoteError(err)
	}
	if err != nil {
		err = remoteError(err)
	}
	if asJSON {
		if jerr := writeJSON(e, run); jerr != nil && err == nil {
			err = jerr
		}
		return err
	}
	for _, s := range run.Steps {
		planStep(e.stdout, name, s)
	}
	return failbackPlanEnded(e, run, err)
}

func failbackPlanStarting(e *env, name string, action failback.Action) {
	what := map[failback.Action]string{failback.Sync: "syncing", failback.Switch: "switching to production", failback.Commit: "committing", failback.Undo: "undoing"}[action]
	fmt.Fprintf(e.stdout, "failback of plan %s: %s\n", name, what)
	flush(e.stdout)
}

// failbackPlanEnded shows every VM's failback state, then what to do
// next (or err).
func failbackPlanEnded(e *env, run *server.PlanRun, err error) error {
	name := run.Plan
	if len(run.VMs) > 0 {
		vms := slices.Clone(run.VMs)
		slices.SortStableFunc(vms, func(a, b recovery.VMResult) int { return strings.Compare(a.VM, b.VM) })
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  VM\tGROUP\tFAILBACK")
		for _, v := range vms {
			state := v.State
			switch {
			case state == "" && v.Error == "" && (run.Action == "commit" || run.Action == "undo"):
				state = run.Action + " done"
			case state == "":
				state = "-"
			}
			if v.Error != "" {
				state += " (FAILED: " + firstLine(v.Error) + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.VM, v.Group, state)
		}
		tw.Flush()
	}
	if err != nil {
		return err
	}
	took := time.Duration(run.TookSeconds * float64(time.Second)).Round(100 * time.Millisecond)
	switch failback.Action(run.Action) {
	case failback.Sync:
		fmt.Fprintf(e.stdout, "failback of plan %s: %d VMs synced in %s; the replicas still run. Sync again, or switch with 'ferry failback plan switch %s'\n", name, len(run.VMs), took, name)
	case failback.Switch:
		fmt.Fprintf(e.stdout, "failback of plan %s: %d VMs run at production, %d groups up, in %s. Commit with 'ferry failback plan commit %s', or undo with 'ferry failback plan undo %s'\n",
			name, len(run.VMs), len(run.Ready), took, name, name)
	case failback.Commit:
		fmt.Fprintf(e.stdout, "failback of plan %s: %d VMs committed: production runs, the replicas are back in replication\n", name, len(run.VMs))
	case failback.Undo:
		fmt.Fprintf(e.stdout, "failback of plan %s: %d VMs undone: production is as it was, the replicas run failed over again\n", name, len(run.VMs))
	}
	return nil
}

// holdJobs keeps sessions of jobs, and other commands that hold them,
// out while what runs (see catalog.HoldJobs).
func (w *workspace) holdJobs(what string, jobs ...string) (release func(), err error) {
	host, _ := os.Hostname()
	return w.cat.HoldJobs(jobs, catalog.Holder{What: what, PID: os.Getpid(), Host: host, Since: time.Now().UTC()})
}

// completeFailbackPlan completes 'ferry failback plan [switch|commit|undo]
// NAME': the actions (plan names are not completed, as for failover).
func completeFailbackPlan(_ string, args []string) []string {
	if len(args) == 0 {
		return []string{"switch", "commit", "undo"}
	}
	return nil
}
