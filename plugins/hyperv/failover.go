package hyperv

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A failover is steps, each with the cleanup that undoes it; when a step
// fails, the cleanups of the steps done run in reverse order.
type step struct {
	name    string
	run     func(ctx context.Context) error
	cleanup func(ctx context.Context) error
}

func runSteps(ctx context.Context, steps []step) error {
	for i, s := range steps {
		if err := s.run(ctx); err != nil {
			err = fmt.Errorf("%s: %w", s.name, err)
			for j := i - 1; j >= 0; j-- {
				if steps[j].cleanup != nil {
					if cerr := steps[j].cleanup(context.WithoutCancel(ctx)); cerr != nil {
						err = errors.Join(err, fmt.Errorf("undo %s: %w", steps[j].name, cerr))
					}
				}
			}
			return err
		}
	}
	return nil
}

// Failover starts the replica from a restore point (the newest when none
// is named): a checkpoint keeps the working state for UndoFailover, the
// point's checkpoint is applied, the network map and re-IP rules go into
// the adapters' switches and the guest's network settings, and the VM
// starts.
func (t *Target) Failover(ctx context.Context, req sdk.FailoverRequest) (*sdk.Replica, error) {
	r, unlock, err := t.locked(ctx, req.Replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.meta.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("fail over replica %q: it is %s, not ready: %w", r.vm.Name, r.meta.State, errdefs.ErrFailedPrecondition)
	}
	cps, _, err := t.points(ctx, r.vm.ID)
	if err != nil {
		return nil, err
	}
	var point *host.Checkpoint
	for i := range cps {
		if req.Point == "" || cps[i].ID == req.Point {
			point = &cps[i]
		}
	}
	if point == nil {
		if req.Point == "" {
			return nil, fmt.Errorf("fail over replica %q: it has no restore point: %w", r.vm.Name, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("fail over replica %q: restore point %q: %w", r.vm.Name, req.Point, errdefs.ErrNotFound)
	}
	nics, err := t.networkFor(r, req.Network)
	if err != nil {
		return nil, err
	}
	if err := t.supersedeWriters(r.vm.ID, "a failover"); err != nil {
		return nil, err
	}
	before := describeVM(*r.vm, nil).NICs
	var undo *host.Checkpoint
	steps := []step{
		{name: "keep the working state", run: func(ctx context.Context) error {
			notes, err := (&pointMeta{Undo: 1, Sizes: r.meta.Sizes}).notes()
			if err != nil {
				return err
			}
			undo, err = t.h.CreateCheckpoint(ctx, r.vm.ID, host.CheckpointRequest{Name: "ferry failover undo", Type: host.Standard, Notes: notes, Consistency: host.CrashConsistent})
			return err
		}, cleanup: func(ctx context.Context) error { return t.restoreWorking(ctx, r.vm.ID, undo.ID) }},
		{name: "apply restore point " + point.ID, run: func(ctx context.Context) error {
			return t.h.ApplyCheckpoint(ctx, r.vm.ID, point.ID)
		}},
		{name: "apply the network settings", run: func(ctx context.Context) error {
			return t.applyNICs(ctx, r.vm, nics)
		}, cleanup: func(ctx context.Context) error { return t.applyNICs(ctx, r.vm, before) }},
		{name: "record the failover", run: func(ctx context.Context) error {
			r.meta.State, r.meta.FailoverPoint, r.meta.Undo, r.meta.Before = sdk.ReplicaFailedOver, point.ID, undo.ID, before
			return t.save(ctx, r)
		}},
		{name: "start the VM", run: func(ctx context.Context) error { return t.h.SetRunning(ctx, r.vm.ID, true) }},
	}
	if err := runSteps(ctx, steps); err != nil {
		// The record may have been saved before the VM failed to start:
		// the replica is ready again, as the cleanups left it.
		if r.meta.State == sdk.ReplicaFailedOver {
			r.meta.State, r.meta.FailoverPoint, r.meta.Undo, r.meta.Before = sdk.ReplicaReady, "", "", nil
			err = errors.Join(err, t.save(context.WithoutCancel(ctx), r))
		}
		return nil, fmt.Errorf("fail over replica %q: %w", r.vm.Name, err)
	}
	return t.reload(ctx, r.vm.ID)
}

// restoreWorking applies the failover's undo checkpoint, which gives the
// replica its working state back, and deletes it (the host merges it).
// Either step may have been done by an interrupted earlier call.
func (t *Target) restoreWorking(ctx context.Context, vm, undo string) error {
	if undo == "" {
		return nil
	}
	if err := t.h.ApplyCheckpoint(ctx, vm, undo); errors.Is(err, errdefs.ErrNotFound) {
		return nil // applied and deleted already
	} else if err != nil {
		return err
	}
	if err := t.h.DestroyCheckpoint(ctx, vm, undo); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return nil
}

func (t *Target) reload(ctx context.Context, vm string) (*sdk.Replica, error) {
	r, err := t.get(ctx, vm)
	if err != nil {
		return nil, err
	}
	return t.describe(r), nil
}

// UndoFailover turns the replica off and gives it back the working state
// and network settings it had before the failover; every restore point
// stays.
func (t *Target) UndoFailover(ctx context.Context, id string) (*sdk.Replica, error) {
	r, unlock, err := t.locked(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.meta.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("undo failover of replica %q: it is %s: %w", r.vm.Name, r.meta.State, errdefs.ErrFailedPrecondition)
	}
	if err := t.h.SetRunning(ctx, r.vm.ID, false); err != nil {
		return nil, err
	}
	if err := t.dropMarks(ctx, r); err != nil {
		return nil, fmt.Errorf("undo failover of replica %q: %w", r.vm.Name, err)
	}
	if err := t.restoreWorking(ctx, r.vm.ID, r.meta.Undo); err != nil {
		return nil, fmt.Errorf("undo failover of replica %q: %w", r.vm.Name, err)
	}
	if err := t.applyNICs(ctx, r.vm, r.meta.Before); err != nil {
		return nil, err
	}
	r.meta.State, r.meta.FailoverPoint, r.meta.Undo, r.meta.Before = sdk.ReplicaReady, "", "", nil
	if err := t.save(ctx, r); err != nil {
		return nil, err
	}
	return t.reload(ctx, r.vm.ID)
}

// CommitFailover makes the failed-over replica a production VM: the
// working state kept for undo goes, and the VM runs on.
func (t *Target) CommitFailover(ctx context.Context, id string) (*sdk.Replica, error) {
	r, unlock, err := t.locked(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.meta.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("commit failover of replica %q: it is %s: %w", r.vm.Name, r.meta.State, errdefs.ErrFailedPrecondition)
	}
	if r.meta.Undo != "" {
		if err := t.h.DestroyCheckpoint(ctx, r.vm.ID, r.meta.Undo); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
	}
	if err := t.dropMarks(ctx, r); err != nil {
		return nil, fmt.Errorf("commit failover of replica %q: %w", r.vm.Name, err)
	}
	r.meta.State, r.meta.Undo, r.meta.Before = sdk.ReplicaCommitted, "", nil
	if err := t.save(ctx, r); err != nil {
		return nil, err
	}
	return t.reload(ctx, r.vm.ID)
}

// ApplyNetwork applies the network map and re-IP rules to the replica's
// adapters now.
func (t *Target) ApplyNetwork(ctx context.Context, id string, net sdk.NetworkConfig) (*sdk.Replica, error) {
	r, err := t.get(ctx, id)
	if err != nil {
		return nil, err
	}
	defer t.lock(r.vm.ID)()
	nics, err := t.networkFor(r, net)
	if err != nil {
		return nil, err
	}
	if err := t.applyNICs(ctx, r.vm, nics); err != nil {
		return nil, err
	}
	return t.reload(ctx, r.vm.ID)
}

// networkFor applies a network configuration to the replica's adapters as
// created (the source's addresses, networks mapped).
func (t *Target) networkFor(r *replica, net sdk.NetworkConfig) ([]sdk.NIC, error) {
	rules, err := sdk.CompileNetwork(net)
	if err != nil {
		return nil, err
	}
	return rules.Apply(r.meta.NICs)
}

// applyNICs connects each adapter to its network's switch and records its
// guest network settings.
func (t *Target) applyNICs(ctx context.Context, vm *host.VM, nics []sdk.NIC) error {
	v, err := t.h.GetVM(ctx, vm.ID)
	if err != nil {
		return err
	}
	for i, n := range nics {
		if i >= len(v.NICs) {
			break
		}
		if v.NICs[i].Switch != n.Network {
			if err := t.h.ConnectNIC(ctx, v.ID, i, n.Network); err != nil {
				return fmt.Errorf("adapter %d: %w", i, err)
			}
		}
		g := guestOf(n)
		if old := v.NICs[i].Guest; slices.Equal(old.Addresses, g.Addresses) && old.Gateway == g.Gateway && slices.Equal(old.DNS, g.DNS) {
			continue
		}
		if err := t.h.SetGuestNetwork(ctx, v.ID, i, g); err != nil {
			return fmt.Errorf("adapter %d: %w", i, err)
		}
	}
	return nil
}
