package vsphere

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The source's half of failback (sdk.FailbackWriter). The production VM's
// disks are written as the target writes replicas on the direct lane:
// their flat files, through the datastore's local mount
// (local_datastore_paths), while the VM is powered off. Its ferry folder,
// beside its files, keeps the failback as the target keeps restore points:
//
//	<vm folder>/ferry/failback.json             the failback: id, power state before, created, undoing
//	<vm folder>/ferry/failback/disk<N>.undo     the undo store: each 64 KiB block as it was before
//	                                            the failback first overwrote it (undo.go's format)
//
// Order of a write: the blocks it overwrites that the store lacks are
// appended to it and fsynced, then the flat file is written. A kill at any
// moment leaves the store holding the original of every block the
// failback may have changed. Undo journals itself (undoing), writes every
// stored block back, restores the power state, then drops the store and
// failback.json; commit drops them too.
//
// Change tracking. vSphere's tracking does not see writes into a flat file
// made behind the VM's back, so a commit resets it (off, then on): the
// next replication run finds a change id of another epoch and compares
// digests, sending what differs. An undo needs no reset: it gives every
// block back as it was, which tracking already describes.

var _ sdk.FailbackWriter = (*Source)(nil)

const (
	failbackFile     = "failback.json"
	failbackStoreDir = "failback"
	// failbackCreatedKey marks, in extraConfig, a VM that failback id
	// created: written with the VM, so a kill cannot lose it.
	failbackCreatedKey = "ferry.failback.created"
)

// sourceFailback is failback.json.
type sourceFailback struct {
	Version int    `json:"version"`
	ID      string `json:"id"`
	// Power is the VM's power state before the failback.
	Power types.VirtualMachinePowerState `json:"power"`
	// Created: the failback created the VM; undo destroys it.
	Created bool `json:"created,omitempty"`
	// Undoing journals an undo under way.
	Undoing bool `json:"undoing,omitempty"`
}

func loadSourceFailback(dir string) (*sourceFailback, error) {
	b, err := os.ReadFile(filepath.Join(dir, failbackFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var fb sourceFailback
	if err := json.Unmarshal(b, &fb); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, failbackFile), err)
	}
	return &fb, nil
}

func writeSourceFailback(dir string, fb *sourceFailback) error {
	fb.Version = 1
	b, err := json.MarshalIndent(fb, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, failbackFile), b)
}

// dropFailback removes the undo store, then failback.json.
func dropFailback(dir string) error {
	if err := os.RemoveAll(filepath.Join(dir, failbackStoreDir)); err != nil {
		return err
	}
	syncDir(dir)
	if err := os.Remove(filepath.Join(dir, failbackFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	syncDir(dir)
	return nil
}

// failbackFolder is the local path of a production VM's ferry folder.
func (s *Source) failbackFolder(vm *mo.VirtualMachine) (string, error) {
	vmx, err := parseDSPath(vm.Config.Files.VmPathName)
	if err != nil {
		return "", fmt.Errorf("vm %q: %v: %w", vm.Name, err, errdefs.ErrInvalidArgument)
	}
	dir, ok := s.c.local(vmx.sibling(ferryDir))
	if !ok {
		return "", fmt.Errorf("vm %q: failback writes a VM's disks through the mount of its datastore, and datastore %q is not in local_datastore_paths (mapped: %q): %w",
			vm.Name, vmx.Datastore, mappedDatastores(s.c.cfg.Datastores), errdefs.ErrFailedPrecondition)
	}
	return dir, nil
}

// prodDisk is a production VM's disk as failback writes it.
type prodDisk struct {
	dev      *types.VirtualDisk
	file     string // local path of the flat file
	capacity int64
}

// failbackDisks finds the flat file of each of vm's disks, in device key
// order. A disk on a delta (the VM runs on a snapshot of its own that has
// data) or on an unmapped datastore is refused: writing the base behind
// the delta's back would not change what the VM reads.
func (s *Source) failbackDisks(ctx context.Context, vm *mo.VirtualMachine) ([]prodDisk, error) {
	var out []prodDisk
	for i, d := range virtualDisks(vm.Config.Hardware.Device) {
		b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok || b.Parent != nil {
			return nil, fmt.Errorf("vm %q disk %d is not a flat disk of its own (a delta of a snapshot, or another format): failback writes flat disks only: %w",
				vm.Name, i, errdefs.ErrFailedPrecondition)
		}
		desc, err := parseDSPath(b.FileName)
		if err != nil {
			return nil, fmt.Errorf("vm %q disk %d: %v: %w", vm.Name, i, err, errdefs.ErrInvalidArgument)
		}
		flat, err := s.c.flatExtent(ctx, desc)
		if err != nil {
			return nil, fmt.Errorf("vm %q disk %d: %w", vm.Name, i, err)
		}
		file, ok := s.c.local(flat)
		if !ok {
			return nil, fmt.Errorf("vm %q disk %d: failback writes disks through the mount of their datastore, and datastore %q is not in local_datastore_paths (mapped: %q): %w",
				vm.Name, i, flat.Datastore, mappedDatastores(s.c.cfg.Datastores), errdefs.ErrFailedPrecondition)
		}
		out = append(out, prodDisk{dev: d, file: file, capacity: diskCapacity(d)})
	}
	return out, nil
}

// BeginFailback implements sdk.FailbackWriter.
func (s *Source) BeginFailback(ctx context.Context, req sdk.FailbackRequest) (*sdk.VM, error) {
	if err := sdk.CheckFailbackID(req.ID); err != nil {
		return nil, err
	}
	s.fbMu.Lock()
	defer s.fbMu.Unlock()
	vm, err := s.c.vmObject(ctx, req.VM)
	if errors.Is(err, errdefs.ErrNotFound) && req.Create != nil {
		vm, err = s.createVM(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("begin failback %s: %w", req.ID, err)
	}
	dir, err := s.failbackFolder(vm)
	if err != nil {
		return nil, err
	}
	if _, err := s.failbackDisks(ctx, vm); err != nil {
		return nil, err
	}
	fb, err := loadSourceFailback(dir)
	if err != nil {
		return nil, err
	}
	switch {
	case fb != nil && fb.ID != req.ID:
		return nil, fmt.Errorf("begin failback %s of vm %q: the vm is in failback %s: %w", req.ID, vm.Name, fb.ID, errdefs.ErrFailedPrecondition)
	case fb != nil && fb.Undoing:
		return nil, fmt.Errorf("begin failback %s of vm %q: its undo is under way; undo it again to finish: %w", req.ID, vm.Name, errdefs.ErrFailedPrecondition)
	case fb == nil:
		// An undo store no failback.json names is what a killed commit
		// or undo left: nothing uses it.
		if err := os.RemoveAll(filepath.Join(dir, failbackStoreDir)); err != nil {
			return nil, err
		}
		fb = &sourceFailback{ID: req.ID, Power: vm.Runtime.PowerState, Created: extraConfig(vm.Config)[failbackCreatedKey] == req.ID}
		if fb.Created {
			fb.Power = types.VirtualMachinePowerStatePoweredOff
		}
		if err := writeSourceFailback(dir, fb); err != nil {
			return nil, fmt.Errorf("vm %q: record failback %s: %w", vm.Name, req.ID, err)
		}
	}
	if err := s.c.setPower(ctx, vm, false); err != nil {
		return nil, err
	}
	s.log.Info("failback begun", "vm", vm.Name, "failback", req.ID, "power before", fb.Power)
	return s.DescribeVM(ctx, vm.Self.Value)
}

// failbackOf finds VM key in failback id: the VM, its ferry folder and
// the failback (nil when the VM is in none). what names the operation.
func (s *Source) failbackOf(ctx context.Context, key, id, what string) (*mo.VirtualMachine, string, *sourceFailback, error) {
	if err := sdk.CheckFailbackID(id); err != nil {
		return nil, "", nil, err
	}
	vm, err := s.c.vmObject(ctx, key)
	if err != nil {
		return nil, "", nil, err
	}
	dir, err := s.failbackFolder(vm)
	if err != nil {
		return nil, "", nil, err
	}
	fb, err := loadSourceFailback(dir)
	if err != nil {
		return nil, "", nil, err
	}
	if fb != nil && fb.ID != id {
		return nil, "", nil, fmt.Errorf("%s vm %q: the vm is in failback %s, not %s: %w", what, vm.Name, fb.ID, id, errdefs.ErrFailedPrecondition)
	}
	return vm, dir, fb, nil
}

// OpenFailbackDisk implements sdk.FailbackWriter: a writer of the disk's
// flat file that saves each block's original first.
func (s *Source) OpenFailbackDisk(ctx context.Context, key, id string, disk int, size int64) (sdk.DiskWriter, error) {
	s.fbMu.Lock()
	defer s.fbMu.Unlock()
	vm, dir, fb, err := s.failbackOf(ctx, key, id, "open failback disk of")
	if err != nil {
		return nil, err
	}
	if fb == nil || fb.Undoing {
		return nil, fmt.Errorf("open failback disk of vm %q: failback %s has not begun, or is being undone: %w", vm.Name, id, errdefs.ErrFailedPrecondition)
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		return nil, fmt.Errorf("failback %s writes only a vm that is off; %q was started: %w", id, vm.Name, errdefs.ErrFailedPrecondition)
	}
	disks, err := s.failbackDisks(ctx, vm)
	if err != nil {
		return nil, err
	}
	if disk < 0 || disk >= len(disks) {
		return nil, fmt.Errorf("vm %q has %d disks, no disk %d: %w", vm.Name, len(disks), disk, errdefs.ErrNotFound)
	}
	d := disks[disk]
	if size > d.capacity {
		if err := s.growDisk(ctx, vm, d.dev, size); err != nil {
			return nil, err
		}
		d.capacity = size
	}
	f, err := os.OpenFile(d.file, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("vm %q disk %d: %w", vm.Name, disk, err)
	}
	u, err := openUndo(filepath.Join(dir, failbackStoreDir, undoName(disk)), true)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &failbackWriter{vm: vm.Name, disk: disk, size: d.capacity, f: f, undo: u}, nil
}

// growDisk extends a production disk to size bytes. vSphere refuses it
// while the VM has snapshots.
func (s *Source) growDisk(ctx context.Context, vm *mo.VirtualMachine, d *types.VirtualDisk, size int64) error {
	if size%1024 != 0 {
		return fmt.Errorf("vm %q: grow a disk to %d bytes: vSphere disks are whole KiB: %w", vm.Name, size, errdefs.ErrInvalidArgument)
	}
	grown := *d
	grown.CapacityInBytes, grown.CapacityInKB = size, size/1024
	obj := object.NewVirtualMachine(s.c.client, vm.Self)
	_, err := s.c.call(ctx, "grow a disk of "+vm.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: &grown},
		}})
	})
	return err
}

// failbackWriter writes a failback into a production disk's flat file.
type failbackWriter struct {
	vm   string
	disk int
	size int64

	mu   sync.Mutex
	f    *os.File
	undo *undoStore
}

var _ sdk.DiskWriter = (*failbackWriter)(nil)

func (w *failbackWriter) Size() int64 { return w.size }

func (w *failbackWriter) WriteAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if off < 0 || off+int64(len(p)) > w.size {
		return 0, fmt.Errorf("write failback disk %d of vm %q: [%d, %d) outside its %d bytes: %w", w.disk, w.vm, off, off+int64(len(p)), w.size, errdefs.ErrInvalidArgument)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return 0, fmt.Errorf("write failback disk %d of vm %q: closed: %w", w.disk, w.vm, errdefs.ErrFailedPrecondition)
	}
	var blocks []int64
	for b := off / undoBlock; b <= (off+int64(len(p))-1)/undoBlock; b++ {
		blocks = append(blocks, b)
	}
	if err := w.undo.save(blocks, func(b int64, buf []byte) error { return readBlock(w.f, b, buf) }); err != nil {
		return 0, fmt.Errorf("write failback disk %d of vm %q: save the blocks it overwrites: %w", w.disk, w.vm, err)
	}
	return w.f.WriteAt(p, off)
}

func (w *failbackWriter) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	return w.f.Sync()
}

func (w *failbackWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if cerr := w.undo.close(); err == nil {
		err = cerr
	}
	w.f = nil
	return err
}

// StartFailback implements sdk.FailbackWriter: power on. The VM's
// networks are its own: failback never changed them.
func (s *Source) StartFailback(ctx context.Context, key, id string) (*sdk.VM, error) {
	s.fbMu.Lock()
	defer s.fbMu.Unlock()
	vm, _, fb, err := s.failbackOf(ctx, key, id, "start")
	if err != nil {
		return nil, err
	}
	if fb == nil || fb.Undoing {
		return nil, fmt.Errorf("start vm %q: failback %s has not begun, or is being undone: %w", vm.Name, id, errdefs.ErrFailedPrecondition)
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn && findSnapshotByName(vm, failbackStart) == nil {
		obj := object.NewVirtualMachine(s.c.client, vm.Self)
		if _, err := s.c.call(ctx, "snapshot "+vm.Name+" before its start", func(ctx context.Context) (*object.Task, error) {
			return obj.CreateSnapshot(ctx, failbackStart, "ferry failback "+id+": production at the switch, for an undo; ferry removes it at the commit", false, false)
		}); err != nil {
			return nil, err
		}
	}
	if err := s.c.setPower(ctx, vm, true); err != nil {
		return nil, err
	}
	s.log.Info("failback started production", "vm", vm.Name, "failback", id)
	return s.DescribeVM(ctx, vm.Self.Value)
}

// UndoFailback implements sdk.FailbackWriter.
func (s *Source) UndoFailback(ctx context.Context, key, id string) error {
	s.fbMu.Lock()
	defer s.fbMu.Unlock()
	vm, dir, fb, err := s.failbackOf(ctx, key, id, "undo failback of")
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil // a VM the failback created and its undo removed
	}
	if err != nil {
		return err
	}
	if fb == nil {
		if extraConfig(vm.Config)[failbackCreatedKey] == id {
			// Created, and killed before failback.json was written.
			return s.destroyCreated(ctx, vm, dir)
		}
		return nil
	}
	if !fb.Undoing {
		fb.Undoing = true
		if err := writeSourceFailback(dir, fb); err != nil {
			return fmt.Errorf("vm %q: journal the undo of failback %s: %w", vm.Name, id, err)
		}
	}
	if fb.Created {
		return s.destroyCreated(ctx, vm, dir)
	}
	if err := s.c.setPower(ctx, vm, false); err != nil {
		return err
	}
	if err := s.discardSinceStart(ctx, vm); err != nil {
		return fmt.Errorf("undo failback %s of vm %q: %w", id, vm.Name, err)
	}
	disks, err := s.failbackDisks(ctx, vm)
	if err != nil {
		return err
	}
	for i, d := range disks {
		if err := restoreFromUndo(filepath.Join(dir, failbackStoreDir, undoName(i)), d); err != nil {
			return fmt.Errorf("undo failback %s of vm %q disk %d: %w", id, vm.Name, i, err)
		}
	}
	if fb.Power == types.VirtualMachinePowerStatePoweredOn {
		if err := s.c.setPower(ctx, vm, true); err != nil {
			return err
		}
	}
	if err := dropFailback(dir); err != nil {
		return err
	}
	s.log.Info("failback undone", "vm", vm.Name, "failback", id)
	return nil
}

// failbackStart names the snapshot StartFailback takes of production
// before it powers it on: what an undo after the switch returns to, so
// that production's own writes since go too.
const failbackStart = "ferry-failback-start"

// findSnapshotByName finds a snapshot of vm by name; nil when it has none
// of that name.
func findSnapshotByName(vm *mo.VirtualMachine, name string) *types.VirtualMachineSnapshotTree {
	if vm.Snapshot == nil {
		return nil
	}
	for _, n := range flattenSnapshots(vm.Snapshot.RootSnapshotList) {
		if n.Name == name {
			return &n
		}
	}
	return nil
}

// discardSinceStart returns production (powered off) to its start
// snapshot, if it has one, and removes it: on vSphere the revert drops the
// delta that holds what production wrote since the switch, and the
// removal leaves the VM on its flat disks again. Where the snapshot reads
// from a file of its own instead (the simulator freezes a copy; the
// harness writes the guest's data into the flat file), the blocks that
// differ are copied back first.
func (s *Source) discardSinceStart(ctx context.Context, vm *mo.VirtualMachine) error {
	snap := findSnapshotByName(vm, failbackStart)
	if snap == nil {
		return nil
	}
	var ms mo.VirtualMachineSnapshot
	if err := s.c.retrieveOne(ctx, snap.Snapshot, []string{"config"}, &ms); err != nil {
		return err
	}
	then, now := virtualDisks(ms.Config.Hardware.Device), virtualDisks(vm.Config.Hardware.Device)
	for d := range min(len(then), len(now)) {
		from, err := s.c.localFlat(ctx, then[d])
		if err != nil {
			return fmt.Errorf("disk %d at the switch: %w", d, err)
		}
		to, err := s.c.localFlat(ctx, now[d])
		if err != nil {
			return fmt.Errorf("disk %d: %w", d, err)
		}
		if from != to {
			if err := copyDiffering(from, to, min(diskCapacity(then[d]), diskCapacity(now[d]))); err != nil {
				return fmt.Errorf("disk %d: discard what production wrote since the switch: %w", d, err)
			}
		}
	}
	_, err := s.c.call(ctx, "revert "+vm.Name+" to its state at the switch", func(ctx context.Context) (*object.Task, error) {
		res, err := methods.RevertToSnapshot_Task(ctx, s.c.client, &types.RevertToSnapshot_Task{This: snap.Snapshot, SuppressPowerOn: types.NewBool(true)})
		if err != nil {
			return nil, err
		}
		return object.NewTask(s.c.client, res.Returnval), nil
	})
	if err != nil {
		return err
	}
	if err := s.c.removeSnapshot(ctx, vm.Name, snap.Snapshot.Value); err != nil {
		return err
	}
	fresh, err := s.c.vmObject(ctx, vm.Self.Value)
	if err != nil {
		return err
	}
	*vm = *fresh
	return nil
}

// restoreFromUndo writes every block of an undo store back into a disk's
// flat file, and fsyncs it.
func restoreFromUndo(path string, d prodDisk) error {
	u, err := openUndo(path, false)
	if err != nil || u == nil {
		return err
	}
	defer u.close()
	f, err := os.OpenFile(d.file, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, undoBlock)
	for _, b := range u.blocks() {
		if b*undoBlock >= d.capacity {
			continue
		}
		if _, err = u.read(b, buf); err != nil {
			break
		}
		n := min(int64(undoBlock), d.capacity-b*undoBlock)
		if _, err = f.WriteAt(buf[:n], b*undoBlock); err != nil {
			break
		}
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// destroyCreated removes a VM the failback created, with its files.
func (s *Source) destroyCreated(ctx context.Context, vm *mo.VirtualMachine, dir string) error {
	if err := s.c.setPower(ctx, vm, false); err != nil {
		return err
	}
	obj := object.NewVirtualMachine(s.c.client, vm.Self)
	if _, err := s.c.call(ctx, "destroy "+vm.Name, obj.Destroy); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	// vSphere deletes the files it knows; ferry's folder is ferry's.
	if err := os.RemoveAll(dir); err != nil {
		s.log.Warn("remove the ferry folder of a destroyed vm", "vm", vm.Name, "error", err)
	}
	s.log.Info("failback undone: the vm it created is destroyed", "vm", vm.Name)
	return nil
}

// CommitFailback implements sdk.FailbackWriter: change tracking is reset
// (see above), then the undo store and the failback go.
func (s *Source) CommitFailback(ctx context.Context, key, id string) error {
	s.fbMu.Lock()
	defer s.fbMu.Unlock()
	vm, dir, fb, err := s.failbackOf(ctx, key, id, "commit failback of")
	if err != nil || fb == nil {
		return err
	}
	if fb.Undoing {
		return fmt.Errorf("commit failback of vm %q: its undo is under way; undo it again to finish: %w", vm.Name, errdefs.ErrFailedPrecondition)
	}
	if snap := findSnapshotByName(vm, failbackStart); snap != nil {
		// Consolidated into the disks: what production wrote stays.
		if err := s.c.removeSnapshot(ctx, vm.Name, snap.Snapshot.Value); err != nil {
			return err
		}
	}
	if err := s.resetTracking(ctx, vm); err != nil {
		return err
	}
	if err := dropFailback(dir); err != nil {
		return err
	}
	s.log.Info("failback committed", "vm", vm.Name, "failback", id)
	return nil
}

// resetTracking switches a VM's changed block tracking off and on: change
// ids from before belong to an epoch that is over.
func (s *Source) resetTracking(ctx context.Context, vm *mo.VirtualMachine) error {
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return nil // the next snapshot switches it on, in a new epoch
	}
	obj := object.NewVirtualMachine(s.c.client, vm.Self)
	for _, on := range []bool{false, true} {
		if _, err := s.c.call(ctx, fmt.Sprintf("set changed block tracking of %s %v", vm.Name, on), func(ctx context.Context) (*object.Task, error) {
			return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(on)})
		}); err != nil {
			return err
		}
	}
	return nil
}
