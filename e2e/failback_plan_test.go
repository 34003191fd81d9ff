package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/core/status"
)

var planVMs = []string{"db-01", "app-01", "web-01"}

// newPlanLab is a lab of three VMs in a failover plan of two groups, web
// and app depending on db, replicated and failed over by the plan after
// production changed past the restore points.
func newPlanLab(t *testing.T) *failbackLab {
	t.Helper()
	const size = 4 * mib
	l := &failbackLab{lab: newLab(t, 3,
		vmSpec{name: "db-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.21/24"},
		vmSpec{name: "app-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.31/24"},
		vmSpec{name: "web-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.11/24"}), sizes: []int64{size}}
	for _, vm := range planVMs {
		l.write(vm, 0, 0, 1<<20)
	}
	if s := l.run(); s.code != 0 {
		t.Fatalf("run: %s", s.stderr)
	}
	base, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	// db's check says when it runs (a file), and is where a test kills
	// ferry: it dies once, the first time the file kill-once is there.
	// The front's check runs against production's addresses.
	l.writeConfig(string(base) + `
failover_plan "shop" {
  group "db" {
    vms = ["e2e/db-01"]
    ready {
      script = ["sh", "-c", "echo \"$FERRY_FAILBACK $FERRY_ADDRESSES\" >> db-ready; if [ -e kill-once ]; then rm kill-once; kill -9 $PPID; sleep 5; fi"]
    }
  }
  group "front" {
    vms        = ["e2e/app-01", "e2e/web-01"]
    depends_on = ["db"]
    ready {
      script = ["sh", "-c", "test -z \"$FERRY_FAILBACK\" || { echo \"$FERRY_ADDRESSES\" | grep -q 10.1.0.31 && echo \"$FERRY_ADDRESSES\" | grep -q 10.1.0.11; }"]
    }
  }
}
`)
	for _, vm := range planVMs {
		l.scatterChange(l.prod, vm, 0, size)
	}
	if r := ferry(t, l.cfg, "failover", "plan", "shop"); r.code != 0 {
		t.Fatalf("failover plan: %s", r)
	}
	return l
}

// disks reads disk 0 of each VM of the plan, at production or of its
// replica.
func (l *failbackLab) disks(replica bool) map[string][]byte {
	out := map[string][]byte{}
	for _, vm := range planVMs {
		if replica {
			out[vm] = l.replicaDisk(vm, 0)
		} else {
			out[vm] = l.source(vm, 0)
		}
	}
	return out
}

func (l *failbackLab) replicasChange() {
	for _, vm := range planVMs {
		l.scatterChange(l.dr, vm+"_replica", 0, l.sizes[0])
	}
}

func (l *failbackLab) samePlanDisks(what string, got, want map[string][]byte) {
	l.t.Helper()
	for _, vm := range planVMs {
		sameBytes(l.t, what+", "+vm, got[vm], want[vm])
	}
}

// planFailback runs `ferry failback plan ARGS... --json`.
func (l *failbackLab) planFailback(args ...string) (server.PlanRun, result) {
	l.t.Helper()
	r := ferry(l.t, l.cfg, append(append([]string{"failback", "plan"}, args...), "--json")...)
	var run server.PlanRun
	if err := json.Unmarshal([]byte(r.stdout), &run); err != nil {
		l.t.Fatalf("ferry failback plan %v --json: %v\n%s", args, err, r)
	}
	return run, r
}

func vmStates(run server.PlanRun) string {
	var out []string
	for _, v := range run.VMs {
		out = append(out, v.VM+"="+v.State)
	}
	return strings.Join(out, " ")
}

func (l *failbackLab) allStates(run server.PlanRun, want string) {
	l.t.Helper()
	if len(run.VMs) != len(planVMs) {
		l.t.Fatalf("%s: VMs %s", run.Action, vmStates(run))
	}
	for _, v := range run.VMs {
		if v.State != want {
			l.t.Fatalf("%s: VMs %s, want each %q", run.Action, vmStates(run), want)
		}
	}
}

// TestFailbackOfAPlan: a plan of three VMs in two groups with a
// dependency, failed over, its replicas written: the plan's sync makes
// every production VM its replica byte for byte (ferry status shows the
// failbacks); while a command holds the job, failback and run are
// refused, naming it; the plan's undo gives every production VM back
// whole and the replicas run; a switch killed after the first group
// switched is finished by running it again, groups in the plan's order
// and checks against production's addresses, and every production VM is
// byte for byte its replica at the switch; the commit returns the
// replicas to replication and the next run is incremental.
func TestFailbackOfAPlan(t *testing.T) {
	t.Parallel()
	l := newPlanLab(t)
	before := l.disks(false)

	// Sync the whole plan while the replicas run.
	l.replicasChange()
	run, r := l.planFailback("shop")
	if r.code != 0 {
		t.Fatalf("failback plan sync: %s", r)
	}
	l.allStates(run, "synced")
	l.samePlanDisks("production after the plan's sync", l.disks(false), l.disks(true))
	st := ferry(t, l.cfg, "status")
	if !strings.Contains(st.stdout, "db-01: failback fb-") || !strings.Contains(st.stdout, " synced since ") || !strings.Contains(st.stdout, "to production vm web-01") {
		t.Fatalf("status during the failback: %s", st)
	}
	var jobs []status.Job
	if err := json.Unmarshal([]byte(ferry(t, l.cfg, "status", "--json").stdout), &jobs); err != nil {
		t.Fatal(err)
	}
	for _, v := range jobs[0].VMs {
		if v.Failback == nil || v.Failback.State != "synced" || v.Failback.Production != v.VM || v.Failback.Syncs != 1 || v.Failback.Sent == 0 {
			t.Fatalf("status --json of %s: %+v", v.VM, v.Failback)
		}
	}

	// Another process holds the job: failback and run are refused, and
	// told who holds it.
	cat, err := catalog.Open(catalog.DefaultPath(l.cfg), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	release, err := cat.HoldJobs([]string{"e2e"}, catalog.Holder{What: "ferry failback switch e2e app-01", PID: 4242, Host: "ops-01"})
	if err != nil {
		t.Fatal(err)
	}
	if r := ferry(t, l.cfg, "failback", "plan", "switch", "shop"); r.code == 0 || !strings.Contains(r.stderr, `failback of failover plan "shop": job "e2e" is busy: ferry failback switch e2e app-01 (process 4242 on ops-01`) {
		t.Fatalf("a plan's failback while another holds its job: %s", r)
	}
	if r := ferry(t, l.cfg, "failback", "e2e", "db-01"); r.code == 0 || !strings.Contains(r.stderr, `failback of job "e2e" vm "db-01": job "e2e" is busy: ferry failback switch e2e app-01 (process 4242`) {
		t.Fatalf("a VM's failback while another holds its job: %s", r)
	}
	if r := ferry(t, l.cfg, "run", "e2e"); r.code == 0 || !strings.Contains(r.stderr, "ferry failback switch e2e app-01 (process 4242 on ops-01") || !strings.Contains(r.stderr, "holds the job") {
		t.Fatalf("a run while a failback holds the job: %s", r)
	}
	release()
	cat.Close()

	// Undo: every production VM as it was, every replica running.
	run, r = l.planFailback("undo", "shop")
	if r.code != 0 {
		t.Fatalf("failback plan undo: %s", r)
	}
	l.allStates(run, "")
	l.samePlanDisks("production after the plan's undo", l.disks(false), before)
	for _, vm := range planVMs {
		if p := l.powerOf(l.dr, vm+"_replica"); p != "on" {
			t.Errorf("replica of %s after the undo is powered %q", vm, p)
		}
	}
	if r := ferry(t, l.cfg, "failback", "status", "--json"); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("failbacks after the plan's undo: %s", r)
	}

	// Switch, killed once db is up at production and before the front
	// switches; running it again finishes the front.
	l.replicasChange()
	if err := os.WriteFile(filepath.Join(l.cfg, "kill-once"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	killed := ferry(t, l.cfg, "failback", "plan", "switch", "shop")
	if killed.code == 0 || !strings.Contains(killed.stdout, "e2e/db-01: switched") || strings.Contains(killed.stdout, "e2e/app-01: switched") {
		t.Fatalf("the killed switch: %s", killed)
	}
	fbs := map[string]string{}
	var list []catalog.Failback
	if err := json.Unmarshal([]byte(ferry(t, l.cfg, "failback", "status", "--json").stdout), &list); err != nil {
		t.Fatal(err)
	}
	for _, f := range list {
		fbs[f.VM] = f.State
	}
	if fbs["db-01"] != "switched" || fbs["app-01"] != "synced" || fbs["web-01"] != "synced" {
		t.Fatalf("failbacks after the kill: %v", fbs)
	}
	for _, vm := range []string{"app-01", "web-01"} { // still running: their writes go home too
		l.scatterChange(l.dr, vm+"_replica", 0, l.sizes[0])
	}
	again := ferry(t, l.cfg, "failback", "plan", "switch", "shop")
	if again.code != 0 {
		t.Fatalf("the switch again: %s", again)
	}
	db, app, web := strings.Index(again.stdout, "group db: ready"), strings.Index(again.stdout, "e2e/app-01: switched"), strings.Index(again.stdout, "e2e/web-01: switched")
	if db < 0 || app < db || web < db || strings.Contains(again.stdout, "e2e/db-01: synced") {
		t.Fatalf("the switch again, out of order or syncing db again:\n%s", again.stdout)
	}
	if !strings.Contains(again.stdout, "group front: ready") || !strings.Contains(again.stdout, "web-01  front  switched") {
		t.Fatalf("the switch again:\n%s", again.stdout)
	}
	ready, _ := os.ReadFile(filepath.Join(l.cfg, "db-ready"))
	if !strings.Contains(string(ready), "1 10.1.0.21/24") {
		t.Fatalf("db's check did not see production's address: %q", ready)
	}
	atSwitch := l.disks(true)
	l.samePlanDisks("production after the plan's switch", l.disks(false), atSwitch)
	for _, vm := range planVMs {
		if p := l.powerOf(l.prod, vm); p != "on" {
			t.Errorf("production %s after the switch is powered %q", vm, p)
		}
		if p := l.powerOf(l.dr, vm+"_replica"); p != "off" {
			t.Errorf("the replica of %s after the switch is powered %q", vm, p)
		}
	}

	// Commit: replicas back in replication, the next run incremental.
	run, r = l.planFailback("commit", "shop")
	if r.code != 0 || len(run.VMs) != 3 {
		t.Fatalf("failback plan commit: %s", r)
	}
	if st := l.replicaStates(); st["db-01"] != "ready" || st["app-01"] != "ready" || st["web-01"] != "ready" {
		t.Fatalf("replicas after the plan's commit: %v", st)
	}
	l.write("app-01", 0, 2*mib, 64<<10)
	want := l.disks(false)
	s := l.run()
	t.Logf("run after the commit: modes %s, %d bytes sent", s.modes(), s.Totals.BytesSent)
	if s.code != 0 || s.Result != "success" || strings.Contains(s.modes(), "full") || s.Totals.BytesSent > 3*l.sizes[0]/10 {
		t.Fatalf("the run after the plan's commit: %s modes %s, %d bytes sent\n%s", s.Result, s.modes(), s.Totals.BytesSent, s.stderr)
	}
	for _, vm := range planVMs {
		points := l.points(vm)
		newest := points[len(points)-1].ID
		sameBytes(t, fmt.Sprintf("the newest point of %s", vm), l.point(vm, newest, 0), want[vm])
	}
}

// TestFailbackThroughTheServer: with FERRY_ADDR, ferry failback asks a
// real ferry server, which fails the VM back over the local plugin:
// production ends byte for byte the replica at the switch; status and
// failback status through the server show the failback; a local
// failback meanwhile is refused (the server runs the jobs); the commit
// ends it.
func TestFailbackThroughTheServer(t *testing.T) {
	t.Parallel()
	l := newFailbackLab(t, 4*mib)
	l.replicaChange()
	operator := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)
	s := l.startServer()
	away := t.TempDir()
	as := func(args ...string) result {
		t.Helper()
		return runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=", "FERRY_ADDR=" + s.url, "FERRY_TOKEN=" + operator},
			"ferry", append([]string{"-C", away}, args...)...)
	}
	r := as("failback", "e2e", fbVM)
	if r.code != 0 || !strings.Contains(r.stdout, "production vm app-01 holds the replica's data") {
		t.Fatalf("a sync through the server: %s", r)
	}
	if r := as("status"); r.code != 0 || !strings.Contains(r.stdout, "app-01: failback fb-") || !strings.Contains(r.stdout, "synced since") {
		t.Fatalf("status through the server: %s", r)
	}
	if r := as("failback", "status", "e2e", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"state": "synced"`) {
		t.Fatalf("failback status through the server: %s", r)
	}
	if r := ferry(t, l.cfg, "failback", "switch", "e2e", fbVM); r.code == 0 || !strings.Contains(r.stderr, "ferry server") {
		t.Fatalf("a local failback while the server runs the jobs: %s", r)
	}
	var res struct {
		Failback *catalog.Failback
		Syncs    []catalog.FailbackSync
	}
	r = as("failback", "switch", "e2e", fbVM, "--json")
	if r.code != 0 {
		t.Fatalf("a switch through the server: %s", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Failback == nil || res.Failback.State != "switched" || len(res.Syncs) != 1 {
		t.Fatalf("a switch through the server, --json: %v\n%s", err, r)
	}
	sameDisks(t, "production after a switch through the server", l.productionDisks(), l.replicaDisks())
	if r := as("failback", "commit", "e2e", fbVM); r.code != 0 || !strings.Contains(r.stdout, "committed") {
		t.Fatalf("a commit through the server: %s", r)
	}
	if r := as("failback", "status", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("failbacks after the commit: %s", r)
	}
}

// TestTheRunAfterAFailbackComparesWhatItWrote: production changed after
// the restore point, the replica wrote nothing while failed over; the
// failback writes production's changed areas back to the point's data,
// and the commit returns the replica to that point. The next run reads
// the areas production's change tracking names (the failback's writes)
// but compares them with the replica's digests and sends none of them.
// (A replica's own writes while failed over are sent again by that run:
// the commit undoes the replica's failover, so the replica no longer
// holds them. docs/cli.md says so.)
func TestTheRunAfterAFailbackComparesWhatItWrote(t *testing.T) {
	t.Parallel()
	l := newFailbackLab(t, 8*mib)
	l.failback("switch")
	sameDisks(t, "production after the switch", l.productionDisks(), l.replicaDisks())
	l.failback("commit")
	s := l.run()
	t.Logf("run after the commit: modes %s, read %d, changed blocks %d, sent %d bytes", s.modes(), s.Totals.BytesRead, s.Totals.BlocksChanged, s.Totals.BytesSent)
	if s.code != 0 || s.modes() != "change-tracking" || s.Totals.BytesRead == 0 || s.Totals.BlocksChanged != 0 || s.Totals.BytesSent > 4<<10 {
		t.Fatalf("the run after a failback that wrote the point's data back: %s modes %s, read %d, changed blocks %d, sent %d\n%s",
			s.Result, s.modes(), s.Totals.BytesRead, s.Totals.BlocksChanged, s.Totals.BytesSent, s.stderr)
	}
	if !strings.Contains(s.stderr, "compared with the replica's digests before it is sent: a failback wrote production") {
		t.Errorf("the run does not say why it compares: %s", s.stderr)
	}
	points := l.points(fbVM)
	newest := points[len(points)-1].ID
	sameBytes(t, "the newest point after the failback", l.point(fbVM, newest, 0), l.source(fbVM, 0))
	// The run after it sends what tracking names without waiting again.
	l.write(fbVM, 0, mib, 64<<10)
	if s := l.run(); s.code != 0 || strings.Contains(s.stderr, "a failback wrote production") || s.Totals.BlocksChanged == 0 {
		t.Fatalf("the second run after the failback: %+v\n%s", s.Totals, s.stderr)
	}
}

// TestCommitOfAFailbackToAnotherVM: a failback --to a VM that did not
// exist, committed: ferry says that VM is in no job and what to do, and
// doing it (naming it in the job in place of the old one) protects it.
func TestCommitOfAFailbackToAnotherVM(t *testing.T) {
	t.Parallel()
	l := newFailbackLab(t, 4*mib)
	if r := ferry(t, l.cfg, "failback", "e2e", fbVM, "--to", "app-02", "--switch"); r.code != 0 {
		t.Fatalf("failback --to: %s", r)
	}
	r := ferry(t, l.cfg, "failback", "commit", "e2e", fbVM)
	if r.code != 0 || !strings.Contains(r.stdout, "NOTE: production vm app-02, which the failback wrote, is in no job: job e2e goes on replicating vm app-01") ||
		!strings.Contains(r.stdout, "name it in job e2e's vms in place of app-01") {
		t.Fatalf("the commit of a failback to another vm: %s", r)
	}
	base, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	l.writeConfig(strings.Replace(string(base), `vms        = ["app-01"]`, `vms        = ["app-02"]`, 1))
	want := l.source("app-02", 0)
	s := l.run()
	if s.code != 0 || s.Result != "success" || s.vm("app-02").Result != "success" {
		t.Fatalf("the run protecting app-02: %s %+v\n%s", s.Result, s.VMs, s.stderr)
	}
	points := l.points("app-02")
	sameBytes(t, "app-02's first point", l.point("app-02", points[len(points)-1].ID, 0), want)
}

// TestFailbackOfAPlanThroughTheServer: with FERRY_ADDR, ferry failback
// plan asks a real ferry server: the plan switches home (every production
// VM its replica byte for byte) and commits.
func TestFailbackOfAPlanThroughTheServer(t *testing.T) {
	t.Parallel()
	l := newPlanLab(t)
	l.replicasChange()
	operator := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)
	s := l.startServer()
	as := func(args ...string) result {
		t.Helper()
		return runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=", "FERRY_ADDR=" + s.url, "FERRY_TOKEN=" + operator},
			"ferry", append([]string{"-C", t.TempDir()}, args...)...)
	}
	r := as("failback", "plan", "shop", "--switch")
	if r.code != 0 || !strings.Contains(r.stdout, "3 VMs run at production, 2 groups up") || !strings.Contains(r.stdout, "group front: ready (up at production)") {
		t.Fatalf("a plan's switch through the server: %s", r)
	}
	l.samePlanDisks("production after a plan's switch through the server", l.disks(false), l.disks(true))
	if r := as("failback", "plan", "commit", "shop"); r.code != 0 || !strings.Contains(r.stdout, "3 VMs committed") {
		t.Fatalf("a plan's commit through the server: %s", r)
	}
	if r := as("failback", "plan", "nosuch"); r.code != 2 || !strings.Contains(r.stderr, `no failover plan "nosuch" (plans: shop)`) {
		t.Fatalf("an unknown plan through the server: %s", r)
	}
}
