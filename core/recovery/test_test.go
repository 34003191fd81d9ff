package recovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// lab is a fake target's test VMs, by id, and the calls made.
type lab struct {
	mu    sync.Mutex
	tests map[string]sdk.TestVM
	calls []string
	addr  string
	// cannot makes every call fail as a target without the capability.
	cannot bool
	// stopFails makes StopTest fail for these ids.
	stopFails map[string]bool
}

func newLab(addr string) *lab {
	return &lab{tests: map[string]sdk.TestVM{}, addr: addr, stopFails: map[string]bool{}}
}

func (l *lab) StartTest(ctx context.Context, job *config.Job, vm, id, point string, testMap []config.NetworkMapping, labels map[string]string) (*sdk.TestVM, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "start "+job.Name+"/"+vm)
	if l.cannot {
		return nil, fmt.Errorf("target cannot run test failovers: %w", errdefs.ErrUnimplemented)
	}
	if err := sdk.CheckTestID(id); err != nil {
		return nil, err
	}
	net := "isolated"
	if len(testMap) > 0 {
		net = testMap[0].To
	}
	if point == "" {
		point = "newest"
	}
	v := sdk.TestVM{ID: id, Point: point, Running: true, Labels: labels,
		VM: sdk.VM{Name: id, NICs: []sdk.NIC{{Network: net, Addresses: []string{l.addr + "/8"}}}}}
	l.tests[id] = v
	return &v, nil
}

func (l *lab) ListTests(ctx context.Context, job *config.Job) ([]sdk.TestVM, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cannot {
		return nil, fmt.Errorf("target %s cannot run test failovers: %w", job.Target.Address(), errdefs.ErrUnimplemented)
	}
	var out []sdk.TestVM
	for _, v := range l.tests {
		out = append(out, v)
	}
	return out, nil
}

func (l *lab) StopTest(ctx context.Context, job *config.Job, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, "stop "+id)
	if l.stopFails[id] {
		return fmt.Errorf("the hypervisor is away: %w", errdefs.ErrUnavailable)
	}
	delete(l.tests, id)
	return nil
}

func (l *lab) ids() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id := range l.tests {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

const testPlan = `
failover_plan "shop" {
  test_network_map {
    from = "prod-net"
    to   = "lab-net"
  }
  group "db" {
    vms = ["db/db-01"]
    ready { tcp_port = %d }
  }
  group "app" {
    vms        = ["web/app-01", "web/web-01"]
    depends_on = ["db"]
    ready {
      script  = ["sh", "-c", "test \"$FERRY_TEST\" = 1 && test \"$FERRY_VMS\" = \"web/app-01 web/web-01\" || { echo not a test >&2; exit 1; }"]
      timeout = "5s"
    }
  }
}`

func TestATestRehearsesAPlanAndRemovesItsVMs(t *testing.T) {
	ip, port := listen(t)
	cfg, p := loadPlan(t, fmt.Sprintf(testPlan, port))
	l := newLab(ip)
	// Leftovers: one of an earlier test of this plan whose process died,
	// one of another plan, one that is not ferry's.
	l.tests["db-01-test-0ld"] = sdk.TestVM{ID: "db-01-test-0ld", Labels: map[string]string{LabelTestPlan: "shop", LabelTestJob: "db", LabelTestVM: "db-01", LabelTestRun: "0ld"}}
	l.tests["other-test-1"] = sdk.TestVM{ID: "other-test-1", Labels: map[string]string{LabelTestPlan: "other", LabelTestRun: "1"}}
	l.tests["hand-made"] = sdk.TestVM{ID: "hand-made"}
	var steps []string
	var mu sync.Mutex
	r := &Runner{Jobs: cfg.Jobs, Tests: l, Dir: t.TempDir(), Progress: func(st Step) {
		mu.Lock()
		steps = append(steps, st.Group+" "+st.What)
		mu.Unlock()
	}}
	res, err := r.Test(context.Background(), p, TestOptions{})
	if err != nil {
		t.Fatalf("test: %v\nsteps %q", err, steps)
	}
	if !res.Passed || res.RecoverySeconds <= 0 || res.TookSeconds < res.RecoverySeconds || len(res.VMs) != 3 || len(res.Ready) != 2 || res.Run == "" {
		t.Fatalf("result %+v", res)
	}
	if !slices.Equal(res.Leftovers, []string{"db-01-test-0ld"}) {
		t.Errorf("leftovers removed %q, want the earlier test's alone", res.Leftovers)
	}
	for _, v := range res.VMs {
		if v.Test != TestID(strings.TrimPrefix(strings.TrimPrefix(v.VM, "db/"), "web/"), res.Run) || v.Point != "newest" || !slices.Equal(v.Networks, []string{"lab-net"}) {
			t.Errorf("vm %+v", v)
		}
	}
	if ids := l.ids(); !slices.Equal(ids, []string{"hand-made", "other-test-1"}) {
		t.Errorf("test VMs after the test: %q, want only those that are not this plan's", ids)
	}
	mu.Lock()
	defer mu.Unlock()
	at := func(s string) int { return slices.Index(steps, s) }
	if at("db ready") < 0 || at("app test started") < at("db ready") || at(" passed") < at("app ready") || at("app removed") > at("db removed") {
		t.Errorf("steps out of order: %q", steps)
	}
}

func TestAFailedTestSaysWhyAndRemovesWhatStarted(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
  group "app" {
    vms        = ["web/app-01"]
    depends_on = ["db"]
    ready {
      script  = ["sh", "-c", "echo app is not up >&2; exit 1"]
      timeout = "5s"
    }
  }
  group "web" {
    vms        = ["web/web-01"]
    depends_on = ["app"]
  }
}`)
	l := newLab("127.0.0.1")
	r := &Runner{Jobs: cfg.Jobs, Tests: l, Dir: t.TempDir()}
	res, err := r.Test(context.Background(), p, TestOptions{})
	if err == nil || !strings.Contains(err.Error(), `test of failover plan "shop" failed: group "app" is not ready`) || !strings.Contains(err.Error(), "app is not up") {
		t.Fatalf("a test with a failing check: %v", err)
	}
	if res.Passed || res.RecoverySeconds != 0 || res.Error != err.Error() || len(res.VMs) != 2 || slices.Contains(l.calls, "start web/web-01") {
		t.Fatalf("result %+v, calls %q", res, l.calls)
	}
	if ids := l.ids(); len(ids) != 0 {
		t.Errorf("test VMs left: %q", ids)
	}
}

func TestATargetThatCannotTestStartsNothing(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
}`)
	l := newLab("127.0.0.1")
	l.cannot = true
	r := &Runner{Jobs: cfg.Jobs, Tests: l, Dir: t.TempDir()}
	res, err := r.Test(context.Background(), p, TestOptions{})
	if !errors.Is(err, errdefs.ErrUnimplemented) || !strings.Contains(err.Error(), "cannot run test failovers") || !strings.Contains(err.Error(), "no test VM was started") {
		t.Fatalf("test on a target without the capability: %v", err)
	}
	if res.Passed || len(l.calls) != 0 {
		t.Fatalf("result %+v, calls %q", res, l.calls)
	}
}

func TestATestKeepsItsVMsThenRemovesThem(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
}`)
	l := newLab("127.0.0.1")
	kept := make(chan struct{})
	r := &Runner{Jobs: cfg.Jobs, Tests: l, Dir: t.TempDir(), Progress: func(st Step) {
		if st.What == "kept" {
			close(kept)
		}
	}}
	// Kept for an hour, but the context ends it: the VMs go at once.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-kept
		if ids := l.ids(); len(ids) != 1 {
			t.Errorf("test VMs while kept: %q", ids)
		}
		cancel()
	}()
	began := time.Now()
	res, err := r.Test(ctx, p, TestOptions{Keep: time.Hour})
	if err != nil || !res.Passed {
		t.Fatalf("kept test: %+v, %v", res, err)
	}
	if time.Since(began) > time.Minute || len(l.ids()) != 0 {
		t.Fatalf("the kept test VMs were not removed when the context ended: %q", l.ids())
	}
	// Kept for a moment: removed once it is over.
	began = time.Now()
	if _, err := (&Runner{Jobs: cfg.Jobs, Tests: l, Dir: t.TempDir()}).Test(context.Background(), p, TestOptions{Keep: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if time.Since(began) < 200*time.Millisecond || len(l.ids()) != 0 {
		t.Fatalf("kept %s, test VMs left %q", time.Since(began), l.ids())
	}
}

func TestATestVMThatCannotBeRemovedIsCleanedUpLater(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
}`)
	l := newLab("127.0.0.1")
	r := &Runner{Jobs: cfg.Jobs, Tests: l, Dir: t.TempDir(), Progress: func(st Step) {
		if st.What == "test started" {
			l.mu.Lock()
			for id := range l.tests {
				l.stopFails[id] = true
			}
			l.mu.Unlock()
		}
	}}
	res, err := r.Test(context.Background(), p, TestOptions{})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "passed, but its test VMs were not all removed") || !res.Passed || len(res.NotRemoved) != 1 {
		t.Fatalf("a test whose VM stays: %+v, %v", res, err)
	}
	clear(l.stopFails)
	removed, err := r.Cleanup(context.Background(), p)
	if err != nil || !slices.Equal(removed, res.NotRemoved) || len(l.ids()) != 0 {
		t.Fatalf("cleanup removed %q (%v); left %q", removed, err, l.ids())
	}
}

func TestATestOfOneVM(t *testing.T) {
	cfg, _ := loadPlan(t, `failover_plan "p" {
  group "g" { vms = ["web/web-01"] }
}`)
	l := newLab("127.0.0.1")
	l.tests["db-02-test-0ld"] = sdk.TestVM{ID: "db-02-test-0ld", Labels: map[string]string{LabelTestPlan: "", LabelTestJob: "db", LabelTestVM: "db-02", LabelTestRun: "0ld"}}
	r := &Runner{Jobs: cfg.Jobs, Tests: l, Dir: t.TempDir()}
	res, err := r.TestVM(context.Background(), "db", "db-01", "p-1", 0)
	if err != nil || !res.Passed || len(res.VMs) != 1 || res.VMs[0].Point != "p-1" || res.Plan != "" {
		t.Fatalf("test of one VM: %+v, %v", res, err)
	}
	if ids := l.ids(); !slices.Equal(ids, []string{"db-02-test-0ld"}) {
		t.Errorf("a test of db-01 touched another VM's leftover: %q", ids)
	}
	if removed, err := r.CleanupVM(context.Background(), "db", "db-02"); err != nil || len(removed) != 1 || len(l.ids()) != 0 {
		t.Fatalf("cleanup of db-02: %q, %v", removed, err)
	}
}

func TestTestID(t *testing.T) {
	for _, c := range []struct{ vm, want string }{
		{"web-01", "web-01-test-abcd1234"},
		{"SQL Server (prod)", "SQL-Server--prod--test-abcd1234"},
		{".hidden", "-hidden-test-abcd1234"},
		{strings.Repeat("x", 100), strings.Repeat("x", 40) + "-test-abcd1234"},
		{"ünï", "-n--test-abcd1234"},
	} {
		got := TestID(c.vm, "abcd1234")
		if got != c.want {
			t.Errorf("TestID(%q) = %q, want %q", c.vm, got, c.want)
		}
		if err := sdk.CheckTestID(got); err != nil {
			t.Errorf("TestID(%q) = %q: %v", c.vm, got, err)
		}
	}
}

// failingResults refuses to keep anything.
type failingResults struct{}

func (failingResults) PutTestResult(*catalog.TestResult) error {
	return fmt.Errorf("catalog is locked: %w", errdefs.ErrUnavailable)
}

func TestTestResultsAreKept(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
  group "app" {
    vms        = ["web/app-01"]
    depends_on = ["db"]
    ready {
      script  = ["sh", "-c", "test -e ok"]
      timeout = "5s"
    }
  }
}`)
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	dir := t.TempDir()
	l := newLab("127.0.0.1")
	r := &Runner{Jobs: cfg.Jobs, Tests: l, Dir: dir, Results: cat}

	// A failing test is kept with why it failed, then a passing one.
	failed, err := r.Test(context.Background(), p, TestOptions{})
	if err == nil {
		t.Fatal("the check passed without its file")
	}
	if err := os.WriteFile(filepath.Join(dir, "ok"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	passed, err := r.Test(context.Background(), p, TestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := cat.TestResults("shop", 0)
	if err != nil || len(kept) != 2 {
		t.Fatalf("kept %+v, %v; want both tests", kept, err)
	}
	if kept[0].Run != passed.Run || !kept[0].Passed || kept[0].RecoverySeconds != passed.RecoverySeconds || len(kept[0].VMs) != 2 {
		t.Errorf("last kept %+v, want the passing test %+v", kept[0], passed)
	}
	if kept[1].Run != failed.Run || kept[1].Passed || kept[1].Error != failed.Error || !strings.Contains(kept[1].Error, "is not ready") {
		t.Errorf("first kept %+v, want the failing test %+v", kept[1], failed)
	}

	// A test of one VM is kept under the job and VM, and is the VM's
	// last test.
	one, err := r.TestVM(context.Background(), "db", "db-01", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if alone, err := cat.VMTestResults("db", "db-01", 0); err != nil || len(alone) != 1 || alone[0].Run != one.Run || alone[0].Job != "db" || alone[0].VM != "db-01" {
		t.Fatalf("kept of db/db-01 alone: %+v, %v", alone, err)
	}
	var db, app *catalog.VMTest
	if err := cat.View(func(tx *catalog.Tx) error {
		var err error
		if db, err = tx.LastTest("db", "db-01"); err != nil {
			return err
		}
		app, err = tx.LastTest("web", "app-01")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if db == nil || db.Run != one.Run || db.Plan != "" || app == nil || app.Run != passed.Run || app.Plan != "shop" {
		t.Errorf("last tests: db-01 %+v, app-01 %+v", db, app)
	}

	// A result that cannot be kept makes the test's error, verdict
	// unchanged.
	r.Results = failingResults{}
	res, err := r.Test(context.Background(), p, TestOptions{})
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "keep the result of test "+res.Run) || !res.Passed {
		t.Fatalf("a result not kept: %+v, %v", res, err)
	}
}
