package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/status"
	"github.com/ferry-dr/ferry/scheduler"
)

// TestStatusSchedule: a job's status shows its schedule and what runs the
// job at it, and a next run only when that is known; when nothing runs
// it, it says how the job runs, and has no next run, in text or JSON.
func TestStatusSchedule(t *testing.T) {
	t.Parallel()
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	every, err := scheduler.Parse("every 1h", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	due := time.Date(2026, 12, 5, 10, 0, 0, 0, time.Local)
	atDue := func(*config.Job) (string, time.Time) { return "the scheduler", due }
	server := scheduledBy(&catalog.Controller{PID: 4242, Host: "dr-01", Since: due})
	tests := []struct {
		name     string
		job      *config.Job
		next     status.Scheduler
		line     string // the end of the job's line
		fields   map[string]any
		noFields []string
	}{
		{name: "schedule, nothing runs it", job: &config.Job{Name: "web", VMs: []string{"web-01"}, Schedule: every}, next: status.Unscheduled,
			line:     "job web: never run; schedule every 1h, not run automatically (no ferry server runs this configuration): run it with 'ferry run web'",
			fields:   map[string]any{"schedule": "every 1h", "scheduled": false},
			noFields: []string{"next_run", "scheduled_by"}},
		{name: "a ferry server runs it", job: &config.Job{Name: "web", VMs: []string{"web-01"}, Schedule: every}, next: server,
			line:     "job web: never run; schedule every 1h, run by ferry server (process 4242 on dr-01, since " + due.UTC().Format(time.RFC3339) + ")",
			fields:   map[string]any{"schedule": "every 1h", "scheduled": true, "scheduled_by": "ferry server (process 4242 on dr-01, since " + due.UTC().Format(time.RFC3339) + ")"},
			noFields: []string{"next_run"}},
		{name: "a ferry server runs the others", job: &config.Job{Name: "db", VMs: []string{"db-01"}}, next: server,
			line:     "job db: never run",
			fields:   map[string]any{"scheduled": false},
			noFields: []string{"schedule", "scheduled_by", "next_run"}},
		{name: "no schedule", job: &config.Job{Name: "db", VMs: []string{"db-01"}}, next: status.Unscheduled,
			line:     "job db: never run",
			fields:   map[string]any{"scheduled": false},
			noFields: []string{"schedule", "next_run"}},
		{name: "a scheduler runs it", job: &config.Job{Name: "web", VMs: []string{"web-01"}, Schedule: every}, next: atDue,
			line:   "job web: never run; next run 2026-12-05 10:00:00 (every 1h)",
			fields: map[string]any{"schedule": "every 1h", "scheduled": true, "scheduled_by": "the scheduler", "next_run": due.Format(time.RFC3339Nano)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st status.Job
			if err := cat.View(func(tx *catalog.Tx) (err error) { st, err = status.Of(tx, tt.job, tt.next); return err }); err != nil {
				t.Fatal(err)
			}
			if got := jobLine(st); got != tt.line {
				t.Errorf("status line %q, want %q", got, tt.line)
			}
			b, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.fields {
				if m[k] != v {
					t.Errorf("%s is %v, want %v, in %s", k, m[k], v, b)
				}
			}
			for _, k := range tt.noFields {
				if _, ok := m[k]; ok {
					t.Errorf("%s is in %s", k, b)
				}
			}
			if vms, ok := m["vms"].([]any); !ok || len(vms) != 1 || !strings.Contains(string(b), `"state":"no replica yet"`) {
				t.Errorf("vms in %s", b)
			}
		})
	}
}

// TestStatusTests: each VM shows its last test failover and each plan its
// last test, from what the catalog kept, in text and JSON.
func TestStatusTests(t *testing.T) {
	t.Parallel()
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	at := time.Date(2026, 12, 6, 9, 30, 0, 0, time.Local)
	for _, r := range []*catalog.TestResult{
		{Plan: "shop", Run: "r1", Started: at, Passed: true, RecoverySeconds: 2.345, TookSeconds: 4,
			VMs: []catalog.TestVMResult{{VM: "web/web-01", Group: "web", Test: "web-01-test-r1"}}},
		{Plan: "db", Run: "r2", Started: at.Add(time.Minute), Error: "group \"db\" is not ready: connection refused\nmore", NotRemoved: []string{"db-01-test-r2"},
			VMs: []catalog.TestVMResult{{VM: "db/db-01", Group: "db", Test: "db-01-test-r2"}}},
		{Job: "web", VM: "web-02", Run: "r3", Started: at.Add(2 * time.Minute), Passed: true, RecoverySeconds: 1,
			VMs: []catalog.TestVMResult{{VM: "web/web-02", Group: "web-02", Test: "web-02-test-r3"}}},
	} {
		if err := cat.PutTestResult(r); err != nil {
			t.Fatal(err)
		}
	}
	plans, err := status.Plans(cat, []string{"db", "never", "shop"})
	if err != nil {
		t.Fatal(err)
	}
	when := func(d time.Duration) string { return at.Add(d).Format(time.DateTime) }
	for i, want := range []string{
		"failover plan db: last test r2 at " + when(time.Minute) + ` FAILED: group "db" is not ready: connection refused; test VMs left on the target: db-01-test-r2 (ferry failover plan db --test --cleanup)`,
		"failover plan never: never tested (ferry failover plan never --test)",
		"failover plan shop: last test r1 at " + when(0) + " passed, recovery time 2.3s",
	} {
		if got := planLine(plans[i]); got != want {
			t.Errorf("plan line\n got %q\nwant %q", got, want)
		}
	}

	// A test_schedule: the next test, when a server says it; else the
	// schedule.
	next := at.Add(time.Hour)
	plans[1].NextTest, plans[1].TestSchedule = &next, "@weekly"
	plans[2].TestSchedule = "0 3 * * SUN"
	for i, want := range []string{
		"failover plan never: never tested (ferry failover plan never --test); next test at " + when(time.Hour),
		"failover plan shop: last test r1 at " + when(0) + ` passed, recovery time 2.3s; tested at "0 3 * * SUN" by ferry server`,
	} {
		if got := planLine(plans[i+1]); got != want {
			t.Errorf("plan line\n got %q\nwant %q", got, want)
		}
	}

	jobs, err := status.Jobs(cat, []*config.Job{{Name: "web", VMs: []string{"web-01", "web-02", "web-03"}}}, status.Unscheduled, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"passed " + when(0) + " (plan shop)", "passed " + when(2*time.Minute), "-"} {
		if got := vmTestCell(jobs[0].VMs[i].LastTest); got != want {
			t.Errorf("last test of %s: %q, want %q", jobs[0].VMs[i].VM, got, want)
		}
	}
	b, err := json.Marshal(jobs)
	if err != nil {
		t.Fatal(err)
	}
	var m []struct {
		VMs []struct {
			VM       string          `json:"vm"`
			LastTest *map[string]any `json:"last_test"`
		} `json:"vms"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if lt := m[0].VMs[0].LastTest; lt == nil || (*lt)["plan"] != "shop" || (*lt)["passed"] != true || (*lt)["recovery_seconds"] != 2.345 || (*lt)["run"] != "r1" {
		t.Errorf("last_test of web-01 in %s", b)
	}
	if m[0].VMs[2].LastTest != nil || strings.Count(string(b), `"last_test"`) != 2 {
		t.Errorf("last_test of a VM never tested in %s", b)
	}
}

// TestStatusRPO: the status of a job with an rpo says it, and which VMs'
// newest restore points are older (or that have none), in text and JSON.
func TestStatusRPO(t *testing.T) {
	t.Parallel()
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for vm, age := range map[string]time.Duration{"web-01": 5 * time.Hour, "web-02": time.Hour} {
		r := &catalog.Replica{Job: "web", VM: vm, ReplicaID: vm + "-r", ReplicaName: vm + "_replica", State: "ready"}
		if err := cat.CommitPoint(r, &catalog.RestorePoint{Job: "web", VM: vm, ID: vm + "-p1", Created: now.Add(-age)}); err != nil {
			t.Fatal(err)
		}
	}
	jobs := []*config.Job{{Name: "web", VMs: []string{"web-01", "web-02", "web-03"}, RPO: 4 * time.Hour}, {Name: "db", VMs: []string{"db-01"}}}
	out, err := status.Jobs(cat, jobs, status.Unscheduled, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := jobLine(out[0]), "job web: never run; rpo 4h, breached by 2 VMs"; got != want {
		t.Errorf("status line %q, want %q", got, want)
	}
	if got, want := jobLine(out[1]), "job db: never run"; got != want {
		t.Errorf("status line %q, want %q", got, want)
	}
	var breached []bool
	for _, v := range out[0].VMs {
		breached = append(breached, v.RPOBreached)
	}
	if fmt.Sprint(breached) != "[true false true]" || out[1].VMs[0].RPOBreached {
		t.Errorf("breached %v (web-01 5h old, web-02 1h, web-03 none), db %v", breached, out[1].VMs[0].RPOBreached)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"rpo":"4h"`) || strings.Count(string(b), `"rpo_breached":true`) != 2 || strings.Count(string(b), `"rpo"`) != 1 {
		t.Errorf("JSON %s", b)
	}
	for d, want := range map[time.Duration]string{4 * time.Hour: "4h", 90 * time.Minute: "1h30m", 30 * time.Minute: "30m", 45 * time.Second: "45s", 48 * time.Hour: "48h"} {
		var j status.Job
		j.CheckRPO(d, now)
		if j.RPO != want {
			t.Errorf("rpo %v is written %q, want %q", d, j.RPO, want)
		}
	}
}
