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
	point, keep, ok := testBody(w, r)
	if !ok {
		return
	}
	var at time.Time
	if point != "" && point != "latest" {
		t, err := time.Parse(time.RFC3339, point)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("point %q: write latest, or a time in RFC 3339 such as 2026-12-06T14:30:00Z", point))
			return
		}
		at = t
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

// vmTestKey marks a VM under a test of its own among the plans under
// test (s.testing): no plan's name holds a NUL.
func vmTestKey(job, vm string) string { return "\x00vm/" + job + "/" + vm }

// claimVMTest marks vm of job as under a test of its own (a test or a
// cleanup), as claimTest does a plan; it returns the job. Callers hold
// s.mu, and release the claim with delete(s.testing, vmTestKey(...)).
func (s *Server) claimVMTest(ctx context.Context, job, vm string) (*config.Job, error) {
	j := s.jobs[job]
	switch {
	case ctx == nil || ctx.Err() != nil:
		return nil, fmt.Errorf("the server is stopping: %w", errdefs.ErrUnavailable)
	case j == nil || j.removed:
		return nil, fmt.Errorf("%w %q", ErrUnknownJob, job)
	case s.testing[vmTestKey(job, vm)]:
		return nil, fmt.Errorf("test failover of job %q vm %q: another test of the VM runs: %w; try again when it ends", job, vm, ErrBusy)
	}
	if s.testing == nil {
		s.testing = map[string]bool{}
	}
	s.testing[vmTestKey(job, vm)] = true
	return j.cfg, nil
}

// underVMTest runs fn with vm of job claimed for a test of its own, here
// (claimVMTest) and against other processes (the catalog's LockTestVM),
// under the server's context. It fails without calling fn when either
// claim is refused.
func (s *Server) underVMTest(job, vm, what string, fn func(ctx context.Context, rr *recovery.Runner) error, progress func(recovery.Step)) error {
	if s.Tests == nil {
		return fmt.Errorf("this server does not run test failovers: %w", errdefs.ErrUnavailable)
	}
	s.mu.Lock()
	ctx := s.ctx
	_, err := s.claimVMTest(ctx, job, vm)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	defer func() {
		s.mu.Lock()
		delete(s.testing, vmTestKey(job, vm))
		s.mu.Unlock()
	}()
	release, err := s.cat.LockTestVM(job, vm, catalog.TestHolder{What: "ferry server", PID: s.Controller.PID, Host: s.Controller.Host, Since: time.Now().UTC()})
	if err != nil {
		s.log.Info(what+" not run: another process tests the VM", "job", job, "vm", vm, "error", err)
		return err
	}
	defer release()
	rr := s.recoveryRunner(progress)
	rr.Tests, rr.Results = s.Tests, s.cat
	return fn(ctx, rr)
}

// TestVM rehearses the failover of vm of job alone, as `ferry failover
// JOB VM --test` does, under the server's context, and keeps its result
// in the catalog (the VM's last test). point is a restore point's id or
// an unambiguous start of one, "" the newest. The run is nil when the
// test was refused (see TestPlan; another test of the VM here is ErrBusy,
// in another process errdefs.ErrFailedPrecondition naming it).
func (s *Server) TestVM(job, vm, point string, keep time.Duration) (*PlanTest, error) {
	var out *PlanTest
	var mu sync.Mutex
	err := s.underVMTest(job, vm, "test failover of a VM", func(ctx context.Context, rr *recovery.Runner) error {
		mu.Lock()
		out = &PlanTest{Steps: []recovery.Step{}}
		mu.Unlock()
		s.log.Info("test failover of a VM starts", "job", job, "vm", vm, "keep", keep)
		res, err := rr.TestVM(ctx, job, vm, point, keep)
		mu.Lock()
		out.TestResult = *res
		if out.VMs == nil {
			out.VMs = []recovery.TestVMResult{}
		}
		mu.Unlock()
		if err != nil {
			s.log.Error("test failover of a VM failed", "job", job, "vm", vm, "run", res.Run, "error", err)
		} else {
			s.log.Info("test failover of a VM passed", "job", job, "vm", vm, "run", res.Run, "recovery_seconds", res.RecoverySeconds)
		}
		return err
	}, func(st recovery.Step) {
		mu.Lock()
		defer mu.Unlock()
		out.Steps = append(out.Steps, st)
	})
	if out != nil && s.Tested != nil { // the test ran: its end is told as a plan's is
		s.Tested(out, err)
	}
	return out, err
}

// CleanupVMTests removes the test VMs that tests of vm of job alone left
// behind, under the same claims as a test of the VM, and returns their ids.
func (s *Server) CleanupVMTests(job, vm string) ([]string, error) {
	var removed []string
	err := s.underVMTest(job, vm, "cleanup of a VM's tests", func(ctx context.Context, rr *recovery.Runner) error {
		var err error
		removed, err = rr.CleanupVM(ctx, job, vm)
		if len(removed) > 0 {
			s.log.Info("removed test VMs left behind", "job", job, "vm", vm, "test_vms", removed)
		}
		return err
	}, nil)
	return removed, err
}

// CleanupPlanTests removes the test VMs that tests of p left behind,
// under the same claims as a test of p (one test of a plan at a time,
// here and across processes), and returns their ids.
func (s *Server) CleanupPlanTests(p *config.FailoverPlan) ([]string, error) {
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
	defer func() {
		s.mu.Lock()
		delete(s.testing, p.Name)
		s.mu.Unlock()
	}()
	release, err := s.cat.LockTest(p.Name, catalog.TestHolder{What: "ferry server", PID: s.Controller.PID, Host: s.Controller.Host, Since: time.Now().UTC()})
	if err != nil {
		return nil, err
	}
	defer release()
	rr := s.recoveryRunner(nil)
	rr.Tests = s.Tests
	removed, err := rr.Cleanup(ctx, p)
	if len(removed) > 0 {
		s.log.Info("removed test VMs left behind", "plan", p.Name, "test_vms", removed)
	}
	return removed, err
}

// Cleaned is the answer of a cleanup of test VMs left behind.
type Cleaned struct {
	// Removed are the ids of the test VMs removed; empty when none was
	// left.
	Removed []string `json:"removed"`
}

// testBody reads the optional body of a test request: {"point": ...,
// "keep": a duration such as "30m"}. It writes the error and returns
// false when the body is wrong.
func testBody(w http.ResponseWriter, r *http.Request) (point string, keep time.Duration, ok bool) {
	var body struct {
		Point string `json:"point"`
		Keep  string `json:"keep"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "invalid_argument", "the body is not a JSON object such as {\"point\": \"latest\", \"keep\": \"30m\"}: "+err.Error())
			return "", 0, false
		}
	}
	if body.Keep != "" {
		d, err := time.ParseDuration(body.Keep)
		if err != nil || d < 0 || d > maxKeep {
			writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("keep %q: a duration from 0s to %s, such as 30m", body.Keep, maxKeep))
			return "", 0, false
		}
		keep = d
	}
	return body.Point, keep, true
}

// vmTest answers POST /v1/jobs/{name}/vms/{vm}/test, with an optional
// {"point": a restore point's id or a start of one, "keep": "30m"}: the
// test runs to its end under the server's context even when the client
// goes away, and the answer comes once its test VM is removed.
func (s *Server) vmTest(w http.ResponseWriter, r *http.Request) {
	point, keep, ok := testBody(w, r)
	if !ok {
		return
	}
	run, err := s.TestVM(r.PathValue("name"), r.PathValue("vm"), point, keep)
	switch {
	case err != nil && run == nil:
		writeActionError(w, err, nil) // refused: nothing was done
	case err != nil:
		writeActionError(w, err, run)
	default:
		writeJSON(w, http.StatusOK, run)
	}
}

// vmTestCleanup answers POST /v1/jobs/{name}/vms/{vm}/test/cleanup.
func (s *Server) vmTestCleanup(w http.ResponseWriter, r *http.Request) {
	removed, err := s.CleanupVMTests(r.PathValue("name"), r.PathValue("vm"))
	writeCleaned(w, removed, err)
}

// planTestCleanup answers POST /v1/failover-plans/{name}/test/cleanup.
func (s *Server) planTestCleanup(w http.ResponseWriter, r *http.Request) {
	p, err := s.plan(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	removed, err := s.CleanupPlanTests(p)
	writeCleaned(w, removed, err)
}

// writeCleaned answers a cleanup: what it removed, with the error when
// it stopped.
func writeCleaned(w http.ResponseWriter, removed []string, err error) {
	out := Cleaned{Removed: removed}
	if out.Removed == nil {
		out.Removed = []string{}
	}
	if err != nil {
		writeActionError(w, err, out)
		return
	}
	writeJSON(w, http.StatusOK, out)
}
