package hyperv

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The target's half of failback (sdk.FailbackReader). A failed-over
// replica runs on the AVHDX files that its failover put on the failover
// point's checkpoint, and Hyper-V's Resilient Change Tracking follows
// what its guest writes there, as it does for any VM. What it wrote since
// a mark is asked the way a backup asks: a recovery checkpoint of the
// running replica ("ferry failback mark"), GetVirtualDiskChanges on it
// since the mark, then the checkpoint becomes a reference point whose RCT
// id is the new mark. The first mark is the failover point's own id: the
// files the replica runs on start at it. A host that cannot answer (no
// id, a reset, wmihost for a VM ferry wrote as a replica) answers
// errdefs.ErrChangeIDReset, and ferry compares digests.

const markCheckpoint = "ferry failback mark"

// maxMarks is how many reference points of failback marks a replica
// keeps; an older mark a sync asks for is answered from the host's log or
// is ErrChangeIDReset (digests), never wrong.
const maxMarks = 4

var _ sdk.FailbackReader = (*Target)(nil)

// failedOver locks a replica that must be failed over.
func (t *Target) failedOver(ctx context.Context, id, what string) (*replica, func(), error) {
	r, unlock, err := t.locked(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if r.meta.State != sdk.ReplicaFailedOver {
		unlock()
		return nil, nil, fmt.Errorf("%s of replica %q: it is %s, not failed over: %w", what, r.vm.Name, r.meta.State, errdefs.ErrFailedPrecondition)
	}
	return r, unlock, nil
}

// FailedOverChanges implements sdk.FailbackReader.
func (t *Target) FailedOverChanges(ctx context.Context, req sdk.FailedOverChangesRequest, fn func([]sdk.Extent) error) (string, error) {
	r, unlock, err := t.failedOver(ctx, req.Replica, "changes")
	if err != nil {
		return "", err
	}
	defer unlock()
	if req.Disk < 0 || req.Disk >= len(r.meta.Sizes) || req.Disk >= len(r.vm.Disks) {
		return "", fmt.Errorf("replica %q has no disk %d: %w", r.vm.Name, req.Disk, errdefs.ErrNotFound)
	}
	since := req.Since
	if since == "" {
		if since, err = t.failoverRCT(ctx, r, req.Disk); err != nil {
			return "", err
		}
	}
	if err := t.dropMarkCheckpoints(ctx, r.vm.ID); err != nil {
		return "", err
	}
	cp, err := t.h.CreateCheckpoint(ctx, r.vm.ID, host.CheckpointRequest{Name: markCheckpoint, Type: host.Recovery, Consistency: host.CrashConsistent})
	if err != nil {
		return "", fmt.Errorf("changes of replica %q: mark: %w", r.vm.Name, err)
	}
	var ext []sdk.Extent
	size := r.meta.Sizes[req.Disk]
	err = t.h.DiskChanges(ctx, r.vm.ID, cp.ID, req.Disk, since, func(b []host.Extent) error {
		for _, x := range b {
			if x.Offset < size {
				ext = append(ext, sdk.Extent{Offset: x.Offset, Length: min(x.Length, size-x.Offset)})
			}
		}
		return nil
	})
	// The checkpoint goes whatever the answer: as a reference point, which
	// keeps its ids, as a backup's does.
	ref, cerr := t.h.ConvertToReferencePoint(context.WithoutCancel(ctx), r.vm.ID, cp.ID)
	if err != nil {
		return "", fmt.Errorf("changes of replica %q disk %d: %w", r.vm.Name, req.Disk, err)
	}
	if cerr != nil {
		return "", fmt.Errorf("changes of replica %q: mark: %w", r.vm.Name, cerr)
	}
	mark := cp.Disks[req.Disk].RCT
	if mark == "" {
		return "", fmt.Errorf("changes of replica %q disk %d: the host gave the mark no change tracking id: %w", r.vm.Name, req.Disk, errdefs.ErrChangeIDReset)
	}
	if err := t.keepMark(ctx, r, ref.ID); err != nil {
		return "", err
	}
	ext = sdk.MergeExtents(ext)
	for len(ext) > 0 {
		n := min(len(ext), 1024)
		if err := fn(ext[:n]); err != nil {
			return "", err
		}
		ext = ext[n:]
	}
	return mark, nil
}

// failoverRCT is the change tracking id the replica's files start at: its
// failover point's.
func (t *Target) failoverRCT(ctx context.Context, r *replica, disk int) (string, error) {
	cp, _, err := t.point(ctx, r, r.meta.FailoverPoint)
	if err != nil {
		return "", fmt.Errorf("changes of replica %q: its failover point: %w", r.vm.Name, err)
	}
	if disk >= len(cp.Disks) || cp.Disks[disk].RCT == "" {
		return "", fmt.Errorf("changes of replica %q disk %d: its failover point has no change tracking id: %w", r.vm.Name, disk, errdefs.ErrChangeIDReset)
	}
	return cp.Disks[disk].RCT, nil
}

// dropMarkCheckpoints deletes the mark checkpoints a killed call left.
func (t *Target) dropMarkCheckpoints(ctx context.Context, vm string) error {
	cps, err := t.h.ListCheckpoints(ctx, vm)
	if err != nil {
		return err
	}
	for _, cp := range cps {
		if cp.Name == markCheckpoint && cp.Type == host.Recovery {
			if err := t.h.DestroyCheckpoint(ctx, vm, cp.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				return fmt.Errorf("delete a leftover failback mark of replica %s: %w", vm, err)
			}
		}
	}
	return nil
}

// keepMark records a mark's reference point in the replica's notes and
// removes those beyond the newest maxMarks.
func (t *Target) keepMark(ctx context.Context, r *replica, ref string) error {
	r.meta.Marks = append(r.meta.Marks, ref)
	var drop []string
	if n := len(r.meta.Marks) - maxMarks; n > 0 {
		drop, r.meta.Marks = r.meta.Marks[:n], r.meta.Marks[n:]
	}
	if err := t.save(ctx, r); err != nil {
		return err
	}
	return t.dropRefs(ctx, r.vm.ID, drop)
}

func (t *Target) dropRefs(ctx context.Context, vm string, refs []string) error {
	for _, ref := range refs {
		if err := t.h.DestroyReferencePoint(ctx, vm, ref); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("remove failback mark %s of replica %s: %w", ref, vm, err)
		}
	}
	return nil
}

// dropMarks removes every failback mark of a replica whose failover ends
// (the meta is saved by the caller).
func (t *Target) dropMarks(ctx context.Context, r *replica) error {
	if err := t.dropMarkCheckpoints(ctx, r.vm.ID); err != nil {
		return err
	}
	if err := t.dropRefs(ctx, r.vm.ID, r.meta.Marks); err != nil {
		return err
	}
	r.meta.Marks = nil
	return nil
}

// OpenFailedOverDisk implements sdk.FailbackReader: the chain of the
// replica's newest file, which the running guest writes.
func (t *Target) OpenFailedOverDisk(ctx context.Context, id string, disk int) (sdk.DiskReader, error) {
	r, unlock, err := t.failedOver(ctx, id, "open disk")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if disk < 0 || disk >= len(r.meta.Sizes) || disk >= len(r.vm.Disks) {
		return nil, fmt.Errorf("replica %q has no disk %d: %w", r.vm.Name, disk, errdefs.ErrNotFound)
	}
	if !t.h.Local() {
		return nil, fmt.Errorf("replica %q: the host's files are not on this machine: %w", r.vm.Name, errdefs.ErrUnavailable)
	}
	return openReader(r.vm.Disks[disk].Path, r.meta.Sizes[disk])
}

// SetReplicaPower implements sdk.FailbackReader.
func (t *Target) SetReplicaPower(ctx context.Context, id string, on bool) (*sdk.Replica, error) {
	r, unlock, err := t.failedOver(ctx, id, "power")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.vm.Running != on {
		if err := t.h.SetRunning(ctx, r.vm.ID, on); err != nil {
			return nil, fmt.Errorf("power of replica %q: %w", r.vm.Name, err)
		}
	}
	return t.reload(ctx, r.vm.ID)
}
