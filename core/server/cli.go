package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/status"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// What the command line asks when it is the server's client (FERRY_ADDR):
// the documents `ferry status --json` and `ferry plan --json` print, and
// what `ferry points` shows, answered from the server's configuration and
// catalog.

// PlanFunc works out what the next run of each job would do:
// engine.Engine.Plan, with the engine the server's sessions run with.
type PlanFunc func(ctx context.Context, jobs []*config.Job) ([]plan.Plan, error)

// configured returns the configuration of the jobs named (every job when
// none is), by name, and the next run of each; a name the configuration
// lacks is ErrUnknownJob.
func (s *Server) configured(names []string) ([]*config.Job, map[string]time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(names) == 0 {
		for _, name := range slices.Sorted(maps.Keys(s.jobs)) {
			if !s.jobs[name].removed {
				names = append(names, name)
			}
		}
	}
	jobs := make([]*config.Job, 0, len(names))
	next := map[string]time.Time{}
	for _, name := range names {
		j := s.jobs[name]
		if j == nil || j.removed {
			return nil, nil, fmt.Errorf("%w %q", ErrUnknownJob, name)
		}
		jobs = append(jobs, j.cfg)
		next[name] = j.next
	}
	return jobs, next, nil
}

// statusHandler answers GET /v1/status: `ferry status --json`, with the
// next run of each scheduled job.
func (s *Server) statusHandler(w http.ResponseWriter, r *http.Request) {
	jobs, next, err := s.configured(nil)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	sched := status.ScheduledBy(s.Controller.String(), func(job string) time.Time { return next[job] })
	out, err := status.Jobs(s.cat, jobs, sched, time.Now())
	if err != nil {
		writeCatalogError(w, err)
		return
	}
	// The server's alarms are the word on its jobs' RPOs: a VM without
	// a point counts from when it began watching it.
	alarms := map[rpoKey]bool{}
	for _, r := range s.RPO() {
		alarms[rpoKey{r.Job, r.VM}] = r.Breached
	}
	for i := range out {
		for j := range out[i].VMs {
			if breached, ok := alarms[rpoKey{out[i].Job, out[i].VMs[j].VM}]; ok {
				out[i].VMs[j].RPOBreached = breached
			}
		}
	}
	// The plans holding each job's VMs, with their last and next tests.
	s.mu.Lock()
	plans := maps.Clone(s.plans)
	described := map[string]FailoverPlan{}
	for name, p := range plans {
		described[name] = s.describe(p)
	}
	s.mu.Unlock()
	tests, err := status.Plans(s.cat, slices.Sorted(maps.Keys(plans)))
	if err != nil {
		writeCatalogError(w, err)
		return
	}
	for i := range tests {
		d := described[tests[i].Plan]
		tests[i].TestSchedule, tests[i].NextTest = d.TestSchedule, d.NextTest
	}
	status.AttachPlans(out, tests, plans)
	writeJSON(w, http.StatusOK, out)
}

// pointsHandler answers GET /v1/jobs/{name}/points[?vm=VM]: the restore
// points of a job's VMs, or of one; a VM the job neither names nor has a
// replica of is not found.
func (s *Server) pointsHandler(w http.ResponseWriter, r *http.Request) {
	name, vm := r.PathValue("name"), r.URL.Query().Get("vm")
	jobs, _, err := s.configured([]string{name})
	if err != nil {
		writeNoJob(w, name)
		return
	}
	if vm != "" && !slices.Contains(jobs[0].VMs, vm) {
		if _, err := s.cat.Replica(name, vm); errors.Is(err, errdefs.ErrNotFound) {
			writeError(w, http.StatusNotFound, "not_found", "job "+strconv.Quote(name)+" has no VM "+strconv.Quote(vm))
			return
		} else if err != nil {
			writeCatalogError(w, err)
			return
		}
	}
	points, err := s.cat.RestorePoints(name, vm)
	writeList(w, points, err)
}

// goneHandler answers GET /v1/jobs/{name}/replicas/gone: the replicas of
// a job the target no longer had, with their points.
func (s *Server) goneHandler(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, _, err := s.configured([]string{name}); err != nil {
		writeNoJob(w, name)
		return
	}
	gone, err := s.cat.GoneReplicas(name)
	writeList(w, gone, err)
}

// planHandler answers GET /v1/plan[?job=NAME...]: `ferry plan --json` of
// the jobs named, or of every job.
func (s *Server) planHandler(w http.ResponseWriter, r *http.Request) {
	if s.Plan == nil {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "this server does not plan")
		return
	}
	jobs, _, err := s.configured(r.URL.Query()["job"])
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	plans, err := s.Plan(r.Context(), jobs)
	switch {
	case err == nil:
		if plans == nil {
			plans = []plan.Plan{}
		}
		writeJSON(w, http.StatusOK, plans)
	case errors.Is(err, errdefs.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	default:
		writeCatalogError(w, err)
	}
}
