package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// replicaStates is each VM's replica state, as ferry status says.
func (l *lab) replicaStates() map[string]string {
	l.t.Helper()
	r := ferry(l.t, l.cfg, "status")
	out := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasSuffix(f[1], "_replica") {
			out[f[0]] = f[2]
		}
	}
	return out
}

func TestAFailoverPlanOfThreeGroups(t *testing.T) {
	l := newLab(t, 3,
		vmSpec{name: "db-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.21/24"},
		vmSpec{name: "app-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.31/24"},
		vmSpec{name: "web-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.11/24"})
	for _, vm := range []string{"db-01", "app-01", "web-01"} {
		l.write(vm, 0, 0, 1<<20)
	}
	if s := l.run(); s.code != 0 {
		t.Fatalf("run: %d\n%s", s.code, s.stderr)
	}
	base, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	plan := func(appReady string) {
		l.writeConfig(string(base) + `
failover_plan "shop" {
  group "db" {
    vms = ["e2e/db-01"]
    ready { delay = "100ms" }
  }
  group "app" {
    vms        = ["e2e/app-01"]
    depends_on = ["db"]
    ready ` + appReady + `
  }
  group "web" {
    vms        = ["e2e/web-01"]
    depends_on = ["app"]
  }
}
`)
	}
	// The app's check fails: the plan stops after app, web never starts,
	// and undo returns the two. (Its TCP check is tested in
	// core/recovery: here a network may answer for any address.)
	plan(`{
      script  = ["sh", "-c", "echo app is not up >&2; exit 1"]
      timeout = "5s"
    }`)
	// ferry plan says what the plan would do.
	if r := ferry(t, l.cfg, "plan"); r.code != 0 || !strings.Contains(r.stdout, "failover plan shop (ferry failover plan shop):") ||
		!strings.Contains(r.stdout, "2. group app after db; ready when sh -c") || !strings.Contains(r.stdout, "+   e2e/web-01: fails over to restore point") {
		t.Fatalf("plan: %s", r)
	}
	r := ferry(t, l.cfg, "failover", "plan", "shop")
	if r.code != 1 || !strings.Contains(r.stderr, `group "app" is not ready`) || !strings.Contains(r.stderr, "app is not up") || !strings.Contains(r.stdout, "started before it stopped: ") ||
		!strings.Contains(r.stdout, "group web: skipped") {
		t.Fatalf("plan with a failing check: %s", r)
	}
	if st := l.replicaStates(); st["db-01"] != "failed_over" || st["app-01"] != "failed_over" || st["web-01"] != "ready" {
		t.Fatalf("replicas after the stopped plan: %v", st)
	}
	if r := ferry(t, l.cfg, "failover", "plan", "undo", "shop"); r.code != 0 || !strings.Contains(r.stdout, "2 VMs returned to replication") {
		t.Fatalf("undo: %s", r)
	}
	if st := l.replicaStates(); st["db-01"] != "ready" || st["app-01"] != "ready" || st["web-01"] != "ready" {
		t.Fatalf("replicas after the undo: %v", st)
	}
	// With a check that passes, the three groups come up in order.
	plan(`{ script = ["sh", "-c", "test \"$FERRY_VMS\" = e2e/app-01 && echo \"$FERRY_ADDRESSES\" | grep -q 10.2.0.31"] }`)
	r = ferry(t, l.cfg, "failover", "plan", "shop", "--point", "latest")
	if r.code != 0 || !strings.Contains(r.stdout, "3 VMs failed over, 3 groups up") {
		t.Fatalf("plan: %s", r)
	}
	db, app, web := strings.Index(r.stdout, "group db: ready"), strings.Index(r.stdout, "e2e/app-01: failed over"), strings.Index(r.stdout, "e2e/web-01: failed over")
	if db < 0 || app < db || web < app {
		t.Fatalf("groups out of order:\n%s", r.stdout)
	}
	if r := ferry(t, l.cfg, "failover", "plan", "undo", "shop"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	// A time before every restore point: nothing starts.
	if r := ferry(t, l.cfg, "failover", "plan", "shop", "--point", "2001-01-01 00:00"); r.code != 1 || !strings.Contains(r.stderr, "no restore point at or before") {
		t.Fatalf("plan to a time before the points: %s", r)
	}
	if st := l.replicaStates(); st["db-01"] != "ready" {
		t.Fatalf("replicas after a refused plan: %v", st)
	}
}

// TestAFailoverPlanThroughTheServer: with FERRY_ADDR, ferry failover plan
// asks a real ferry server, which runs the plan over the local plugin: a
// plan whose second group's check fails stops and names the VMs it
// started, undo returns them, and with the check passing both groups come
// up.
func TestAFailoverPlanThroughTheServer(t *testing.T) {
	l := newLab(t, 3,
		vmSpec{name: "db-01", disks: []string{"4MiB"}},
		vmSpec{name: "web-01", disks: []string{"4MiB"}})
	for _, vm := range []string{"db-01", "web-01"} {
		l.write(vm, 0, 0, 1<<20)
	}
	if s := l.run(); s.code != 0 {
		t.Fatalf("run: %d\n%s", s.code, s.stderr)
	}
	base, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	l.writeConfig(string(base) + `
failover_plan "shop" {
  group "db" { vms = ["e2e/db-01"] }
  group "web" {
    vms        = ["e2e/web-01"]
    depends_on = ["db"]
    ready {
      script  = ["sh", "-c", "test -e web-ready || { echo web is not up >&2; exit 1; }"]
      timeout = "5s"
    }
  }
}
`)
	operator := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)
	s := l.startServer()
	away := t.TempDir()
	as := func(args ...string) result {
		t.Helper()
		return runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=", "FERRY_ADDR=" + s.url, "FERRY_TOKEN=" + operator},
			"ferry", append([]string{"-C", away}, args...)...)
	}
	var plans []struct {
		Name   string `json:"name"`
		Groups []struct {
			Name string   `json:"name"`
			VMs  []string `json:"vms"`
		} `json:"groups"`
	}
	if code := s.call(t, operator, "GET", "/v1/failover-plans", &plans); code != 200 || len(plans) != 1 || len(plans[0].Groups) != 2 || plans[0].Groups[1].VMs[0] != "e2e/web-01" {
		t.Fatalf("GET /v1/failover-plans: %d %+v", code, plans)
	}

	r := as("failover", "plan", "shop")
	if r.code != 1 || !strings.Contains(r.stderr, `group "web" is not ready`) || !strings.Contains(r.stderr, "web is not up") ||
		!strings.Contains(r.stdout, "started before it stopped: ") || !strings.Contains(r.stdout, "e2e/db-01") || !strings.Contains(r.stdout, "group db: ready") {
		t.Fatalf("a plan that stops, through the server: %s", r)
	}
	if st := l.replicaStates(); st["db-01"] != "failed_over" || st["web-01"] != "failed_over" {
		t.Fatalf("replicas after the stopped plan: %v", st)
	}
	if r := as("failover", "plan", "undo", "shop"); r.code != 0 || !strings.Contains(r.stdout, "2 VMs returned to replication") {
		t.Fatalf("undo through the server: %s", r)
	}
	if st := l.replicaStates(); st["db-01"] != "ready" || st["web-01"] != "ready" {
		t.Fatalf("replicas after the undo: %v", st)
	}
	if err := os.WriteFile(filepath.Join(l.cfg, "web-ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := as("failover", "plan", "shop", "--point", "latest"); r.code != 0 || !strings.Contains(r.stdout, "2 VMs failed over, 2 groups up") {
		t.Fatalf("a plan through the server: %s", r)
	}
	if r := as("failover", "plan", "undo", "shop"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	if r := as("failover", "plan", "nosuch"); r.code != 2 || !strings.Contains(r.stderr, `no failover plan "nosuch" (plans: shop)`) {
		t.Fatalf("an unknown plan through the server: %s", r)
	}
}
