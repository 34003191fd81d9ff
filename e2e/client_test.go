package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/plan"
)

// TestTheCLIAsTheServersClient: with FERRY_ADDR and FERRY_TOKEN, the
// command line acts through a real ferry server: status shows the next
// run, run follows its session to the end, points, sessions, failover and
// its undo, and plan as the local plan; refused tokens say what to do.
func TestTheCLIAsTheServersClient(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB"}})
	// A schedule far enough away that only the asked run runs.
	l.writeConfig(`
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01"]
  schedule   = "every 1h"
  retention { restore_points = 3 }
}
`)
	l.write("web-01", 0, 0, 4<<20)
	operator := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)
	reader := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "dash").stdout)
	s := l.startServer()
	// The client runs elsewhere: in a folder without the configuration.
	away := t.TempDir()
	as := func(token string, args ...string) result {
		t.Helper()
		return runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=", "FERRY_ADDR=" + s.url, "FERRY_TOKEN=" + token},
			"ferry", append([]string{"-C", away}, args...)...)
	}

	// The plan through the server is the local plan.
	local := ferry(t, l.cfg, "plan", "--json")
	remote := as(reader, "plan", "--json")
	if local.code != 0 || remote.code != 0 || remote.stdout != local.stdout || !strings.Contains(remote.stdout, `"action": "create"`) {
		t.Fatalf("plan --json through the server:\n%s\nlocal:\n%s", remote, local)
	}
	// With the typed decision per VM, as the engine would execute it.
	var plans []plan.Plan
	if err := json.Unmarshal([]byte(remote.stdout), &plans); err != nil || len(plans) != 1 || len(plans[0].VMs) != 1 {
		t.Fatalf("plan --json through the server: %v\n%s", err, remote.stdout)
	}
	if d := plans[0].VMs[0]; d.VM != "web-01" || d.Verdict != plan.VerdictCreate || d.ReplicaName == "" || len(d.Disks) != 1 || d.Disks[0].Mode != catalog.ModeFull {
		t.Fatalf("the decision through the server: %+v", d)
	}

	var st []struct {
		Job       string     `json:"job"`
		Scheduled bool       `json:"scheduled"`
		NextRun   *time.Time `json:"next_run"`
		VMs       []struct {
			VM, State     string
			RestorePoints int `json:"restore_points"`
		} `json:"vms"`
	}
	if r := as(reader, "status", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || len(st) != 1 || !st[0].Scheduled ||
		st[0].NextRun == nil || time.Until(*st[0].NextRun) > time.Hour || time.Until(*st[0].NextRun) <= 0 {
		t.Fatalf("status --json through the server: %s", r)
	}

	// A run is asked of the server and followed to its end.
	r := as(operator, "run", "e2e")
	if r.code != 0 || !strings.Contains(r.stdout, "following it (Ctrl-C stops following, not the session)") ||
		!strings.Contains(r.stdout, "  web-01: success, restore point ") || !strings.Contains(r.stdout, "job e2e: success in ") {
		t.Fatalf("run through the server: %s", r)
	}
	if !strings.Contains(s.stderr.String(), `"session ended"`) {
		t.Fatalf("the server did not run the session:\n%s", s.stderr)
	}
	var run struct {
		ID     string `json:"id"`
		Result string `json:"result"`
		Totals struct {
			Success int `json:"success"`
		} `json:"totals"`
	}
	r = as(operator, "run", "e2e", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &run) != nil || run.Result != "success" || run.Totals.Success != 1 {
		t.Fatalf("run --json through the server: %s", r)
	}
	if r := as(reader, "points", "e2e", "web-01"); r.code != 0 || strings.Count(r.stdout, "web-01") != 2 || !strings.Contains(r.stdout, run.ID) {
		t.Fatalf("points through the server: %s", r)
	}
	if r := as(reader, "sessions", "e2e"); r.code != 0 || strings.Count(r.stdout, " e2e ") != 2 || !strings.Contains(r.stdout, run.ID) {
		t.Fatalf("sessions through the server: %s", r)
	}
	if r := as(reader, "session", run.ID); r.code != 0 || !strings.Contains(r.stdout, "session "+run.ID+" of job e2e: success") {
		t.Fatalf("session through the server: %s", r)
	}

	// A read token may not fail over; an operator's may, and undo it.
	if r := as(reader, "failover", "e2e", "web-01"); r.code != 1 || !strings.Contains(r.stderr, "FERRY_TOKEN holds a token that may only read") {
		t.Fatalf("failover with a read token: %s", r)
	}
	if r := as(operator, "failover", "e2e", "web-01"); r.code != 0 || !strings.Contains(r.stdout, "web-01 failed over to replica") {
		t.Fatalf("failover through the server: %s", r)
	}
	if r := as(reader, "status", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st[0].VMs[0].State != "failed_over" {
		t.Fatalf("status after the failover: %s", r)
	}
	if r := as(operator, "failover", "undo", "e2e", "web-01"); r.code != 0 || !strings.Contains(r.stdout, "failover of web-01 undone") {
		t.Fatalf("failover undo through the server: %s", r)
	}

	// Wrong: a token the server does not know, a job it does not have.
	if r := as("ferry_made_up", "status"); r.code != 1 || !strings.Contains(r.stderr, "unknown or revoked token; set FERRY_TOKEN") {
		t.Fatalf("status with a made-up token: %s", r)
	}
	if r := as(operator, "run", "nosuch"); r.code != 2 || !strings.Contains(r.stderr, `no job "nosuch" on ferry server at `+s.url) {
		t.Fatalf("run of a job the server lacks: %s", r)
	}
	// Without FERRY_ADDR, a run beside the server is refused with the way.
	if r := ferry(t, l.cfg, "run", "e2e"); r.code != 1 || !strings.Contains(r.stderr, "set FERRY_ADDR="+s.url) {
		t.Fatalf("a local run beside the server: %s", r)
	}
}
