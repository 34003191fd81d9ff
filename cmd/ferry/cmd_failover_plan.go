package main

import (
	"context"
	"fmt"
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
	"github.com/ferry-dr/ferry/sdk"
)

// runFailoverPlan runs 'ferry failover plan [undo|commit] NAME [--point
// latest|TIME]'.
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
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	p, ok := w.cfg.FailoverPlans[pos[0]]
	if !ok {
		names := slices.Sorted(maps.Keys(w.cfg.FailoverPlans))
		if len(names) == 0 {
			return usagef("no failover plan %q: the configuration declares none (see failover_plan in docs/configuration.md)", pos[0])
		}
		return usagef("no failover plan %q (plans: %s)", pos[0], strings.Join(names, ", "))
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
			where := "plan " + p.Name
			switch {
			case s.VM != "":
				where = s.VM
			case s.Group != "":
				where = "group " + s.Group
			}
			fmt.Fprintf(e.stdout, "  %s %s: %s", s.Time.Local().Format(time.TimeOnly), where, s.What)
			if s.Message != "" {
				fmt.Fprintf(e.stdout, " (%s)", s.Message)
			}
			fmt.Fprintln(e.stdout)
		},
	}
	fmt.Fprintf(e.stdout, "failover plan %s: %s\n", p.Name, map[string]string{"start": "starting", "undo": "undoing", "commit": "committing"}[action])
	var res *recovery.Result
	switch action {
	case "start":
		res, err = r.Start(ctx, p, at)
	case "undo":
		res, err = r.Undo(ctx, p)
	default:
		res, err = r.Commit(ctx, p)
	}
	if err != nil {
		if action == "start" && len(res.VMs) > 0 {
			var started []string
			for _, vm := range res.VMs {
				if vm.Error == "" {
					started = append(started, vm.VM)
				}
			}
			if len(started) > 0 {
				fmt.Fprintf(e.stdout, "started before it stopped: %s; return them with 'ferry failover plan undo %s'\n", strings.Join(started, ", "), p.Name)
			}
		}
		return err
	}
	switch action {
	case "start":
		fmt.Fprintf(e.stdout, "failover plan %s: %d VMs failed over, %d groups up, in %s; undo with 'ferry failover plan undo %s', or make it permanent with 'ferry failover plan commit %s'\n",
			p.Name, len(res.VMs), len(res.Ready), res.Took.Round(100*time.Millisecond), p.Name, p.Name)
	case "undo":
		fmt.Fprintf(e.stdout, "failover plan %s: %d VMs returned to replication\n", p.Name, len(res.VMs))
	default:
		fmt.Fprintf(e.stdout, "failover plan %s: %d VMs committed: they are production VMs now and have left their jobs\n", p.Name, len(res.VMs))
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
