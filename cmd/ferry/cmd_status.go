package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
)

func init() {
	register(&command{
		name:    "status",
		summary: `Show each job's last session and the state of its replicas.`,
		usage:   "ferry [-config DIR] status [--json]",
		run:     runStatus,
	})
}

type jobStatus struct {
	Job         string           `json:"job"`
	Schedule    string           `json:"schedule,omitempty"`
	NextRun     *time.Time       `json:"next_run,omitempty"`
	LastSession *catalog.Session `json:"last_session,omitempty"`
	VMs         []vmStatus       `json:"vms"`
}

type vmStatus struct {
	VM            string     `json:"vm"`
	Replica       string     `json:"replica,omitempty"`
	State         string     `json:"state"`
	FailoverPoint string     `json:"failover_point,omitempty"`
	RestorePoints int        `json:"restore_points"`
	Newest        *time.Time `json:"newest_point,omitempty"`
}

func runStatus(e *env, args []string) error {
	fs := commands["status"].flags(e)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	w, err := openWorkspace(context.Background(), e)
	if err != nil {
		return err
	}
	defer w.Close()
	var out []jobStatus
	for _, name := range w.jobNames() {
		job := w.cfg.Jobs[name]
		st := jobStatus{Job: name, VMs: []vmStatus{}}
		if !job.Schedule.IsZero() {
			st.Schedule = job.Schedule.String()
			if next := job.Schedule.Next(time.Now()); !next.IsZero() {
				st.NextRun = &next
			}
		}
		if ss, err := w.cat.Sessions(name, 1); err == nil && len(ss) > 0 {
			st.LastSession = &ss[0]
		}
		vms := job.VMs
		if job.Selects() {
			// The VMs its selectors picked are known by their replicas;
			// status does not ask the source.
			vms = slices.Clone(job.VMs)
			if reps, err := w.cat.Replicas(name); err == nil {
				for _, r := range reps {
					if !slices.Contains(vms, r.VM) {
						vms = append(vms, r.VM)
					}
				}
			}
		}
		for _, vm := range vms {
			vs := vmStatus{VM: vm, State: "no replica yet"}
			if r, err := w.cat.Replica(name, vm); err == nil {
				vs.Replica, vs.State, vs.FailoverPoint = r.ReplicaName, string(r.State), r.FailoverPoint
			}
			if ps, err := w.cat.RestorePoints(name, vm); err == nil && len(ps) > 0 {
				vs.RestorePoints = len(ps)
				newest := ps[len(ps)-1].Created
				vs.Newest = &newest
			}
			st.VMs = append(st.VMs, vs)
		}
		out = append(out, st)
	}
	if *asJSON {
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
		line := "job " + st.Job
		if s := st.LastSession; s != nil {
			line += fmt.Sprintf(": last session %s %s at %s", s.ID, s.Result, s.Started.Local().Format(time.DateTime))
		} else {
			line += ": never run"
		}
		if st.NextRun != nil {
			line += fmt.Sprintf("; next run %s (%s)", st.NextRun.Local().Format(time.DateTime), st.Schedule)
		}
		fmt.Fprintln(e.stdout, line)
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

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
