package vsphere

import (
	"context"
	"fmt"
	"sort"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// createVM creates, for failback req.ID, the production VM req.Create
// describes, named req.VM, powered off with empty thin disks: the
// hardware a replica of it would have (Target.replicaSpec), its NICs on
// the networks the description names. It goes on the first datastore of
// local_datastore_paths (by name) that the datacenter has (failback writes
// it through that mount), in the folder the description names when the
// datacenter has it (else the VM folder), in the root resource pool of the
// first cluster (else of the first host). The failback's mark is written
// with the VM, so a kill between the creation and failback.json loses
// nothing: BeginFailback and UndoFailback know the VM by it.
func (s *Source) createVM(ctx context.Context, req sdk.FailbackRequest) (*mo.VirtualMachine, error) {
	if req.VM == "" || req.Create == nil {
		return nil, fmt.Errorf("create a vm for failback %s: no name or description: %w", req.ID, errdefs.ErrInvalidArgument)
	}
	f := s.c.finder
	var names []string
	for name := range s.c.cfg.Datastores {
		names = append(names, name)
	}
	sort.Strings(names)
	datastore := ""
	for _, name := range names {
		if _, err := f.Datastore(ctx, name); err == nil {
			datastore = name
			break
		}
	}
	if datastore == "" {
		return nil, fmt.Errorf("create vm %q for failback %s: no datastore of local_datastore_paths (%q) is in the datacenter; failback writes a VM through that mount: %w",
			req.VM, req.ID, names, errdefs.ErrFailedPrecondition)
	}
	folder, err := f.DefaultFolder(ctx)
	if req.Create.Folder != "" {
		if named, ferr := f.Folder(ctx, req.Create.Folder); ferr == nil {
			folder, err = named, nil
		}
	}
	if err != nil {
		return nil, s.c.classify(err, "find the vm folder")
	}
	pool, err := s.rootPool(ctx)
	if err != nil {
		return nil, err
	}
	// The target's spec of a replica of this description, on the chosen
	// datastore, then marked as the failback's VM instead of a replica.
	t := &Target{c: s.c, cfg: &targetConfig{Datastore: datastore, Transport: TransportDirect}, log: s.log, networks: map[string]object.NetworkReference{}}
	spec, err := t.replicaSpec(ctx, sdk.ReplicaRequest{Name: req.VM, VM: *req.Create}, req.Create.NICs)
	if err != nil {
		return nil, fmt.Errorf("create vm %q for failback %s: %w", req.VM, req.ID, err)
	}
	spec.ExtraConfig = []types.BaseOptionValue{&types.OptionValue{Key: failbackCreatedKey, Value: req.ID}}
	spec.Annotation = fmt.Sprintf("Created by ferry failback %s from the replica of %s.", req.ID, req.Create.Name)
	res, err := s.c.call(ctx, "create vm "+req.VM, func(ctx context.Context) (*object.Task, error) {
		return folder.CreateVM(ctx, spec, pool, nil)
	})
	if err != nil {
		return nil, err
	}
	ref, ok := res.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("create vm %q: the task returned %T, not a vm", req.VM, res)
	}
	s.log.Info("created a vm for failback", "vm", req.VM, "failback", req.ID, "datastore", datastore)
	return s.c.vmObject(ctx, ref.Value)
}

// rootPool is the root resource pool of the datacenter's first cluster,
// else of its first host.
func (s *Source) rootPool(ctx context.Context) (*object.ResourcePool, error) {
	f := s.c.finder
	if clusters, err := f.ClusterComputeResourceList(ctx, "*"); err == nil && len(clusters) > 0 {
		sort.Slice(clusters, func(i, j int) bool { return clusters[i].InventoryPath < clusters[j].InventoryPath })
		return clusters[0].ResourcePool(ctx)
	}
	hosts, err := f.ComputeResourceList(ctx, "*")
	if err != nil || len(hosts) == 0 {
		return nil, fmt.Errorf("create a vm: the datacenter has no cluster or host: %w", errdefs.ErrFailedPrecondition)
	}
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].InventoryPath < hosts[j].InventoryPath })
	return hosts[0].ResourcePool(ctx)
}
