package hyperv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Target keeps replica VMs on a Hyper-V host. A replica's disks are VHDX
// chains; ferry writes into the newest file of each, and a restore point
// is a checkpoint, which freezes that file and gives the replica a new
// one on top. Retention deletes a checkpoint, and Hyper-V merges its
// differencing disk into its parent.
type Target struct {
	h       host.Host
	storage string

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per replica VM id
}

var (
	_ sdk.Target          = (*Target)(nil)
	_ sdk.TransportProber = (*Target)(nil)
)

// NewTarget returns a target on the host h that puts replicas in storage
// ("" for the host's default).
func NewTarget(h host.Host, storage string) *Target {
	return &Target{h: h, storage: storage, locks: map[string]*sync.Mutex{}}
}

// lock serialises the changes of one replica within the process; the
// host serialises each of its own calls.
func (t *Target) lock(id string) func() {
	t.mu.Lock()
	l, ok := t.locks[id]
	if !ok {
		l = &sync.Mutex{}
		t.locks[id] = l
	}
	t.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// GetPlacement lists the host, the storage and the virtual switches.
func (t *Target) GetPlacement(ctx context.Context) (*sdk.Placement, error) {
	sw, err := t.h.Switches(ctx)
	if err != nil {
		return nil, err
	}
	p := &sdk.Placement{Hosts: []string{t.h.Name()}, Networks: sw}
	if ch, ok := t.h.(*clusterHost); ok {
		nodes, err := ch.up(ctx)
		if err != nil {
			return nil, err
		}
		p.Hosts = p.Hosts[:0]
		for _, n := range nodes {
			p.Hosts = append(p.Hosts, n.Name)
		}
	}
	if t.storage != "" {
		p.Datastores = []string{t.storage}
	}
	return p, nil
}

// replica is a replica VM and what its notes say.
type replica struct {
	vm   *host.VM
	meta *replicaMeta
}

// locked finds a replica, takes its lock and reads it again under the lock
// (an id may name it by name or id; the lock is by its VM id). unlock
// releases the lock.
func (t *Target) locked(ctx context.Context, id string) (r *replica, unlock func(), err error) {
	if r, err = t.get(ctx, id); err != nil {
		return nil, nil, err
	}
	unlock = t.lock(r.vm.ID)
	if r, err = t.get(ctx, r.vm.ID); err != nil {
		unlock()
		return nil, nil, err
	}
	return r, unlock, nil
}

func (t *Target) get(ctx context.Context, id string) (*replica, error) {
	v, err := t.h.GetVM(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("replica %q: %w", id, err)
	}
	m, ok, err := parseReplica(v.Notes)
	if err != nil {
		return nil, fmt.Errorf("replica %q: %w", id, err)
	}
	if !ok {
		return nil, fmt.Errorf("replica %q: VM %q is not a ferry replica: %w", id, v.Name, errdefs.ErrNotFound)
	}
	return &replica{vm: v, meta: m}, nil
}

func (t *Target) save(ctx context.Context, r *replica) error {
	notes, err := r.meta.notes()
	if err != nil {
		return err
	}
	if err := t.h.SetNotes(ctx, r.vm.ID, notes); err != nil {
		return fmt.Errorf("replica %q: %w", r.vm.Name, err)
	}
	r.vm.Notes = notes
	return nil
}

func (t *Target) describe(r *replica) *sdk.Replica {
	vm := describeVM(*r.vm, r.meta.Sizes)
	vm.GuestOS = r.meta.GuestOS
	return &sdk.Replica{ID: r.vm.ID, Name: r.vm.Name, SourceVM: r.meta.SourceVM, VM: vm, State: r.meta.State,
		FailoverPoint: r.meta.FailoverPoint, Incarnation: r.meta.Incarnation, Owner: r.meta.Owner}
}

// CreateReplica creates the replica VM, stopped: the source's generation,
// CPUs, memory, Secure Boot and TPM, empty VHDX disks of the source's
// sizes, and adapters on the virtual switches the network map names.
func (t *Target) CreateReplica(ctx context.Context, req sdk.ReplicaRequest) (*sdk.Replica, error) {
	if req.Name == "" {
		return nil, fmt.Errorf("create replica: no name: %w", errdefs.ErrInvalidArgument)
	}
	defer t.lock("name:" + req.Name)()
	if r, err := t.get(ctx, req.Name); err == nil {
		if ch, ok := t.h.(*clusterHost); ok && !r.vm.Clustered {
			// Made, but not a role yet: creation stopped in between.
			if err := ch.makeHighlyAvailable(ctx, r.vm.ID); err != nil {
				return nil, fmt.Errorf("replica %q: %w", req.Name, err)
			}
		}
		if r.meta.Owner.IsZero() && !req.Owner.IsZero() {
			r.meta.Owner = req.Owner
			if err := t.save(ctx, r); err != nil {
				return nil, err
			}
		}
		return t.describe(r), nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	} else if v, verr := t.h.GetVM(ctx, req.Name); verr == nil {
		return nil, fmt.Errorf("create replica %q: VM %s has that name and is not a ferry replica: %w", req.Name, v.ID, errdefs.ErrAlreadyExists)
	}
	rules, err := sdk.CompileNetwork(sdk.NetworkConfig{NetworkMap: req.NetworkMap})
	if err != nil {
		return nil, err
	}
	nics, err := rules.Apply(req.VM.NICs)
	if err != nil {
		return nil, err
	}
	meta := &replicaMeta{Replica: 1, Owner: req.Owner, SourceVM: req.VM.ID, Incarnation: newIncarnation(),
		State: sdk.ReplicaReady, NICs: nics, GuestOS: req.VM.GuestOS}
	spec, sizes, err := specOf(req.Name, req.VM, nics, t.storage)
	if err != nil {
		return nil, fmt.Errorf("create replica %q: %w", req.Name, err)
	}
	meta.Sizes = sizes
	if spec.Notes, err = meta.notes(); err != nil {
		return nil, err
	}
	v, err := t.h.CreateVM(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("create replica %q: %w", req.Name, err)
	}
	return t.describe(&replica{vm: v, meta: meta}), nil
}

// specOf is the Hyper-V VM that holds vm, named name, with the adapters
// nics (networks already mapped), in folder dir ("" for the host's
// default), and the sizes of its disks (a VHDX is whole sectors).
func specOf(name string, vm sdk.VM, nics []sdk.NIC, dir string) (host.VMSpec, []int64, error) {
	want := vm
	want.Disks = slices.Clone(want.Disks)
	sdk.NormalizeHardware(&want)
	hw := want.Hardware
	spec := host.VMSpec{Name: name, Generation: generation(want), CPUs: max(vm.CPUs, 1),
		MemoryMiB: max(vm.MemoryMiB, 32), SecureBoot: hw.SecureBoot, TPM: hw.TPM, Dir: dir}
	if spec.SecureBoot {
		spec.SecureBootTemplate = hw.SecureBootTemplate
	}
	// The host maps the source's hardware onto sdk.HyperVHardware first
	// (protocol 1.7), so each disk names an IDE or synthetic SCSI place;
	// a description that does not (an older host) is placed as before:
	// generation 1 boots from IDE, so the first disks go there.
	mapped := len(want.Disks) > 0
	for _, d := range want.Disks {
		mapped = mapped && (d.Bus == sdk.BusIDE || d.Bus == sdk.BusSCSI && d.ControllerModel == sdk.ModelHyperVSCSI)
	}
	var sizes []int64
	for i, d := range want.Disks {
		if d.Capacity <= 0 {
			return spec, nil, fmt.Errorf("disk %d has capacity %d: %w", i, d.Capacity, errdefs.ErrInvalidArgument)
		}
		ctl, bus, loc := "scsi", 0, i
		switch {
		case mapped:
			ctl, bus, loc = string(d.Bus), d.ControllerNumber, d.Unit
		case spec.Generation == 1 && i < 4:
			ctl, bus, loc = "ide", i/2, i%2
		case spec.Generation == 1:
			loc = i - 4
		}
		spec.Disks = append(spec.Disks, host.DiskSpec{Controller: ctl, Bus: bus, Location: loc, Capacity: roundSector(d.Capacity)})
		sizes = append(sizes, d.Capacity)
	}
	for _, n := range nics {
		if n.Model != "" && n.Model != sdk.NICHyperVSynthetic && n.Model != sdk.NICHyperVLegacy {
			return spec, nil, fmt.Errorf("nic %d: Hyper-V has no %s adapter: %w", n.Index, n.Model, errdefs.ErrInvalidArgument)
		}
		spec.NICs = append(spec.NICs, host.NICSpec{Switch: n.Network, Guest: guestOf(n), Legacy: n.Model == sdk.NICHyperVLegacy})
	}
	spec.BootOrder = replicaBootOrder(want, spec)
	return spec, sizes, nil
}

// generation is the Hyper-V generation a replica of vm needs: the one
// its hardware names (the host's mapping, or a Hyper-V source's), else
// 1 for BIOS and 2 for EFI.
func generation(vm sdk.VM) int {
	if g := vm.Hardware.Generation; g == 1 || g == 2 {
		return g
	}
	if g, err := strconv.Atoi(vm.Attributes[AttrGeneration]); err == nil && (g == 1 || g == 2) {
		return g
	}
	if vm.Firmware == "bios" {
		return 1
	}
	return 2
}

func roundSector(n int64) int64 { return (n + 511) / 512 * 512 }

func guestOf(n sdk.NIC) host.GuestNetwork {
	return host.GuestNetwork{Addresses: n.Addresses, Gateway: n.Gateway, DNS: n.DNS}
}

// GetReplica returns a replica by id or name.
func (t *Target) GetReplica(ctx context.Context, id string) (*sdk.Replica, error) {
	r, err := t.get(ctx, id)
	if err != nil {
		return nil, err
	}
	return t.describe(r), nil
}

// ListReplicas lists the host's VMs that are ferry replicas.
func (t *Target) ListReplicas(ctx context.Context) ([]sdk.Replica, error) {
	vms, err := t.h.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := []sdk.Replica{}
	for i := range vms {
		m, ok, err := parseReplica(vms[i].Notes)
		if !ok {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("replica %q: %w", vms[i].Name, err)
		}
		out = append(out, *t.describe(&replica{vm: &vms[i], meta: m}))
	}
	return out, nil
}

// DeleteReplica turns the replica off and removes it with its checkpoints
// and files.
func (t *Target) DeleteReplica(ctx context.Context, id string) error {
	r, err := t.get(ctx, id)
	if err != nil {
		return err
	}
	defer t.lock(r.vm.ID)()
	if err := t.supersedeWriters(r.vm.ID, "the replica's deletion"); err != nil {
		return err
	}
	return t.h.DeleteVM(ctx, r.vm.ID)
}

// supersedeWriters closes the open writers of a replica's disks.
func (t *Target) supersedeWriters(vm, why string) error {
	return writers.supersede(t.h.Name()+"\x00"+vm+"\x00", why)
}

// OpenReplicaDisk opens the newest file of the disk's chain for writing,
// growing the disk first when size is larger.
func (t *Target) OpenReplicaDisk(ctx context.Context, id string, disk int, size int64) (sdk.DiskWriter, error) {
	r, unlock, err := t.locked(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.meta.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("replica %q is %s; it takes writes only when ready: %w", r.vm.Name, r.meta.State, errdefs.ErrFailedPrecondition)
	}
	if disk < 0 || disk >= len(r.vm.Disks) || disk >= len(r.meta.Sizes) {
		return nil, fmt.Errorf("replica %q has no disk %d: %w", r.vm.Name, disk, errdefs.ErrNotFound)
	}
	key := writerKey(t.h.Name(), r.vm.ID, disk)
	if err := writers.supersede(key, "a newer writer"); err != nil {
		return nil, err
	}
	if size > r.meta.Sizes[disk] {
		if roundSector(size) > r.vm.Disks[disk].Capacity {
			if err := t.h.GrowDisk(ctx, r.vm.ID, disk, roundSector(size)); err != nil {
				return nil, fmt.Errorf("grow disk %d of replica %q: %w", disk, r.vm.Name, err)
			}
		}
		r.meta.Sizes[disk] = size
		if err := t.save(ctx, r); err != nil {
			return nil, err
		}
		if r, err = t.get(ctx, r.vm.ID); err != nil {
			return nil, err
		}
	}
	if !t.h.Local() {
		return nil, fmt.Errorf("replica %q: the host's files are not on this machine; run the plugin on the Hyper-V host: %w", r.vm.Name, errdefs.ErrUnavailable)
	}
	img, err := vhdx.Open(r.vm.Disks[disk].Path, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("open disk %d of replica %q: %w", disk, r.vm.Name, err)
	}
	w := &diskWriter{key: key, owner: t, size: r.meta.Sizes[disk], img: img}
	writers.add(w)
	return w, nil
}

// CreateRestorePoint closes the replica's writers and takes a standard
// checkpoint: each disk's newest file is frozen and a new one goes on top.
func (t *Target) CreateRestorePoint(ctx context.Context, id string, labels map[string]string) (*sdk.RestorePoint, error) {
	r, unlock, err := t.locked(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.meta.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("replica %q is %s: %w", r.vm.Name, r.meta.State, errdefs.ErrFailedPrecondition)
	}
	if err := t.supersedeWriters(r.vm.ID, "a restore point"); err != nil {
		return nil, err
	}
	pm := &pointMeta{Point: 1, Labels: labels, Sizes: r.meta.Sizes}
	notes, err := pm.notes()
	if err != nil {
		return nil, err
	}
	cp, err := t.h.CreateCheckpoint(ctx, r.vm.ID, host.CheckpointRequest{
		Name: "ferry " + time.Now().UTC().Format("2006-01-02 15:04:05.000"), Type: host.Standard, Notes: notes, Consistency: host.CrashConsistent})
	if err != nil {
		return nil, fmt.Errorf("restore point of replica %q: %w", r.vm.Name, err)
	}
	return pointOf(r.vm.ID, *cp, pm), nil
}

func pointOf(replica string, cp host.Checkpoint, pm *pointMeta) *sdk.RestorePoint {
	p := &sdk.RestorePoint{ID: cp.ID, Replica: replica, Created: cp.Created, Labels: pm.Labels}
	for i, d := range cp.Disks {
		size := d.Capacity
		if i < len(pm.Sizes) {
			size = pm.Sizes[i]
		}
		p.Disks = append(p.Disks, sdk.SnapshotDisk{Index: i, Capacity: size})
		if st, err := os.Stat(d.Path); err == nil {
			p.Size += st.Size()
		}
	}
	return p
}

// points lists the replica's restore points (its checkpoints with a
// restore point's notes), oldest first.
func (t *Target) points(ctx context.Context, vm string) ([]host.Checkpoint, []*pointMeta, error) {
	cps, err := t.h.ListCheckpoints(ctx, vm)
	if err != nil {
		return nil, nil, err
	}
	sort.SliceStable(cps, func(i, j int) bool { return cps[i].Created.Before(cps[j].Created) })
	var out []host.Checkpoint
	var metas []*pointMeta
	for _, cp := range cps {
		if pm, ok := parsePoint(cp.Notes); ok && pm.Point == 1 {
			out = append(out, cp)
			metas = append(metas, pm)
		}
	}
	return out, metas, nil
}

func (t *Target) point(ctx context.Context, r *replica, id string) (*host.Checkpoint, *pointMeta, error) {
	cps, metas, err := t.points(ctx, r.vm.ID)
	if err != nil {
		return nil, nil, err
	}
	for i, cp := range cps {
		if cp.ID == id {
			return &cp, metas[i], nil
		}
	}
	return nil, nil, fmt.Errorf("restore point %q of replica %q: %w", id, r.vm.Name, errdefs.ErrNotFound)
}

// ListRestorePoints lists the replica's restore points, oldest first.
func (t *Target) ListRestorePoints(ctx context.Context, id string) ([]sdk.RestorePoint, error) {
	r, err := t.get(ctx, id)
	if err != nil {
		return nil, err
	}
	cps, metas, err := t.points(ctx, r.vm.ID)
	if err != nil {
		return nil, err
	}
	out := []sdk.RestorePoint{}
	for i, cp := range cps {
		out = append(out, *pointOf(r.vm.ID, cp, metas[i]))
	}
	return out, nil
}

// DeleteRestorePoint deletes the point's checkpoint; the host merges its
// differencing disk into its parent (simhost: see its package doc for how
// a merge stays crash-safe), and every other point reads as before.
func (t *Target) DeleteRestorePoint(ctx context.Context, id, point string) error {
	r, unlock, err := t.locked(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	cp, _, err := t.point(ctx, r, point)
	if err != nil {
		return err
	}
	if r.meta.State == sdk.ReplicaFailedOver && r.meta.FailoverPoint == cp.ID {
		return fmt.Errorf("restore point %q: replica %q runs from it: %w", point, r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	if err := t.supersedeWriters(r.vm.ID, "a restore point's deletion"); err != nil {
		return err
	}
	return t.h.DestroyCheckpoint(ctx, r.vm.ID, cp.ID)
}

// OpenRestorePointDisk reads a point's chain; an empty point reads the
// working state, the newest file's chain.
func (t *Target) OpenRestorePointDisk(ctx context.Context, id, point string, disk int) (sdk.DiskReader, error) {
	r, err := t.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !t.h.Local() {
		return nil, fmt.Errorf("replica %q: the host's files are not on this machine: %w", r.vm.Name, errdefs.ErrUnavailable)
	}
	if point == "" {
		if disk < 0 || disk >= len(r.vm.Disks) || disk >= len(r.meta.Sizes) {
			return nil, fmt.Errorf("replica %q has no disk %d: %w", r.vm.Name, disk, errdefs.ErrNotFound)
		}
		return openReader(r.vm.Disks[disk].Path, r.meta.Sizes[disk])
	}
	cp, pm, err := t.point(ctx, r, point)
	if err != nil {
		return nil, err
	}
	if disk < 0 || disk >= len(cp.Disks) {
		return nil, fmt.Errorf("restore point %q has no disk %d: %w", point, disk, errdefs.ErrNotFound)
	}
	size := cp.Disks[disk].Capacity
	if disk < len(pm.Sizes) {
		size = pm.Sizes[disk]
	}
	return openReader(cp.Disks[disk].Path, size)
}

// ProbeTransport says the replicas' files are written directly when they
// are on this machine.
func (t *Target) ProbeTransport(ctx context.Context, vm string, disk int) (string, string, error) {
	return probe(ctx, t.h, vm, disk)
}
