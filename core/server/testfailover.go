package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Test failovers through the API: POST /v1/failover-plans/{name}/test
// rehearses a plan with core/recovery's Test on the server's targets
// (Server.Tests) and keeps the result in the catalog, which GET
// /v1/failover-plans/{name} answers as last_test. A test claims no job:
// replication goes on while it runs, as it does from the CLI. One test of
// a plan runs at a time (a second one would remove the first one's test
// VMs as leftovers): a test of a plan under test is refused with ErrBusy,
// and one while another process tests the plan (catalog.LockTest) with
// that process named.
// A plan's test_schedule runs the same tests (testschedule.go).

// PlanTest is what a test of a failover plan did: the result the catalog
// keeps, and the steps it went through.
type PlanTest struct {
	recovery.TestResult
	// Steps are what happened, in order: what `ferry failover plan NAME
	// --test` prints as it runs.
	Steps []recovery.Step `json:"steps"`
}

// maxKeep bounds how long an API test keeps its test VMs: the request
// waits for them.
const maxKeep = 24 * time.Hour

// failoverPlanTest answers POST /v1/failover-plans/{name}/test, with an
// optional {"point": "latest" or an RFC 3339 time, "keep": a duration
// such as "30m"}. The test runs to its end under the server's context
// even when the client goes away; the answer comes once its test VMs are
// removed.
func (s *Server) failoverPlanTest(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Point string `json:"point"`
		Keep  string `json:"keep"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "invalid_argument", "the body is not a JSON object such as {\"point\": \"latest\", \"keep\": \"30m\"}: "+err.Error())
			return
		}
	}
	var at time.Time
	if body.Point != "" && body.Point != "latest" {
		t, err := time.Parse(time.RFC3339, body.Point)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("point %q: write latest, or a time in RFC 3339 such as 2026-12-06T14:30:00Z", body.Point))
			return
		}
		at = t
	}
	var keep time.Duration
	if body.Keep != "" {
		d, err := time.ParseDuration(body.Keep)
		if err != nil || d < 0 || d > maxKeep {
			writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("keep %q: a duration from 0s to %s, such as 30m", body.Keep, maxKeep))
			return
		}
		keep = d
	}
	p, err := s.plan(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	run, err := s.TestPlan(p, recovery.TestOptions{At: at, Keep: keep})
	switch {
	case err != nil && run == nil:
		writeActionError(w, err, nil) // refused: nothing was done
	case err != nil:
		writeActionError(w, err, run)
	default:
		writeJSON(w, http.StatusOK, run)
	}
}

// TestPlan rehearses p under the server's context and keeps its result in
// the catalog. The run is nil when the test was refused: the server does
// not run tests (Tests is nil) or is stopping (ErrUnavailable), a test of
// p runs here (ErrBusy), or another process tests p (the catalog's
// LockTest: errdefs.ErrFailedPrecondition, naming it).
func (s *Server) TestPlan(p *config.FailoverPlan, opts recovery.TestOptions) (*PlanTest, error) {
	if s.Tests == nil {
		return nil, fmt.Errorf("this server does not run test failovers: %w", errdefs.ErrUnavailable)
	}
	s.mu.Lock()
	ctx := s.ctx
	if err := s.claimTest(ctx, p.Name); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.mu.Unlock()
	return s.runTest(ctx, p, opts, whyAsked)
}

// claimTest marks plan as under test; an error when the server is
// stopping or a test of plan runs. Callers hold s.mu, and runTest
// releases the claim.
func (s *Server) claimTest(ctx context.Context, plan string) error {
	switch {
	case ctx == nil || ctx.Err() != nil:
		return fmt.Errorf("the server is stopping: %w", errdefs.ErrUnavailable)
	case s.testing[plan]:
		return fmt.Errorf("test of failover plan %q: another test of the plan runs: %w; try again when it ends", plan, ErrBusy)
	}
	if s.testing == nil {
		s.testing = map[string]bool{}
	}
	s.testing[plan] = true
	return nil
}

// runTest runs a test of p that claimTest claimed, and tells Tested how
// it went; why says who asked for it (the API, or the plan's schedule).
func (s *Server) runTest(ctx context.Context, p *config.FailoverPlan, opts recovery.TestOptions, why string) (*PlanTest, error) {
	defer func() {
		s.mu.Lock()
		delete(s.testing, p.Name)
		s.mu.Unlock()
	}()
	// Another process (ferry failover plan NAME --test) may test it.
	release, err := s.cat.LockTest(p.Name, catalog.TestHolder{What: "ferry server", PID: s.Controller.PID, Host: s.Controller.Host, Since: time.Now().UTC()})
	if err != nil {
		s.log.Info("test of failover plan not run: another process tests it", "plan", p.Name, "why", why, "error", err)
		return nil, err
	}
	defer release()
	out := &PlanTest{Steps: []recovery.Step{}}
	var mu sync.Mutex
	rr := s.recoveryRunner(func(st recovery.Step) {
		mu.Lock()
		defer mu.Unlock()
		out.Steps = append(out.Steps, st)
	})
	rr.Tests, rr.Results = s.Tests, s.cat
	s.log.Info("test of failover plan starts", "plan", p.Name, "why", why, "keep", opts.Keep)
	res, err := rr.Test(ctx, p, opts)
	mu.Lock()
	out.TestResult = *res
	if out.VMs == nil {
		out.VMs = []recovery.TestVMResult{}
	}
	mu.Unlock()
	if err != nil {
		s.log.Error("test of failover plan failed", "plan", p.Name, "why", why, "run", res.Run, "error", err)
	} else {
		s.log.Info("test of failover plan passed", "plan", p.Name, "why", why, "run", res.Run, "recovery_seconds", res.RecoverySeconds)
	}
	if s.Tested != nil {
		s.Tested(out, err)
	}
	return out, err
}
