package vcsimtest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"
)

// cbtBlock is the granularity the CBT double reports changes in, as ESXi
// does for small disks.
const cbtBlock = 64 << 10

// doublesRef names the harness's own object in the simulator's registry:
// the handler of QueryChangedDiskAreas calls and the registry observer.
var doublesRef = types.ManagedObjectReference{Type: "FerryTestDoubles", Value: "ferry-doubles"}

// doubles fills what vcsim lacks, from inside the simulator:
//
//   - the snapshot-removal hook: before RemoveSnapshot_Task and
//     RemoveAllSnapshots_Task it empties layoutEx.snapshot (vcsim would
//     delete the wrong files, the base disk descriptor among them) and, when
//     the snapshot removed is the current one and a root, clears
//     currentSnapshot (vcsim would panic on a typed nil);
//   - frozen point-in-time copies: when vcsim registers a new snapshot, each
//     disk's flat file is copied and the snapshot's configuration points at
//     the copy, as vSphere's snapshot points at a base disk that no longer
//     changes; the copies go when the snapshot goes;
//   - changed block tracking: writes made through Site.Write are logged per
//     disk with a sequence number; a snapshot of a VM with
//     changeTrackingEnabled gets change ids "<epoch>/<sequence>" in its
//     disks; QueryChangedDiskAreas (which vcsim lacks) answers with the
//     logged writes between two ids, in windows of Options.CBTWindow bytes
//     so callers must loop, and with the non-zero blocks for "*". Switching
//     tracking off and on starts a new epoch, as on ESXi.
//   - vSphere's refusal to extend a disk of a VM that has snapshots
//     (InvalidDeviceOperation), which vcsim does not make;
//   - ESXi's file locks, as far as HotAdd writes need them: a VM whose disk
//     another running VM has attached in a persistent mode can neither
//     take, remove nor revert to snapshots nor extend disks, and a running
//     VM's disk cannot be attached to another in a persistent mode
//     (FileLocked);
//   - delta chains (Options.DeltaChains): a snapshot taken while the VM has
//     others names the newest one's disk as its disk's parent;
//   - clones hold their source's data (clone.go): vcsim makes a clone's
//     disks empty;
//   - a fake udev for proxy VMs (proxy.go): disks attached to a proxy show
//     up as wwn-0x<UUID> links in its device folder, and a tripwire reports
//     a proxy destroyed with another VM's disk attached.
//
// QueryChangedDiskAreas reaches the double because the registry Handler
// points the call at doublesRef, which the global registry resolves: a
// logged-in session would otherwise dispatch to the stock VirtualMachine.
type doubles struct {
	// The simulator takes the first field of an object in its registry for
	// its managed object: calls that walk every object (FindByUuid) need
	// one, and find no VM in it.
	mo.ExtensibleManagedObject

	site   *Site
	window int64

	deltaChains bool
	revertData  bool

	mu      sync.Mutex
	disks   map[diskID]*track            // per VM disk
	snaps   map[string]map[int32]snapped // snapshot moref -> device key -> state
	frozen  map[string][]string          // snapshot moref -> local files to delete with it
	deltas  map[string][]deltaChild      // snapshot moref -> deltas it put its VM's disks on (delta.go)
	vmSnaps map[string][]string          // VM moref -> its snapshots, oldest first
	proxies map[string]*proxyState       // VM moref of a proxy -> its fake udev
	contend map[string]int               // VM moref -> reconfigures still to refuse
	errs    []error                      // what went wrong inside the simulator
}

type diskID struct {
	vm  string // VM moref
	key int32  // device key
}

// track is the change log of one disk.
type track struct {
	on     bool   // tracking was on at the last snapshot
	epoch  string // changes when tracking is switched back on
	seq    uint64 // the number of writes logged
	writes []logged
}

type logged struct {
	seq      uint64
	off, end int64
}

// snapped is what a snapshot froze of one disk.
type snapped struct {
	epoch    string // "" when tracking was off
	seq      uint64
	flat     string // the frozen copy's local path
	desc     string // the frozen copy's descriptor, "[ds] dir/file.vmdk"
	capacity int64
}

func newDoubles(s *Site, window int64) *doubles {
	return &doubles{ExtensibleManagedObject: mo.ExtensibleManagedObject{Self: doublesRef}, site: s, window: window, disks: map[diskID]*track{}, snaps: map[string]map[int32]snapped{}, frozen: map[string][]string{}, deltas: map[string][]deltaChild{},
		vmSnaps: map[string][]string{}, proxies: map[string]*proxyState{}, contend: map[string]int{}}
}

// Reference makes doubles an object of the registry.
func (d *doubles) Reference() types.ManagedObjectReference { return doublesRef }

// handle is the registry's Handler: it runs before every call is
// dispatched.
func (d *doubles) handle(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	if f := lockedDisks(ctx, m); f != nil {
		return nil, f
	}
	switch m.Name {
	case "RemoveSnapshot_Task":
		if snap, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachineSnapshot); ok {
			if vm, ok := ctx.Map.Get(snap.Vm).(*simulator.VirtualMachine); ok {
				ctx.WithLock(vm, func() {
					d.consolidate(vm, m.This.Value)
					vm.LayoutEx.Snapshot = nil
					if vm.Snapshot != nil && vm.Snapshot.CurrentSnapshot != nil && *vm.Snapshot.CurrentSnapshot == m.This && isRoot(vm.Snapshot.RootSnapshotList, m.This) {
						ctx.Update(vm, []types.PropertyChange{{Name: "snapshot.currentSnapshot", Val: nil}})
					}
				})
			}
		}
	case "RemoveAllSnapshots_Task":
		if vm, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine); ok {
			ctx.WithLock(vm, func() {
				d.mu.Lock()
				snaps := append([]string(nil), d.vmSnaps[vm.Self.Value]...)
				d.mu.Unlock()
				for i := len(snaps) - 1; i >= 0; i-- {
					d.consolidate(vm, snaps[i])
				}
				vm.LayoutEx.Snapshot = nil
			})
		}
	case "ReconfigVM_Task":
		if req, ok := m.Body.(*types.ReconfigVM_Task); ok && req.Spec.ChangeTrackingEnabled != nil && !*req.Spec.ChangeTrackingEnabled {
			d.trackingOff(m.This.Value)
		}
		if d.contended(m.This) {
			return nil, &types.ConcurrentAccess{}
		}
		if req, ok := m.Body.(*types.ReconfigVM_Task); ok && extendsWithSnapshots(ctx, m.This, req.Spec) {
			return nil, &types.InvalidDeviceOperation{InvalidDeviceSpec: types.InvalidDeviceSpec{InvalidVmConfig: types.InvalidVmConfig{Property: "VirtualDisk.capacityInKB"}}}
		}
		if req, ok := m.Body.(*types.ReconfigVM_Task); ok && extendsDisk(ctx, m.This, req.Spec) {
			if err := d.extendFiles(ctx, m.This, req.Spec); err != nil {
				d.fail(fmt.Errorf("extend the disk files of %s: %w", m.This.Value, err))
			}
		}
	case "RevertToSnapshot_Task":
		if d.revertData {
			if err := d.revert(ctx, m.This); err != nil {
				d.fail(fmt.Errorf("revert to snapshot %s: %w", m.This.Value, err))
			}
		}
	case "QueryChangedDiskAreas", "CloneVM_Task":
		if m.This.Type == "VirtualMachine" {
			m.This = doublesRef
		}
	case "Destroy_Task":
		if m.This.Type == "VirtualMachine" {
			d.proxyDestroyed(ctx, m.This)
		}
	}
	return nil, nil
}

// lockedDisks refuses, as ESXi does with a locked file, what changes the
// disk chain of a VM while another VM that runs has one of its disks
// attached in a persistent mode (a HotAdd proxy writing a replica's disk):
// snapshots taken, removed or reverted to, disks extended. vcsim does not.
func lockedDisks(ctx *simulator.Context, m *simulator.Method) types.BaseMethodFault {
	ref := m.This
	switch m.Name {
	case "CreateSnapshot_Task", "RemoveAllSnapshots_Task":
	case "RemoveSnapshot_Task", "RevertToSnapshot_Task":
		snap, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachineSnapshot)
		if !ok {
			return nil
		}
		ref = snap.Vm
	case "ReconfigVM_Task":
		req, ok := m.Body.(*types.ReconfigVM_Task)
		if !ok {
			return nil
		}
		if f := attachesRunningDisk(ctx, m.This, req.Spec); f != nil {
			return f
		}
		if !extendsDisk(ctx, m.This, req.Spec) {
			return nil
		}
	default:
		return nil
	}
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return nil
	}
	files := map[string]bool{}
	ctx.WithLock(vm, func() {
		for _, dev := range vm.Config.Hardware.Device {
			if d, ok := dev.(*types.VirtualDisk); ok {
				if b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
					files[b.FileName] = true
				}
			}
		}
	})
	return heldByRunning(ctx, ref, files, true)
}

// attachesRunningDisk refuses, as ESXi does, a disk added in a persistent
// mode to VM ref whose file a running VM has open.
func attachesRunningDisk(ctx *simulator.Context, ref types.ManagedObjectReference, spec types.VirtualMachineConfigSpec) types.BaseMethodFault {
	adding := map[string]bool{}
	for _, c := range spec.DeviceChange {
		ch := c.GetVirtualDeviceConfigSpec()
		d, ok := ch.Device.(*types.VirtualDisk)
		if !ok || ch.Operation != types.VirtualDeviceConfigSpecOperationAdd {
			continue
		}
		if b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && persistentMode(b.DiskMode) {
			adding[b.FileName] = true
		}
	}
	if len(adding) == 0 {
		return nil
	}
	return heldByRunning(ctx, ref, adding, false)
}

// heldByRunning is FileLocked when a running VM other than ref has one of
// files as a disk (in a persistent mode only, when persistent).
func heldByRunning(ctx *simulator.Context, ref types.ManagedObjectReference, files map[string]bool, persistent bool) types.BaseMethodFault {
	for _, o := range ctx.Map.All("VirtualMachine") {
		other, ok := o.(*simulator.VirtualMachine)
		if !ok || other.Self == ref {
			continue
		}
		var locked string
		ctx.WithLock(other, func() {
			if other.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
				return
			}
			for _, dev := range other.Config.Hardware.Device {
				d, ok := dev.(*types.VirtualDisk)
				if !ok {
					continue
				}
				b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
				if ok && files[b.FileName] && (!persistent || persistentMode(b.DiskMode)) {
					locked = b.FileName
				}
			}
		})
		if locked != "" {
			return &types.FileLocked{FileFault: types.FileFault{File: locked}}
		}
	}
	return nil
}

func persistentMode(mode string) bool {
	return mode == string(types.VirtualDiskModePersistent) || mode == string(types.VirtualDiskModeIndependent_persistent)
}

// extendsDisk reports whether spec grows a disk of a VM.
func extendsDisk(ctx *simulator.Context, ref types.ManagedObjectReference, spec types.VirtualMachineConfigSpec) bool {
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return false
	}
	for _, c := range spec.DeviceChange {
		ch := c.GetVirtualDeviceConfigSpec()
		nd, ok := ch.Device.(*types.VirtualDisk)
		if !ok || ch.Operation != types.VirtualDeviceConfigSpecOperationEdit {
			continue
		}
		for _, dev := range vm.Config.Hardware.Device {
			if od, ok := dev.(*types.VirtualDisk); ok && od.Key == nd.Key && max(nd.CapacityInBytes, nd.CapacityInKB*1024) > max(od.CapacityInBytes, od.CapacityInKB*1024) {
				return true
			}
		}
	}
	return false
}

// extendsWithSnapshots reports whether spec grows a disk of a VM that has
// snapshots, which vSphere refuses (vcsim allows it).
func extendsWithSnapshots(ctx *simulator.Context, ref types.ManagedObjectReference, spec types.VirtualMachineConfigSpec) bool {
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok || vm.Snapshot == nil || len(vm.Snapshot.RootSnapshotList) == 0 {
		return false
	}
	return extendsDisk(ctx, ref, spec)
}

func isRoot(roots []types.VirtualMachineSnapshotTree, ref types.ManagedObjectReference) bool {
	for _, r := range roots {
		if r.Snapshot == ref {
			return true
		}
	}
	return false
}

// trackingOff forgets the epoch of every disk of a VM: the next snapshot
// with tracking on starts a new one.
func (d *doubles) trackingOff(vm string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, tr := range d.disks {
		if id.vm == vm {
			tr.on = false
		}
	}
}

func (d *doubles) track(id diskID) *track {
	tr := d.disks[id]
	if tr == nil {
		tr = &track{}
		d.disks[id] = tr
	}
	return tr
}

// logWrite records a guest write; the caller holds the VM's lock.
func (d *doubles) logWrite(id diskID, off, end int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	tr := d.track(id)
	tr.seq++
	tr.writes = append(tr.writes, logged{seq: tr.seq, off: off, end: end})
}

// PutObject sees every object vcsim registers; a new snapshot gets frozen
// disk copies and change ids. vcsim calls it from the snapshot task, which
// holds the VM's lock.
func (d *doubles) PutObject(_ *simulator.Context, obj mo.Reference) {
	snap, ok := obj.(*simulator.VirtualMachineSnapshot)
	if !ok {
		return
	}
	vm, ok := d.site.reg().Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	tracking := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	d.mu.Lock()
	defer d.mu.Unlock()
	var parent map[int32]snapped
	if prev := d.vmSnaps[vm.Self.Value]; d.deltaChains && len(prev) > 0 {
		parent = d.snaps[prev[len(prev)-1]]
	}
	state := map[int32]snapped{}
	for _, dev := range snap.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		capacity := disk.CapacityInBytes
		if capacity == 0 {
			capacity = disk.CapacityInKB * 1024
		}
		var st snapped
		if b.Parent != nil {
			// A disk on a delta chain (SetDiskChain): the snapshot keeps
			// the chain, the VM goes on in a new delta (delta.go).
			if err := d.newDelta(vm, disk.Key, b, capacity, snap.Self.Value); err != nil {
				d.errs = append(d.errs, fmt.Errorf("a new delta above %s for snapshot %s: %w", b.FileName, snap.Self.Value, err))
				continue
			}
			st = snapped{desc: b.FileName, capacity: capacity}
		} else {
			frozenDesc, frozenFlat, err := d.freeze(b.FileName, snap.Self.Value, capacity)
			if err != nil {
				// The snapshot would read live data: the test must fail.
				d.errs = append(d.errs, fmt.Errorf("freeze %s for snapshot %s: %w", b.FileName, snap.Self.Value, err))
				continue
			}
			d.frozen[snap.Self.Value] = append(d.frozen[snap.Self.Value], frozenFlat, strings.TrimSuffix(frozenFlat, "-flat.vmdk")+".vmdk")
			b.FileName = frozenDesc
			if p, ok := parent[disk.Key]; ok {
				b.Parent = &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: p.desc},
					DiskMode: string(types.VirtualDiskModePersistent)}
			}
			st = snapped{flat: frozenFlat, desc: frozenDesc, capacity: capacity}
		}
		tr := d.track(diskID{vm: vm.Self.Value, key: disk.Key})
		if tracking {
			if !tr.on || tr.epoch == "" {
				tr.on, tr.epoch = true, epochID()
			}
			st.epoch, st.seq = tr.epoch, tr.seq
			b.ChangeId = fmt.Sprintf("%s/%d", tr.epoch, tr.seq)
		} else {
			tr.on = false
			b.ChangeId = ""
		}
		state[disk.Key] = st
	}
	d.snaps[snap.Self.Value] = state
	d.vmSnaps[vm.Self.Value] = append(d.vmSnaps[vm.Self.Value], snap.Self.Value)
}

// epochID makes an epoch in the style of ESXi's change ids.
func epochID() string {
	u := uuid.New()
	h := fmt.Sprintf("%x", u[:])
	return fmt.Sprintf("52 %s %s %s %s", h[0:8], h[8:12], h[12:16], h[16:20])
}

// freeze copies the flat file of a disk descriptor to a frozen copy beside
// it and returns the copy's datastore path and local flat path.
func (d *doubles) freeze(file, snap string, capacity int64) (string, string, error) {
	descLocal, err := d.site.localPath(file)
	if err != nil {
		return "", "", err
	}
	flatLocal, err := flatOf(descLocal)
	if err != nil {
		return "", "", err
	}
	base := strings.TrimSuffix(filepath.Base(descLocal), ".vmdk")
	name := fmt.Sprintf("%s-ferrysim-%s", base, snap)
	dir := filepath.Dir(descLocal)
	frozenFlat := filepath.Join(dir, name+"-flat.vmdk")
	if err := sparseCopy(flatLocal, frozenFlat, capacity); err != nil {
		return "", "", err
	}
	desc := vmdk.NewDescriptor(vmdk.Extent{Size: capacity / vmdk.SectorSize, Info: name + "-flat.vmdk"})
	var buf bytes.Buffer
	if err := desc.Write(&buf); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".vmdk"), buf.Bytes(), 0o644); err != nil {
		return "", "", err
	}
	i := strings.LastIndex(file, "/")
	if i < 0 {
		i = strings.Index(file, "] ") + 1
	}
	return file[:i+1] + name + ".vmdk", frozenFlat, nil
}

// flatOf reads a text descriptor and returns its flat extent's local path.
func flatOf(desc string) (string, error) {
	dd, err := readDescriptor(desc)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(desc), dd.Extent[0].Info), nil
}

// readDescriptor reads a text descriptor of one extent.
func readDescriptor(desc string) (*vmdk.Descriptor, error) {
	f, err := os.Open(desc)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dd, err := vmdk.ParseDescriptor(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, err
	}
	if len(dd.Extent) != 1 {
		return nil, fmt.Errorf("%s: %d extents", desc, len(dd.Extent))
	}
	return dd, nil
}

// revert copies a snapshot's frozen disks into its VM's disks (at least
// as long as each disk is now).
func (d *doubles) revert(ctx *simulator.Context, ref types.ManagedObjectReference) error {
	snap, ok := ctx.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return nil
	}
	vm, ok := ctx.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	if !ok {
		return nil
	}
	d.mu.Lock()
	frozen := d.snaps[ref.Value]
	d.mu.Unlock()
	var err error
	ctx.WithLock(vm, func() {
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			st, ok := frozen[disk.Key]
			if !ok {
				continue
			}
			var flat string
			if flat, err = d.site.flatPath(disk); err != nil {
				return
			}
			if err = sparseCopy(st.flat, flat, max(st.capacity, diskSize(disk))); err != nil {
				return
			}
		}
	})
	return err
}

// extendFiles grows the descriptor and flat file of each disk spec
// extends, as ESXi does (vcsim changes only the configuration).
func (d *doubles) extendFiles(ctx *simulator.Context, ref types.ManagedObjectReference, spec types.VirtualMachineConfigSpec) error {
	for _, c := range spec.DeviceChange {
		ch := c.GetVirtualDeviceConfigSpec()
		nd, ok := ch.Device.(*types.VirtualDisk)
		if !ok || ch.Operation != types.VirtualDeviceConfigSpecOperationEdit {
			continue
		}
		b, ok := nd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		size := max(nd.CapacityInBytes, nd.CapacityInKB*1024)
		desc, err := d.site.localPath(b.FileName)
		if err != nil {
			return err
		}
		dd, err := readDescriptor(desc)
		if err != nil {
			return err
		}
		if dd.Extent[0].Size*vmdk.SectorSize >= size {
			continue
		}
		dd.Extent[0].Size = size / vmdk.SectorSize
		var buf bytes.Buffer
		if err := dd.Write(&buf); err != nil {
			return err
		}
		if err := os.WriteFile(desc, buf.Bytes(), 0o644); err != nil {
			return err
		}
		flat := filepath.Join(filepath.Dir(desc), dd.Extent[0].Info)
		if st, err := os.Stat(flat); err == nil && st.Size() < size {
			if err := os.Truncate(flat, size); err != nil {
				return err
			}
		}
	}
	return nil
}

// sparseCopy copies src to dst, writing no zero blocks, and sizes dst to
// size (a flat file is as long as its disk).
func sparseCopy(src, dst string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	buf := make([]byte, cbtBlock)
	var off int64
	for {
		n, err := in.ReadAt(buf, off)
		if n > 0 && !allZero(buf[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				out.Close()
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF || n == 0 {
			break
		}
		if err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Truncate(max(size, off)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// UpdateObject sees every property change; a proxy's device changes reach
// its fake udev.
func (d *doubles) UpdateObject(_ *simulator.Context, obj mo.Reference, changes []types.PropertyChange) {
	d.proxyUpdated(obj, changes)
}

// RemoveObject deletes the frozen copies of a snapshot that goes, and the
// change logs of a VM that goes.
func (d *doubles) RemoveObject(_ *simulator.Context, ref types.ManagedObjectReference) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch ref.Type {
	case "VirtualMachineSnapshot":
		for _, f := range d.frozen[ref.Value] {
			os.Remove(f)
		}
		delete(d.frozen, ref.Value)
		delete(d.snaps, ref.Value)
		for vm, list := range d.vmSnaps {
			for i, id := range list {
				if id == ref.Value {
					d.vmSnaps[vm] = append(list[:i:i], list[i+1:]...)
					break
				}
			}
		}
	case "VirtualMachine":
		for id := range d.disks {
			if id.vm == ref.Value {
				delete(d.disks, id)
			}
		}
		delete(d.vmSnaps, ref.Value)
		if p := d.proxies[ref.Value]; p != nil {
			// The guest is gone, and its devices with it.
			for name := range p.links {
				os.Remove(filepath.Join(p.dir, name))
			}
			for name := range p.gen {
				p.gen[name]++ // links still to come never come
			}
			delete(d.proxies, ref.Value)
		}
	}
}

// QueryChangedDiskAreas answers for one window of a snapshot's disk: the
// blocks written between the change id and the snapshot, or with "*" the
// blocks that are not zero.
func (d *doubles) QueryChangedDiskAreas(_ *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	fail := func(format string, args ...any) soap.HasFault {
		body.Fault_ = simulator.Fault(fmt.Sprintf(format, args...), &types.InvalidArgument{InvalidProperty: "changeId"})
		return body
	}
	if req.Snapshot == nil {
		return fail("vcsimtest: QueryChangedDiskAreas needs a snapshot")
	}
	d.mu.Lock()
	st, ok := d.snaps[req.Snapshot.Value][req.DeviceKey]
	var writes []logged
	if ok && req.ChangeId != "*" {
		if tr := d.disks[diskID{vm: req.This.Value, key: req.DeviceKey}]; tr != nil {
			writes = append(writes, tr.writes...)
		}
	}
	d.mu.Unlock()
	if !ok {
		return fail("vcsimtest: no disk %d in snapshot %s", req.DeviceKey, req.Snapshot.Value)
	}
	if st.epoch == "" {
		return fail("vcsimtest: changed block tracking was off when snapshot %s was taken", req.Snapshot.Value)
	}
	if req.StartOffset < 0 || req.StartOffset >= st.capacity {
		return fail("vcsimtest: start offset %d outside the disk (%d bytes)", req.StartOffset, st.capacity)
	}
	from, to := req.StartOffset, min(st.capacity, req.StartOffset+d.window)
	var areas []types.DiskChangeExtent
	if req.ChangeId == "*" {
		var err error
		if areas, err = nonZeroBlocks(st.flat, from, to); err != nil {
			return fail("vcsimtest: read %s: %v", st.flat, err)
		}
	} else {
		i := strings.LastIndex(req.ChangeId, "/")
		if i < 0 || req.ChangeId[:i] != st.epoch {
			return fail("vcsimtest: change id %q is not of epoch %q", req.ChangeId, st.epoch)
		}
		since, err := strconv.ParseUint(req.ChangeId[i+1:], 10, 64)
		if err != nil || since > st.seq {
			return fail("vcsimtest: unknown change id %q", req.ChangeId)
		}
		var blocks []int64
		for _, w := range writes {
			if w.seq <= since || w.seq > st.seq {
				continue
			}
			for b := w.off / cbtBlock; b*cbtBlock < w.end; b++ {
				if b*cbtBlock < to && (b+1)*cbtBlock > from {
					blocks = append(blocks, b)
				}
			}
		}
		areas = mergeBlocks(blocks, from, to)
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: types.DiskChangeInfo{StartOffset: from, Length: to - from, ChangedArea: areas}}
	return body
}

// mergeBlocks turns block numbers into sorted extents clipped to [from, to).
func mergeBlocks(blocks []int64, from, to int64) []types.DiskChangeExtent {
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	var out []types.DiskChangeExtent
	for _, b := range blocks {
		start, end := max(b*cbtBlock, from), min((b+1)*cbtBlock, to)
		if n := len(out); n > 0 && start <= out[n-1].Start+out[n-1].Length {
			out[n-1].Length = max(out[n-1].Length, end-out[n-1].Start)
			continue
		}
		out = append(out, types.DiskChangeExtent{Start: start, Length: end - start})
	}
	return out
}

// nonZeroBlocks lists the blocks of a file in [from, to) that hold data.
func nonZeroBlocks(file string, from, to int64) ([]types.DiskChangeExtent, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var blocks []int64
	buf := make([]byte, cbtBlock)
	for b := from / cbtBlock; b*cbtBlock < to; b++ {
		n, err := f.ReadAt(buf, b*cbtBlock)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if !allZero(buf[:n]) {
			blocks = append(blocks, b)
		}
		if n < len(buf) {
			break
		}
	}
	return mergeBlocks(blocks, from, to), nil
}

// dsFile splits "[ds] dir/file" into the datastore and the path.
func dsFile(s string) (string, string, error) {
	if !strings.HasPrefix(s, "[") {
		return "", "", fmt.Errorf("%q is not a datastore path", s)
	}
	i := strings.Index(s, "]")
	if i < 0 {
		return "", "", fmt.Errorf("%q is not a datastore path", s)
	}
	return s[1:i], path.Clean(strings.TrimSpace(s[i+1:])), nil
}
