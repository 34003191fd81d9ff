package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// failoverDir holds the blocks of the working state that a failover
// overwrote with an older restore point's, one undo store per disk.
func (r *replica) failoverDir() string { return filepath.Join(r.dir, "failover") }

// Failover starts the replica from a restore point (the newest when none
// is named):
//
//  1. the state file records the failover (what to return to) first;
//  2. the working state's blocks that differ from the point's (those a
//     newer point changed) are saved in the failover store, so undo can
//     put them back;
//  3. the VM reverts to the point's snapshot, and those blocks get the
//     point's data (after the revert, which with HotAdd writes changes
//     the disks' data too);
//  4. its NICs move to the mapped networks;
//  5. when addresses change (re-IP), a guest customization spec (LinuxPrep
//     or Sysprep) gives each NIC its new address, gateway and DNS servers;
//     vSphere applies it at power-on through VMware Tools;
//  6. the VM is powered on.
//
// A step that fails undoes the ones before it.
func (t *Target) Failover(ctx context.Context, req sdk.FailoverRequest) (*sdk.Replica, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rules, err := sdk.CompileNetwork(req.Network)
	if err != nil {
		return nil, err
	}
	r, err := t.load(ctx, req.Replica)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	done, err := t.enter(ctx, r)
	if err != nil {
		return nil, err
	}
	defer done()
	if r.state.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("replica %q is %s, not ready: %w", r.vm.Name, r.state.State, errdefs.ErrFailedPrecondition)
	}
	if r.writers > 0 {
		return nil, fmt.Errorf("replica %q has %d disk writers open: %w", r.vm.Name, r.writers, errdefs.ErrFailedPrecondition)
	}
	if err := r.detached("fail over"); err != nil {
		return nil, err
	}
	r.gate.Lock()
	defer r.gate.Unlock()
	r.points = parsePoints(r.vm)
	if len(r.points) == 0 {
		return nil, fmt.Errorf("replica %q has no restore point to fail over to: %w", r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	k := len(r.points) - 1
	if req.Point != "" {
		if k = pointIndex(r.points, req.Point); k < 0 {
			return nil, fmt.Errorf("restore point %q of replica %q: %w", req.Point, r.vm.Name, errdefs.ErrNotFound)
		}
	}
	nics := r.state.NICs
	source := r.state.SourceNICs
	if len(source) == 0 {
		source = nics
	}
	if len(req.Network.NetworkMap) > 0 || len(req.Network.ReIP) > 0 {
		if nics, err = rules.Apply(source); err != nil {
			return nil, err
		}
	}
	for i, n := range nics {
		if _, err := t.nicBacking(ctx, n.Network); err != nil {
			return nil, fmt.Errorf("replica %q nic %d: %w", r.vm.Name, i, err)
		}
	}
	var spec *types.CustomizationSpec
	if !sameAddresses(nics, source) {
		s, warnings, err := customization(r.vm.Config.GuestId, r.state.Source, nics)
		if err != nil {
			return nil, err
		}
		for _, w := range warnings {
			t.log.Warn("re-ip", "replica", r.vm.Name, "warning", w)
		}
		spec = &s
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	before := &failoverState{Point: r.points[k].id, NICsBefore: cloneNICs(r.state.NICs),
		PoweredOn: r.vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn}
	if r.vm.Snapshot != nil && r.vm.Snapshot.CurrentSnapshot != nil {
		before.SnapshotBefore = r.vm.Snapshot.CurrentSnapshot.Value
	}
	st := *r.state
	st.State, st.Failover = sdk.ReplicaFailedOver, before
	if err := writeState(r.dir, &st); err != nil {
		return nil, fmt.Errorf("replica %q: record the failover: %w", r.vm.Name, err)
	}
	r.state = &st

	fail := func(err error) (*sdk.Replica, error) {
		// A fresh context: the caller's may be what failed.
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if uerr := t.undo(cctx, r); uerr != nil {
			t.log.Error("failover failed and could not be rolled back; run UndoFailover", "replica", r.vm.Name, "error", uerr)
			return nil, errors.Join(err, fmt.Errorf("roll back: %w", uerr))
		}
		return nil, err
	}
	changed := make([][]int64, len(r.disks))
	for d := range r.disks {
		blocks, err := r.changedSince(k, d)
		if err == nil {
			err = r.keepWorking(ctx, t, d, blocks)
		}
		if err != nil {
			return fail(fmt.Errorf("replica %q disk %d: keep the working state: %w", r.vm.Name, d, err))
		}
		changed[d] = blocks
	}
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	if _, err := t.c.call(ctx, "revert "+r.vm.Name+" to restore point "+r.points[k].id, func(ctx context.Context) (*object.Task, error) {
		res, err := methods.RevertToSnapshot_Task(ctx, t.c.client, &types.RevertToSnapshot_Task{This: r.points[k].snap, SuppressPowerOn: types.NewBool(true)})
		if err != nil {
			return nil, err
		}
		return object.NewTask(t.c.client, res.Returnval), nil
	}); err != nil {
		return fail(err)
	}
	if err := t.refresh(ctx, r); err != nil {
		return fail(err)
	}
	for d := range r.disks {
		if err := r.rollBack(ctx, t, k, d, changed[d]); err != nil {
			return fail(fmt.Errorf("replica %q disk %d: roll back to %s: %w", r.vm.Name, d, r.points[k].id, err))
		}
	}
	if err := t.setNetworks(ctx, r, nics); err != nil {
		return fail(err)
	}
	if spec != nil {
		if _, err := t.c.call(ctx, "customize the guest of "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
			return obj.Customize(ctx, *spec)
		}); err != nil {
			return fail(err)
		}
	}
	// Failback asks what the running replica writes: its change
	// tracking starts here, before the guest runs.
	ids, err := t.startFailbackTracking(ctx, r)
	if err != nil {
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		t.log.Warn("no change tracking of the failed-over replica: a failback will compare digests", "replica", r.vm.Name, "error", err)
	}
	before.ChangeIDs = ids
	if r.vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		if _, err := t.c.call(ctx, "power on "+r.vm.Name, obj.PowerOn); err != nil {
			return fail(err)
		}
	}
	st.NICs = nics
	if err := writeState(r.dir, &st); err != nil {
		return fail(fmt.Errorf("replica %q: %w", r.vm.Name, err))
	}
	if err := t.refresh(ctx, r); err != nil {
		return nil, err
	}
	t.log.Info("failed over", "replica", r.vm.Name, "point", r.points[k].id, "re-ip", spec != nil)
	return t.describe(ctx, r.vm, r.state), nil
}

// changedSince lists the blocks of disk d that the stores of point k and
// newer hold (within point k's size): the blocks whose data differs
// between point k and the working state.
func (r *replica) changedSince(k, d int) ([]int64, error) {
	seen := map[int64]bool{}
	var blocks []int64
	limit := r.points[k].capacity(d)
	for j := k; j < len(r.points); j++ {
		s, err := r.store(r.points[j].id, d, false)
		if err != nil {
			return nil, err
		}
		if s == nil {
			continue
		}
		for _, b := range s.blocks() {
			if !seen[b] && b*undoBlock < limit {
				seen[b] = true
				blocks = append(blocks, b)
			}
		}
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	return blocks, nil
}

// keepWorking saves the working image's blocks of disk d in the failover
// store, for undo to put back.
func (r *replica) keepWorking(ctx context.Context, t *Target, d int, blocks []int64) error {
	if len(blocks) == 0 {
		return nil
	}
	path, release, err := t.working(ctx, r, d, true)
	if err != nil {
		return err
	}
	defer release()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r.failedOver.Store(true)
	fo, err := r.store(failoverStores, d, true)
	if err != nil {
		return err
	}
	return fo.save(blocks, func(b int64, p []byte) error { return readBlock(f, b, p) })
}

// rollBack writes point k's data of the blocks into disk d's working
// image. It runs after the revert to the point's snapshot: with HotAdd
// writes the revert changes the disk's data too (to what vSphere's
// snapshot holds, which after a growth is not the point's), and the
// blocks written here are the ones where that may differ.
func (r *replica) rollBack(ctx context.Context, t *Target, k, d int, blocks []int64) error {
	if len(blocks) == 0 {
		return nil
	}
	path, release, err := t.working(ctx, r, d, true)
	if err != nil {
		return err
	}
	defer release()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, undoBlock)
	size := r.disks[d].capacity
	for _, b := range blocks {
		found := false
		for j := k; j < len(r.points) && !found; j++ {
			s, err := r.store(r.points[j].id, d, false)
			if err != nil {
				return err
			}
			if s != nil {
				if found, err = s.read(b, buf); err != nil {
					return err
				}
			}
		}
		n := min(int64(undoBlock), size-b*undoBlock)
		if _, err := f.WriteAt(buf[:n], b*undoBlock); err != nil {
			return err
		}
	}
	return f.Sync()
}

// restoreWorking puts back the working image's blocks a failover
// overwrote, and deletes the failover stores.
func (r *replica) restoreWorking(ctx context.Context, t *Target) error {
	buf := make([]byte, undoBlock)
	for d, disk := range r.disks {
		fo, err := r.store(failoverStores, d, false)
		if err != nil {
			return err
		}
		if fo == nil {
			continue
		}
		path, release, err := t.working(ctx, r, d, true)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			release()
			return err
		}
		for _, b := range fo.blocks() {
			if _, err = fo.read(b, buf); err != nil {
				break
			}
			n := min(int64(undoBlock), disk.capacity-b*undoBlock)
			if _, err = f.WriteAt(buf[:n], b*undoBlock); err != nil {
				break
			}
		}
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		release()
		if err != nil {
			return fmt.Errorf("disk %d: %w", d, err)
		}
	}
	r.dropStores(failoverStores)
	if err := os.RemoveAll(r.failoverDir()); err != nil {
		return err
	}
	r.failedOver.Store(false)
	return nil
}

// setNetworks moves each NIC whose network differs to the network named.
func (t *Target) setNetworks(ctx context.Context, r *replica, nics []sdk.NIC) error {
	devices := object.VirtualDeviceList(r.vm.Config.Hardware.Device)
	cards := ethernetCards(devices)
	if len(cards) != len(nics) {
		return fmt.Errorf("replica %q has %d NICs, its settings %d: %w", r.vm.Name, len(cards), len(nics), errdefs.ErrFailedPrecondition)
	}
	names := &netNames{c: t.c}
	var changes []types.BaseVirtualDeviceConfigSpec
	for i, card := range cards {
		if nicNetwork(ctx, names, card) == nics[i].Network {
			continue
		}
		backing, err := t.nicBacking(ctx, nics[i].Network)
		if err != nil {
			return fmt.Errorf("replica %q nic %d: %w", r.vm.Name, i, err)
		}
		ec := card.GetVirtualEthernetCard()
		ec.Backing = backing
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: card.(types.BaseVirtualDevice)})
	}
	if len(changes) == 0 {
		return nil
	}
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	if _, err := t.c.call(ctx, "connect the NICs of "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: changes})
	}); err != nil {
		return err
	}
	return t.refresh(ctx, r)
}

// undo returns a failed-over replica to what it was before: powered off,
// reverted to the snapshot it had, its working images and NICs restored,
// ready. Every step can be repeated. The caller holds r.mu and the gate.
func (t *Target) undo(ctx context.Context, r *replica) error {
	fo := r.state.Failover
	if fo == nil {
		fo = &failoverState{NICsBefore: r.state.NICs}
	}
	if err := t.refresh(ctx, r); err != nil {
		return err
	}
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	if r.vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff && !fo.PoweredOn {
		if _, err := t.c.call(ctx, "power off "+r.vm.Name, obj.PowerOff); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
	}
	if err := t.discardGuestWrites(ctx, r); err != nil {
		return err
	}
	if err := t.removeSnapshotsNamed(ctx, r, failbackMark, failbackRead); err != nil {
		return err
	}
	if fo.SnapshotBefore != "" && r.vm.Snapshot != nil && findSnapshot(r.vm.Snapshot.RootSnapshotList, fo.SnapshotBefore) != nil {
		ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: fo.SnapshotBefore}
		if _, err := t.c.call(ctx, "revert "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
			res, err := methods.RevertToSnapshot_Task(ctx, t.c.client, &types.RevertToSnapshot_Task{This: ref, SuppressPowerOn: types.NewBool(true)})
			if err != nil {
				return nil, err
			}
			return object.NewTask(t.c.client, res.Returnval), nil
		}); err != nil {
			return err
		}
	}
	if err := t.refresh(ctx, r); err != nil {
		return err
	}
	if err := t.removeSnapshotsNamed(ctx, r, failbackBase); err != nil {
		return err
	}
	if err := r.restoreWorking(ctx, t); err != nil {
		return fmt.Errorf("replica %q: restore the working state: %w", r.vm.Name, err)
	}
	if err := t.refresh(ctx, r); err != nil {
		return err
	}
	if len(fo.NICsBefore) > 0 {
		if err := t.setNetworks(ctx, r, fo.NICsBefore); err != nil {
			return err
		}
	}
	st := *r.state
	st.State, st.NICs, st.Failover = sdk.ReplicaReady, fo.NICsBefore, nil
	if err := writeState(r.dir, &st); err != nil {
		return fmt.Errorf("replica %q: %w", r.vm.Name, err)
	}
	r.state = &st
	return nil
}

// lockFailedOver locks a replica that is failed over, with its writers
// kept out (gate); unlock releases both.
func (t *Target) lockFailedOver(ctx context.Context, key string) (*replica, func(), error) {
	r, unlock, err := t.lockReplica(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	if r.state.State != sdk.ReplicaFailedOver {
		unlock()
		return nil, nil, fmt.Errorf("replica %q is %s, not failed over: %w", r.vm.Name, r.state.State, errdefs.ErrFailedPrecondition)
	}
	r.gate.Lock()
	return r, func() { r.gate.Unlock(); unlock() }, nil
}

// UndoFailover stops a failed-over replica and returns it to the state it
// had before: powered off, at the snapshot it was at (which discards what
// the guest wrote, on vSphere in the snapshot's delta disk), the working
// state of its disks and its NICs as they were. No restore point changes.
func (t *Target) UndoFailover(ctx context.Context, key string) (*sdk.Replica, error) {
	r, unlock, err := t.lockFailedOver(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := t.undo(ctx, r); err != nil {
		return nil, err
	}
	t.log.Info("undid failover", "replica", r.vm.Name)
	return t.describe(ctx, r.vm, r.state), nil
}

// CommitFailover makes a failed-over replica a production VM: its restore
// points (snapshots, consolidated into its disks by vSphere) and ferry's
// stores go, the VM keeps running; it stays marked as a committed replica
// so ferry never replicates into it. DeleteReplica then removes only the
// mark.
func (t *Target) CommitFailover(ctx context.Context, key string) (*sdk.Replica, error) {
	r, unlock, err := t.lockFailedOver(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := r.detached("commit the failover"); err != nil {
		return nil, err
	}
	st := *r.state
	st.State = sdk.ReplicaCommitted
	if err := writeState(r.dir, &st); err != nil {
		return nil, fmt.Errorf("replica %q: %w", r.vm.Name, err)
	}
	r.state = &st
	if err := t.removeSnapshotsNamed(ctx, r, failbackMark, failbackRead, failbackBase); err != nil {
		return nil, err
	}
	for _, p := range parsePoints(r.vm) {
		if err := t.c.removeSnapshot(ctx, r.vm.Name, p.snap.Value); err != nil {
			return nil, err
		}
	}
	r.closeStores()
	r.points = nil
	for _, dir := range []string{filepath.Join(r.dir, "points"), r.failoverDir()} {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("replica %q: %w", r.vm.Name, err)
		}
	}
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	note := fmt.Sprintf("Former ferry replica of %s, committed on %s: a production VM now.", st.Source, time.Now().UTC().Format(time.RFC3339))
	if _, err := t.c.call(ctx, "annotate "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{Annotation: note})
	}); err != nil {
		t.log.Warn("annotate the committed replica", "replica", r.vm.Name, "error", err)
	}
	if err := t.refresh(ctx, r); err != nil {
		return nil, err
	}
	t.log.Info("committed failover", "replica", r.vm.Name)
	return t.describe(ctx, r.vm, r.state), nil
}

// ApplyNetwork rewrites a replica's network settings now: NICs move to the
// mapped networks and the addresses ferry keeps for the guest are
// re-IP'd from the source's. A powered-off replica's guest gets them at
// its next failover (through guest customization); a running guest
// cannot be re-IP'd without guest operations, so changing its addresses
// is refused.
func (t *Target) ApplyNetwork(ctx context.Context, key string, net sdk.NetworkConfig) (*sdk.Replica, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rules, err := sdk.CompileNetwork(net)
	if err != nil {
		return nil, err
	}
	r, err := t.load(ctx, key)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	done, err := t.enter(ctx, r)
	if err != nil {
		return nil, err
	}
	defer done()
	if r.state.State == sdk.ReplicaCommitted {
		return nil, fmt.Errorf("replica %q is committed: %w", r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	source := r.state.SourceNICs
	if len(source) == 0 {
		source = r.state.NICs
	}
	nics, err := rules.Apply(source)
	if err != nil {
		return nil, err
	}
	if r.vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn && !sameAddresses(nics, r.state.NICs) {
		return nil, fmt.Errorf("replica %q is running: its guest cannot be re-IP'd without guest operations; undo the failover and fail over with the rules: %w",
			r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	if err := t.setNetworks(ctx, r, nics); err != nil {
		return nil, err
	}
	st := *r.state
	st.NICs = nics
	if err := writeState(r.dir, &st); err != nil {
		return nil, fmt.Errorf("replica %q: %w", r.vm.Name, err)
	}
	r.state = &st
	return t.describe(ctx, r.vm, r.state), nil
}
