package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/status"
	"github.com/ferry-dr/ferry/scheduler"
)

// lab is a server whose sessions are recorded in a real catalog and take
// the time the test says, in a synctest bubble: time moves only when
// every goroutine waits.
type lab struct {
	t   *testing.T
	cat *catalog.Catalog
	t0  time.Time

	mu     sync.Mutex
	starts map[string][]time.Duration // by job: when each session began, after t0
	took   map[string]time.Duration   // by job: how long a session takes
	points map[string]bool            // by job: whether a session makes a restore point
	refuse map[string]error           // by job: why a run ends before its session begins
}

func newLab(t *testing.T) *lab {
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return &lab{t: t, cat: cat, t0: time.Now(), starts: map[string][]time.Duration{}, took: map[string]time.Duration{}, points: map[string]bool{}, refuse: map[string]error{}}
}

// run is the lab's Runner: a session that takes its job's time, or ends
// early when the server stops.
func (l *lab) run(ctx context.Context, job *config.Job, began func(string)) (*catalog.Session, error) {
	l.mu.Lock()
	l.starts[job.Name] = append(l.starts[job.Name], time.Since(l.t0))
	took, point, refused := l.took[job.Name], l.points[job.Name], l.refuse[job.Name]
	l.mu.Unlock()
	if refused != nil {
		return nil, refused
	}
	s, err := l.cat.BeginSession(job.Name)
	if err != nil {
		return nil, err
	}
	began(s.ID)
	s.Result = catalog.ResultSuccess
	select {
	case <-time.After(took):
	case <-ctx.Done():
		s.Result, s.Error = catalog.ResultFailed, "interrupted"
	}
	if point && s.Result == catalog.ResultSuccess {
		for _, vm := range job.VMs {
			if err := l.cat.AddRestorePoint(&catalog.RestorePoint{Job: job.Name, VM: vm, ID: s.ID, Created: time.Now()}); err != nil {
				return s, err
			}
		}
	}
	if err := l.cat.SaveSession(s); err != nil {
		return s, err
	}
	if s.Result == catalog.ResultFailed {
		return s, ctx.Err()
	}
	return s, nil
}

func (l *lab) startsOf(job string) []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.starts[job])
}

// jobs is a configuration of jobs by name and schedule ("" on demand).
func jobs(t *testing.T, schedules map[string]string) *config.Config {
	cfg := &config.Config{Jobs: map[string]*config.Job{}}
	for name, expr := range schedules {
		j := &config.Job{Name: name, VMs: []string{"web-01"}}
		if expr != "" {
			s, err := scheduler.Parse(expr, nil)
			if err != nil {
				t.Fatal(err)
			}
			j.Schedule = s
		}
		cfg.Jobs[name] = j
	}
	return cfg
}

// serve runs s on cfg in the background (see serveReady); stop cancels
// it and waits.
func serve(s *Server, cfg *config.Config) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := serveReady(ctx, s, cfg)
	return func() {
		cancel()
		<-done
	}
}

// serveReady runs s.Serve(ctx, cfg) in the background and returns once
// the server is Ready, as ferry server waits before its API answers (a
// call made sooner may find no job: a loaded machine can run the test's
// call before Serve's goroutine), or once Serve returned; done is closed
// when Serve returns.
func serveReady(ctx context.Context, s *Server, cfg *config.Config) (done chan struct{}) {
	ready := make(chan struct{})
	prev := s.Ready
	s.Ready = func() {
		if prev != nil {
			prev()
		}
		close(ready)
	}
	done = make(chan struct{})
	go func() {
		s.Serve(ctx, cfg)
		close(done)
	}()
	select {
	case <-ready:
	case <-done:
	}
	return done
}

func secs(ds ...int) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = time.Duration(d) * time.Second
	}
	return out
}

// aligned waits until the bubble's clock is on a whole minute, so that
// every-schedules (anchored to the epoch) fall due at known offsets.
func aligned() {
	time.Sleep(time.Until(time.Now().Truncate(time.Minute).Add(time.Minute)))
}

func TestJobsRunAtTheirSchedules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newLab(t)
		s := New(l.run, l.cat, nil, Options{})
		stop := serve(s, jobs(t, map[string]string{"fast": "every 10s", "slow": "every 30s", "manual": ""}))
		time.Sleep(65 * time.Second)
		stop()
		if got := l.startsOf("fast"); !slices.Equal(got, secs(10, 20, 30, 40, 50, 60)) {
			t.Errorf("fast began at %v", got)
		}
		if got := l.startsOf("slow"); !slices.Equal(got, secs(30, 60)) {
			t.Errorf("slow began at %v", got)
		}
		if got := l.startsOf("manual"); len(got) != 0 {
			t.Errorf("a job without a schedule ran at %v", got)
		}
	})
}

func TestARunDueWhileItsLastRunsIsQueuedOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newLab(t)
		l.took["web"] = 35 * time.Second
		s := New(l.run, l.cat, nil, Options{})
		stop := serve(s, jobs(t, map[string]string{"web": "every 10s"}))
		time.Sleep(25 * time.Second)
		if st, _ := s.Job("web"); !st.Running || !st.Queued {
			t.Errorf("status while a run is due during the last: %+v", st)
		}
		time.Sleep(75 * time.Second)
		stop()
		// Due at 20, 30 and 40 while the first ran (10-45): one run at 45;
		// due at 50-70 while that ran (45-80): one run at 80.
		if got := l.startsOf("web"); !slices.Equal(got, secs(10, 45, 80)) {
			t.Errorf("web began at %v", got)
		}
	})
}

func TestAMissedRunRunsOnceAtStart(t *testing.T) {
	for _, skip := range []bool{false, true} {
		t.Run(fmt.Sprintf("skip=%v", skip), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				aligned()
				l := newLab(t)
				// The last session began an hour ago: sixty runs of
				// "every 1m" fell due since, while no server ran.
				if _, err := l.run(context.Background(), &config.Job{Name: "web"}, func(string) {}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Hour)
				l.t0 = time.Now()
				l.starts = map[string][]time.Duration{}
				s := New(l.run, l.cat, nil, Options{SkipMissed: skip})
				stop := serve(s, jobs(t, map[string]string{"web": "every 1m", "new": "every 1m"}))
				time.Sleep(90 * time.Second)
				stop()
				want := secs(0, 60)
				if skip {
					want = secs(60)
				}
				if got := l.startsOf("web"); !slices.Equal(got, want) {
					t.Errorf("web began at %v, want %v", got, want)
				}
				// A job never run waits for its schedule.
				if got := l.startsOf("new"); !slices.Equal(got, secs(60)) {
					t.Errorf("new began at %v", got)
				}
			})
		})
	}
}

func TestSessionSlotsAreSharedByTheJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newLab(t)
		l.took["a"], l.took["b"] = 20*time.Second, 20*time.Second
		s := New(l.run, l.cat, nil, Options{MaxSessions: 1})
		stop := serve(s, jobs(t, map[string]string{"a": "every 1m", "b": "every 1m"}))
		time.Sleep(65 * time.Second)
		st := s.Jobs()
		time.Sleep(30 * time.Second)
		stop()
		// Both fall due at 60; one runs, the other waits for its slot.
		a, b := l.startsOf("a"), l.startsOf("b")
		if first, second := slices.Concat(a, b), secs(60, 80); !slices.Equal(slices.Sorted(slices.Values(first)), second) {
			t.Errorf("a began at %v, b at %v", a, b)
		}
		waiting := 0
		for _, j := range st {
			if j.Waiting {
				waiting++
			}
		}
		if waiting != 1 {
			t.Errorf("%d jobs wait for a slot: %+v", waiting, st)
		}
	})
}

func TestReloadSchedulesWhatTheConfigurationSays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newLab(t)
		s := New(l.run, l.cat, nil, Options{})
		stop := serve(s, jobs(t, map[string]string{"gone": "every 10s", "changed": "every 10s"}))
		time.Sleep(15 * time.Second)
		s.Reload(jobs(t, map[string]string{"changed": "every 30s", "added": "every 20s"}))
		time.Sleep(50 * time.Second)
		stop()
		if got := l.startsOf("gone"); !slices.Equal(got, secs(10)) {
			t.Errorf("a removed job began at %v", got)
		}
		if got := l.startsOf("changed"); !slices.Equal(got, secs(10, 30, 60)) {
			t.Errorf("a changed job began at %v", got)
		}
		if got := l.startsOf("added"); !slices.Equal(got, secs(20, 40, 60)) {
			t.Errorf("an added job began at %v", got)
		}
		if _, ok := s.Job("gone"); ok {
			t.Error("a removed job is still listed")
		}
	})
}

func TestStopStopsTheSessionsAndStartsNoMore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newLab(t)
		l.took["web"] = time.Hour
		s := New(l.run, l.cat, nil, Options{})
		ended := make(chan error, 1)
		s.Ended = func(_ string, _ *catalog.Session, err error) { ended <- err }
		stop := serve(s, jobs(t, map[string]string{"web": "every 10s"}))
		time.Sleep(15 * time.Second)
		stop() // returns once the session stopped
		select {
		case err := <-ended:
			if err == nil {
				t.Error("a session stopped by the server ended without an error")
			}
		default:
			t.Fatal("Serve returned before its session ended")
		}
		time.Sleep(time.Minute)
		if got := l.startsOf("web"); !slices.Equal(got, secs(10)) {
			t.Errorf("web began at %v", got)
		}
		if _, err := s.RunNow(context.Background(), "web"); err == nil {
			t.Error("a stopped server took a run")
		}
	})
}

func TestRunNow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		l.took["web"] = 10 * time.Second
		s := New(l.run, l.cat, nil, Options{})
		stop := serve(s, jobs(t, map[string]string{"web": ""}))
		synctest.Wait()
		ctx := context.Background()
		first, err := s.RunNow(ctx, "web")
		if !first.Started || first.Queued || first.Session == "" || err != nil {
			t.Fatalf("run now: %+v, %v", first, err)
		}
		if st, _ := s.Job("web"); st.Session != first.Session {
			t.Errorf("the job's status names session %q, the run %q", st.Session, first.Session)
		}
		time.Sleep(time.Second)
		// While it runs, asking again queues one run, however often, after
		// the session that runs.
		for range 3 {
			if again, err := s.RunNow(ctx, "web"); again.Started || !again.Queued || again.Session != "" || again.After != first.Session || err != nil {
				t.Fatalf("run now while it runs: %+v, %v", again, err)
			}
		}
		time.Sleep(30 * time.Second)
		stop()
		if got := l.startsOf("web"); !slices.Equal(got, secs(0, 10)) {
			t.Errorf("web began at %v", got)
		}
		// The queued run's session is the first begun after the one it
		// came after.
		sessions, err := l.cat.Sessions("web", 0)
		if err != nil || len(sessions) != 2 || sessions[1].ID != first.Session {
			t.Fatalf("sessions %+v, %v", sessions, err)
		}
		if _, err := s.RunNow(ctx, "nosuch"); err == nil {
			t.Error("an unknown job ran")
		}
	})
}

// TestReadyKnowsTheJobs: Ready, where ferry server lets its API answer,
// comes once the configuration's jobs are known and queued runs resumed,
// so that a run asked at once is started, not refused as an unknown job.
func TestReadyKnowsTheJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		l.took["web"] = 10 * time.Second
		s := New(l.run, l.cat, nil, Options{})
		var asked Asked
		var askErr error
		ready := 0
		s.Ready = func() {
			ready++
			asked, askErr = s.RunNow(context.Background(), "web")
		}
		stop := serve(s, jobs(t, map[string]string{"web": ""}))
		synctest.Wait()
		stop()
		if ready != 1 || askErr != nil || !asked.Started || asked.Session == "" {
			t.Fatalf("Ready called %d times; a run asked in it: %+v, %v", ready, asked, askErr)
		}
	})
}

func TestRPOAlarmsAreRaisedAndCleared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newLab(t)
		l.points["web"] = true
		s := New(l.run, l.cat, nil, Options{RPOEvery: 10 * time.Second})
		var mu sync.Mutex
		var alarms []string
		s.Alarm = func(a RPOAlarm) {
			mu.Lock()
			alarms = append(alarms, fmt.Sprintf("%s/%s breached=%v at %v", a.Job, a.VM, a.Breached, time.Since(l.t0).Round(time.Second)))
			mu.Unlock()
		}
		cfg := jobs(t, map[string]string{"web": "every 1m"})
		cfg.Jobs["web"].RPO = 90 * time.Second
		stop := serve(s, cfg)
		// GET /v1/status says what the server's alarm says.
		statusSays := func() string {
			t.Helper()
			rec := httptest.NewRecorder()
			s.statusHandler(rec, httptest.NewRequest("GET", "/v1/status", nil))
			var out []status.Job
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out) != 1 || len(out[0].VMs) != 1 {
				t.Fatalf("GET /v1/status: %v %s", err, rec.Body)
			}
			return fmt.Sprintf("rpo %s breached=%v", out[0].RPO, out[0].VMs[0].RPOBreached)
		}
		// No point yet, but the server has watched the VM for less than
		// the RPO: no alarm, in status either.
		time.Sleep(15 * time.Second)
		if got := statusSays(); got != "rpo 1m30s breached=false" {
			t.Fatalf("status before the first run: %s", got)
		}
		// No point before the first run at 60: within the RPO.
		time.Sleep(50 * time.Second)
		if st := s.RPO(); len(st) != 1 || st[0].Breached || st[0].Newest == nil {
			t.Fatalf("after the first run: %+v", st)
		}
		// The runs stop making points: 90 s after the last, the alarm.
		l.mu.Lock()
		l.points["web"] = false
		l.mu.Unlock()
		time.Sleep(100 * time.Second)
		if st := s.RPO(); len(st) != 1 || !st[0].Breached || st[0].Since == nil {
			t.Fatalf("after 100 s without a point: %+v", st)
		}
		if got := statusSays(); got != "rpo 1m30s breached=true" {
			t.Fatalf("status after 100 s without a point: %s", got)
		}
		// A point again: the alarm ends at that session's end.
		l.mu.Lock()
		l.points["web"] = true
		l.mu.Unlock()
		time.Sleep(60 * time.Second)
		stop()
		mu.Lock()
		defer mu.Unlock()
		want := []string{"web/web-01 breached=true at 2m40s", "web/web-01 breached=false at 3m0s"}
		if !slices.Equal(alarms, want) {
			t.Errorf("alarms %q, want %q", alarms, want)
		}
	})
}

func TestOldSessionsExpireEveryHour(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		time.Sleep(time.Until(time.Now().Truncate(time.Hour).Add(time.Hour)))
		l := newLab(t)
		s := New(l.run, l.cat, nil, Options{KeepSessions: 2 * time.Hour})
		stop := serve(s, jobs(t, map[string]string{"web": "every 30m"}))
		time.Sleep(5*time.Hour + time.Minute)
		stop()
		// Ten sessions were made, one each half hour; the hourly sweep at
		// 5h deleted the five that ended before 3h.
		got, err := l.cat.Sessions("web", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.startsOf("web")) != 10 || len(got) != 5 {
			t.Fatalf("%d sessions made, %d kept", len(l.startsOf("web")), len(got))
		}
	})
}

func TestQueuedRunsSurviveARestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		l.took["a"], l.took["b"], l.took["c"] = 30*time.Second, 10*time.Second, 10*time.Second
		cfg := jobs(t, map[string]string{"a": "", "b": "", "c": "", "gone": ""})
		s := New(l.run, l.cat, nil, Options{MaxSessions: 1})
		stop := serve(s, cfg)
		synctest.Wait()
		ctx := context.Background()
		// a runs; b, c and gone wait for the one slot; a is asked again
		// while it runs: queued.
		for _, ask := range []struct {
			job  string
			want func(Asked) bool
		}{
			{"a", func(a Asked) bool { return a.Started && a.Session != "" }},
			{"b", func(a Asked) bool { return a.WaitingForSlot }},
			{"c", func(a Asked) bool { return a.WaitingForSlot }},
			{"a", func(a Asked) bool { return a.Queued }},
			{"gone", func(a Asked) bool { return a.WaitingForSlot }},
		} {
			got, err := s.RunNow(ctx, ask.job)
			if err != nil || !ask.want(got) {
				t.Fatalf("run %s now: %+v, %v", ask.job, got, err)
			}
		}
		time.Sleep(5 * time.Second)
		// Stopped as killed: nothing the server owed is forgotten (a
		// stopping server writes no change to what it owes), and what it
		// owes was written before it answered.
		stop()
		owed, err := l.cat.QueuedRuns()
		if err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, q := range owed {
			order = append(order, q.Job)
		}
		if !slices.Equal(order, []string{"b", "c", "a", "gone"}) {
			t.Fatalf("runs owed at the stop: %v", order)
		}

		// The next server, without the job gone, runs each once, in the
		// order they were queued, one slot after the other.
		l.t0 = time.Now()
		l.starts = map[string][]time.Duration{}
		delete(cfg.Jobs, "gone")
		s = New(l.run, l.cat, nil, Options{MaxSessions: 1})
		stop = serve(s, cfg)
		time.Sleep(2 * time.Minute)
		stop()
		for job, want := range map[string][]time.Duration{"b": secs(0), "c": secs(10), "a": secs(20), "gone": nil} {
			if got := l.startsOf(job); !slices.Equal(got, want) {
				t.Errorf("after the restart %s began at %v, want %v", job, got, want)
			}
		}
		if owed, err := l.cat.QueuedRuns(); err != nil || len(owed) != 0 {
			t.Errorf("runs still owed after they ran: %+v, %v", owed, err)
		}
	})
}

func TestAJobMissedAndQueuedRunsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		aligned()
		l := newLab(t)
		// The last session began an hour ago, and the server that stopped
		// owed the job a run besides.
		if _, err := l.run(context.Background(), &config.Job{Name: "web"}, func(string) {}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		if err := l.cat.QueueRun("web", whyAsked); err != nil {
			t.Fatal(err)
		}
		l.t0 = time.Now()
		l.starts = map[string][]time.Duration{}
		s := New(l.run, l.cat, nil, Options{})
		stop := serve(s, jobs(t, map[string]string{"web": "every 1m"}))
		time.Sleep(90 * time.Second)
		stop()
		if got := l.startsOf("web"); !slices.Equal(got, secs(0, 60)) {
			t.Errorf("web began at %v, want once at start and at its schedule", got)
		}
	})
}
