package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
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
func (s *Server) failover(ctx context.Context, name, vm, action, point string) (*FailedOver, error) {
	if s.Failover == nil {
		return nil, errors.New("this server does not fail VMs over")
	}
	s.mu.Lock()
	j := s.jobs[name]
	switch {
	case j == nil || j.removed:
		s.mu.Unlock()
		return nil, fmt.Errorf("%w %q", ErrUnknownJob, name)
	case j.running:
		s.mu.Unlock()
		return nil, fmt.Errorf("job %q: %w; try again when it ends", name, ErrBusy)
	}
	j.running = true
	cfg := j.cfg
	s.mu.Unlock()
	s.log.Info("failover asked", "job", name, "vm", vm, "action", action, "point", point)
	r, err := s.Failover(ctx, cfg, vm, action, point)
	s.mu.Lock()
	j.running = false
	if j.queued && s.ctx != nil && s.ctx.Err() == nil && !j.removed {
		s.start(s.ctx, j, "queued")
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("failover failed", "job", name, "vm", vm, "action", action, "error", err)
		return nil, err
	}
	s.log.Info("failover done", "job", name, "vm", vm, "action", action, "state", r.State, "point", r.FailoverPoint)
	return &FailedOver{Job: name, VM: vm, Replica: r.Name, State: r.State, FailoverPoint: r.FailoverPoint, PowerState: r.VM.PowerState, NICs: r.VM.NICs}, nil
}
