package vsphere

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A replica's working images (its disks as the newest data has them) are
// reached one of two ways, chosen when the replica is made:
//
//   - direct: the base flat files, through the datastore's local mount;
//     the ferry folder sits beside the VM's files.
//   - hotadd: the replica's disks, as the replica itself has them (the top
//     of each backing chain), attached to the proxy VM this plugin runs in
//     and read and written as the block devices its guest shows. ESXi
//     writes into the chain as it would for the replica, so vSphere's
//     snapshots stay consistent (a base disk written behind a delta's back
//     would no longer match it). The ferry folder, with the undo stores of
//     the restore points, is under the target's state_dir, named after the
//     replica's instance UUID.
//
// A disk attached for writing is attached once per process however many
// writers and readers use it, in the independent-persistent mode (ESXi
// writes the file; the proxy's own snapshots leave it out), and detached
// when the last of them closes. While any disk of a replica is attached,
// vSphere cannot take, remove or revert to its snapshots nor extend its
// disks (ESXi holds the files locked): those operations wait for the
// attachments to go or refuse.

// replicaWritesKey marks, in its extraConfig, a replica whose disks ferry
// writes through HotAdd.
const replicaWritesKey = "ferry.replica.writes"

// workingMode is the disk mode a working image is attached in.
const workingMode = string(types.VirtualDiskModeIndependent_persistent)

// attachWait is how often a replica operation that needs its disks
// detached looks again.
const attachWait = 100 * time.Millisecond

// hotaddReplica says whether a replica VM is written through HotAdd.
func hotaddReplica(vm *mo.VirtualMachine) bool {
	return extraConfig(vm.Config)[replicaWritesKey] == TransportHotAdd
}

// stateFolder is the local path of a replica's ferry folder.
func (t *Target) stateFolder(vm *mo.VirtualMachine) (string, error) {
	if !hotaddReplica(vm) {
		return t.ferryFolder(vm)
	}
	if t.cfg.StateDir == "" {
		return "", fmt.Errorf("replica %q is written through HotAdd and keeps its ferry state in the state_dir of the target that made it; "+
			"configure this target with that state_dir (and transport = %q): %w", vm.Name, TransportHotAdd, errdefs.ErrFailedPrecondition)
	}
	if vm.Config.InstanceUuid == "" {
		return "", fmt.Errorf("replica %q has no instance UUID to name its state folder: %w", vm.Name, errdefs.ErrFailedPrecondition)
	}
	return filepath.Join(t.cfg.StateDir, vm.Config.InstanceUuid), nil
}

// attachedDisk is a disk of a replica attached to the proxy in this
// process: its working image, or a snapshot's disk while failed over.
type attachedDisk struct {
	att  *attachment
	path string
	refs int
}

// attachKey names an attached disk: its index, and the snapshot whose
// disk it is ("" for the replica's own).
type attachKey struct {
	disk int
	snap string
}

// working returns the local path of disk d's working image for one user,
// and the function that ends that use. The caller holds r.mu. Readers
// (write false) of a HotAdd replica that is failed over get instead the
// disk of the snapshot that was current before the failover, attached
// read-only: the running VM holds its own disks, and that snapshot holds
// the newest point's data, which is what the working image held for
// every block no undo or failover store holds.
func (t *Target) working(ctx context.Context, r *replica, d int, write bool) (string, func(), error) {
	if !r.hotadd {
		return r.disks[d].file, func() {}, nil
	}
	if t.hot == nil {
		return "", nil, fmt.Errorf("replica %q is written through HotAdd, and this target is configured to write directly: %w", r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	key := attachKey{disk: d}
	if !write && r.state.State == sdk.ReplicaFailedOver {
		if fo := r.state.Failover; fo != nil {
			key.snap = fo.SnapshotBefore
		}
		if key.snap == "" {
			return "", nil, fmt.Errorf("replica %q is failed over and its failover record names no snapshot to read from: %w", r.vm.Name, errdefs.ErrFailedPrecondition)
		}
	}
	r.attMu.Lock()
	defer r.attMu.Unlock()
	a := r.attached[key]
	if a == nil {
		dev, mode := r.disks[d].dev, workingMode
		if key.snap != "" {
			var err error
			if dev, err = t.snapshotDisk(ctx, key.snap, d); err != nil {
				return "", nil, fmt.Errorf("replica %q disk %d: %w", r.vm.Name, d, err)
			}
			mode = hotaddMode
		}
		att, path, _, none, err := t.hot.attachDisk(ctx, r.vm, key.snap, d, dev, mode)
		if none != "" {
			err = fmt.Errorf("replica %q disk %d cannot be reached through HotAdd: %s: %w", r.vm.Name, d, none, errdefs.ErrFailedPrecondition)
		}
		if err != nil {
			return "", nil, fmt.Errorf("replica %q disk %d: %w", r.vm.Name, d, err)
		}
		t.log.Debug("replica disk attached to the proxy VM", "replica", r.vm.Name, "disk", d, "snapshot", key.snap, "proxy", att.pname, "slot", att.slot.String(), "device", path)
		a = &attachedDisk{att: att, path: path}
		r.attached[key] = a
	}
	a.refs++
	var once sync.Once
	return a.path, func() { once.Do(func() { t.release(r, key, a) }) }, nil
}

// snapshotDisk is disk d of a snapshot, as its configuration has it.
func (t *Target) snapshotDisk(ctx context.Context, snap string, d int) (*types.VirtualDisk, error) {
	var ms mo.VirtualMachineSnapshot
	ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: snap}
	if err := t.c.retrieveOne(ctx, ref, []string{"config"}, &ms); err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", snap, err)
	}
	disks := virtualDisks(ms.Config.Hardware.Device)
	if d >= len(disks) {
		return nil, fmt.Errorf("snapshot %s has %d disks, no disk %d: %w", snap, len(disks), d, errdefs.ErrNotFound)
	}
	return disks[d], nil
}

// release ends one use of an attached disk; the last one detaches it.
func (t *Target) release(r *replica, key attachKey, a *attachedDisk) {
	r.attMu.Lock()
	defer r.attMu.Unlock()
	if a.refs--; a.refs > 0 {
		return
	}
	if r.attached[key] == a {
		delete(r.attached, key)
	}
	if err := t.hot.detach(context.Background(), a.att); err != nil {
		t.log.Error("replica disk left attached to the proxy VM; the next operation on the replica detaches it", "replica", r.id, "disk", key.disk, "error", err)
	}
}

// attachedCount is how many of r's disks are attached in this process.
func (r *replica) attachedCount() int {
	r.attMu.Lock()
	defer r.attMu.Unlock()
	return len(r.attached)
}

// detached fails when disks of a HotAdd replica are attached for open
// writers or readers: what is about to happen changes the disk chain,
// which ESXi keeps locked meanwhile.
func (r *replica) detached(what string) error {
	if n := r.attachedCount(); n > 0 {
		return fmt.Errorf("replica %q: cannot %s while %d of its disks are attached to the proxy VM for open writers or readers; close them first: %w",
			r.vm.Name, what, n, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// waitDetached waits until no disk of r is attached in this process, for
// an operation that changes the disk chain while writers of other disks
// finish (disks are moved in parallel). The caller holds r.mu; writers
// and readers detach without it.
func (r *replica) waitDetached(ctx context.Context) error {
	for r.attachedCount() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(attachWait):
		}
	}
	return nil
}

// sweepProxy detaches once per target what processes now gone left
// attached to the proxy (a run killed while it wrote).
func (t *Target) sweepProxy(ctx context.Context) {
	if t.hot != nil {
		t.sweepOnce.Do(func() { t.hot.sweep(ctx) })
	}
}
