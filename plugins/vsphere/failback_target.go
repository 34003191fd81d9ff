package vsphere

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The target's half of failback (sdk.FailbackReader). A failed-over
// replica runs as a VM of its own; what its guest wrote since the failover
// is what vSphere's changed block tracking says:
//
//   - Failover switches tracking on for the replica and, before powering
//     it on, takes the base snapshot (failbackBase): its disks' change ids
//     are the failover's baseline, kept in replica.json
//     (failover.change_ids), and its disks hold the point failed over to,
//     under what the guest writes. It lives as long as the failover;
//   - FailedOverChanges takes a mark snapshot (failbackMark), asks
//     QueryChangedDiskAreas what changed between the baseline (or the
//     caller's mark) and it, removes it, and returns its change id as the
//     next mark. A write that lands while the call runs is in the mark or
//     after it.
//   - OpenFailedOverDisk reads a disk that runs on a delta (every
//     failed-over replica on ESXi: the guest writes above the base
//     snapshot) as of a read snapshot (failbackRead) it takes, through the
//     datastore mount (sdk/disk/vmdk reads the vmfsSparse or seSparse
//     chain), and removes it at the reader's Close: the delta a VM runs on
//     is open for writing, and seSparse keeps metadata in its journal until
//     the file is closed. The engine asks every disk's changes (a mark
//     each) before it opens any, so a read snapshot is never older than
//     its disk's mark: a block written between the two is read newer and
//     sent again at the next sync, whose changes start at the mark.
//
// A mark or read snapshot a killed call left is removed by the next
// FailedOverChanges; undo and commit remove the base and any mark or read
// snapshot (not those of readers open in this process). A replica whose
// failover recorded no
// change id (tracking refused, a replica written through HotAdd, a
// failover by an older plugin) answers errdefs.ErrChangeIDReset: the host
// compares digests.

var _ sdk.FailbackReader = (*Target)(nil)

// The replica's failback snapshots: the base, taken at the failover, and
// short-lived marks that carry change ids.
const (
	failbackBase = "ferry-failback-base"
	failbackMark = "ferry-failback-mark"
	failbackRead = "ferry-failback-read"
)

// startFailbackTracking switches changed block tracking on for replica r
// (failed over, not yet powered on), takes its base snapshot and returns
// each disk's change id at this moment. The caller holds r.mu and its
// gate.
func (t *Target) startFailbackTracking(ctx context.Context, r *replica) (map[int]string, error) {
	if r.hotadd {
		return nil, nil // failback does not read such replicas (OpenFailedOverDisk)
	}
	if err := t.removeSnapshotsNamed(ctx, r, failbackBase, failbackMark, failbackRead); err != nil {
		return nil, err
	}
	if cfg := r.vm.Config; cfg.ChangeTrackingEnabled == nil || !*cfg.ChangeTrackingEnabled {
		obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
		if _, err := t.c.call(ctx, "enable changed block tracking of "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
			return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(true)})
		}); err != nil {
			return nil, err
		}
	}
	ref, disks, err := t.snapshotFor(ctx, r, failbackBase, "ferry failback: the point failed over to, under what the running replica writes; ferry removes it with the failover")
	if err != nil {
		return nil, err
	}
	if err := t.refresh(ctx, r); err != nil {
		return nil, err
	}
	ids := map[int]string{}
	for i, d := range disks {
		if id := diskChangeID(d); id != "" {
			ids[i] = id
		}
	}
	t.log.Info("failed-over replica tracked for failback", "replica", r.vm.Name, "base", ref.Value)
	return ids, nil
}

// snapshotFor takes a snapshot of r without memory and returns it with its
// disks (device key order).
func (t *Target) snapshotFor(ctx context.Context, r *replica, name, note string) (types.ManagedObjectReference, []*types.VirtualDisk, error) {
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	res, err := t.c.call(ctx, "snapshot "+r.vm.Name+" ("+name+")", func(ctx context.Context) (*object.Task, error) {
		return obj.CreateSnapshot(ctx, name, note, false, false)
	})
	if err != nil {
		return types.ManagedObjectReference{}, nil, err
	}
	ref, ok := res.(types.ManagedObjectReference)
	if !ok {
		return ref, nil, fmt.Errorf("snapshot %s of %s: the task returned %T, not a snapshot", name, r.vm.Name, res)
	}
	disks, err := t.snapshotDisks(ctx, r, ref)
	return ref, disks, err
}

// snapshotDisks reads the disks of a snapshot of r.
func (t *Target) snapshotDisks(ctx context.Context, r *replica, ref types.ManagedObjectReference) ([]*types.VirtualDisk, error) {
	var ms mo.VirtualMachineSnapshot
	if err := t.c.retrieveOne(ctx, ref, []string{"config"}, &ms); err != nil {
		return nil, fmt.Errorf("snapshot %s of %s: %w", ref.Value, r.vm.Name, err)
	}
	return virtualDisks(ms.Config.Hardware.Device), nil
}

// withMark takes a mark snapshot of replica r, calls fn with it and its
// disks, and removes it, with any a killed call left. The caller holds
// r.mu.
func (t *Target) withMark(ctx context.Context, r *replica, fn func(snap types.ManagedObjectReference, disks []*types.VirtualDisk) error) error {
	if err := t.removeSnapshotsNamed(ctx, r, failbackMark, failbackRead); err != nil {
		return err
	}
	ref, disks, err := t.snapshotFor(ctx, r, failbackMark, "ferry failback: marks the replica's change ids; ferry removes it at once")
	if ref.Value != "" {
		defer t.dropFailbackSnapshot(r, ref, "mark")
	}
	if err != nil {
		return err
	}
	return fn(ref, disks)
}

// dropFailbackSnapshot removes a failback snapshot of r (what: mark or
// read) once it served, with a context of its own: the caller's may be
// what ended the call. A snapshot it cannot remove is left to the next
// failback call's sweep (removeSnapshotsNamed). The caller holds r.mu.
func (t *Target) dropFailbackSnapshot(r *replica, ref types.ManagedObjectReference, what string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := t.c.removeSnapshot(ctx, r.vm.Name, ref.Value); err != nil {
		t.log.Warn("remove the failback "+what+" snapshot; the next failback call removes it", "replica", r.vm.Name, "error", err)
	}
	if err := t.refresh(ctx, r); err != nil {
		t.log.Warn("refresh replica", "replica", r.vm.Name, "error", err)
	}
}

// removeSnapshotsNamed removes r's snapshots of those names, but for the
// read snapshots of readers open in this process. The caller holds r.mu.
func (t *Target) removeSnapshotsNamed(ctx context.Context, r *replica, names ...string) error {
	if r.vm.Snapshot == nil {
		return nil
	}
	removed := false
	for _, n := range flattenSnapshots(r.vm.Snapshot.RootSnapshotList) {
		if !slices.Contains(names, n.Name) || r.reading[n.Snapshot.Value] {
			continue
		}
		if err := t.c.removeSnapshot(ctx, r.vm.Name, n.Snapshot.Value); err != nil {
			return fmt.Errorf("replica %q: remove failback snapshot %s: %w", r.vm.Name, n.Name, err)
		}
		removed = true
	}
	if removed {
		return t.refresh(ctx, r)
	}
	return nil
}

// discardGuestWrites gives each disk of a failed-over replica r, powered
// off, back what its base snapshot holds (the point failed over to), for
// undo. On vSphere the guest wrote into a delta above the base and the
// base's flat file is the working image itself: nothing to do, as the
// revert that follows discards the delta. Where the base snapshot reads
// from a file of its own (the simulator freezes a copy, and the harness
// writes the guest's data into the working image) the blocks that differ
// are copied back. The caller holds r.mu and its gate.
func (t *Target) discardGuestWrites(ctx context.Context, r *replica) error {
	base := findSnapshotByName(r.vm, failbackBase)
	if base == nil || r.hotadd {
		return nil
	}
	disks, err := t.snapshotDisks(ctx, r, base.Snapshot)
	if err != nil {
		return err
	}
	for d := range min(len(disks), len(r.disks)) {
		from, err := t.localDisk(ctx, disks[d])
		if err != nil {
			return fmt.Errorf("replica %q disk %d: the failover's base: %w", r.vm.Name, d, err)
		}
		if from == r.disks[d].file {
			continue
		}
		if err := copyDiffering(from, r.disks[d].file, min(diskCapacity(disks[d]), r.disks[d].capacity)); err != nil {
			return fmt.Errorf("replica %q disk %d: discard what the failed-over guest wrote: %w", r.vm.Name, d, err)
		}
	}
	return nil
}

// copyDiffering writes into file to each block of the first size bytes
// of file from that differs, and fsyncs it.
func copyDiffering(from, to string, size int64) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	a, b := make([]byte, undoBlock), make([]byte, undoBlock)
	for blk := int64(0); blk*undoBlock < size && err == nil; blk++ {
		if err = readBlock(src, blk, a); err != nil {
			break
		}
		if err = readBlock(dst, blk, b); err != nil {
			break
		}
		if !bytes.Equal(a, b) {
			n := min(int64(undoBlock), size-blk*undoBlock)
			_, err = dst.WriteAt(a[:n], blk*undoBlock)
		}
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	return err
}

// failedOverDisk checks disk index d of failed-over replica r.
func failedOverDisk(r *replica, d int) error {
	if d < 0 || d >= len(r.disks) {
		return fmt.Errorf("replica %q has %d disks, no disk %d: %w", r.vm.Name, len(r.disks), d, errdefs.ErrNotFound)
	}
	return nil
}

// FailedOverChanges implements sdk.FailbackReader: the areas the running
// replica's disk wrote since req.Since (the failover's baseline when
// empty), by changed block tracking, and a mark for now.
func (t *Target) FailedOverChanges(ctx context.Context, req sdk.FailedOverChangesRequest, fn func([]sdk.Extent) error) (string, error) {
	r, unlock, err := t.lockFailedOver(ctx, req.Replica)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := failedOverDisk(r, req.Disk); err != nil {
		return "", err
	}
	since := req.Since
	if since == "" && r.state.Failover != nil {
		since = r.state.Failover.ChangeIDs[req.Disk]
	}
	if since == "" {
		return "", fmt.Errorf("changes of replica %q disk %d: its failover started no change tracking: %w", r.vm.Name, req.Disk, errdefs.ErrChangeIDReset)
	}
	var mark string
	err = t.withMark(ctx, r, func(snap types.ManagedObjectReference, disks []*types.VirtualDisk) error {
		if req.Disk >= len(disks) {
			return fmt.Errorf("replica %q: the mark snapshot has %d disks, no disk %d: %w", r.vm.Name, len(disks), req.Disk, errdefs.ErrNotFound)
		}
		disk := disks[req.Disk]
		mark = diskChangeID(disk)
		if err := checkChangeID(since, mark); err != nil {
			return fmt.Errorf("changes of replica %q disk %d: %w", r.vm.Name, req.Disk, err)
		}
		return t.c.queryChanged(ctx, r.vm, snap, disk, req.Disk, since, fn)
	})
	if err != nil {
		return "", err
	}
	return mark, nil
}

// OpenFailedOverDisk implements sdk.FailbackReader: the failed-over
// replica's disk. A disk on a delta chain (on ESXi, every failed-over
// replica: its guest writes above the base snapshot) is read as of a
// snapshot taken now and removed at the reader's Close, through the
// datastore mount; a disk on its flat file alone (the simulator's) is read
// from that file as it is.
func (t *Target) OpenFailedOverDisk(ctx context.Context, key string, disk int) (sdk.DiskReader, error) {
	r, unlock, err := t.lockFailedOver(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := failedOverDisk(r, disk); err != nil {
		return nil, err
	}
	if r.hotadd {
		return nil, fmt.Errorf("disk %d of failed-over replica %q: the replica is written through HotAdd and its running VM holds its disks, which this version cannot read: %w",
			disk, r.vm.Name, errdefs.ErrUnimplemented)
	}
	d := r.disks[disk]
	if _, delta := diskChain(d.dev); delta {
		return t.openFrozen(ctx, r, disk)
	}
	fr, err := openFileReader(d.file, d.capacity)
	if err != nil {
		return nil, fmt.Errorf("disk %d of failed-over replica %q: %w", disk, r.vm.Name, err)
	}
	return fr, nil
}

// openFrozen reads disk d of r, which runs on a delta, as of a read
// snapshot held until the reader is closed: the snapshot's disk is a chain
// ESXi no longer writes. The caller holds r.mu.
func (t *Target) openFrozen(ctx context.Context, r *replica, d int) (sdk.DiskReader, error) {
	ref, disks, err := t.snapshotFor(ctx, r, failbackRead, "ferry failback: holds the replica's disks still while ferry reads them; ferry removes it when the read ends")
	remove := func() { t.dropFailbackSnapshot(r, ref, "read") }
	if err == nil && d >= len(disks) {
		err = fmt.Errorf("replica %q: the read snapshot has %d disks, no disk %d: %w", r.vm.Name, len(disks), d, errdefs.ErrNotFound)
	}
	var cr *chainReader
	if err == nil {
		files, _ := diskChain(disks[d])
		if cr, err = t.c.openChain(files, r.disks[d].capacity); err != nil {
			err = fmt.Errorf("disk %d of failed-over replica %q: %w", d, r.vm.Name, err)
		}
	}
	var done func()
	if err == nil {
		done, err = r.use() // the reader keeps the replica's lock
		if err != nil {
			cr.d.Close()
		}
	}
	if err != nil {
		if ref.Value != "" {
			remove()
		}
		return nil, err
	}
	if r.reading == nil {
		r.reading = map[string]bool{}
	}
	r.reading[ref.Value] = true
	cr.release = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.reading, ref.Value)
		remove()
		done()
	}
	t.log.Info("failback reads a frozen delta chain", "replica", r.vm.Name, "disk", d, "snapshot", ref.Value, "top", cr.path)
	return cr, nil
}

// SetReplicaPower implements sdk.FailbackReader: powers the failed-over
// replica off or on; it stays failed over.
func (t *Target) SetReplicaPower(ctx context.Context, key string, on bool) (*sdk.Replica, error) {
	r, unlock, err := t.lockFailedOver(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := t.c.setPower(ctx, r.vm, on); err != nil {
		return nil, err
	}
	if err := t.refresh(ctx, r); err != nil {
		return nil, err
	}
	return t.describe(ctx, r.vm, r.state), nil
}
