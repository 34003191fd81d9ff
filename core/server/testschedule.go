package server

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/scheduler"
)

// Scheduled tests: a failover plan's test_schedule has the server test it
// with TestPlan, the code of POST /v1/failover-plans/{name}/test, at the
// latest restore points and without keeping the test VMs. A test due
// while one of the plan runs (scheduled, asked through the API) is
// skipped with a log line, never queued: the next one is at the schedule.
// A test that fell due while no server ran runs once at start, as a
// missed run of a job does, unless Options.SkipMissed; a plan never
// tested waits for its schedule.

// testSchedule is a plan's test_schedule as the server follows it.
type testSchedule struct {
	sched scheduler.Schedule
	next  time.Time
}

// reloadTests takes the test schedules of plans: a new or changed one
// applies from now, one gone is no longer followed (a test of it that
// runs ends as it would). Callers hold s.mu.
func (s *Server) reloadTests(plans map[string]*config.FailoverPlan, now time.Time) {
	tests := map[string]*testSchedule{}
	for name, p := range plans {
		if p.TestSchedule.IsZero() {
			continue
		}
		if old := s.tests[name]; old != nil && old.sched.String() == p.TestSchedule.String() && sameZone(old.sched, p.TestSchedule) {
			tests[name] = old
			continue
		}
		tests[name] = &testSchedule{sched: p.TestSchedule, next: p.TestSchedule.Next(now)}
	}
	s.tests = tests
}

// dueTests starts the tests that fell due and returns the earliest next
// one (zero when none is scheduled). Callers hold s.mu.
func (s *Server) dueTests(ctx context.Context, now time.Time) time.Time {
	var earliest time.Time
	for _, name := range slices.Sorted(maps.Keys(s.tests)) {
		t := s.tests[name]
		if !t.next.After(now) {
			s.startTest(ctx, name, whySchedule)
			t.next = t.sched.Next(now)
		}
		if earliest.IsZero() || t.next.Before(earliest) {
			earliest = t.next
		}
	}
	return earliest
}

// missedTests starts, once, the test of each plan with a test_schedule
// whose test fell due since its last test began while no server ran.
func (s *Server) missedTests(ctx context.Context) {
	if s.opts.SkipMissed {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.tests)) {
		last, err := s.cat.LastTestResult(name)
		if err != nil {
			s.log.Warn("read the plan's last test", "plan", name, "error", err)
			continue
		}
		if last == nil {
			continue // never tested: its first test is at its schedule
		}
		if due := s.tests[name].sched.Next(last.Started); !due.After(now) {
			s.log.Info("a test of the failover plan fell due while no server ran: testing it now", "plan", name, "due", due.Format(time.RFC3339), "last_test", last.Run)
			s.startTest(ctx, name, whyMissed)
		}
	}
}

// startTest tests plan in the background, unless a test of it runs.
// Callers hold s.mu.
func (s *Server) startTest(ctx context.Context, plan, why string) {
	p := s.plans[plan]
	switch {
	case p == nil || ctx.Err() != nil:
		return
	case s.Tests == nil:
		s.log.Warn("a test of the failover plan is due, but this server does not run test failovers: skipped", "plan", plan, "why", why)
		return
	}
	if err := s.claimTest(ctx, plan); err != nil {
		s.log.Info("a test of the failover plan is due while another test of it runs: skipped", "plan", plan, "why", why)
		return
	}
	s.testRuns.Add(1)
	go func() {
		defer s.testRuns.Done()
		s.runTest(ctx, p, recovery.TestOptions{}, why)
	}()
}

// NextTest is when the server tests plan next, from its test_schedule;
// false when the plan has none.
func (s *Server) NextTest(plan string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tests[plan]
	if t == nil {
		return time.Time{}, false
	}
	return t.next, true
}
