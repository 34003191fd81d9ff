package vsphere

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Source reads VMs of a vCenter or ESXi host: inventory, snapshots,
// changed block tracking and snapshot disk data.
type Source struct {
	c         *conn
	transport string
	log       hclog.Logger
	hot       *hotadd // nil when neither the transport nor hotadd_proxy asks for the proxy VM

	fbMu sync.Mutex // one failback call at a time (failback_source.go)
}

var (
	_ sdk.Source    = (*Source)(nil)
	_ sdk.TagLister = (*Source)(nil)
	_ sdk.Stopper   = (*Source)(nil)
)

// newSource connects to the endpoint of a source block.
func newSource(ctx context.Context, cfg *sourceConfig, log hclog.Logger) (*Source, error) {
	if log == nil {
		log = sdk.Logger()
	}
	c, err := dial(ctx, cfg.connConfig, log)
	if err != nil {
		return nil, err
	}
	s := &Source{c: c, transport: cfg.Transport, log: log}
	if cfg.Transport == TransportAuto || cfg.Transport == TransportHotAdd || cfg.HotAddProxy != "" {
		s.hot = newHotAdd(c, cfg.HotAddProxy, cfg.DeviceDir, cfg.deviceWait, cfg.productUUIDFile, log)
	}
	return s, nil
}

// Stop detaches what is still attached to the HotAdd proxy VM (disks of
// readers not closed, leftovers of runs that are gone) and logs out.
func (s *Source) Stop(ctx context.Context) error {
	s.hot.stop(ctx)
	s.c.logout(ctx)
	return nil
}

// ListVMs lists the VMs of the datacenter, without templates and without
// ferry's own replicas, each with its folder and (on vCenter) its tags:
// the folders come in one call, the tags of all VMs in one call of the
// Automation API plus one per tag or category name not read lately.
func (s *Source) ListVMs(ctx context.Context) ([]sdk.VM, error) {
	var vms []mo.VirtualMachine
	if err := s.c.retrieveAll(ctx, s.c.dc.Reference(), "VirtualMachine", vmProps, &vms); err != nil {
		return nil, err
	}
	tree, err := s.c.readFolderTree(ctx)
	if err != nil {
		return nil, err
	}
	names := &netNames{c: s.c}
	out := []sdk.VM{}
	var refs []types.ManagedObjectReference
	for i := range vms {
		vm := &vms[i]
		if vm.Config == nil || vm.Config.Template {
			continue
		}
		if _, replica := extraConfig(vm.Config)[replicaKey]; replica || isTestVM(vm.Config) {
			continue
		}
		d := describe(ctx, names, vm)
		d.Folder = tree.vmFolder(vm)
		out = append(out, d)
		refs = append(refs, vm.Self)
	}
	if s.c.hasTags() {
		byVM, err := s.c.tags.attached(ctx, refs)
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i].Tags = byVM[out[i].ID]
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || (out[i].Name == out[j].Name && out[i].ID < out[j].ID)
	})
	return out, nil
}

// DescribeVM describes a VM given by id (its managed object id, vm-N),
// inventory path or name.
func (s *Source) DescribeVM(ctx context.Context, key string) (*sdk.VM, error) {
	vm, err := s.c.vmObject(ctx, key)
	if err != nil {
		return nil, err
	}
	d := describe(ctx, &netNames{c: s.c}, vm)
	if d.Folder, err = s.c.folderOf(ctx, vm); err != nil {
		return nil, err
	}
	if s.c.hasTags() {
		byVM, err := s.c.tags.attached(ctx, []types.ManagedObjectReference{vm.Self})
		if err != nil {
			return nil, err
		}
		d.Tags = byVM[d.ID]
	}
	return &d, nil
}

// ListTags lists the tags of the vCenter, "Category/Name"; an ESXi host
// has none (ErrUnimplemented).
func (s *Source) ListTags(ctx context.Context) ([]string, error) {
	return s.c.tags.all(ctx)
}

// CreateSnapshot takes a snapshot without memory, quiesced when asked and
// VMware Tools run in the guest. Changed block tracking is switched on
// first when it is off, so that the snapshot carries change ids: the core
// asks for changed areas on the next run, and enabling tracking takes
// effect at a snapshot (a stun of the VM), not before.
func (s *Source) CreateSnapshot(ctx context.Context, req sdk.SnapshotRequest) (*sdk.Snapshot, error) {
	s.hot.sweep(ctx)
	vm, err := s.c.vmObject(ctx, req.VM)
	if err != nil {
		return nil, err
	}
	obj := object.NewVirtualMachine(s.c.client, vm.Self)
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		_, err := s.c.call(ctx, "enable changed block tracking of "+vm.Name, func(ctx context.Context) (*object.Task, error) {
			return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(true)})
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// Not fatal: without tracking the core compares digests.
			s.log.Warn("cannot enable changed block tracking; runs of this VM will compare digests", "vm", vm.Name, "error", err)
		} else {
			s.log.Info("enabled changed block tracking", "vm", vm.Name)
		}
	}
	quiesce := false
	if req.Quiesce {
		if vm.Guest != nil && vm.Guest.ToolsRunningStatus == string(types.VirtualMachineToolsRunningStatusGuestToolsRunning) {
			quiesce = true
		} else {
			s.log.Warn("VMware Tools do not run in the guest: the snapshot is crash-consistent, not quiesced", "vm", vm.Name)
		}
	}
	res, err := s.c.call(ctx, "snapshot "+vm.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.CreateSnapshot(ctx, req.Name, "ferry replication snapshot; ferry removes it when the run ends", false, quiesce)
	})
	if err != nil {
		return nil, err
	}
	ref, ok := res.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("snapshot %s: the task returned %T, not a snapshot", vm.Name, res)
	}
	snap := &sdk.Snapshot{ID: ref.Value, VM: vm.Self.Value, Name: req.Name, Created: time.Now().UTC(), Quiesced: quiesce}
	var after mo.VirtualMachine
	if err := s.c.retrieveOne(ctx, vm.Self, []string{"snapshot"}, &after); err == nil && after.Snapshot != nil {
		if node := findSnapshot(after.Snapshot.RootSnapshotList, ref.Value); node != nil {
			snap.Created, snap.Quiesced = node.CreateTime.UTC(), node.Quiesced
		}
	}
	cfg, err := s.snapshotConfig(ctx, ref)
	if err != nil {
		return nil, err
	}
	for i, d := range virtualDisks(cfg.Hardware.Device) {
		snap.Disks = append(snap.Disks, sdk.SnapshotDisk{Index: i, Capacity: diskCapacity(d), ChangeID: diskChangeID(d)})
	}
	return snap, nil
}

// snapshotConfig reads the VM configuration a snapshot keeps.
func (s *Source) snapshotConfig(ctx context.Context, ref types.ManagedObjectReference) (*types.VirtualMachineConfigInfo, error) {
	var ms mo.VirtualMachineSnapshot
	if err := s.c.retrieveOne(ctx, ref, []string{"config"}, &ms); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("snapshot %s: %w", ref.Value, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return &ms.Config, nil
}

// diskChangeID is the CBT change id of a disk's backing, or "".
func diskChangeID(d *types.VirtualDisk) string {
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return b.ChangeId
	case *types.VirtualDiskSeSparseBackingInfo:
		return b.ChangeId
	case *types.VirtualDiskSparseVer2BackingInfo:
		return b.ChangeId
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		return b.ChangeId
	}
	return ""
}

// findSnapshot finds a snapshot by managed object id in a snapshot tree.
func findSnapshot(tree []types.VirtualMachineSnapshotTree, id string) *types.VirtualMachineSnapshotTree {
	for i := range tree {
		if tree[i].Snapshot.Value == id {
			return &tree[i]
		}
		if n := findSnapshot(tree[i].ChildSnapshotList, id); n != nil {
			return n
		}
	}
	return nil
}

// flattenSnapshots lists a snapshot tree oldest first.
func flattenSnapshots(tree []types.VirtualMachineSnapshotTree) []types.VirtualMachineSnapshotTree {
	var out []types.VirtualMachineSnapshotTree
	var walk func([]types.VirtualMachineSnapshotTree)
	walk = func(nodes []types.VirtualMachineSnapshotTree) {
		for _, n := range nodes {
			out = append(out, n)
			walk(n.ChildSnapshotList)
		}
	}
	walk(tree)
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreateTime.Equal(out[j].CreateTime) {
			return out[i].CreateTime.Before(out[j].CreateTime)
		}
		return out[i].Id < out[j].Id
	})
	return out
}

// ListSnapshots lists every snapshot of the VM, oldest first (not only
// ferry's: the core picks its own by name). Disks are not described.
func (s *Source) ListSnapshots(ctx context.Context, key string) ([]sdk.Snapshot, error) {
	s.hot.sweep(ctx)
	vm, err := s.c.vmObject(ctx, key)
	if err != nil {
		return nil, err
	}
	out := []sdk.Snapshot{}
	if vm.Snapshot == nil {
		return out, nil
	}
	for _, n := range flattenSnapshots(vm.Snapshot.RootSnapshotList) {
		out = append(out, sdk.Snapshot{ID: n.Snapshot.Value, VM: vm.Self.Value, Name: n.Name, Created: n.CreateTime.UTC(), Quiesced: n.Quiesced})
	}
	return out, nil
}

// RemoveSnapshot removes a snapshot by id; its data is consolidated into
// the VM's disks, so no write made since is lost. A snapshot that is gone
// is not an error. Disks of the snapshot still attached to the HotAdd
// proxy VM are detached first.
func (s *Source) RemoveSnapshot(ctx context.Context, key, id string) error {
	vm, err := s.c.vmObject(ctx, key)
	if err != nil {
		return err
	}
	if err := s.hot.releaseSnapshot(ctx, vm.Self.Value, id); err != nil {
		return fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	if vm.Snapshot == nil || findSnapshot(vm.Snapshot.RootSnapshotList, id) == nil {
		return nil
	}
	return s.c.removeSnapshot(ctx, vm.Name, id)
}

// removeSnapshot removes one snapshot, keeping its children; gone is fine.
func (c *conn) removeSnapshot(ctx context.Context, vmName, id string) error {
	ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: id}
	_, err := c.call(ctx, fmt.Sprintf("remove snapshot %s of %s", id, vmName), func(ctx context.Context) (*object.Task, error) {
		res, err := methods.RemoveSnapshot_Task(ctx, c.client, &types.RemoveSnapshot_Task{This: ref, RemoveChildren: false, Consolidate: types.NewBool(true)})
		if err != nil {
			return nil, err
		}
		return object.NewTask(c.client, res.Returnval), nil
	})
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

// snapshotDisk finds disk index of a snapshot of a VM: the snapshot's
// configuration and the disk as it was then.
func (s *Source) snapshotDisk(ctx context.Context, key, id string, disk int) (*mo.VirtualMachine, types.ManagedObjectReference, *types.VirtualDisk, error) {
	ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: id}
	vm, err := s.c.vmObject(ctx, key)
	if err != nil {
		return nil, ref, nil, err
	}
	if vm.Snapshot == nil || findSnapshot(vm.Snapshot.RootSnapshotList, id) == nil {
		return nil, ref, nil, fmt.Errorf("snapshot %q of vm %q: %w", id, vm.Name, errdefs.ErrNotFound)
	}
	cfg, err := s.snapshotConfig(ctx, ref)
	if err != nil {
		return nil, ref, nil, err
	}
	disks := virtualDisks(cfg.Hardware.Device)
	if disk < 0 || disk >= len(disks) {
		return nil, ref, nil, fmt.Errorf("snapshot %q of vm %q has %d disks, no disk %d: %w", id, vm.Name, len(disks), disk, errdefs.ErrNotFound)
	}
	return vm, ref, disks[disk], nil
}
