package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var _ sdk.ReplicaMapper = (*Target)(nil)

// Mapping makes a VM of the target, one ferry did not create, a replica
// in two steps, so that a process killed between them leaves nothing that
// looks like a replica with the wrong state:
//
//  1. the replica's state (source, NICs after the network map) is written
//     into the ferry folder the VM will have once marked, and its flat
//     files are grown to their disks' sizes (sparse: the content stays);
//  2. one Reconfigure, atomic in vSphere, marks the VM (ferry.replica and
//     the owner keys), gives it the source's CPUs, memory, guest and
//     firmware, and connects its NICs to the mapped networks.
//
// Until the second step the VM is no replica: every call but MapReplica
// ignores it, and the next MapReplica checks it again and does both steps
// again (the first replaces what an interrupted one wrote). After it the
// replica is complete.

// MapReplica makes the VM named req.Name the replica req describes
// (sdk.ReplicaMapper). The VM must be powered off, have no snapshots, as
// many disks as the source in device key order, each of the source's
// disk's capacity, in persistent mode and written the way this target
// writes replicas: on a datastore of local_datastore_paths (direct), or
// attachable to the HotAdd proxy (hotadd). Otherwise it is refused with
// errdefs.ErrFailedPrecondition saying what differs, and left as it was.
// Its disks keep their content; the first run compares them with the
// source block by block.
func (t *Target) MapReplica(ctx context.Context, req sdk.ReplicaRequest) (*sdk.Replica, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, fmt.Errorf("map replica: no VM name: %w", errdefs.ErrInvalidArgument)
	}
	rules, err := sdk.CompileNetwork(sdk.NetworkConfig{NetworkMap: req.NetworkMap})
	if err != nil {
		return nil, fmt.Errorf("map replica onto %q: %w", req.Name, err)
	}
	nics, err := rules.Apply(req.VM.NICs)
	if err != nil {
		return nil, fmt.Errorf("map replica onto %q: %w", req.Name, err)
	}
	// Creation and mapping are serialized: both decide by name whether a
	// replica exists.
	t.createMu.Lock()
	defer t.createMu.Unlock()
	vm, err := t.c.vmObjectProps(ctx, req.Name, replicaProps)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("map replica onto VM %q: no such VM on %s: %w", req.Name, t.c.url, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("map replica onto VM %q: %w", req.Name, err)
	}
	if isReplica(vm.Config) {
		if owner := ownerOf(vm.Config); !req.Owner.IsZero() && owner == req.Owner {
			return t.GetReplica(ctx, vm.Self.Value) // mapped already
		}
		return nil, fmt.Errorf("map replica onto VM %q: it is a ferry replica already, of %q: %w",
			req.Name, extraConfig(vm.Config)[replicaKey], errdefs.ErrAlreadyExists)
	}
	if isTestVM(vm.Config) {
		return nil, fmt.Errorf("map replica onto VM %q: it is a ferry test failover VM: %w", req.Name, errdefs.ErrAlreadyExists)
	}
	plan, err := t.planMapping(ctx, vm, req, nics)
	if err != nil {
		return nil, err
	}
	if err := t.stageMapping(plan); err != nil {
		return nil, fmt.Errorf("map replica onto VM %q: %w", req.Name, err)
	}
	obj := object.NewVirtualMachine(t.c.client, vm.Self)
	if _, err := t.c.call(ctx, "mark "+req.Name+" as the replica of "+req.VM.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, plan.spec)
	}); err != nil {
		return nil, fmt.Errorf("map replica onto VM %q: %w", req.Name, err)
	}
	t.log.Info("mapped replica onto an existing VM", "replica", req.Name, "id", vm.Self.Value, "source", req.VM.Name, "disks", len(plan.files))
	return t.GetReplica(ctx, vm.Self.Value)
}

// mappingPlan is what MapReplica does to a VM it accepted.
type mappingPlan struct {
	dir   string        // the ferry folder the VM has once marked
	state *replicaState // written there
	files []mappedFlat  // direct: the flat files to grow to their disks' sizes
	spec  types.VirtualMachineConfigSpec
}

type mappedFlat struct {
	file string
	size int64
}

// planMapping checks that vm can be the replica req describes, changing
// nothing, and plans the mapping.
func (t *Target) planMapping(ctx context.Context, vm *mo.VirtualMachine, req sdk.ReplicaRequest, nics []sdk.NIC) (*mappingPlan, error) {
	refuse := func(format string, args ...any) (*mappingPlan, error) {
		return nil, fmt.Errorf("map replica of %q onto VM %q on %s: %s: %w", req.VM.Name, req.Name, t.c.url, fmt.Sprintf(format, args...), errdefs.ErrFailedPrecondition)
	}
	if vm.Config.Template {
		return refuse("it is a template; convert it to a virtual machine first")
	}
	if ps := vm.Runtime.PowerState; ps != types.VirtualMachinePowerStatePoweredOff {
		return refuse("it is %s; power it off first (ferry writes a replica's disks while it is off)", ps)
	}
	if vm.Snapshot != nil && len(vm.Snapshot.RootSnapshotList) > 0 {
		return refuse("it has %d snapshots; delete them first (restore points are ferry's snapshots)", countSnapshots(vm.Snapshot.RootSnapshotList))
	}
	disks := virtualDisks(vm.Config.Hardware.Device)
	if len(disks) != len(req.VM.Disks) {
		return refuse("it has %d disks, source VM %q has %d", len(disks), req.VM.Name, len(req.VM.Disks))
	}
	for i, d := range disks {
		if have, want := diskCapacity(d), req.VM.Disks[i].Capacity; have != want {
			return refuse("its disk %d holds %d bytes, disk %d of source VM %q %d", i, have, i, req.VM.Name, want)
		}
		b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			return refuse("its disk %d has a %T backing; ferry writes flat (VMDK) disks only", i, d.Backing)
		}
		if b.Parent != nil {
			return refuse("its disk %d is a delta disk of %s (a linked clone); consolidate it or make a full clone first", i, b.Parent.FileName)
		}
		if b.DiskMode != "" && b.DiskMode != string(types.VirtualDiskModePersistent) {
			return refuse("its disk %d is in mode %s; restore points, which are snapshots, capture persistent disks only", i, b.DiskMode)
		}
	}
	plan := &mappingPlan{
		state: &replicaState{Source: req.VM.Name, State: sdk.ReplicaReady, SourceNICs: cloneNICs(req.VM.NICs), NICs: nics},
	}
	var err error
	if t.cfg.Transport == TransportHotAdd {
		if why, err := t.hotaddBlocked(ctx, vm, disks); err != nil {
			return nil, fmt.Errorf("map replica onto VM %q: %w", req.Name, err)
		} else if why != "" {
			return refuse("its disks cannot be written through HotAdd: %s", why)
		}
		if vm.Config.InstanceUuid == "" {
			return refuse("it has no instance UUID to name its state folder")
		}
		plan.dir = filepath.Join(t.cfg.StateDir, vm.Config.InstanceUuid)
	} else {
		if plan.dir, err = t.ferryFolder(vm); err != nil {
			return refuse("its folder cannot be reached for ferry's state: %v", err)
		}
		for i, d := range disks {
			file, err := t.c.localFlat(ctx, d)
			if err != nil {
				if !errors.Is(err, errdefs.ErrFailedPrecondition) && !errors.Is(err, errdefs.ErrInvalidArgument) {
					return nil, fmt.Errorf("map replica onto VM %q disk %d: %w", req.Name, i, err)
				}
				return refuse("its disk %d cannot be written directly: %v", i, err)
			}
			plan.files = append(plan.files, mappedFlat{file: file, size: diskCapacity(d)})
		}
	}
	if plan.spec, err = t.mappingSpec(ctx, vm, req, nics); err != nil {
		return nil, fmt.Errorf("map replica onto VM %q: %w", req.Name, err)
	}
	return plan, nil
}

func startsConnected(card types.BaseVirtualEthernetCard) bool {
	c := card.GetVirtualEthernetCard().Connectable
	return c != nil && c.StartConnected
}

func countSnapshots(trees []types.VirtualMachineSnapshotTree) int {
	n := 0
	for _, s := range trees {
		n += 1 + countSnapshots(s.ChildSnapshotList)
	}
	return n
}

// hotaddBlocked says why a disk of vm cannot be attached to the proxy for
// writing, or "": what attachDisk would find, without attaching.
func (t *Target) hotaddBlocked(ctx context.Context, vm *mo.VirtualMachine, disks []*types.VirtualDisk) (string, error) {
	if t.hot == nil {
		return "HotAdd is not configured", nil
	}
	ref, none, err := t.hot.resolve(ctx)
	if err != nil || none != "" {
		return none, err
	}
	pv, err := t.hot.view(ctx, ref, true)
	if err != nil {
		return "", err
	}
	for i, d := range disks {
		if why := hotaddBlocker(pv, vm.Self, vm.Config.Hardware.Device, d); why != "" {
			return fmt.Sprintf("disk %d: %s", i, why), nil
		}
	}
	return "", nil
}

// mappingSpec is the Reconfigure that makes vm the replica: the marks and
// the top-level settings CreateReplica gives a replica (from replicaSpec,
// so both agree), and NICs connected to the mapped networks in device key
// order, added or removed to be as many as the source's. Disks are left
// alone.
func (t *Target) mappingSpec(ctx context.Context, vm *mo.VirtualMachine, req sdk.ReplicaRequest, nics []sdk.NIC) (types.VirtualMachineConfigSpec, error) {
	// replicaSpec without disks or NICs: only its settings are used; the
	// VM keeps its disks where they are.
	bare := req
	bare.VM.Disks = nil
	created, err := t.replicaSpec(ctx, bare, nil)
	if err != nil {
		return types.VirtualMachineConfigSpec{}, err
	}
	spec := types.VirtualMachineConfigSpec{
		GuestId: created.GuestId, NumCPUs: created.NumCPUs, NumCoresPerSocket: created.NumCoresPerSocket,
		MemoryMB: created.MemoryMB, Firmware: created.Firmware, Annotation: created.Annotation,
		ExtraConfig: created.ExtraConfig,
	}
	if t.cfg.Transport != TransportHotAdd {
		// A direct replica has no writes mark, whatever the VM had.
		if _, ok := extraConfig(vm.Config)[replicaWritesKey]; ok {
			spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: replicaWritesKey, Value: ""})
		}
	}
	devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
	cards := ethernetCards(devices)
	names := &netNames{c: t.c}
	connect := &types.VirtualDeviceConnectInfo{StartConnected: true, AllowGuestControl: true}
	nextKey := int32(-1000)
	for i, n := range nics {
		if i < len(cards) && nicNetwork(ctx, names, cards[i]) == n.Network && startsConnected(cards[i]) {
			continue
		}
		backing, err := t.nicBacking(ctx, n.Network)
		if err != nil {
			return spec, fmt.Errorf("nic %d: %w", i, err)
		}
		if i < len(cards) {
			ec := cards[i].GetVirtualEthernetCard()
			ec.Backing = backing
			if ec.Connectable == nil {
				ec.Connectable = connect
			} else {
				ec.Connectable.StartConnected = true
			}
			spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: cards[i].(types.BaseVirtualDevice)})
			continue
		}
		card, err := devices.CreateEthernetCard("vmxnet3", backing)
		if err != nil {
			return spec, err
		}
		card.GetVirtualDevice().Key = nextKey
		nextKey--
		card.GetVirtualDevice().Connectable = connect
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: card})
	}
	for i := len(nics); i < len(cards); i++ {
		spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: cards[i].(types.BaseVirtualDevice)})
	}
	return spec, nil
}

// stageMapping is step 1: the state in a ferry folder of its own (what an
// earlier life of the VM or an interrupted mapping left there goes: the
// VM has no snapshots, so no point of it is worth keeping), and the flat
// files as long as their disks, as CreateReplica makes them.
func (t *Target) stageMapping(p *mappingPlan) error {
	if err := os.RemoveAll(p.dir); err != nil {
		return fmt.Errorf("clear ferry folder: %w", err)
	}
	for _, f := range p.files {
		if err := growFile(f.file, f.size); err != nil {
			return err
		}
	}
	if err := writeState(p.dir, p.state); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}
