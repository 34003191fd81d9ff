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
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Failback through the API: a VM's failback (sync, switch, commit, undo),
// a plan's, and the failbacks under way. An action holds the jobs it acts
// on as a failover does (no session of them begins meanwhile, and it is
// refused while one runs), and the catalog's hold of them (HoldJobs), so
// that a `ferry failback` elsewhere is refused too. It runs to its end
// under the server's context: a client that hangs up does not stop it
// halfway.

// FailbackFunc runs a failback action of a job's VM, writing production
// VM to ("" the job's VM) when it begins: what engine.Engine.Failback
// does.
type FailbackFunc func(ctx context.Context, job *config.Job, vm string, action failback.Action, to string) (*FailedBack, error)

// FailedBack is what a failback action of a VM did: the answer of the
// API, and what `ferry failback JOB VM --json` prints.
type FailedBack struct {
	// Failback is the state reached; nil once a commit or undo ended it.
	Failback *catalog.Failback `json:"Failback"`
	// Ended is the failback a commit or undo ended, as it was at its end.
	Ended *catalog.Failback `json:"Ended,omitempty"`
	// Steps are the steps run, in order.
	Steps []failback.Step `json:"Steps"`
	// Syncs are the syncs run, in order.
	Syncs []catalog.FailbackSync `json:"Syncs"`
	// Production is the production VM as the last step left it, when a
	// step said.
	Production *sdk.VM `json:"Production"`
}

// CommittedElsewhere says what the operator must do once a failback of
// job's vm that wrote another production VM (--to, or a VM it created
// under another name) is committed: that VM is in no job, and the job
// goes on replicating vm into the replica.
func CommittedElsewhere(job, vm, production string) string {
	return fmt.Sprintf("production vm %s, which the failback wrote, is in no job: job %s goes on replicating vm %s (as the failback left it, untouched) into the replica. "+
		"To protect %s, name it in job %s's vms in place of %s (its first run copies it into a new replica), and remove or keep %s as you see fit",
		production, job, vm, production, job, vm, vm)
}

// failback runs a failback action of a job's VM while it holds the job.
func (s *Server) failback(name, vm string, action failback.Action, to string) (*FailedBack, error) {
	ctx, err := s.actionContext()
	if err != nil {
		return nil, err
	}
	cfgs, release, err := s.holdForFailback(fmt.Sprintf("ferry server: failback %s %s %s", action, name, vm), []string{name})
	if err != nil {
		return nil, fmt.Errorf("failback of job %q vm %q: %w", name, vm, err)
	}
	defer release()
	s.log.Info("failback asked", "job", name, "vm", vm, "action", action, "to", to)
	res, err := s.Failback(ctx, cfgs[name], vm, action, to)
	if err != nil {
		s.log.Error("failback failed", "job", name, "vm", vm, "action", action, "error", err)
		return res, err
	}
	state := "ended"
	if res.Failback != nil {
		state = res.Failback.State
	}
	s.log.Info("failback done", "job", name, "vm", vm, "action", action, "state", state)
	if action == failback.Commit && res.Ended != nil && res.Ended.Elsewhere {
		s.log.Warn(CommittedElsewhere(name, vm, res.Ended.Production))
	}
	return res, nil
}

// actionContext is the context actions run under: the server's.
func (s *Server) actionContext() (context.Context, error) {
	if s.Failback == nil {
		return nil, fmt.Errorf("this server does not fail VMs back: %w", errdefs.ErrUnavailable)
	}
	s.mu.Lock()
	ctx := s.ctx
	s.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return nil, fmt.Errorf("the server is stopping: %w", errdefs.ErrUnavailable)
	}
	return ctx, nil
}

// holdForFailback claims the jobs named (see claim) and holds them in the
// catalog for what, so that another process's failback or run is refused.
func (s *Server) holdForFailback(what string, names []string) (map[string]*config.Job, func(), error) {
	cfgs, release, err := s.claim(names)
	if err != nil {
		return nil, nil, err
	}
	held, err := s.cat.HoldJobs(names, catalog.Holder{What: what, PID: s.Controller.PID, Host: s.Controller.Host, Since: time.Now().UTC()})
	if err != nil {
		release()
		return nil, nil, err
	}
	return cfgs, func() { held(); release() }, nil
}

// failbackHandler answers POST /v1/jobs/{name}/vms/{vm}/failback (a sync;
// the body may say {"to": "NAME"} and {"switch": true}) and its /switch,
// /commit and /undo.
func (s *Server) failbackHandler(action failback.Action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			To     string `json:"to"`
			Switch bool   `json:"switch"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeError(w, http.StatusBadRequest, "invalid_argument", "the body is not a JSON object such as {\"to\": \"NAME\", \"switch\": true}: "+err.Error())
				return
			}
		}
		if action != failback.Sync && (body.To != "" || body.Switch) {
			writeError(w, http.StatusBadRequest, "invalid_argument", "to and switch apply when a failback begins (POST .../failback)")
			return
		}
		if body.Switch {
			action = failback.Switch
		}
		res, err := s.failback(r.PathValue("name"), r.PathValue("vm"), action, body.To)
		if err != nil {
			var done any
			if res != nil {
				done = res
			}
			writeActionError(w, err, done)
			return
		}
		writeJSON(w, http.StatusOK, res)
	}
}

// failbacksHandler answers GET /v1/failbacks[?job=NAME]: the failbacks
// under way.
func (s *Server) failbacksHandler(w http.ResponseWriter, r *http.Request) {
	job := r.URL.Query().Get("job")
	if job != "" {
		if _, ok := s.Job(job); !ok {
			writeNoJob(w, job)
			return
		}
	}
	list, err := s.cat.Failbacks(job)
	writeList(w, list, err)
}

// failbackPlanAction answers POST /v1/failover-plans/{name}/failback (a
// sync; {"switch": true} switches too) and its /switch, /commit and
// /undo, with a PlanRun whose VMs give every VM's failback state.
func (s *Server) failbackPlanAction(action failback.Action) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Switch bool `json:"switch"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeError(w, http.StatusBadRequest, "invalid_argument", "the body is not a JSON object such as {\"switch\": true}: "+err.Error())
				return
			}
		}
		if body.Switch && action != failback.Sync {
			writeError(w, http.StatusBadRequest, "invalid_argument", "switch applies to POST .../failback")
			return
		}
		if body.Switch {
			action = failback.Switch
		}
		p, err := s.plan(r.PathValue("name"))
		if err != nil {
			writeError(w, http.StatusNotFound, "not_found", err.Error())
			return
		}
		run, err := s.failbackPlan(p, action)
		switch {
		case err != nil && run == nil:
			writeActionError(w, err, nil)
		case err != nil:
			writeActionError(w, err, run)
		default:
			writeJSON(w, http.StatusOK, run)
		}
	}
}

// failbackPlan runs a failback action of a plan while it holds the plan's
// jobs. The run is nil when the plan did not act (it was refused).
func (s *Server) failbackPlan(p *config.FailoverPlan, action failback.Action) (*PlanRun, error) {
	ctx, err := s.actionContext()
	if err != nil {
		return nil, err
	}
	names := p.Jobs()
	_, release, err := s.holdForFailback(fmt.Sprintf("ferry server: failback %s of plan %s", action, p.Name), names)
	if err != nil {
		return nil, fmt.Errorf("failover plan %q: %w", p.Name, err)
	}
	defer release()
	out := &PlanRun{Plan: p.Name, Action: string(action), VMs: []recovery.VMResult{}, Steps: []recovery.Step{}}
	var mu sync.Mutex
	rr := s.recoveryRunner(func(st recovery.Step) {
		mu.Lock()
		defer mu.Unlock()
		out.Steps = append(out.Steps, st)
	})
	rr.Failbacks = s.cat
	rr.Failback = func(ctx context.Context, job *config.Job, vm string, action failback.Action) (*recovery.FailbackVM, error) {
		res, err := s.Failback(ctx, job, vm, action, "")
		if res == nil {
			return nil, err
		}
		return recovery.FailbackVMOf(res.Failback, res.Syncs, res.Production), err
	}
	s.log.Info("failback of a plan asked", "plan", p.Name, "action", action)
	res, err := rr.FailbackPlan(ctx, p, action)
	mu.Lock()
	defer mu.Unlock()
	out.Record(res, err)
	if err != nil {
		s.log.Error("failback of a plan stopped", "plan", p.Name, "action", action, "vms", len(out.VMs), "error", err)
		return out, err
	}
	s.log.Info("failback of a plan done", "plan", p.Name, "action", action, "vms", len(out.VMs))
	return out, nil
}
