package server

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/scheduler"
	"github.com/ferry-dr/ferry/sdk"
)

// testedPlan is the failover plan "shop" of db/db-01 (a job of jobs())
// with a test_schedule ("" for none).
func testedPlan(t *testing.T, expr string) map[string]*config.FailoverPlan {
	p := &config.FailoverPlan{Name: "shop", Groups: []*config.PlanGroup{{Name: "db", VMs: []config.PlanVM{{Job: "db", VM: "web-01"}}}}}
	if expr != "" {
		s, err := scheduler.Parse(expr, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.TestSchedule = s
	}
	return map[string]*config.FailoverPlan{"shop": p}
}

// withTarget gives cfg's jobs a target, where test VMs start.
func withTarget(cfg *config.Config) *config.Config {
	for _, j := range cfg.Jobs {
		j.Target = &config.PluginBlock{Kind: sdk.KindTarget, Type: "local", Name: "dr"}
	}
	return cfg
}

// testLab is a server with a plan to test, and what it heard of tests.
type testLab struct {
	*lab
	s    *Server
	site *testSite
	m    *Metrics

	mu     sync.Mutex
	tested []string // "SECONDS passed" or "SECONDS failed: ERROR", after t0
}

func newTestLab(t *testing.T, opts Options) *testLab {
	l := &testLab{lab: newLab(t), site: &testSite{tests: map[string]sdk.TestVM{}, held: make(chan struct{}, 8)}}
	if err := l.cat.AddRestorePoint(&catalog.RestorePoint{Job: "db", VM: "web-01", ID: "p1", Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	l.s = New(l.run, l.cat, nil, opts)
	l.s.Tests = l.site
	l.s.Tested = func(pt *PlanTest, err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		what := fmt.Sprintf("%d passed", int(time.Since(l.t0).Seconds()))
		if err != nil {
			what = fmt.Sprintf("%d failed: %v", int(time.Since(l.t0).Seconds()), err)
		}
		if pt.Plan != "shop" || pt.Passed != (err == nil) {
			t.Errorf("tested %+v, %v", pt.TestResult, err)
		}
		l.tested = append(l.tested, what)
	}
	l.m = NewMetrics(l.s)
	return l
}

func (l *testLab) heard() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.tested)
}

// gauge is the value of a metric of plan "shop"; false when absent.
func (l *testLab) gauge(t *testing.T, name string) (float64, bool) {
	t.Helper()
	fams, err := l.m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "plan" && lp.GetValue() == "shop" {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func TestAPlanIsTestedAtItsTestSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newTestLab(t, Options{})
		l.took["db"] = 150 * time.Second // a session the tests do not wait for
		cfg := withTarget(jobs(t, map[string]string{"db": "every 1m"}))
		cfg.FailoverPlans = testedPlan(t, "every 1m")
		stop := serve(l.s, cfg)
		defer stop()
		synctest.Wait()
		if next, ok := l.s.NextTest("shop"); !ok || !next.Equal(l.t0.Add(time.Minute)) {
			t.Fatalf("next test %v %v, want %v", next, ok, l.t0.Add(time.Minute))
		}
		if _, ok := l.gauge(t, "ferry_failover_plan_test_passed"); ok {
			t.Error("a plan never tested has a test_passed metric")
		}
		if v, _ := l.gauge(t, "ferry_failover_plan_next_test_timestamp_seconds"); v != unix(l.t0.Add(time.Minute)) {
			t.Errorf("next test metric %v", v)
		}

		// Due at 60 while a session of its job runs: it passes, and is
		// kept.
		time.Sleep(61 * time.Second)
		if got := l.heard(); !slices.Equal(got, []string{"60 passed"}) {
			t.Fatalf("tests %v", got)
		}
		if st, _ := l.s.Job("db"); !st.Running {
			t.Error("the test stopped the job's session")
		}
		last, err := l.cat.LastTestResult("shop")
		if err != nil || last == nil || !last.Passed || l.site.count() != 0 {
			t.Fatalf("kept %+v %v; test VMs left %d", last, err, l.site.count())
		}
		if v, ok := l.gauge(t, "ferry_failover_plan_test_passed"); !ok || v != 1 {
			t.Errorf("test_passed %v %v after a passing test", v, ok)
		}
		if v, _ := l.gauge(t, "ferry_failover_plan_last_test_timestamp_seconds"); v != unix(l.t0.Add(time.Minute)) {
			t.Errorf("last test metric %v", v)
		}

		// At 120 the target cannot start test VMs: the test fails, the
		// alarm is heard, the metric says so.
		l.site.mu.Lock()
		l.site.fail = errors.New("no isolated network")
		l.site.mu.Unlock()
		time.Sleep(time.Minute)
		if got := l.heard(); len(got) != 2 || !strings.HasPrefix(got[1], "120 failed: ") || !strings.Contains(got[1], "no isolated network") {
			t.Fatalf("tests %v", got)
		}
		if v, ok := l.gauge(t, "ferry_failover_plan_test_passed"); !ok || v != 0 {
			t.Errorf("test_passed %v %v after a failing test", v, ok)
		}

		// At 180 a test holds its test VM until told; the one due at 240
		// is skipped, and one asked meanwhile is refused.
		l.site.mu.Lock()
		l.site.fail, l.site.hold = nil, make(chan struct{})
		hold := l.site.hold
		l.site.mu.Unlock()
		time.Sleep(time.Minute)
		<-l.site.held
		time.Sleep(time.Minute)
		if _, err := l.s.TestPlan(cfg.FailoverPlans["shop"], recovery.TestOptions{}); !errors.Is(err, ErrBusy) {
			t.Errorf("a test asked while a scheduled one runs: %v", err)
		}
		l.site.mu.Lock()
		l.site.hold = nil
		l.site.mu.Unlock()
		close(hold)
		synctest.Wait()
		if got := l.heard(); len(got) != 3 || got[2] != "241 passed" {
			t.Fatalf("tests %v: want the one of 180 to end at 241, the one due at 240 skipped", got)
		}
		if next, _ := l.s.NextTest("shop"); !next.Equal(l.t0.Add(5 * time.Minute)) {
			t.Errorf("next test after a skipped one %v", next)
		}

		// A reload with another schedule: it applies from now.
		cfg2 := withTarget(jobs(t, map[string]string{"db": ""}))
		cfg2.FailoverPlans = testedPlan(t, "every 5m")
		l.s.Reload(cfg2)
		want := cfg2.FailoverPlans["shop"].TestSchedule.Next(time.Now())
		if next, _ := l.s.NextTest("shop"); !next.Equal(want) {
			t.Errorf("next test after reload %v, want %v", next, want)
		}
		time.Sleep(time.Until(want) + time.Second)
		if got := l.heard(); len(got) != 4 || got[3] != fmt.Sprintf("%d passed", int(want.Sub(l.t0).Seconds())) {
			t.Fatalf("tests %v after a reload", got)
		}
		// And without: no more tests.
		l.s.Reload(withTarget(jobs(t, map[string]string{"db": ""})))
		if _, ok := l.s.NextTest("shop"); ok {
			t.Error("a plan gone still has a next test")
		}
		time.Sleep(time.Hour)
		if got := l.heard(); len(got) != 4 {
			t.Errorf("tests %v after the plan went", got)
		}
		stop()
	})
}

func TestAMissedTestRunsOnceAtStart(t *testing.T) {
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip=%v", skip), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				aligned()
				l := newTestLab(t, Options{SkipMissed: skip})
				// Tested an hour ago: sixty tests of "every 1m" fell
				// due since, while no server ran.
				if err := l.cat.PutTestResult(&catalog.TestResult{Plan: "shop", Run: "r0", Started: time.Now().Add(-time.Hour), Passed: true}); err != nil {
					t.Fatal(err)
				}
				cfg := withTarget(jobs(t, map[string]string{"db": ""}))
				cfg.FailoverPlans = testedPlan(t, "every 1m")
				stop := serve(l.s, cfg)
				time.Sleep(90 * time.Second)
				stop()
				want := []string{"0 passed", "60 passed"}
				if skip {
					want = want[1:]
				}
				if got := l.heard(); !slices.Equal(got, want) {
					t.Errorf("tests %v, want %v", got, want)
				}
			})
		})
	}
}

// TestATestOfAPlanAnotherProcessTestsIsRefused: the plan's test lock,
// held by another catalog of the file (a `ferry failover plan --test`),
// refuses the server's test, named, before it looks for leftovers.
func TestATestOfAPlanAnotherProcessTestsIsRefused(t *testing.T) {
	l := newTestLab(t, Options{})
	cfg := withTarget(jobs(t, map[string]string{"db": ""}))
	cfg.FailoverPlans = testedPlan(t, "")
	stop := serve(l.s, cfg)
	defer stop()
	other, err := catalog.Open(l.cat.Path(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	release, err := other.LockTest("shop", catalog.TestHolder{What: "ferry failover plan shop --test", PID: 4242, Host: "ops-1", Since: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// A test VM the other test runs: the server must not remove it.
	l.site.tests["shop-db-other"] = sdk.TestVM{ID: "shop-db-other", Labels: map[string]string{recovery.LabelTestPlan: "shop", recovery.LabelTestRun: "other", recovery.LabelTestJob: "db", recovery.LabelTestVM: "web-01"}}
	srv := httptest.NewServer(l.s.Handler(l.m, "test"))
	defer srv.Close()
	var e apiError
	call(t, srv, "POST", "/v1/failover-plans/shop/test", "", 409, &e)
	if e.Class != "failed_precondition" || !strings.Contains(e.Error, "another test of the plan runs, by ferry failover plan shop --test (process 4242 on ops-1") {
		t.Fatalf("a test while another process tests the plan: %+v", e)
	}
	if l.site.count() != 1 || len(l.heard()) != 0 {
		t.Fatalf("the refused test acted: test VMs %d, heard %v", l.site.count(), l.heard())
	}
	release()
	if run, err := l.s.TestPlan(cfg.FailoverPlans["shop"], recovery.TestOptions{}); err != nil || !run.Passed || !slices.Equal(run.Leftovers, []string{"shop-db-other"}) {
		t.Fatalf("a test once the other ended: %+v %v", run, err)
	}
}
