package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/core/status"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Failover plans through the API: the configuration's failover_plan
// blocks, what starting one would do now, and their start, undo and
// commit, run by core/recovery with the server's Failover. A plan holds
// every job it names while it acts, as a VM's failover holds its job: no
// session of them begins meanwhile, and a plan is refused (ErrBusy) while
// a session or a failover of one of them runs.

// FailoverPlan is a failover plan as the API lists it.
type FailoverPlan struct {
	Name       string      `json:"name"`
	Groups     []PlanGroup `json:"groups"`
	PreScript  []string    `json:"pre_script,omitempty"`
	PostScript []string    `json:"post_script,omitempty"`
	// Preview is what starting the plan would do now; only for one plan
	// (GET /v1/failover-plans/{name}).
	Preview *recovery.Preview `json:"preview,omitempty"`
	// LastTest is the result of the plan's last test failover, as the
	// catalog keeps it; absent when it was never tested.
	LastTest *catalog.TestResult `json:"last_test,omitempty"`
	// TestSchedule is the plan's test_schedule, "" when it has none;
	// NextTest is when the server tests it next by it.
	TestSchedule string     `json:"test_schedule,omitempty"`
	NextTest     *time.Time `json:"next_test,omitempty"`
}

// PlanGroup is a group of a failover plan, in the order written.
type PlanGroup struct {
	Name      string   `json:"name"`
	VMs       []string `json:"vms"` // JOB/VM
	DependsOn []string `json:"depends_on,omitempty"`
}

// PlanRun is what an action of a failover plan did: its answer, and when
// it stopped, the result of its error.
type PlanRun struct {
	Plan   string `json:"plan"`
	Action string `json:"action"` // failover, undo or commit
	// VMs are those acted on, in the order they finished; for a plan that
	// stopped, every VM it started and the ones that failed.
	VMs   []recovery.VMResult `json:"vms"`
	Ready []string            `json:"ready,omitempty"` // the groups that came up, in order
	// Steps are what happened, in order: what `ferry failover plan`
	// prints as it runs.
	Steps       []recovery.Step `json:"steps"`
	TookSeconds float64         `json:"took_seconds"`
	Error       string          `json:"error,omitempty"`
}

// Record takes into r what a plan's action did (res; nil when it did
// nothing) and its error.
func (r *PlanRun) Record(res *recovery.Result, err error) {
	if res != nil {
		if res.VMs != nil {
			r.VMs = res.VMs
		}
		r.Ready, r.TookSeconds = res.Ready, res.Took.Seconds()
	}
	if err != nil {
		r.Error = err.Error()
	}
}

// plan returns the failover plan named, or an error that lists those
// there are (its callers answer it 404).
func (s *Server) plan(name string) (*config.FailoverPlan, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.plans[name]; ok {
		return p, nil
	}
	names := slices.Sorted(maps.Keys(s.plans))
	if len(names) == 0 {
		return nil, fmt.Errorf("no failover plan %q: the configuration declares none", name)
	}
	return nil, fmt.Errorf("no failover plan %q (plans: %s)", name, strings.Join(names, ", "))
}

// describe is a plan as the API lists it. Callers hold s.mu.
func (s *Server) describe(p *config.FailoverPlan) FailoverPlan {
	out := FailoverPlan{Name: p.Name, Groups: []PlanGroup{}, PreScript: p.PreScript, PostScript: p.PostScript, TestSchedule: p.TestSchedule.String()}
	if t := s.tests[p.Name]; t != nil {
		next := t.next
		out.NextTest = &next
	}
	for _, g := range p.Groups {
		pg := PlanGroup{Name: g.Name, VMs: []string{}, DependsOn: g.DependsOn}
		for _, vm := range g.VMs {
			pg.VMs = append(pg.VMs, vm.String())
		}
		out.Groups = append(out.Groups, pg)
	}
	return out
}

// recoveryRunner is a runner of plans with the server's configuration,
// catalog and Failover; progress hears each step.
func (s *Server) recoveryRunner(progress func(recovery.Step)) *recovery.Runner {
	s.mu.Lock()
	defer s.mu.Unlock()
	jobs := map[string]*config.Job{}
	for name, j := range s.jobs {
		if !j.removed {
			jobs[name] = j.cfg
		}
	}
	return &recovery.Runner{Jobs: jobs, Failover: s.Failover, Catalog: s.cat, Dir: s.dir, Progress: progress}
}

// failoverPlansHandler answers GET /v1/failover-plans: every plan, by
// name, with its groups, its last test and its next scheduled one.
func (s *Server) failoverPlansHandler(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := make([]FailoverPlan, 0, len(s.plans))
	names := slices.Sorted(maps.Keys(s.plans))
	for _, name := range names {
		out = append(out, s.describe(s.plans[name]))
	}
	s.mu.Unlock()
	tests, err := status.Plans(s.cat, names)
	if err != nil {
		writeCatalogError(w, err)
		return
	}
	for i := range out {
		out[i].LastTest = tests[i].LastTest
	}
	writeJSON(w, http.StatusOK, out)
}

// failoverPlanHandler answers GET /v1/failover-plans/{name}: the plan,
// what starting it would do now, as `ferry plan` shows it, and its last
// test.
func (s *Server) failoverPlanHandler(w http.ResponseWriter, r *http.Request) {
	p, err := s.plan(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	pv, err := s.recoveryRunner(nil).Preview(p)
	if err != nil {
		writeCatalogError(w, err)
		return
	}
	s.mu.Lock()
	out := s.describe(p)
	s.mu.Unlock()
	out.Preview = pv
	if out.LastTest, err = s.cat.LastTestResult(p.Name); err != nil {
		writeCatalogError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// failoverPlanAction answers POST /v1/failover-plans/{name}/failover
// (with an optional {"point": "latest" or an RFC 3339 time}), .../undo and
// .../commit. The plan runs to its end even when the client goes away;
// only the server's stop stops it.
func (s *Server) failoverPlanAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Point string `json:"point"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeError(w, http.StatusBadRequest, "invalid_argument", "the body is not a JSON object such as {\"point\": \"latest\"}: "+err.Error())
				return
			}
		}
		var at time.Time
		switch {
		case body.Point == "" || body.Point == "latest":
		case action != "failover":
			writeError(w, http.StatusBadRequest, "invalid_argument", "a point applies only when starting a plan")
			return
		default:
			t, err := time.Parse(time.RFC3339, body.Point)
			if err != nil {
				writeError(w, http.StatusBadRequest, "invalid_argument", fmt.Sprintf("point %q: write latest, or a time in RFC 3339 such as 2026-12-06T14:30:00Z", body.Point))
				return
			}
			at = t
		}
		p, err := s.plan(r.PathValue("name"))
		if err != nil {
			writeError(w, http.StatusNotFound, "not_found", err.Error())
			return
		}
		run, err := s.runPlan(p, action, at)
		switch {
		case err != nil && run == nil:
			writeActionError(w, err, nil) // refused: nothing was done
		case err != nil:
			writeActionError(w, err, run)
		default:
			writeJSON(w, http.StatusOK, run)
		}
	}
}

// runPlan runs an action of a failover plan while it holds the plan's
// jobs. The run is nil when the plan did not act (it was refused).
func (s *Server) runPlan(p *config.FailoverPlan, action string, at time.Time) (*PlanRun, error) {
	if s.Failover == nil {
		return nil, fmt.Errorf("this server does not fail VMs over: %w", errdefs.ErrUnavailable)
	}
	s.mu.Lock()
	ctx := s.ctx
	s.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return nil, fmt.Errorf("the server is stopping: %w", errdefs.ErrUnavailable)
	}
	names := p.Jobs()
	_, release, err := s.claim(names)
	if err != nil {
		return nil, fmt.Errorf("failover plan %q: %w", p.Name, err)
	}
	defer release()
	out := &PlanRun{Plan: p.Name, Action: action, VMs: []recovery.VMResult{}, Steps: []recovery.Step{}}
	var mu sync.Mutex
	rr := s.recoveryRunner(func(st recovery.Step) {
		mu.Lock()
		defer mu.Unlock()
		out.Steps = append(out.Steps, st)
	})
	point := "latest"
	if !at.IsZero() {
		point = at.Format(time.RFC3339)
	}
	s.log.Info("failover plan asked", "plan", p.Name, "action", action, "point", point)
	var res *recovery.Result
	switch action {
	case "failover":
		res, err = rr.Start(ctx, p, at)
	case "undo":
		res, err = rr.Undo(ctx, p)
	default:
		res, err = rr.Commit(ctx, p)
	}
	mu.Lock()
	defer mu.Unlock()
	out.Record(res, err)
	if err != nil {
		s.log.Error("failover plan stopped", "plan", p.Name, "action", action, "vms", len(out.VMs), "error", err)
		return out, err
	}
	s.log.Info("failover plan done", "plan", p.Name, "action", action, "vms", len(out.VMs), "groups_ready", len(out.Ready))
	return out, nil
}
