package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// FailoverFunc starts ("start"), undoes ("undo") or commits ("commit") the
// failover of a job's VM, to point ("" the newest) for a start: what
// engine.Engine.Failover does.
type FailoverFunc func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error)

// ErrBusy is returned for a failover asked while a session (or another
// failover) of the job runs.
var ErrBusy = errors.New("a session or a failover of the job runs")

// FailedOver is what the API answers a failover with.
type FailedOver struct {
	Job           string           `json:"job"`
	VM            string           `json:"vm"`
	Replica       string           `json:"replica"`
	State         sdk.ReplicaState `json:"state"`
	FailoverPoint string           `json:"failover_point,omitempty"`
	PowerState    string           `json:"power_state,omitempty"`
	NICs          []sdk.NIC        `json:"nics,omitempty"`
}

// failover runs a failover action of a job's VM with Failover, while no
// session of the job runs; a run that falls due meanwhile is queued.
func (s *Server) failover(name, vm, action, point string) (*FailedOver, error) {
	if s.Failover == nil {
		return nil, errors.New("this server does not fail VMs over")
	}
	// The action runs under the server's context, not the request's: a
	// client that hangs up must not stop a failover halfway. Stopping the
	// server does, as it stops sessions.
	s.mu.Lock()
	ctx := s.ctx
	s.mu.Unlock()
	if ctx == nil || ctx.Err() != nil {
		return nil, fmt.Errorf("the server is stopping: %w", errdefs.ErrUnavailable)
	}
	cfgs, release, err := s.claim([]string{name})
	if err != nil {
		return nil, err
	}
	s.log.Info("failover asked", "job", name, "vm", vm, "action", action, "point", point)
	r, err := s.Failover(ctx, cfgs[name], vm, action, point)
	release()
	if err != nil {
		s.log.Error("failover failed", "job", name, "vm", vm, "action", action, "error", err)
		return nil, err
	}
	s.log.Info("failover done", "job", name, "vm", vm, "action", action, "state", r.State, "point", r.FailoverPoint)
	return &FailedOver{Job: name, VM: vm, Replica: r.Name, State: r.State, FailoverPoint: r.FailoverPoint, PowerState: r.VM.PowerState, NICs: r.VM.NICs}, nil
}

// claim takes the jobs named for a failover: while it holds them no
// session of them begins (a run that falls due is queued), as no other
// failover of them does. It fails with ErrBusy, taking none, when a
// session or a failover of one runs, and with ErrUnknownJob for a job the
// configuration lacks. release gives them back and starts the runs queued
// meanwhile; cfgs are their configurations, by name.
func (s *Server) claim(names []string) (cfgs map[string]*config.Job, release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfgs = map[string]*config.Job{}
	for _, name := range names {
		j := s.jobs[name]
		switch {
		case j == nil || j.removed:
			return nil, nil, fmt.Errorf("%w %q", ErrUnknownJob, name)
		case j.running:
			return nil, nil, fmt.Errorf("job %q: %w; try again when it ends", name, ErrBusy)
		}
		cfgs[name] = j.cfg
	}
	claimed := make([]*job, 0, len(cfgs))
	for name := range cfgs {
		j := s.jobs[name]
		j.running = true
		claimed = append(claimed, j)
	}
	return cfgs, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, j := range claimed {
			j.running = false
			switch {
			case j.removed:
				delete(s.jobs, j.cfg.Name)
			case j.queued && s.ctx != nil && s.ctx.Err() == nil:
				s.start(s.ctx, j, whyQueued)
			}
		}
	}, nil
}
