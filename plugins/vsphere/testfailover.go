package vsphere

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A test VM is a full clone of a replica from a restore point's
// snapshot, named ferry-test-<id>, in the target's folder, pool and
// datastore, its NICs on the test networks, powered on. It is marked in
// its extraConfig (testKey and the keys below, set by the clone itself,
// so a test VM is labelled from the moment vSphere creates it) and
// described in its annotation; ListTests finds leftovers by the marks.
//
// Why a full clone, not a linked one: on the direct lane ferry writes the
// replica's base disks behind vSphere's back (the snapshots' deltas stay
// empty), so a linked clone would read the replica's newest data, and
// keep changing with it. The full clone copies the snapshot's disks as
// vSphere reads them at clone time; then the blocks whose data differs
// between that and the restore point (those ferry's undo stores of the
// point and newer ones hold, and while failed over the failover store's)
// are written into the clone's disks with the point's data, through the
// datastore mount the replica's disks are written through. The clone
// shares nothing with the replica afterwards: replication and retention go
// on, and nothing the test VM writes reaches the replica.
const (
	testKey        = "ferry.test"         // the test's id
	testReplicaKey = "ferry.test.replica" // the replica's id
	testPointKey   = "ferry.test.point"
	testStartedKey = "ferry.test.started" // RFC 3339
	testLabelsKey  = "ferry.test.labels"  // the host's labels, JSON
	testRunningKey = "ferry.test.running" // "true" once the start finished
	testNamePrefix = "ferry-test-"
)

var _ sdk.TestFailoverer = (*Target)(nil)

// isTestVM says whether a VM is a test VM of ferry's.
func isTestVM(cfg *types.VirtualMachineConfigInfo) bool {
	return extraConfig(cfg)[testKey] != ""
}

// isReplica says whether a VM is a ferry replica. A test VM cloned from
// one may carry the replica's marks (vSphere copies extraConfig; the
// clone spec clears them, and a key cleared that was not there is kept
// empty by some versions), so the test mark wins.
func isReplica(cfg *types.VirtualMachineConfigInfo) bool {
	x := extraConfig(cfg)
	return x[replicaKey] != "" && x[testKey] == ""
}

// testPlan is what StartTest resolved of the replica, under its lock.
type testPlan struct {
	replica     string // id
	replicaName string
	point       string
	snap        types.ManagedObjectReference
	disks       int
	nics        []sdk.NIC
	custom      *types.CustomizationSpec
}

// StartTest clones a restore point of a replica into a test VM and starts
// it; see the comment on testKey.
func (t *Target) StartTest(ctx context.Context, req sdk.TestRequest) (*sdk.TestVM, error) {
	if err := sdk.CheckTestID(req.ID); err != nil {
		return nil, fmt.Errorf("start test: %w", err)
	}
	rules, err := sdk.CompileNetwork(req.Network)
	if err != nil {
		return nil, fmt.Errorf("start test %q: %w", req.ID, err)
	}
	r, err := t.load(ctx, req.Replica)
	if err != nil {
		return nil, fmt.Errorf("start test %q: %w", req.ID, err)
	}
	t.testMu.Lock()
	defer t.testMu.Unlock()
	existing, err := t.findTest(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		v := t.testOf(ctx, existing)
		if v.Running && v.Replica == r.id && (req.Point == "" || req.Point == v.Point) {
			return v, nil
		}
		return nil, fmt.Errorf("start test %q: the target has a test of that id already (VM %q, replica %q, point %q, running: %t); stop it first: %w",
			req.ID, existing.Name, v.Replica, v.Point, v.Running, errdefs.ErrAlreadyExists)
	}
	plan, err := t.planTest(ctx, req, rules)
	if err != nil {
		return nil, err
	}
	v, err := t.makeTest(ctx, req, plan)
	if err != nil {
		err = fmt.Errorf("start test %q: %w", req.ID, err)
		if serr := t.StopTest(context.WithoutCancel(ctx), req.ID); serr != nil {
			err = errors.Join(err, fmt.Errorf("remove what the start left: %w", serr))
		}
		return nil, err
	}
	t.log.Info("test VM started", "test", req.ID, "replica", plan.replicaName, "point", plan.point, "vm", v.VM.Name)
	return v, nil
}

// planTest resolves the point and the test networks, holding the
// replica's lock only while it does.
func (t *Target) planTest(ctx context.Context, req sdk.TestRequest, rules *sdk.NetworkRules) (*testPlan, error) {
	r, unlock, err := t.lockReplica(ctx, req.Replica)
	if err != nil {
		return nil, fmt.Errorf("start test %q: %w", req.ID, err)
	}
	defer unlock()
	if r.state.State == sdk.ReplicaCommitted {
		return nil, fmt.Errorf("start test %q: replica %q is committed and keeps no restore points: %w", req.ID, r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	if r.hotadd {
		return nil, fmt.Errorf("start test %q: replica %q is written through HotAdd; test failover works for replicas written directly (this version): %w",
			req.ID, r.vm.Name, errdefs.ErrUnimplemented)
	}
	r.gate.RLock()
	points := parsePoints(r.vm)
	r.gate.RUnlock()
	var p *point
	switch {
	case req.Point != "":
		if k := pointIndex(points, req.Point); k >= 0 {
			p = points[k]
		} else {
			return nil, fmt.Errorf("start test %q: restore point %q of replica %q: %w", req.ID, req.Point, r.vm.Name, errdefs.ErrNotFound)
		}
	case len(points) == 0:
		return nil, fmt.Errorf("start test %q: replica %q has no restore point: %w", req.ID, r.vm.Name, errdefs.ErrFailedPrecondition)
	default:
		p = points[len(points)-1]
	}
	source := r.state.SourceNICs
	if len(source) == 0 {
		source = r.state.NICs
	}
	mapped := map[string]bool{}
	for _, m := range req.Network.NetworkMap {
		mapped[m.From] = true
	}
	nics, err := rules.Apply(source)
	if err != nil {
		return nil, fmt.Errorf("start test %q: %w", req.ID, err)
	}
	for i, n := range source {
		if mapped[n.Network] {
			continue
		}
		if t.cfg.IsolatedNetwork == "" {
			return nil, fmt.Errorf("start test %q: NIC %d of replica %q is on network %q, which the test's network map does not map, and the target has no isolated_network: %w",
				req.ID, i, r.vm.Name, n.Network, errdefs.ErrFailedPrecondition)
		}
		nics[i].Network = t.cfg.IsolatedNetwork
	}
	plan := &testPlan{replica: r.id, replicaName: r.vm.Name, point: p.id, snap: p.snap, disks: len(r.disks), nics: nics}
	if !sameAddresses(nics, source) {
		s, warnings, err := customization(r.vm.Config.GuestId, r.state.Source, nics)
		if err != nil {
			return nil, fmt.Errorf("start test %q: %w", req.ID, err)
		}
		for _, w := range warnings {
			t.log.Warn("re-ip of a test VM", "test", req.ID, "warning", w)
		}
		plan.custom = &s
	}
	return plan, nil
}

// makeTest clones, fills, connects and starts the test VM.
func (t *Target) makeTest(ctx context.Context, req sdk.TestRequest, plan *testPlan) (*sdk.TestVM, error) {
	place, err := t.placement(ctx)
	if err != nil {
		return nil, err
	}
	refs, err := t.resolvePlacement(ctx)
	if err != nil {
		return nil, err
	}
	if err := t.checkTestNetworks(ctx, place, plan.nics); err != nil {
		return nil, err
	}
	labels, err := json.Marshal(req.Labels)
	if err != nil {
		return nil, err
	}
	ds, host, pool := refs.datastore, place.host.Reference(), place.pool.Reference()
	spec := types.VirtualMachineCloneSpec{
		Location: types.VirtualMachineRelocateSpec{Datastore: &ds, Host: &host, Pool: &pool,
			DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsMoveAllDiskBackingsAndDisallowSharing)},
		Snapshot: &plan.snap,
		Config: &types.VirtualMachineConfigSpec{
			Annotation: fmt.Sprintf("ferry test failover %q of replica %s at restore point %s: a disposable VM on test networks. Removed by ferry when the test ends; a leftover is removed by stopping the test.",
				req.ID, plan.replicaName, plan.point),
			ExtraConfig: []types.BaseOptionValue{
				&types.OptionValue{Key: testKey, Value: req.ID},
				&types.OptionValue{Key: testReplicaKey, Value: plan.replica},
				&types.OptionValue{Key: testPointKey, Value: plan.point},
				&types.OptionValue{Key: testStartedKey, Value: time.Now().UTC().Format(time.RFC3339Nano)},
				&types.OptionValue{Key: testLabelsKey, Value: string(labels)},
				// vSphere copies the replica's extraConfig: a test VM is
				// no replica and is written by no one.
				&types.OptionValue{Key: replicaKey, Value: ""},
				&types.OptionValue{Key: replicaWritesKey, Value: ""},
				&types.OptionValue{Key: ownerJobKey, Value: ""},
				&types.OptionValue{Key: ownerSourceKey, Value: ""},
				&types.OptionValue{Key: ownerVMKey, Value: ""},
			},
		},
	}
	src := object.NewVirtualMachine(t.c.client, types.ManagedObjectReference{Type: "VirtualMachine", Value: plan.replica})
	name := testNamePrefix + req.ID
	res, err := t.c.call(ctx, "clone "+plan.replicaName+" at restore point "+plan.point+" into test VM "+name, func(ctx context.Context) (*object.Task, error) {
		return src.Clone(ctx, place.folder, name, spec)
	})
	if err != nil {
		if errors.Is(err, errdefs.ErrAlreadyExists) {
			return nil, fmt.Errorf("a VM named %q exists and is no test VM of ferry's: %w", name, err)
		}
		return nil, err
	}
	ref, ok := res.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("the clone task returned %T", res)
	}
	var vm mo.VirtualMachine
	if err := t.c.retrieveOne(ctx, ref, replicaProps, &vm); err != nil {
		return nil, err
	}
	if err := t.fillTest(ctx, plan, &vm); err != nil {
		return nil, err
	}
	if err := t.connectNICs(ctx, &vm, plan.nics); err != nil {
		return nil, err
	}
	obj := object.NewVirtualMachine(t.c.client, ref)
	if plan.custom != nil {
		if _, err := t.c.call(ctx, "customize the guest of "+name, func(ctx context.Context) (*object.Task, error) {
			return obj.Customize(ctx, *plan.custom)
		}); err != nil {
			return nil, err
		}
	}
	if _, err := t.c.call(ctx, "power on "+name, obj.PowerOn); err != nil {
		return nil, err
	}
	if _, err := t.c.call(ctx, "mark test VM "+name+" running", func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{&types.OptionValue{Key: testRunningKey, Value: "true"}}})
	}); err != nil {
		return nil, err
	}
	if err := t.c.retrieveOne(ctx, ref, vmProps, &vm); err != nil {
		return nil, err
	}
	return t.testOf(ctx, &vm), nil
}

// checkTestNetworks checks that each network exists and that the test
// VM's host is connected to it.
func (t *Target) checkTestNetworks(ctx context.Context, place *placed, nics []sdk.NIC) error {
	var h mo.HostSystem
	if err := t.c.retrieveOne(ctx, place.host.Reference(), []string{"network"}, &h); err != nil {
		return err
	}
	on := map[types.ManagedObjectReference]bool{}
	for _, n := range h.Network {
		on[n] = true
	}
	for i, n := range nics {
		what := "network"
		if n.Network == t.cfg.IsolatedNetwork {
			what = "isolated_network"
		}
		if _, err := t.nicBacking(ctx, n.Network); err != nil {
			return fmt.Errorf("test VM NIC %d: %s: %w", i, what, err)
		}
		t.mu.Lock()
		ref := t.networks[n.Network].Reference()
		t.mu.Unlock()
		if !on[ref] {
			return fmt.Errorf("test VM NIC %d: %s %q is not connected to host %s, where the test VM goes: %w", i, what, n.Network, place.hostName, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// fillTest writes the restore point's data into the test VM's disks
// where what the clone copied differs from it: the blocks the undo stores
// of the point and newer ones hold (and while the replica is failed over,
// the failover store's). It holds the replica's lock and its gate
// (shared, as writers do), so points can be neither made nor deleted
// meanwhile; a writer's first write to a block after this listed the
// blocks happened after the clone, which copied the block before it.
func (t *Target) fillTest(ctx context.Context, plan *testPlan, vm *mo.VirtualMachine) error {
	r, unlock, err := t.lockReplica(ctx, plan.replica)
	if err != nil {
		return err
	}
	defer unlock()
	r.gate.RLock()
	defer r.gate.RUnlock()
	r.points = parsePoints(r.vm)
	k := pointIndex(r.points, plan.point)
	if k < 0 {
		return fmt.Errorf("restore point %q of replica %q was deleted while the test VM was made: %w", plan.point, r.vm.Name, errdefs.ErrNotFound)
	}
	clones := virtualDisks(vm.Config.Hardware.Device)
	if len(clones) != len(r.disks) {
		return fmt.Errorf("the test VM has %d disks, replica %q %d", len(clones), r.vm.Name, len(r.disks))
	}
	for d := range r.disks {
		if err := t.fillTestDisk(ctx, r, k, d, clones[d]); err != nil {
			return fmt.Errorf("disk %d: %w", d, err)
		}
	}
	return nil
}

func (t *Target) fillTestDisk(ctx context.Context, r *replica, k, d int, clone *types.VirtualDisk) error {
	blocks, err := r.changedSince(k, d)
	if err != nil {
		return err
	}
	if r.failedOver.Load() {
		fo, err := r.store(failoverStores, d, false)
		if err != nil {
			return err
		}
		if fo != nil {
			blocks = mergeBlocks(blocks, fo.blocks(), r.points[k].capacity(d))
		}
	}
	path, err := t.localDisk(ctx, clone)
	if err != nil {
		return err
	}
	size := r.points[k].capacity(d)
	if err := growFile(path, diskCapacity(clone)); err != nil {
		return err
	}
	if len(blocks) == 0 {
		return nil
	}
	working, release, err := t.working(ctx, r, d, false)
	if err != nil {
		return err
	}
	defer release()
	wf, err := os.Open(working)
	if err != nil {
		return err
	}
	defer wf.Close()
	out, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	pr := &pointReader{r: r, disk: d, f: wf}
	buf := make([]byte, undoBlock)
	for _, b := range blocks {
		if err := ctx.Err(); err != nil {
			out.Close()
			return err
		}
		if err := pr.block(k, b, buf); err != nil {
			out.Close()
			return err
		}
		n := min(int64(undoBlock), size-b*undoBlock)
		if _, err := out.WriteAt(buf[:n], b*undoBlock); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// mergeBlocks adds to the sorted blocks those of more within size, sorted
// and without duplicates.
func mergeBlocks(blocks, more []int64, size int64) []int64 {
	seen := map[int64]bool{}
	for _, b := range blocks {
		seen[b] = true
	}
	for _, b := range more {
		if !seen[b] && b*undoBlock < size {
			seen[b] = true
			blocks = append(blocks, b)
		}
	}
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	return blocks
}

// localDisk is the local path of a disk's base flat file.
func (t *Target) localDisk(ctx context.Context, disk *types.VirtualDisk) (string, error) {
	file, err := baseBacking(disk)
	if err != nil {
		return "", err
	}
	desc, err := parseDSPath(file)
	if err != nil {
		return "", fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	flat, err := t.c.flatExtent(ctx, desc)
	if err != nil {
		return "", err
	}
	return t.c.mustLocal(flat)
}

// connectNICs moves each NIC of a VM whose network differs to the network
// named.
func (t *Target) connectNICs(ctx context.Context, vm *mo.VirtualMachine, nics []sdk.NIC) error {
	cards := ethernetCards(object.VirtualDeviceList(vm.Config.Hardware.Device))
	if len(cards) != len(nics) {
		return fmt.Errorf("VM %q has %d NICs, its settings %d: %w", vm.Name, len(cards), len(nics), errdefs.ErrFailedPrecondition)
	}
	names := &netNames{c: t.c}
	var changes []types.BaseVirtualDeviceConfigSpec
	for i, card := range cards {
		if nicNetwork(ctx, names, card) == nics[i].Network {
			continue
		}
		backing, err := t.nicBacking(ctx, nics[i].Network)
		if err != nil {
			return fmt.Errorf("VM %q nic %d: %w", vm.Name, i, err)
		}
		card.GetVirtualEthernetCard().Backing = backing
		changes = append(changes, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: card.(types.BaseVirtualDevice)})
	}
	if len(changes) == 0 {
		return nil
	}
	obj := object.NewVirtualMachine(t.c.client, vm.Self)
	_, err := t.c.call(ctx, "connect the NICs of "+vm.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: changes})
	})
	return err
}

// testVMs lists the datacenter's test VMs.
func (t *Target) testVMs(ctx context.Context) ([]mo.VirtualMachine, error) {
	var vms []mo.VirtualMachine
	if err := t.c.retrieveAll(ctx, t.c.dc.Reference(), "VirtualMachine", vmProps, &vms); err != nil {
		return nil, err
	}
	out := vms[:0]
	for _, vm := range vms {
		if vm.Config != nil && isTestVM(vm.Config) {
			out = append(out, vm)
		}
	}
	return out, nil
}

// findTest is the test VM of an id, or nil.
func (t *Target) findTest(ctx context.Context, id string) (*mo.VirtualMachine, error) {
	vms, err := t.testVMs(ctx)
	if err != nil {
		return nil, err
	}
	for i := range vms {
		if extraConfig(vms[i].Config)[testKey] == id {
			return &vms[i], nil
		}
	}
	return nil, nil
}

// testOf describes a test VM from its marks.
func (t *Target) testOf(ctx context.Context, vm *mo.VirtualMachine) *sdk.TestVM {
	x := extraConfig(vm.Config)
	v := &sdk.TestVM{ID: x[testKey], Replica: x[testReplicaKey], Point: x[testPointKey], Running: x[testRunningKey] == "true",
		VM: describe(ctx, &netNames{c: t.c}, vm)}
	v.Started, _ = time.Parse(time.RFC3339Nano, x[testStartedKey])
	if s := x[testLabelsKey]; s != "" && s != "null" {
		if err := json.Unmarshal([]byte(s), &v.Labels); err != nil {
			t.log.Warn("test VM labels unreadable", "vm", vm.Name, "error", err)
		}
	}
	return v
}

// ListTests lists the test VMs of the datacenter, by id.
func (t *Target) ListTests(ctx context.Context) ([]sdk.TestVM, error) {
	vms, err := t.testVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := []sdk.TestVM{}
	for i := range vms {
		out = append(out, *t.testOf(ctx, &vms[i]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// OpenTestDisk reads a disk of a test VM as it is now, through the
// datastore mount.
func (t *Target) OpenTestDisk(ctx context.Context, id string, disk int) (sdk.DiskReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	vm, err := t.findTest(ctx, id)
	if err != nil {
		return nil, err
	}
	if vm == nil {
		return nil, fmt.Errorf("test %q on %s: %w", id, t.c.url, errdefs.ErrNotFound)
	}
	disks := virtualDisks(vm.Config.Hardware.Device)
	if disk < 0 || disk >= len(disks) {
		return nil, fmt.Errorf("test VM %q has %d disks, no disk %d: %w", vm.Name, len(disks), disk, errdefs.ErrNotFound)
	}
	path, err := t.localDisk(ctx, disks[disk])
	if err != nil {
		return nil, fmt.Errorf("test VM %q disk %d: %w", vm.Name, disk, err)
	}
	fr, err := openFileReader(path, diskCapacity(disks[disk]))
	if err != nil {
		return nil, fmt.Errorf("test VM %q disk %d: %w", vm.Name, disk, err)
	}
	return fr, nil
}

// StopTest powers a test VM off and destroys it with its disks; a test
// that is gone is stopped.
func (t *Target) StopTest(ctx context.Context, id string) error {
	if sdk.CheckTestID(id) != nil {
		return nil // no test can have that id
	}
	vm, err := t.findTest(ctx, id)
	if err != nil || vm == nil {
		return err
	}
	obj := object.NewVirtualMachine(t.c.client, vm.Self)
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if _, err := t.c.call(ctx, "power off test VM "+vm.Name, obj.PowerOff); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
	}
	if _, err := t.c.call(ctx, "destroy test VM "+vm.Name, obj.Destroy); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	t.log.Info("test VM removed", "test", id, "vm", vm.Name)
	return nil
}
