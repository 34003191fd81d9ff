package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/core/status"
	"github.com/ferry-dr/ferry/sdk"
)

// lastTests returns each VM's last test as `ferry status --json` shows
// it, and the line `ferry status` prints for the plan.
func (l *lab) lastTests(plan string) (map[string]*catalog.VMTest, string) {
	l.t.Helper()
	r := ferry(l.t, l.cfg, "status", "--json")
	var jobs []status.Job
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &jobs) != nil {
		l.t.Fatalf("status --json: %s", r)
	}
	out := map[string]*catalog.VMTest{}
	for _, j := range jobs {
		for _, v := range j.VMs {
			out[v.VM] = v.LastTest
		}
	}
	r = ferry(l.t, l.cfg, "status")
	for _, line := range strings.Split(r.stdout, "\n") {
		if strings.HasPrefix(line, "failover plan "+plan+":") {
			return out, line
		}
	}
	l.t.Fatalf("status has no line of plan %s: %s", plan, r)
	return nil, ""
}

// testVMs lists the test VMs the local target keeps, by their folders.
func (l *lab) testVMs() map[string]sdk.VM {
	l.t.Helper()
	out := map[string]sdk.VM{}
	dirs, _ := filepath.Glob(filepath.Join(l.dr, ".tests", "*"))
	for _, d := range dirs {
		if strings.HasPrefix(filepath.Base(d), ".") {
			continue
		}
		var vm sdk.VM
		if b, err := os.ReadFile(filepath.Join(d, "vm.json")); err == nil {
			json.Unmarshal(b, &vm)
		}
		out[filepath.Base(d)] = vm
	}
	return out
}

// startTest starts a kept test in the background and returns once its
// test VMs run ("kept"), with what it printed so far.
func (l *lab) startTest(args ...string) (*exec.Cmd, *strings.Builder, *bytes.Buffer) {
	l.t.Helper()
	cmd := exec.Command(filepath.Join(bin, "ferry"), append([]string{"-C", l.cfg}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+l.t.TempDir(), "FERRY_PLUGIN_PATH=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// A killed ferry's plugin may hold stderr open a while longer.
	cmd.WaitDelay = 5 * time.Second
	orphanless(cmd)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var stdout strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		stdout.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), ": kept (") {
			go func() {
				for sc.Scan() {
				}
			}()
			return cmd, &stdout, &stderr
		}
	}
	cmd.Wait()
	l.t.Fatalf("the test never kept its VMs:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	return nil, nil, nil
}

// TestATestFailoverOfAPlan rehearses a plan of two groups on the local
// plugin, through the real binaries: the test VMs come up on the test
// network with the job's re-IP, the checks run against them, the result
// and the recovery time are reported and the test VMs are removed. A
// replication run while a kept test runs succeeds and adds a point; the
// test VMs keep their point. A test killed while its VMs run leaves them,
// and --cleanup removes them; a failing check fails the test and removes
// what started; one VM is tested alone.
func TestATestFailoverOfAPlan(t *testing.T) {
	l := newLab(t, 3,
		vmSpec{name: "db-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.21/24"},
		vmSpec{name: "web-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.11/24"})
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
	plan := func(webReady string) {
		l.writeConfig(string(base) + `
failover_plan "shop" {
  test_network_map {
    from = "prod-net"
    to   = "lab-net"
  }
  group "db" { vms = ["e2e/db-01"] }
  group "web" {
    vms        = ["e2e/web-01"]
    depends_on = ["db"]
    ready ` + webReady + `
  }
}
`)
	}
	plan(`{ script = ["sh", "-c", "test \"$FERRY_TEST\" = 1 && echo \"$FERRY_ADDRESSES\" | grep -q 10.2.0.11"] }`)
	if r := ferry(t, l.cfg, "validate"); r.code != 0 {
		t.Fatalf("validate: %s", r)
	}

	r := ferry(t, l.cfg, "failover", "plan", "shop", "--test")
	if r.code != 0 || !strings.Contains(r.stdout, "test of failover plan shop: passed; recovery time ") || !strings.Contains(r.stdout, "(2 test VMs, 2 groups up, in ") {
		t.Fatalf("test of the plan: %s", r)
	}
	dbReady, webStarted := strings.Index(r.stdout, "group db: ready"), strings.Index(r.stdout, "e2e/web-01: test started")
	if dbReady < 0 || webStarted < dbReady || !strings.Contains(r.stdout, "networks lab-net; addresses 10.2.0.11/24") {
		t.Fatalf("groups out of order or off the test network:\n%s", r.stdout)
	}
	if vms := l.testVMs(); len(vms) != 0 {
		t.Fatalf("test VMs left after the test: %v", vms)
	}
	if st := l.replicaStates(); st["db-01"] != "ready" || st["web-01"] != "ready" {
		t.Fatalf("replicas after the test: %v", st)
	}
	// The result is kept: status shows it for the plan and its VMs.
	tests, line := l.lastTests("shop")
	passed := tests["db-01"]
	if passed == nil || passed.Plan != "shop" || !passed.Passed || passed.RecoverySeconds <= 0 || tests["web-01"] == nil || tests["web-01"].Run != passed.Run {
		t.Fatalf("last tests after a passing test: %+v", tests)
	}
	if !strings.Contains(line, "last test "+passed.Run+" at ") || !strings.Contains(line, " passed, recovery time ") {
		t.Fatalf("status of the plan after a passing test: %q", line)
	}

	// Replication goes on while a kept test runs.
	before := l.points("db-01")
	cmd, stdout, stderr := l.startTest("failover", "plan", "shop", "--test", "--keep", "10m")
	vms := l.testVMs()
	if len(vms) != 2 {
		t.Fatalf("test VMs while kept: %v", vms)
	}
	for id, vm := range vms {
		if vm.PowerState != "on" || len(vm.NICs) != 1 || vm.NICs[0].Network != "lab-net" || !strings.HasPrefix(id, vm.Name) {
			t.Errorf("test VM %s: %+v", id, vm)
		}
	}
	l.write("db-01", 0, 2<<20, 1<<20)
	if s := l.run(); s.code != 0 {
		t.Fatalf("a run while a test runs: %d\n%s", s.code, s.stderr)
	}
	after := l.points("db-01")
	if len(after) != len(before)+1 {
		t.Fatalf("points before %d, after a run during the test %d", len(before), len(after))
	}
	for id, vm := range vms {
		if vm.Name != "db-01" && !strings.HasPrefix(id, "db-01-test-") {
			continue
		}
		disk, err := os.ReadFile(filepath.Join(l.dr, ".tests", id, "disk0.img"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(disk, l.point("db-01", before[len(before)-1].ID, 0)) {
			t.Errorf("test VM %s does not hold its restore point after a run", id)
		}
		if bytes.Equal(disk, l.point("db-01", after[len(after)-1].ID, 0)) {
			t.Errorf("the run reached test VM %s", id)
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the kept test after Ctrl-C: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if vms := l.testVMs(); len(vms) != 0 {
		t.Fatalf("test VMs left after Ctrl-C: %v", vms)
	}

	// A killed test leaves its VMs; --cleanup (or the next test) removes them.
	cmd, _, _ = l.startTest("failover", "plan", "shop", "--test", "--keep", "10m")
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if vms := l.testVMs(); len(vms) != 2 {
		t.Fatalf("test VMs after a kill: %v", vms)
	}
	if s := l.run(); s.code != 0 {
		t.Fatalf("a run beside a killed test's VMs: %d\n%s", s.code, s.stderr)
	}
	if r := ferry(t, l.cfg, "failover", "plan", "shop", "--test", "--cleanup"); r.code != 0 || !strings.Contains(r.stdout, "removed 2 test VMs left behind") {
		t.Fatalf("cleanup: %s", r)
	}
	if vms := l.testVMs(); len(vms) != 0 {
		t.Fatalf("test VMs after the cleanup: %v", vms)
	}

	// A failing check fails the test, and what started is removed.
	plan(`{
      script  = ["sh", "-c", "echo web is not up >&2; exit 1"]
      timeout = "5s"
    }`)
	r = ferry(t, l.cfg, "failover", "plan", "shop", "--test")
	if r.code != 1 || !strings.Contains(r.stdout, "test of failover plan shop: FAILED (2 test VMs, 1 groups up") || !strings.Contains(r.stderr, `group "web" is not ready`) || !strings.Contains(r.stderr, "web is not up") {
		t.Fatalf("a failing test: %s", r)
	}
	if vms := l.testVMs(); len(vms) != 0 {
		t.Fatalf("test VMs left after a failed test: %v", vms)
	}
	tests, line = l.lastTests("shop")
	if failed := tests["web-01"]; failed == nil || failed.Passed || failed.Run == passed.Run || !strings.Contains(line, failed.Run+" at ") || !strings.Contains(line, `FAILED: test of failover plan "shop" failed: group "web" is not ready`) {
		t.Fatalf("status after a failing test: %+v, %q", tests, line)
	}

	// One VM, at a named point.
	r = ferry(t, l.cfg, "failover", "e2e", "db-01", "--test", "--point", before[0].ID)
	if r.code != 0 || !strings.Contains(r.stdout, "test failover of e2e/db-01: passed") || !strings.Contains(r.stdout, "from restore point "+before[0].ID) {
		t.Fatalf("a test of one VM: %s", r)
	}
	if r := ferry(t, l.cfg, "failover", "undo", "e2e", "db-01", "--test"); r.code != 2 || !strings.Contains(r.stderr, "nothing to undo") {
		t.Fatalf("--test with undo: %s", r)
	}
	// One test of a VM alone at a time: a second one, or a cleanup,
	// would remove the first one's test VM as a leftover.
	cmd, _, _ = l.startTest("failover", "e2e", "db-01", "--test", "--keep", "10m")
	for _, args := range [][]string{{"failover", "e2e", "db-01", "--test"}, {"failover", "e2e", "db-01", "--test", "--cleanup"}} {
		if r := ferry(t, l.cfg, args...); r.code != 1 || !strings.Contains(r.stderr, `test failover of job "e2e" vm "db-01": another test of the VM runs, by ferry failover e2e db-01 --test (process `) {
			t.Fatalf("ferry %s while a test of the VM runs: %s", strings.Join(args, " "), r)
		}
	}
	if vms := l.testVMs(); len(vms) != 1 {
		t.Fatalf("the kept test's VM after the refused ones: %v", vms)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the kept test of one VM after Ctrl-C: %v", err)
	}
	if vms := l.testVMs(); len(vms) != 0 {
		t.Fatalf("test VMs left after the test of one VM: %v", vms)
	}
	// A test of one VM is that VM's last test; the plan's stays.
	tests, line = l.lastTests("shop")
	if one := tests["db-01"]; one == nil || one.Plan != "" || !one.Passed || tests["web-01"].Plan != "shop" || tests["web-01"].Passed || !strings.Contains(line, "FAILED") {
		t.Fatalf("status after a test of one VM: %+v, %q", tests, line)
	}

	// A test that fails before it starts a test VM (no point that old)
	// is no VM's last test; `ferry status --json` carries it with the
	// plan, under each job the plan holds a VM of.
	r = ferry(t, l.cfg, "failover", "plan", "shop", "--test", "--point", "2000-01-01T12:00:00Z")
	if r.code != 1 || !strings.Contains(r.stderr, "no restore point at or before") {
		t.Fatalf("a test at a time before every point: %s", r)
	}
	r = ferry(t, l.cfg, "status", "--json")
	var jobs []status.Job
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &jobs) != nil || len(jobs) != 1 || len(jobs[0].FailoverPlans) != 1 {
		t.Fatalf("status --json after a test that started nothing: %s", r)
	}
	early := jobs[0].FailoverPlans[0]
	if early.Plan != "shop" || early.LastTest == nil || early.LastTest.Passed || len(early.LastTest.VMs) != 0 || !strings.Contains(early.LastTest.Error, "no restore point at or before") {
		t.Fatalf("the plan's last test in status --json: %+v", early.LastTest)
	}
	if after, _ := l.lastTests("shop"); after["web-01"] == nil || after["web-01"].Run == early.LastTest.Run {
		t.Fatalf("a test that started no test VM became a VM's last test: %+v", after["web-01"])
	}
}

// TestATestFailoverThroughTheServer: with FERRY_ADDR, ferry failover plan
// NAME --test asks a real ferry server, which tests the plan over the
// local plugin and keeps the result: a failing test, then a passing one,
// each shown by status through the server and by the plan's API.
func TestATestFailoverThroughTheServer(t *testing.T) {
	l := newLab(t, 3,
		vmSpec{name: "db-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.21/24"},
		vmSpec{name: "web-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.11/24"})
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
      script  = ["sh", "-c", "test \"$FERRY_TEST\" = 1 && test -e web-ready || { echo web is not up >&2; exit 1; }"]
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
	lastTest := func() *catalog.TestResult {
		t.Helper()
		var p struct {
			LastTest *catalog.TestResult `json:"last_test"`
		}
		if code := s.call(t, operator, "GET", "/v1/failover-plans/shop", &p); code != 200 {
			t.Fatalf("GET /v1/failover-plans/shop: %d", code)
		}
		return p.LastTest
	}
	planLine := func() string {
		t.Helper()
		r := as("status")
		for _, line := range strings.Split(r.stdout, "\n") {
			if strings.HasPrefix(line, "failover plan shop:") {
				return line
			}
		}
		t.Fatalf("status through the server has no line of the plan: %s", r)
		return ""
	}

	r := as("failover", "plan", "shop", "--test")
	if r.code != 1 || !strings.Contains(r.stdout, "test of failover plan shop: FAILED (2 test VMs, 1 groups up") || !strings.Contains(r.stderr, `group "web" is not ready`) ||
		!strings.Contains(r.stderr, "web is not up") || !strings.Contains(r.stdout, "group db: ready") {
		t.Fatalf("a failing test through the server: %s", r)
	}
	failed := lastTest()
	if failed == nil || failed.Passed || len(failed.VMs) != 2 || !strings.Contains(failed.Error, "is not ready") {
		t.Fatalf("last test after a failing one: %+v", failed)
	}
	if line := planLine(); !strings.Contains(line, "last test "+failed.Run+" at ") || !strings.Contains(line, "FAILED") {
		t.Fatalf("status through the server after a failing test: %q", line)
	}

	if err := os.WriteFile(filepath.Join(l.cfg, "web-ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = as("failover", "plan", "shop", "--test", "--point", "latest", "--keep", "1ms")
	if r.code != 0 || !strings.Contains(r.stdout, "test of failover plan shop: passed; recovery time ") || !strings.Contains(r.stdout, "e2e/web-01: test started") ||
		!strings.Contains(r.stdout, "networks ferry-isolated") || !strings.Contains(r.stdout, ": removed") {
		t.Fatalf("a passing test through the server: %s", r)
	}
	passed := lastTest()
	if passed == nil || !passed.Passed || passed.Run == failed.Run || passed.RecoverySeconds <= 0 {
		t.Fatalf("last test after a passing one: %+v", passed)
	}
	if line := planLine(); !strings.Contains(line, "last test "+passed.Run+" at ") || !strings.Contains(line, " passed, recovery time ") {
		t.Fatalf("status through the server after a passing test: %q", line)
	}
	if vms := l.testVMs(); len(vms) != 0 {
		t.Fatalf("test VMs left after the tests: %v", vms)
	}
	if st := l.replicaStates(); st["db-01"] != "ready" || st["web-01"] != "ready" {
		t.Fatalf("replicas after the tests: %v", st)
	}
	// One VM alone, through the server: tested, its result the VM's
	// last test; a test the server did not make (a killed one here) is
	// cleaned up through it, and so are a plan's leftovers.
	r = as("failover", "e2e", "db-01", "--test")
	if r.code != 0 || !strings.Contains(r.stdout, "test failover of e2e/db-01: passed; recovery time ") || !strings.Contains(r.stdout, "e2e/db-01: test started") || !strings.Contains(r.stdout, ": removed") {
		t.Fatalf("a test of one VM through the server: %s", r)
	}
	var jobs []status.Job
	if r := as("status", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &jobs) != nil || len(jobs) != 1 ||
		len(jobs[0].FailoverPlans) != 1 || jobs[0].FailoverPlans[0].LastTest == nil || jobs[0].FailoverPlans[0].LastTest.Run != passed.Run {
		t.Fatalf("status --json through the server: %s", r)
	}
	for _, v := range jobs[0].VMs {
		if v.VM == "db-01" && (v.LastTest == nil || v.LastTest.Plan != "" || !v.LastTest.Passed) {
			t.Fatalf("db-01's last test after a test of it alone: %+v", v.LastTest)
		}
	}
	cmd, _, _ := l.startTest("failover", "e2e", "db-01", "--test", "--keep", "10m")
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if vms := l.testVMs(); len(vms) != 1 {
		t.Fatalf("test VMs after a killed test of db-01: %v", vms)
	}
	if r := as("failover", "plan", "shop", "--test", "--cleanup"); r.code != 0 || !strings.Contains(r.stdout, "test of failover plan shop: no test VM was left behind") || len(l.testVMs()) != 1 {
		t.Fatalf("the plan's cleanup through the server beside a VM's leftover: %s", r)
	}
	if r := as("failover", "e2e", "db-01", "--test", "--cleanup"); r.code != 0 || !strings.Contains(r.stdout, "test failover of e2e/db-01: removed 1 test VMs left behind: db-01-test-") {
		t.Fatalf("the VM's cleanup through the server: %s", r)
	}
	if vms := l.testVMs(); len(vms) != 0 {
		t.Fatalf("test VMs after the cleanup through the server: %v", vms)
	}
	if r := as("failover", "nosuch", "db-01", "--test"); r.code != 2 || !strings.Contains(r.stderr, `no job "nosuch" on ferry server`) {
		t.Fatalf("a test of a VM of an unknown job through the server: %s", r)
	}
	if r := as("failover", "plan", "nosuch", "--test"); r.code != 2 || !strings.Contains(r.stderr, `no failover plan "nosuch" (plans: shop)`) {
		t.Fatalf("a test of an unknown plan through the server: %s", r)
	}
}

// TestAPlanTestedAtItsSchedule: a ferry server tests a plan at its
// test_schedule, keeps each result, and says how the last went in its
// metrics and the API; ferry status shows the next test.
func TestAPlanTestedAtItsSchedule(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "db-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.21/24"})
	l.write("db-01", 0, 0, 1<<20)
	if s := l.run(); s.code != 0 {
		t.Fatalf("run: %d\n%s", s.code, s.stderr)
	}
	base, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	l.writeConfig(string(base) + `
failover_plan "shop" {
  test_schedule = "every 2s"
  group "db" {
    vms = ["e2e/db-01"]
    ready {
      script  = ["sh", "-c", "test -e db-ready || { echo db is not up >&2; exit 1; }"]
      timeout = "5s"
    }
  }
}
`)
	reader := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "dash", "--role", "read").stdout)
	s := l.startServer()
	gauge := func(name string) (float64, bool) {
		t.Helper()
		var text []byte
		if code := s.call(t, reader, "GET", "/metrics", &text); code != 200 {
			t.Fatalf("GET /metrics: %d", code)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(string(text)))
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		f := fams[name]
		if f == nil || len(f.GetMetric()) != 1 {
			return 0, false
		}
		return f.GetMetric()[0].GetGauge().GetValue(), true
	}
	plan := func() server.FailoverPlan {
		t.Helper()
		var p server.FailoverPlan
		if code := s.call(t, reader, "GET", "/v1/failover-plans/shop", &p); code != 200 {
			t.Fatalf("GET /v1/failover-plans/shop: %d", code)
		}
		return p
	}

	// The first scheduled test fails (db-ready is missing).
	s.waitLog(t, `"test of failover plan failed"`, 0, 60*time.Second)
	if p := plan(); p.LastTest == nil || p.LastTest.Passed || !strings.Contains(p.LastTest.Error, `group "db" is not ready`) ||
		p.TestSchedule != "every 2s" || p.NextTest == nil {
		t.Fatalf("the plan after a failed scheduled test: %+v", p)
	}
	if v, ok := gauge("ferry_failover_plan_test_passed"); !ok || v != 0 {
		t.Fatalf("test_passed after a failed test: %v %v", v, ok)
	}
	if !strings.Contains(s.stderr.String(), `"why":"schedule"`) {
		t.Fatalf("the log does not say the test was scheduled:\n%s", s.stderr)
	}

	// Then one passes.
	if err := os.WriteFile(filepath.Join(l.cfg, "db-ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mark := s.stderr.mark()
	s.waitLog(t, `"test of failover plan passed"`, mark, 60*time.Second)
	p := plan()
	if p.LastTest == nil || !p.LastTest.Passed {
		t.Fatalf("the plan after a passing scheduled test: %+v", p)
	}
	if v, ok := gauge("ferry_failover_plan_test_passed"); !ok || v != 1 {
		t.Fatalf("test_passed after a passing test: %v %v", v, ok)
	}
	if v, ok := gauge("ferry_failover_plan_last_test_timestamp_seconds"); !ok || v < float64(p.LastTest.Started.Unix()) {
		t.Fatalf("last test metric %v %v, the last test began %s", v, ok, p.LastTest.Started)
	}
	r := runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=", "FERRY_ADDR=" + s.url, "FERRY_TOKEN=" + reader},
		"ferry", "-C", t.TempDir(), "status")
	if r.code != 0 || !strings.Contains(r.stdout, "failover plan shop: last test ") || !strings.Contains(r.stdout, "; next test at ") {
		t.Fatalf("status through the server: %s", r)
	}
	if r := ferry(t, l.cfg, "status"); !strings.Contains(r.stdout, `; tested at "every 2s" by ferry server`) {
		t.Fatalf("status beside the configuration: %s", r)
	}
}
