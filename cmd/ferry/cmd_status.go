package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/status"
)

func init() {
	register(&command{
		name: "status",
		summary: `Show each job's last session and the state of its replicas.

A session that is running is shown as running, with the process that runs
it and its progress (recorded about once a second by that run). A job's
schedule is shown with what runs it: a ferry server that holds the
configuration's jobs, or nothing, and then the job runs when told to
('ferry run JOB', from cron or a systemd timer for instance). Through a
ferry server (--server or FERRY_ADDR) it shows the next run of each
scheduled job. Each VM shows its last test failover (of a plan or of the
VM alone), and each failover plan its last test: when, whether it passed,
and the recovery time it achieved. A VM in failback shows the failback's
state (syncing, synced, switching, starting, switched, committing,
undoing), since when, and the production VM it goes to.`,
		usage: "ferry [--config DIR] status [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runStatus(e, args, *asJSON) }
		},
	})
}

// scheduledBy is for jobs a ferry server runs: the scheduled ones are
// run by it, at a time the server knows (its API says it, and status
// through the server shows it).
func scheduledBy(ctl *catalog.Controller) status.Scheduler {
	return status.ScheduledBy(ctl.String(), nil)
}

func runStatus(e *env, args []string, asJSON bool) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	ctx := context.Background()
	var out []status.Job
	var plans []status.Plan
	var where string
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		// The server knows when it runs each job next.
		if out, err = c.Status(ctx); err != nil {
			return remoteError(err)
		}
		fps, err := c.FailoverPlans(ctx)
		if err != nil {
			return remoteError(err)
		}
		for _, p := range fps {
			plans = append(plans, status.Plan{Plan: p.Name, LastTest: p.LastTest, TestSchedule: p.TestSchedule, NextTest: p.NextTest})
		}
		where = "on ferry server at " + c.Address()
	} else {
		w, err := openWorkspace(ctx, e)
		if err != nil {
			return err
		}
		defer w.Close()
		sched := status.Unscheduled
		if ctl, err := w.cat.Controller(); err != nil {
			return err
		} else if ctl != nil {
			sched = scheduledBy(ctl)
		}
		jobs := make([]*config.Job, 0, len(w.cfg.Jobs))
		for _, name := range w.jobNames() {
			jobs = append(jobs, w.cfg.Jobs[name])
		}
		if out, err = status.Jobs(w.cat, jobs, sched, time.Now()); err != nil {
			return err
		}
		if plans, err = status.Plans(w.cat, slices.Sorted(maps.Keys(w.cfg.FailoverPlans))); err != nil {
			return err
		}
		for i := range plans {
			plans[i].TestSchedule = w.cfg.FailoverPlans[plans[i].Plan].TestSchedule.String()
		}
		status.AttachPlans(out, plans, w.cfg.FailoverPlans)
		where = "in " + w.cfg.Dir
	}
	if asJSON {
		if out == nil {
			out = []status.Job{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(e.stdout, "no jobs %s\n", where)
		return nil
	}
	for _, st := range out {
		fmt.Fprintln(e.stdout, jobLine(st))
		if b := slowestDisk(st.LastSession); b != nil {
			fmt.Fprintf(e.stdout, "  its slowest disk was busy: %s\n", b)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  VM\tREPLICA\tSTATE\tPOINTS\tNEWEST\tLAST TEST")
		for _, v := range st.VMs {
			newest := "-"
			if v.Newest != nil {
				newest = v.Newest.Local().Format(time.DateTime)
			}
			if v.RPOBreached {
				newest += " (RPO BREACHED)"
			}
			state := v.State
			if v.FailoverPoint != "" {
				state += " (from " + v.FailoverPoint + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\n", v.VM, orDash(v.Replica), state, v.RestorePoints, newest, vmTestCell(v.LastTest))
		}
		tw.Flush()
		for _, v := range st.VMs {
			if v.Failback != nil {
				fmt.Fprintln(e.stdout, failbackLine(st.Job, v))
			}
		}
	}
	for _, p := range plans {
		fmt.Fprintln(e.stdout, planLine(p))
	}
	return nil
}

// failbackLine is a VM's failback under way: its state and since when,
// the production VM it goes to, and what its syncs sent.
func failbackLine(job string, v status.VM) string {
	f := v.Failback
	prod := "production vm " + f.Production
	if f.Created {
		prod += " (created by the failback)"
	}
	line := fmt.Sprintf("  %s: failback %s %s since %s, to %s; %s, %s sent", v.VM, f.ID, f.State, f.Since.Local().Format(time.DateTime), prod,
		count(f.Syncs, "sync"), formatBytes(f.Sent))
	if f.LastSync != nil {
		line += ", last ended " + f.LastSync.Local().Format(time.DateTime)
	}
	return line + " ('ferry failback status " + job + " " + v.VM + "')"
}

// vmTestCell is a VM's last test in its status table: "passed" or
// "FAILED", when, and the plan it was part of.
func vmTestCell(t *catalog.VMTest) string {
	if t == nil {
		return "-"
	}
	cell := "FAILED"
	if t.Passed {
		cell = "passed"
	}
	cell += " " + t.Started.Local().Format(time.DateTime)
	if t.Plan != "" {
		cell += " (plan " + t.Plan + ")"
	}
	return cell
}

// planLine is a failover plan's last test: when, its verdict and recovery
// time, and test VMs it could not remove; then its next scheduled test.
func planLine(p status.Plan) string {
	line := "failover plan " + p.Plan
	t := p.LastTest
	if t == nil {
		return line + ": never tested (ferry failover plan " + p.Plan + " --test)" + nextTest(p)
	}
	line += ": last test " + t.Run + " at " + t.Started.Local().Format(time.DateTime)
	if t.Passed {
		line += fmt.Sprintf(" passed, recovery time %s", seconds(t.RecoverySeconds))
	} else {
		why, _, _ := strings.Cut(t.Error, "\n")
		line += " FAILED: " + why
	}
	if len(t.NotRemoved) > 0 {
		line += fmt.Sprintf("; test VMs left on the target: %s (ferry failover plan %s --test --cleanup)", strings.Join(t.NotRemoved, ", "), p.Plan)
	}
	return line + nextTest(p)
}

// nextTest is the end of a plan's line for its test_schedule: when the
// server tests it next, or the schedule only when that is not known here.
func nextTest(p status.Plan) string {
	switch {
	case p.NextTest != nil:
		return "; next test at " + p.NextTest.Local().Format(time.DateTime)
	case p.TestSchedule != "":
		return fmt.Sprintf("; tested at %q by ferry server", p.TestSchedule)
	}
	return ""
}

// jobLine is the first line of a job's status: its last session, and its
// schedule and next run.
func jobLine(st status.Job) string {
	line := "job " + st.Job
	if s := st.LastSession; s != nil && s.Result == catalog.ResultRunning {
		line += ": " + runningLine(s)
	} else if s != nil {
		line += fmt.Sprintf(": last session %s %s at %s", s.ID, s.Result, s.Started.Local().Format(time.DateTime))
	} else {
		line += ": never run"
	}
	switch {
	case st.NextRun != nil:
		line += fmt.Sprintf("; next run %s (%s)", st.NextRun.Local().Format(time.DateTime), st.Schedule)
	case st.Scheduled:
		line += fmt.Sprintf("; schedule %s, run by %s", st.Schedule, st.ScheduledBy)
	case st.Schedule != "":
		line += fmt.Sprintf("; schedule %s, not run automatically (no ferry server runs this configuration): run it with 'ferry run %s'", st.Schedule, st.Job)
	}
	if st.RPO != "" {
		breached := 0
		for _, v := range st.VMs {
			if v.RPOBreached {
				breached++
			}
		}
		line += "; rpo " + st.RPO
		if breached > 0 {
			line += fmt.Sprintf(", breached by %s", count(breached, "VM"))
		}
	}
	return line
}

// runningLine describes a running session: since when, which process runs
// it, and how far it got when it last recorded its progress.
func runningLine(s *catalog.Session) string {
	line := fmt.Sprintf("session %s running since %s", s.ID, s.Started.Local().Format(time.DateTime))
	if o := s.Owner; o != nil {
		line += fmt.Sprintf(" (pid %d", o.PID)
		if o.Host != "" {
			line += " on " + o.Host
		}
		line += ")"
	}
	p := s.Progress
	if p == nil {
		return line + ", no progress recorded yet"
	}
	pct := 0.0
	if p.Total > 0 {
		pct = float64(p.Done) * 100 / float64(p.Total)
	}
	return line + fmt.Sprintf(", %.0f%% of the %s begun (%s of %s), %s and %s done at %s",
		pct, count(p.Disks, "disk"), size(p.Done), size(p.Total), count(p.DisksDone, "disk"), count(p.VMsDone, "VM"),
		p.Updated.Local().Format(time.TimeOnly))
}

// count is "1 disk", "2 disks".
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// slowestDisk returns the bottleneck statistics of the disk that took
// longest in a finished session; nil when none has any.
func slowestDisk(s *catalog.Session) *catalog.Busy {
	if s == nil || s.Result == catalog.ResultRunning {
		return nil
	}
	var slowest *catalog.DiskResult
	for i := range s.VMs {
		for j := range s.VMs[i].Disks {
			d := &s.VMs[i].Disks[j]
			if d.Busy != nil && (slowest == nil || d.Duration > slowest.Duration) {
				slowest = d
			}
		}
	}
	if slowest == nil {
		return nil
	}
	return slowest.Busy
}
