package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/sdk"
)

// testSite runs test VMs in memory, as a target with the TestFailover
// capability would; a StartTest waits for hold while it is not nil.
type testSite struct {
	mu    sync.Mutex
	tests map[string]sdk.TestVM
	hold  chan struct{}
	held  chan struct{} // gets a value when a StartTest waits for hold
	fail  error         // what StartTest answers, when set
}

func (ts *testSite) StartTest(ctx context.Context, job *config.Job, vm, id, point string, testMap []config.NetworkMapping, labels map[string]string) (*sdk.TestVM, error) {
	ts.mu.Lock()
	hold := ts.hold
	ts.mu.Unlock()
	if hold != nil {
		ts.held <- struct{}{}
		<-hold
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.fail != nil {
		return nil, ts.fail
	}
	if point == "" {
		point = "p1"
	}
	v := sdk.TestVM{ID: id, Point: point, Running: true, Labels: labels, VM: sdk.VM{Name: id, NICs: []sdk.NIC{{Network: "isolated", Addresses: []string{"10.9.0.5/24"}}}}}
	ts.tests[id] = v
	return &v, nil
}

func (ts *testSite) ListTests(ctx context.Context, job *config.Job) ([]sdk.TestVM, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []sdk.TestVM
	for _, v := range ts.tests {
		out = append(out, v)
	}
	return out, nil
}

func (ts *testSite) StopTest(ctx context.Context, job *config.Job, id string) error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.tests, id)
	return nil
}

func (ts *testSite) count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.tests)
}

func TestTestFailoverOfAPlanThroughTheAPI(t *testing.T) {
	l := newLab(t)
	l.took["web"] = time.Hour // a session the test meets, and does not wait for
	cfg := planConfig(t)
	for _, vm := range []string{"db/db-01", "web/app-01", "web/web-01"} {
		job, name, _ := strings.Cut(vm, "/")
		if err := l.cat.AddRestorePoint(&catalog.RestorePoint{Job: job, VM: name, ID: "p1", Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	site := &testSite{tests: map[string]sdk.TestVM{}, held: make(chan struct{}, 8)}
	s := New(l.run, l.cat, nil, Options{})
	stop := serve(s, cfg)
	defer stop()
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()
	var one FailoverPlan
	get(t, srv, "GET", "/v1/failover-plans/shop", 200, &one)
	if one.LastTest != nil {
		t.Fatalf("a plan never tested has a last test: %+v", one.LastTest)
	}

	// A server without Tests refuses.
	var e apiError
	call(t, srv, "POST", "/v1/failover-plans/shop/test", "", 503, &e)
	if e.Class != "unavailable" || !strings.Contains(e.Error, "does not run test failovers") {
		t.Fatalf("a server that cannot test: %+v", e)
	}
	s.Tests = site
	// Bad bodies, an unknown plan.
	for _, body := range []string{`{"point": "yesterday"}`, `{"keep": "forever"}`, `{"keep": "-1m"}`, `{"keep": "48h"}`, `[1]`} {
		call(t, srv, "POST", "/v1/failover-plans/shop/test", body, 400, &e)
	}
	call(t, srv, "POST", "/v1/failover-plans/nosuch/test", "", 404, &e)
	if site.count() != 0 {
		t.Fatalf("refused tests started test VMs: %v", site.tests)
	}

	// A session of a job of the plan runs: a test goes on beside it. Its
	// check fails (no app-ready file): 500, with what it did, kept.
	if asked, err := s.RunNow(context.Background(), "web"); err != nil || !asked.Started {
		t.Fatal(asked, err)
	}
	var failed struct {
		apiError
		Result PlanTest `json:"result"`
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/test", "", 500, &failed)
	if failed.Result.Passed || len(failed.Result.VMs) != 3 || !slices.Equal(failed.Result.Ready, []string{"db"}) || len(failed.Result.Steps) == 0 ||
		!strings.Contains(failed.Error, `group "app" is not ready`) || failed.Result.Error != failed.Error || site.count() != 0 {
		t.Fatalf("a failing test: %+v, test VMs left %d", failed, site.count())
	}
	if st, _ := s.Job("web"); !st.Running {
		t.Fatal("the session of web ended: the test waited for it, or stopped it")
	}
	get(t, srv, "GET", "/v1/failover-plans/shop", 200, &one)
	if one.LastTest == nil || one.LastTest.Run != failed.Result.Run || one.LastTest.Passed {
		t.Fatalf("last test after a failing one: %+v", one.LastTest)
	}

	// A test of the plan while another runs is refused; the first one
	// goes on and passes.
	if err := os.WriteFile(filepath.Join(cfg.Dir, "app-ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	site.mu.Lock()
	site.hold = hold
	site.mu.Unlock()
	answer := make(chan PlanTest, 1)
	go func() {
		var passed PlanTest
		call(t, srv, "POST", "/v1/failover-plans/shop/test", `{"point": "latest", "keep": "10ms"}`, 200, &passed)
		answer <- passed
	}()
	<-site.held
	call(t, srv, "POST", "/v1/failover-plans/shop/test", "", 409, &e)
	if e.Class != "failed_precondition" || !strings.Contains(e.Error, "another test of the plan runs") {
		t.Fatalf("a second test of the plan: %+v", e)
	}
	site.mu.Lock()
	site.hold = nil
	site.mu.Unlock()
	close(hold)
	passed := <-answer
	if !passed.Passed || passed.RecoverySeconds <= 0 || len(passed.VMs) != 3 || passed.VMs[0].Point != "p1" || !slices.Equal(passed.Ready, []string{"db", "app"}) || site.count() != 0 {
		t.Fatalf("a passing test: %+v, test VMs left %d", passed, site.count())
	}
	var whats []string
	for _, st := range passed.Steps {
		whats = append(whats, st.What)
	}
	if !slices.Contains(whats, "kept") || !slices.Contains(whats, "removed") {
		t.Errorf("steps of a kept test: %q", whats)
	}
	get(t, srv, "GET", "/v1/failover-plans/shop", 200, &one)
	var list []FailoverPlan
	get(t, srv, "GET", "/v1/failover-plans", 200, &list)
	for _, got := range []*catalog.TestResult{one.LastTest, list[0].LastTest} {
		if got == nil || got.Run != passed.Run || !got.Passed || got.RecoverySeconds != passed.RecoverySeconds {
			t.Fatalf("last test after a passing one: %+v, want run %s", got, passed.Run)
		}
	}
	if kept, err := l.cat.TestResults("shop", 0); err != nil || len(kept) != 2 {
		t.Fatalf("kept results: %d, %v", len(kept), err)
	}

	// A stopping server refuses.
	stop()
	call(t, srv, "POST", "/v1/failover-plans/shop/test", "", 503, &e)
	if !strings.Contains(e.Error, "stopping") {
		t.Fatalf("a test on a stopped server: %+v", e)
	}
}

// TestTestFailoverOfAVMThroughTheAPI: POST /v1/jobs/NAME/vms/VM/test
// rehearses one VM alone and keeps the result as the VM's last test; one
// such test of a VM at a time, here or in another process, and its
// cleanup likewise; the cleanups of a VM's and of a plan's leftovers
// remove theirs only.
func TestTestFailoverOfAVMThroughTheAPI(t *testing.T) {
	l := newLab(t)
	cfg := planConfig(t)
	if err := l.cat.AddRestorePoint(&catalog.RestorePoint{Job: "db", VM: "db-01", ID: "p1", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := l.cat.PutReplica(&catalog.Replica{Job: "db", VM: "db-01", ReplicaID: "r1", ReplicaName: "db-01_replica", State: sdk.ReplicaReady}); err != nil {
		t.Fatal(err)
	}
	left := func(id, plan, job, vm string) sdk.TestVM {
		return sdk.TestVM{ID: id, Labels: map[string]string{recovery.LabelTestPlan: plan, recovery.LabelTestJob: job, recovery.LabelTestVM: vm, recovery.LabelTestRun: "old-" + id}}
	}
	site := &testSite{tests: map[string]sdk.TestVM{
		"db-01-old": left("db-01-old", "", "db", "db-01"), "web-01-old": left("web-01-old", "", "web", "web-01"), "shop-old": left("shop-old", "shop", "db", "db-01"),
	}, held: make(chan struct{}, 8)}
	s := New(l.run, l.cat, nil, Options{})
	var toldMu sync.Mutex
	var told []string // the tests Tested heard of (webhooks)
	s.Tested = func(pt *PlanTest, err error) {
		toldMu.Lock()
		defer toldMu.Unlock()
		told = append(told, fmt.Sprintf("plan=%q job=%q vm=%q run=%s passed=%v err=%v", pt.Plan, pt.Job, pt.VM, pt.Run, pt.Passed, err))
	}
	stop := serve(s, cfg)
	defer stop()
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()
	var e apiError
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/test", "", 503, &e)
	s.Tests = site

	// The cleanups remove their own leftovers only.
	var cleaned Cleaned
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/test/cleanup", "", 200, &cleaned)
	if !slices.Equal(cleaned.Removed, []string{"db-01-old"}) || site.count() != 2 {
		t.Fatalf("the VM's cleanup removed %v, %d test VMs left", cleaned.Removed, site.count())
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/test/cleanup", "", 200, &cleaned)
	if !slices.Equal(cleaned.Removed, []string{"shop-old"}) || site.count() != 1 {
		t.Fatalf("the plan's cleanup removed %v, %d test VMs left", cleaned.Removed, site.count())
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/test/cleanup", "", 200, &cleaned)
	if cleaned.Removed == nil || len(cleaned.Removed) != 0 {
		t.Fatalf("a cleanup with nothing left: %+v", cleaned)
	}
	call(t, srv, "POST", "/v1/failover-plans/nosuch/test/cleanup", "", 404, &e)
	call(t, srv, "POST", "/v1/jobs/nosuch/vms/db-01/test", "", 404, &e)
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/test", `{"keep": "forever"}`, 400, &e)

	// A second test of the VM, or its cleanup, while one runs: refused.
	hold := make(chan struct{})
	site.mu.Lock()
	site.hold = hold
	site.mu.Unlock()
	answer := make(chan PlanTest, 1)
	go func() {
		var passed PlanTest
		call(t, srv, "POST", "/v1/jobs/db/vms/db-01/test", `{"point": "p1", "keep": "10ms"}`, 200, &passed)
		answer <- passed
	}()
	<-site.held
	for _, path := range []string{"/v1/jobs/db/vms/db-01/test", "/v1/jobs/db/vms/db-01/test/cleanup"} {
		call(t, srv, "POST", path, "", 409, &e)
		if e.Class != "failed_precondition" || !strings.Contains(e.Error, `test failover of job "db" vm "db-01": another test of the VM runs`) {
			t.Fatalf("POST %s while a test of the VM runs: %+v", path, e)
		}
	}
	site.mu.Lock()
	site.hold = nil
	site.mu.Unlock()
	close(hold)
	passed := <-answer
	if !passed.Passed || passed.Job != "db" || passed.VM != "db-01" || passed.Plan != "" || len(passed.VMs) != 1 || passed.VMs[0].Point != "p1" || len(passed.Steps) == 0 || site.count() != 1 {
		t.Fatalf("a passing test of a VM: %+v, test VMs %d", passed, site.count())
	}
	var last *catalog.VMTest
	if err := l.cat.View(func(tx *catalog.Tx) (err error) { last, err = tx.LastTest("db", "db-01"); return err }); err != nil || last == nil || last.Run != passed.Run || last.Plan != "" {
		t.Fatalf("the VM's last test: %+v, %v", last, err)
	}
	// Its end was told (the webhooks' test.passed), and only it: the
	// tests refused were never run.
	toldMu.Lock()
	want := fmt.Sprintf("plan=\"\" job=\"db\" vm=\"db-01\" run=%s passed=true err=<nil>", passed.Run)
	if len(told) != 1 || told[0] != want {
		t.Fatalf("tests told %q, want [%s]", told, want)
	}
	toldMu.Unlock()

	// Another process tests the VM: refused, naming it.
	release, err := l.cat.LockTestVM("db", "db-01", catalog.TestHolder{What: "ferry failover db db-01 --test", PID: 4242, Host: "ops-1", Since: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/test", "", 409, &e)
	release()
	if !strings.Contains(e.Error, "another test of the VM runs, by ferry failover db db-01 --test (process 4242 on ops-1") {
		t.Fatalf("a test of a VM another process tests: %+v", e)
	}
}
