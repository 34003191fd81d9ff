package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func init() {
	register(&command{
		name: "status",
		summary: `Show each job's last session and the state of its replicas.

A session that is running is shown as running, with the process that runs
it and its progress (recorded about once a second by that run). A job's
schedule is shown with what runs it: a ferry server that holds the
configuration's jobs, or nothing, and then the job runs when told to
('ferry run JOB', from cron or a systemd timer for instance).`,
		usage: "ferry [--config DIR] status [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runStatus(e, args, *asJSON) }
		},
	})
}

type jobStatus struct {
	Job      string `json:"job"`
	Schedule string `json:"schedule,omitempty"`
	// Scheduled says whether something runs the job at its schedule:
	// ScheduledBy what (a ferry server), NextRun when, if known. When
	// nothing does, the job runs only when told to ('ferry run').
	Scheduled   bool             `json:"scheduled"`
	ScheduledBy string           `json:"scheduled_by,omitempty"`
	NextRun     *time.Time       `json:"next_run,omitempty"`
	LastSession *catalog.Session `json:"last_session,omitempty"`
	VMs         []vmStatus       `json:"vms"`
}

// schedulerFunc says what runs a job at its schedule ("" when nothing
// does) and when it will run it next (the zero time when that is not
// known).
type schedulerFunc func(job *config.Job) (by string, next time.Time)

// unscheduled is for jobs that nothing runs at their schedules.
func unscheduled(*config.Job) (string, time.Time) { return "", time.Time{} }

// scheduledBy is for jobs a ferry server runs: the scheduled ones are
// run by it, at a time the server knows (its API says it).
func scheduledBy(ctl *catalog.Controller) schedulerFunc {
	return func(j *config.Job) (string, time.Time) {
		if j.Schedule.IsZero() {
			return "", time.Time{}
		}
		return ctl.String(), time.Time{}
	}
}

type vmStatus struct {
	VM            string     `json:"vm"`
	Replica       string     `json:"replica,omitempty"`
	State         string     `json:"state"`
	FailoverPoint string     `json:"failover_point,omitempty"`
	RestorePoints int        `json:"restore_points"`
	Newest        *time.Time `json:"newest_point,omitempty"`
}

func runStatus(e *env, args []string, asJSON bool) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	w, err := openWorkspace(context.Background(), e)
	if err != nil {
		return err
	}
	defer w.Close()
	sched := unscheduled
	if ctl, err := w.cat.Controller(); err != nil {
		return err
	} else if ctl != nil {
		sched = scheduledBy(ctl)
	}
	// One read transaction: a consistent picture, and one open of the
	// catalog, which a running session writes to now and then.
	var out []jobStatus
	err = w.cat.View(func(tx *catalog.Tx) error {
		for _, name := range w.jobNames() {
			st, err := statusOf(tx, w.cfg.Jobs[name], sched)
			if err != nil {
				return err
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if asJSON {
		if out == nil {
			out = []jobStatus{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(e.stdout, "no jobs in %s\n", w.cfg.Dir)
		return nil
	}
	for _, st := range out {
		fmt.Fprintln(e.stdout, jobLine(st))
		if b := slowestDisk(st.LastSession); b != nil {
			fmt.Fprintf(e.stdout, "  its slowest disk was busy: %s\n", b)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  VM\tREPLICA\tSTATE\tPOINTS\tNEWEST")
		for _, v := range st.VMs {
			newest := "-"
			if v.Newest != nil {
				newest = v.Newest.Local().Format(time.DateTime)
			}
			state := v.State
			if v.FailoverPoint != "" {
				state += " (from " + v.FailoverPoint + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", v.VM, orDash(v.Replica), state, v.RestorePoints, newest)
		}
		tw.Flush()
	}
	return nil
}

// jobLine is the first line of a job's status: its last session, and its
// schedule and next run.
func jobLine(st jobStatus) string {
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
	return line
}

// statusOf reads the status of job; sched says what runs it at its
// schedule, if anything does, and when next.
func statusOf(tx *catalog.Tx, job *config.Job, sched schedulerFunc) (jobStatus, error) {
	name := job.Name
	st := jobStatus{Job: name, VMs: []vmStatus{}}
	if !job.Schedule.IsZero() {
		st.Schedule = job.Schedule.String()
	}
	if by, next := sched(job); by != "" {
		st.Scheduled, st.ScheduledBy = true, by
		if !next.IsZero() {
			st.NextRun = &next
		}
	}
	ss, err := tx.Sessions(name, 1)
	if err != nil {
		return st, err
	}
	if len(ss) > 0 {
		st.LastSession = &ss[0]
	}
	vms := job.VMs
	if job.Selects() {
		// The VMs its selectors picked are known by their replicas;
		// status does not ask the source.
		vms = slices.Clone(job.VMs)
		reps, err := tx.Replicas(name)
		if err != nil {
			return st, err
		}
		for _, r := range reps {
			if !slices.Contains(vms, r.VM) {
				vms = append(vms, r.VM)
			}
		}
	}
	for _, vm := range vms {
		vs := vmStatus{VM: vm, State: "no replica yet"}
		r, err := tx.Replica(name, vm)
		switch {
		case err == nil:
			vs.Replica, vs.State, vs.FailoverPoint = r.ReplicaName, string(r.State), r.FailoverPoint
		case !errors.Is(err, errdefs.ErrNotFound):
			return st, err
		}
		ps, err := tx.RestorePoints(name, vm)
		if err != nil {
			return st, err
		}
		if len(ps) > 0 {
			vs.RestorePoints = len(ps)
			newest := ps[len(ps)-1].Created
			vs.Newest = &newest
		}
		st.VMs = append(st.VMs, vs)
	}
	return st, nil
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
