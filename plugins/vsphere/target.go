package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Target keeps replicas as VMs of a vCenter or ESXi host. A replica's disks
// are written directly through the datastore's local mount or through
// HotAdd (working.go); its restore points are VMware snapshots whose data
// ferry keeps in undo stores (see README.md, "Restore points").
type Target struct {
	c   *conn
	cfg *targetConfig
	log hclog.Logger

	createMu sync.Mutex // one CreateReplica at a time: creation is idempotent by name
	mu       sync.Mutex
	replicas map[string]*replica // by VM id
	placeMu  sync.Mutex
	place    *placementRefs // resolved on first use, under placeMu
	networks map[string]object.NetworkReference

	testMu sync.Mutex // one StartTest at a time: a test id is checked, then used

	hot       *hotadd // when replica disks are written through HotAdd
	sweepOnce sync.Once
	lockWait  time.Duration // how long another process's lock on a replica is waited for
}

var (
	_ sdk.Target  = (*Target)(nil)
	_ sdk.Stopper = (*Target)(nil)
)

// replica is the in-process state of one replica, shared by every call on
// it.
type replica struct {
	id string

	// mu serializes changes of the replica: opening and closing writers,
	// restore points, failover.
	mu sync.Mutex
	// gate is held shared by every disk write and restore point read, and
	// exclusively while points are made or deleted or a failover rewrites
	// the disks: so the newest point a write saves into cannot change under
	// it.
	gate sync.RWMutex

	points  []*point                // as last loaded, oldest first; changed under gate
	stores  map[string][]*undoStore // point id -> per disk; opened lazily
	missing map[string]bool         // "<id>/<disk>" of stores known not to exist
	storeMu sync.Mutex              // guards stores and missing
	// failedOver is set while the working images hold an older point and
	// failover stores hold the working state's blocks.
	failedOver atomic.Bool
	writers    int // open disk writers
	// gens counts, by disk, the writers opened (under gate, exclusive):
	// a writer opened before the newest one of its disk is superseded
	// and its writes are refused, so that writes of an abandoned writer
	// still on their way never land after the newer writer's.
	gens     map[int]int64
	direct   int      // open writers offering their path
	hotadd   bool     // written through HotAdd (working.go)
	users    int      // calls, writers and readers using the replica (replicalock.go)
	lockF    *os.File // the replica's lock, held while users > 0
	lockWait time.Duration
	// reading holds the failback read snapshots of the readers open in
	// this process (snapshot moref values): sweeps leave them alone.
	reading  map[string]bool
	attMu    sync.Mutex // guards attached
	attached map[attachKey]*attachedDisk
	dir      string             // <vm folder>/ferry, local; or under state_dir
	disks    []replicaDisk      // as last loaded
	vm       *mo.VirtualMachine // as last loaded
	state    *replicaState      // as last loaded
}

// replicaDisk is a disk of a replica: its working image and size.
type replicaDisk struct {
	key      int32
	file     string // local path of the base flat file: the working state (direct)
	dev      *types.VirtualDisk
	capacity int64
}

// newTarget connects to the endpoint of a target block.
func newTarget(ctx context.Context, cfg *targetConfig, log hclog.Logger) (*Target, error) {
	if log == nil {
		log = sdk.Logger()
	}
	c, err := dial(ctx, cfg.connConfig, log)
	if err != nil {
		return nil, err
	}
	t := &Target{c: c, cfg: cfg, log: log, replicas: map[string]*replica{}, networks: map[string]object.NetworkReference{}, lockWait: defaultLockWait}
	if cfg.Transport == TransportHotAdd {
		t.hot = newHotAdd(c, cfg.HotAddProxy, cfg.DeviceDir, cfg.deviceWait, cfg.productUUIDFile, log)
	}
	return t, nil
}

// Stop detaches what writers and readers left attached to the proxy VM,
// closes the undo stores and logs out.
func (t *Target) Stop(ctx context.Context) error {
	t.hot.stop(ctx)
	t.mu.Lock()
	for _, r := range t.replicas {
		r.closeStores()
	}
	t.mu.Unlock()
	t.c.logout(ctx)
	return nil
}

func (t *Target) cached(id string) *replica {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.replicas[id]
	if r == nil {
		r = &replica{id: id, stores: map[string][]*undoStore{}, missing: map[string]bool{}, attached: map[attachKey]*attachedDisk{}, lockWait: t.lockWait}
		t.replicas[id] = r
	}
	return r
}

func (t *Target) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.replicas[id]; r != nil {
		r.closeStores()
	}
	delete(t.replicas, id)
}

// lookup finds a replica VM by id, inventory path or name; ErrNotFound when
// there is none or the VM is not a ferry replica.
func (t *Target) lookup(ctx context.Context, key string) (*mo.VirtualMachine, error) {
	vm, err := t.c.vmObjectProps(ctx, key, replicaProps)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("replica %q on %s: %w", key, t.c.url, errdefs.ErrNotFound)
		}
		return nil, err
	}
	if !isReplica(vm.Config) {
		return nil, fmt.Errorf("replica %q on %s: the VM is not a ferry replica: %w", key, t.c.url, errdefs.ErrNotFound)
	}
	return vm, nil
}

// load finds a replica and refreshes its in-process state: VM, disks,
// ferry folder and state file. The caller holds r.mu.
func (t *Target) load(ctx context.Context, key string) (*replica, error) {
	if morefPattern.MatchString(key) {
		// refresh, which every caller runs next, finds out whether it is
		// a replica.
		return t.cached(key), nil
	}
	vm, err := t.lookup(ctx, key)
	if err != nil {
		return nil, err
	}
	return t.cached(vm.Self.Value), nil
}

// lockReplica finds a replica for a call, locks it and refreshes what is
// known of it; unlock releases it.
func (t *Target) lockReplica(ctx context.Context, key string) (*replica, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	r, err := t.load(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	done, err := t.enter(ctx, r)
	if err != nil {
		r.mu.Unlock()
		return nil, nil, err
	}
	return r, func() { done(); r.mu.Unlock() }, nil
}

// enter makes the caller a user of r (replicalock.go) for a call: the
// replica's lock is taken (its folder is learnt first if need be), r is
// refreshed under it, and what another run left is tidied. The caller
// holds r.mu; the returned function ends the use, under r.mu.
func (t *Target) enter(ctx context.Context, r *replica) (func(), error) {
	if r.vm == nil || r.dir == "" {
		if err := t.refresh(ctx, r); err != nil {
			return nil, err
		}
	}
	done, err := r.use()
	if err != nil {
		return nil, err
	}
	if err := t.refresh(ctx, r); err != nil {
		done()
		return nil, err
	}
	if r.hotadd {
		t.sweepProxy(ctx)
	}
	// A disk growth cut short left the points' snapshots removed: finish
	// it before anything looks at the points.
	if err := t.resumeRegrow(ctx, r); err != nil {
		done()
		return nil, err
	}
	return done, nil
}

// refresh reloads what r knows; the caller holds r.mu.
func (t *Target) refresh(ctx context.Context, r *replica) error {
	vm, err := t.lookup(ctx, r.id)
	if errors.Is(err, errdefs.ErrNotFound) {
		t.forget(r.id)
	}
	if err != nil {
		return err
	}
	dir, err := t.stateFolder(vm)
	if err != nil {
		return err
	}
	st, err := readState(dir)
	if err != nil {
		return fmt.Errorf("replica %q: %w", vm.Name, err)
	}
	hot := hotaddReplica(vm)
	var disks []replicaDisk
	for _, d := range virtualDisks(vm.Config.Hardware.Device) {
		if hot {
			disks = append(disks, replicaDisk{key: d.Key, dev: d, capacity: diskCapacity(d)})
			continue
		}
		file, err := baseBacking(d)
		if err != nil {
			return fmt.Errorf("replica %q: %w", vm.Name, err)
		}
		desc, err := parseDSPath(file)
		if err != nil {
			return fmt.Errorf("replica %q: %v: %w", vm.Name, err, errdefs.ErrInvalidArgument)
		}
		flat, err := t.c.flatExtent(ctx, desc)
		if err != nil {
			return fmt.Errorf("replica %q: %w", vm.Name, err)
		}
		local, err := t.c.mustLocal(flat)
		if err != nil {
			return fmt.Errorf("replica %q: %w", vm.Name, err)
		}
		disks = append(disks, replicaDisk{key: d.Key, file: local, dev: d, capacity: diskCapacity(d)})
	}
	r.vm, r.dir, r.state, r.disks, r.hotadd = vm, dir, st, disks, hot
	r.failedOver.Store(st.State == sdk.ReplicaFailedOver)
	return nil
}

// ferryFolder is the local path of a replica's ferry folder.
func (t *Target) ferryFolder(vm *mo.VirtualMachine) (string, error) {
	vmx, err := parseDSPath(vm.Config.Files.VmPathName)
	if err != nil {
		return "", fmt.Errorf("replica %q: %v: %w", vm.Name, err, errdefs.ErrInvalidArgument)
	}
	dir, err := t.c.mustLocal(vmx.sibling(ferryDir))
	if err != nil {
		return "", fmt.Errorf("replica %q: %w", vm.Name, err)
	}
	return dir, nil
}

// describe describes a replica: its VM as vSphere has it, with the guest
// network settings ferry keeps for it.
func (t *Target) describe(ctx context.Context, vm *mo.VirtualMachine, st *replicaState) *sdk.Replica {
	d := describe(ctx, &netNames{c: t.c}, vm)
	for i := range d.NICs {
		if i < len(st.NICs) {
			n := st.NICs[i]
			d.NICs[i].Addresses, d.NICs[i].Gateway, d.NICs[i].DNS = n.Addresses, n.Gateway, n.DNS
		}
	}
	source := st.Source
	if source == "" {
		source = extraConfig(vm.Config)[replicaKey]
	}
	r := &sdk.Replica{ID: vm.Self.Value, Name: vm.Name, SourceVM: source, VM: d, State: st.State, Owner: ownerOf(vm.Config)}
	if vm.Config != nil {
		// vCenter gives a VM created anew a new managed object id and a new
		// instance UUID (the simulator derives the UUID from the name, so
		// the id tells its incarnations apart); a VM registered again gets
		// a new id too, and its metadata is then recomputed, never trusted.
		r.Incarnation = vm.Self.Value + "/" + vm.Config.InstanceUuid
	}
	if st.State == sdk.ReplicaFailedOver && st.Failover != nil {
		r.FailoverPoint = st.Failover.Point
	}
	return r
}

// Owner keys: the extraConfig keys that record whom a replica belongs to.
const (
	ownerJobKey    = "ferry.owner.job"
	ownerSourceKey = "ferry.owner.source"
	ownerVMKey     = "ferry.owner.source_vm"
)

func ownerOptions(o sdk.ReplicaOwner) []types.BaseOptionValue {
	if o.IsZero() {
		return nil
	}
	return []types.BaseOptionValue{
		&types.OptionValue{Key: ownerJobKey, Value: o.Job},
		&types.OptionValue{Key: ownerSourceKey, Value: o.Source},
		&types.OptionValue{Key: ownerVMKey, Value: o.SourceVM},
	}
}

func ownerOf(cfg *types.VirtualMachineConfigInfo) sdk.ReplicaOwner {
	x := extraConfig(cfg)
	return sdk.ReplicaOwner{Job: x[ownerJobKey], Source: x[ownerSourceKey], SourceVM: x[ownerVMKey]}
}

// adopt records an owner on a replica made before owners were recorded.
// The caller holds t.createMu, so two adoptions never race.
func (t *Target) adopt(ctx context.Context, existing *sdk.Replica, owner sdk.ReplicaOwner) (*sdk.Replica, error) {
	obj := object.NewVirtualMachine(t.c.client, types.ManagedObjectReference{Type: "VirtualMachine", Value: existing.ID})
	_, err := t.c.call(ctx, "record the owner of replica "+existing.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: ownerOptions(owner)})
	})
	if err != nil {
		return nil, err
	}
	return t.GetReplica(ctx, existing.ID)
}

// GetReplica returns a replica by id, inventory path or name.
func (t *Target) GetReplica(ctx context.Context, key string) (*sdk.Replica, error) {
	r, err := t.load(ctx, key)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := t.refresh(ctx, r); err != nil {
		return nil, err
	}
	return t.describe(ctx, r.vm, r.state), nil
}

// ListReplicas lists the ferry replicas of the datacenter.
func (t *Target) ListReplicas(ctx context.Context) ([]sdk.Replica, error) {
	var vms []mo.VirtualMachine
	if err := t.c.retrieveAll(ctx, t.c.dc.Reference(), "VirtualMachine", vmProps, &vms); err != nil {
		return nil, err
	}
	out := []sdk.Replica{}
	for i := range vms {
		vm := &vms[i]
		if vm.Config == nil {
			continue
		}
		if !isReplica(vm.Config) {
			continue
		}
		st := &replicaState{State: sdk.ReplicaReady}
		if dir, err := t.stateFolder(vm); err == nil {
			if s, err := readState(dir); err == nil {
				st = s
			}
		}
		out = append(out, *t.describe(ctx, vm, st))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// GetPlacement lists the hosts, datastores, networks and VM folders of the
// datacenter.
func (t *Target) GetPlacement(ctx context.Context) (*sdk.Placement, error) {
	p := &sdk.Placement{}
	names := func(kind string) ([]string, error) {
		var content []types.ObjectContent
		if err := t.c.retrieveAll(ctx, t.c.dc.Reference(), kind, []string{"name"}, &content); err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		out := []string{}
		for _, o := range content {
			for _, p := range o.PropSet {
				if name, ok := p.Val.(string); ok && p.Name == "name" && !seen[name] {
					seen[name] = true
					out = append(out, name)
				}
			}
		}
		sort.Strings(out)
		return out, nil
	}
	var err error
	if p.Hosts, err = names("HostSystem"); err != nil {
		return nil, err
	}
	if p.Datastores, err = names("Datastore"); err != nil {
		return nil, err
	}
	if p.Networks, err = names("Network"); err != nil {
		return nil, err
	}
	folders, err := t.c.finder.FolderList(ctx, "vm/...")
	if err != nil && !isNotFound(err) {
		return nil, t.c.classify(err, "list folders")
	}
	seen := map[string]bool{t.c.dc.InventoryPath + "/vm": true}
	p.Folders = []string{t.c.dc.InventoryPath + "/vm"}
	for _, f := range folders {
		if !seen[f.InventoryPath] {
			seen[f.InventoryPath] = true
			p.Folders = append(p.Folders, f.InventoryPath)
		}
	}
	sort.Strings(p.Folders)
	return p, nil
}

func isNotFound(err error) bool {
	var nf *find.NotFoundError
	return errors.As(err, &nf)
}

// CreateReplica creates a powered-off replica VM shaped like the source:
// CPUs, memory, firmware, guest OS, disks of the same sizes (thin) on the
// same SCSI or NVMe controller positions, and NICs on the networks the
// network map names (the source's names when it names none). A replica
// with the name exists already: it is returned.
func (t *Target) CreateReplica(ctx context.Context, req sdk.ReplicaRequest) (*sdk.Replica, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, fmt.Errorf("create replica: no name: %w", errdefs.ErrInvalidArgument)
	}
	t.createMu.Lock()
	defer t.createMu.Unlock()
	if existing, err := t.GetReplica(ctx, req.Name); err == nil {
		if err := t.repairBootOrder(ctx, existing, req.VM); err != nil {
			return nil, err
		}
		if existing.Owner.IsZero() && !req.Owner.IsZero() {
			return t.adopt(ctx, existing, req.Owner)
		}
		return existing, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	if _, err := t.c.vmRef(ctx, req.Name); err == nil {
		return nil, fmt.Errorf("replica %q: a VM of that name exists on %s and is not a ferry replica: %w", req.Name, t.c.url, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	rules, err := sdk.CompileNetwork(sdk.NetworkConfig{NetworkMap: req.NetworkMap})
	if err != nil {
		return nil, err
	}
	nics, err := rules.Apply(req.VM.NICs)
	if err != nil {
		return nil, err
	}
	place, err := t.placement(ctx)
	if err != nil {
		return nil, err
	}
	spec, err := t.replicaSpec(ctx, req, nics)
	if err != nil {
		return nil, err
	}
	res, err := t.c.call(ctx, "create replica "+req.Name, func(ctx context.Context) (*object.Task, error) {
		return place.folder.CreateVM(ctx, spec, place.pool, place.host)
	})
	if err != nil {
		return nil, err
	}
	ref, ok := res.(types.ManagedObjectReference)
	if !ok {
		return nil, fmt.Errorf("create replica %q: the task returned %T", req.Name, res)
	}
	t.log.Info("created replica", "replica", req.Name, "id", ref.Value, "host", place.hostName, "datastore", t.cfg.Datastore)
	r := t.cached(ref.Value)
	r.mu.Lock()
	defer r.mu.Unlock()
	done, err := t.enter(ctx, r)
	if err != nil {
		return nil, err
	}
	defer done()
	// vSphere makes thin flat files as long as their disks; make sure of
	// it, so the working images hold every byte of the disk (a disk
	// reached through HotAdd has no local file: its device has its size).
	for _, d := range r.disks {
		if d.file == "" {
			continue
		}
		if err := growFile(d.file, d.capacity); err != nil {
			return nil, fmt.Errorf("replica %q: %w", req.Name, err)
		}
	}
	if err := t.setBootOrder(ctx, r, req.VM); err != nil {
		return nil, err
	}
	st := &replicaState{Source: req.VM.Name, State: sdk.ReplicaReady, SourceNICs: cloneNICs(req.VM.NICs), NICs: nics}
	if err := writeState(r.dir, st); err != nil {
		return nil, fmt.Errorf("replica %q: state: %w", req.Name, err)
	}
	r.state = st
	return t.describe(ctx, r.vm, st), nil
}

// growFile makes a file at least size bytes long (sparse).
func growFile(file string, size int64) error {
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	if st.Size() < size {
		return os.Truncate(file, size)
	}
	return nil
}

// placed is where a replica goes.
type placed struct {
	folder   *object.Folder
	pool     *object.ResourcePool
	host     *object.HostSystem
	hostName string
}

// placementRefs are the configured folder, datastore, pool and compute
// resource, resolved once per Target: they do not move, unlike the hosts'
// VM counts.
type placementRefs struct {
	folder    *object.Folder
	datastore types.ManagedObjectReference
	pool      *object.ResourcePool // nil: the owner's root pool
	owner     types.ManagedObjectReference
	host      *object.HostSystem // a configured host
	hostName  string
	rootPool  *object.ResourcePool
	ownerName string
}

// resolvePlacement resolves the configuration's placement, once; a failure
// is not remembered, so a later call tries again.
func (t *Target) resolvePlacement(ctx context.Context) (*placementRefs, error) {
	t.placeMu.Lock()
	defer t.placeMu.Unlock()
	if t.place != nil {
		return t.place, nil
	}
	f := t.c.finder
	var p placementRefs
	var err error
	if t.cfg.Folder != "" {
		p.folder, err = f.Folder(ctx, t.cfg.Folder)
	} else {
		p.folder, err = f.DefaultFolder(ctx)
	}
	if err != nil {
		return nil, t.findErr(err, "folder", t.cfg.Folder)
	}
	ds, err := f.Datastore(ctx, t.cfg.Datastore)
	if err != nil {
		return nil, t.findErr(err, "datastore", t.cfg.Datastore)
	}
	p.datastore = ds.Reference()
	if t.cfg.ResourcePool != "" {
		if p.pool, err = f.ResourcePool(ctx, t.cfg.ResourcePool); err != nil {
			return nil, t.findErr(err, "resource pool", t.cfg.ResourcePool)
		}
	}
	// The compute resource: the cluster or host asked for, else the owner
	// of the pool asked for, else the only one there is.
	switch {
	case t.cfg.Cluster != "":
		cluster, err := f.ClusterComputeResource(ctx, t.cfg.Cluster)
		if err != nil {
			return nil, t.findErr(err, "cluster", t.cfg.Cluster)
		}
		p.owner = cluster.Reference()
	case t.cfg.Host != "":
		if p.host, err = f.HostSystem(ctx, t.cfg.Host); err != nil {
			return nil, t.findErr(err, "host", t.cfg.Host)
		}
		p.hostName = t.cfg.Host
		var h mo.HostSystem
		if err := t.c.retrieveOne(ctx, p.host.Reference(), []string{"parent"}, &h); err != nil {
			return nil, err
		}
		p.owner = *h.Parent
	case p.pool != nil:
		var rp mo.ResourcePool
		if err := t.c.retrieveOne(ctx, p.pool.Reference(), []string{"owner"}, &rp); err != nil {
			return nil, err
		}
		p.owner = rp.Owner
	default:
		crs, err := f.ComputeResourceList(ctx, "*")
		if err != nil {
			return nil, t.findErr(err, "compute resource", "")
		}
		if len(crs) != 1 {
			return nil, fmt.Errorf("target %s has %d clusters and hosts; set cluster, host or resource_pool: %w", t.c.url, len(crs), errdefs.ErrInvalidArgument)
		}
		p.owner = crs[0].Reference()
	}
	var cr mo.ComputeResource
	if err := t.c.retrieveOne(ctx, p.owner, []string{"name", "host", "resourcePool"}, &cr); err != nil {
		return nil, err
	}
	if cr.ResourcePool == nil {
		return nil, fmt.Errorf("%s has no resource pool: %w", cr.Name, errdefs.ErrFailedPrecondition)
	}
	p.rootPool = object.NewResourcePool(t.c.client, *cr.ResourcePool)
	p.ownerName = cr.Name
	t.place = &p
	return &p, nil
}

// placement decides where a new replica goes: the configured folder and
// pool, and the configured host or, in a cluster, the host with the
// fewest VMs now.
func (t *Target) placement(ctx context.Context) (*placed, error) {
	refs, err := t.resolvePlacement(ctx)
	if err != nil {
		return nil, err
	}
	p := &placed{folder: refs.folder, pool: refs.pool, host: refs.host, hostName: refs.hostName}
	if p.pool == nil {
		p.pool = refs.rootPool
	}
	if p.host != nil {
		return p, nil
	}
	// The hosts are read each time: hosts join and leave clusters.
	var cr mo.ComputeResource
	if err := t.c.retrieveOne(ctx, refs.owner, []string{"host"}, &cr); err != nil {
		return nil, err
	}
	var hosts []mo.HostSystem
	if len(cr.Host) > 0 {
		if err := t.c.retrieveList(ctx, cr.Host, []string{"name", "vm", "datastore", "runtime.connectionState", "runtime.inMaintenanceMode"}, &hosts); err != nil {
			return nil, err
		}
	}
	var cands []hostCandidate
	for _, h := range hosts {
		c := hostCandidate{Name: h.Name, Ref: h.Self, VMs: len(h.Vm),
			Connected: h.Runtime.ConnectionState == types.HostSystemConnectionStateConnected, Maintenance: h.Runtime.InMaintenanceMode}
		for _, d := range h.Datastore {
			if d == refs.datastore {
				c.SeesDatastore = true
			}
		}
		cands = append(cands, c)
	}
	best, err := pickHost(cands)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", refs.ownerName, err)
	}
	p.host = object.NewHostSystem(t.c.client, best.Ref)
	p.hostName = best.Name
	return p, nil
}

// retrieveList reads properties of several objects.
func (c *conn) retrieveList(ctx context.Context, refs []types.ManagedObjectReference, props []string, dst any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := property.DefaultCollector(c.client).Retrieve(ctx, refs, props, dst); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.classify(err, "read properties")
	}
	return nil
}

func (t *Target) findErr(err error, what, name string) error {
	if isNotFound(err) {
		return fmt.Errorf("target %s: %s %q: %w", t.c.url, what, name, errdefs.ErrNotFound)
	}
	var many *find.MultipleFoundError
	if errors.As(err, &many) {
		return fmt.Errorf("target %s: %s %q is ambiguous; use its inventory path: %w", t.c.url, what, name, errdefs.ErrInvalidArgument)
	}
	return t.c.classify(err, "find "+what+" "+name)
}

// replicaSpec is the configuration of a new replica VM.
func (t *Target) replicaSpec(ctx context.Context, req sdk.ReplicaRequest, nics []sdk.NIC) (types.VirtualMachineConfigSpec, error) {
	src := req.VM
	src.Disks, src.NICs = slices.Clone(src.Disks), slices.Clone(src.NICs)
	sdk.NormalizeHardware(&src)
	cpus, mem := max(src.CPUs, 1), max(src.MemoryMiB, 4)
	spec := types.VirtualMachineConfigSpec{
		Name:       req.Name,
		GuestId:    vsphereGuestID(src.GuestOS),
		NumCPUs:    int32(cpus),
		MemoryMB:   mem,
		Firmware:   firmware(src.Hardware.Firmware),
		Annotation: fmt.Sprintf("ferry replica of %s. Managed by ferry: do not power on, edit or snapshot it; fail over with ferry.", src.Name),
		Files:      &types.VirtualMachineFileInfo{VmPathName: "[" + t.cfg.Datastore + "]"},
		ExtraConfig: append([]types.BaseOptionValue{
			&types.OptionValue{Key: replicaKey, Value: src.Name},
		}, ownerOptions(req.Owner)...),
	}
	if t.cfg.Transport == TransportHotAdd {
		spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: replicaWritesKey, Value: TransportHotAdd})
	}
	if spec.Firmware == sdk.FirmwareEFI {
		spec.BootOptions = &types.VirtualMachineBootOptions{EfiSecureBootEnabled: types.NewBool(src.Hardware.SecureBoot)}
	}
	if src.Hardware.TPM {
		t.log.Info("the source's TPM is not built: the target adds no virtual TPM", "replica", req.Name)
	}
	var devices object.VirtualDeviceList
	add := func(d types.BaseVirtualDevice, create bool) {
		s := &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d}
		if create {
			s.FileOperation = types.VirtualDeviceConfigSpecFileOperationCreate
		}
		spec.DeviceChange = append(spec.DeviceChange, s)
		devices = append(devices, d)
	}
	// The controllers: one per bus and number the disks name, of the
	// model each names. The host maps the source's hardware onto what
	// this target declares (sdk.VSphereHardware) first, so every place is
	// one vSphere has; a disk that names none (a host older than protocol
	// 1.7, a source that says nothing) goes on paravirtual SCSI 0 as
	// before, and is logged.
	ctrls := map[string]types.BaseVirtualController{} // "bus:number"
	used := map[int32]map[int32]bool{}                // controller key -> units
	nextKey := int32(-1000)
	controller := func(bus sdk.Bus, model sdk.ControllerModel, n int32) (types.BaseVirtualController, error) {
		id := fmt.Sprintf("%s:%d", bus, n)
		if c, ok := ctrls[id]; ok {
			if bus == sdk.BusSCSI && scsiModel(c) != model {
				return nil, fmt.Errorf("replica %q: SCSI controller %d is asked to be both %s and %s: %w", req.Name, n, scsiModel(c), model, errdefs.ErrInvalidArgument)
			}
			return c, nil
		}
		dev, err := newController(bus, model, n)
		if err != nil {
			return nil, fmt.Errorf("replica %q: %w", req.Name, err)
		}
		dev.GetVirtualDevice().Key = nextKey
		nextKey--
		add(dev, false)
		c := dev.(types.BaseVirtualController)
		ctrls[id] = c
		used[dev.GetVirtualDevice().Key] = map[int32]bool{}
		return c, nil
	}
	type placedDisk struct {
		ctrl types.BaseVirtualController
		unit int32
	}
	places := make([]placedDisk, len(src.Disks))
	var loose []int
	for i, d := range src.Disks {
		if d.Bus == "" {
			loose = append(loose, i)
			continue
		}
		model := d.ControllerModel
		if d.Bus == sdk.BusSCSI && model == "" {
			model = sdk.ModelPVSCSI
			t.log.Info("disk's SCSI model unknown: paravirtual SCSI", "replica", req.Name, "disk", i, "source controller", d.Controller)
		}
		if d.Bus != sdk.BusSCSI {
			model = ""
		}
		c, err := controller(d.Bus, model, int32(d.ControllerNumber))
		if err != nil {
			return spec, err
		}
		key, unit := c.GetVirtualController().Key, int32(d.Unit)
		if used[key][unit] || (d.Bus == sdk.BusSCSI && unit == 7) || d.ControllerNumber > 3 {
			return spec, fmt.Errorf("replica %q disk %d: %s is taken or not a place vSphere has: %w", req.Name, i, d.Controller, errdefs.ErrInvalidArgument)
		}
		used[key][unit] = true
		places[i] = placedDisk{c, unit}
	}
	for _, i := range loose {
		c, err := controller(sdk.BusSCSI, sdk.ModelPVSCSI, 0)
		if err != nil {
			return spec, err
		}
		key := c.GetVirtualController().Key
		unit := int32(0)
		for used[key][unit] || unit == 7 {
			unit++
		}
		if unit > 15 {
			return spec, fmt.Errorf("replica %q: more disks than one SCSI controller holds: %w", req.Name, errdefs.ErrUnimplemented)
		}
		used[key][unit] = true
		places[i] = placedDisk{c, unit}
		t.log.Info("disk without a controller placed on paravirtual SCSI", "replica", req.Name, "disk", i, "unit", unit)
	}
	for i, d := range src.Disks {
		if d.Capacity <= 0 || d.Capacity%1024 != 0 {
			return spec, fmt.Errorf("replica %q disk %d: %d bytes; vSphere disks are whole KiB: %w", req.Name, i, d.Capacity, errdefs.ErrInvalidArgument)
		}
		unit := places[i].unit
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key: nextKey, ControllerKey: places[i].ctrl.GetVirtualController().Key, UnitNumber: &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					DiskMode: string(types.VirtualDiskModePersistent), ThinProvisioned: types.NewBool(true),
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[" + t.cfg.Datastore + "]"},
				},
			},
			CapacityInKB: d.Capacity / 1024, CapacityInBytes: d.Capacity,
		}
		nextKey--
		add(disk, true)
	}
	for i, n := range nics {
		backing, err := t.nicBacking(ctx, n.Network)
		if err != nil {
			return spec, fmt.Errorf("replica %q nic %d: %w", req.Name, i, err)
		}
		model := n.Model
		if model == "" {
			model = sdk.NICVmxnet3 // a host older than protocol 1.7
		}
		if !slices.Contains(vsphereNICs, model) {
			return spec, fmt.Errorf("replica %q nic %d: vSphere has no %s adapter: %w", req.Name, i, model, errdefs.ErrInvalidArgument)
		}
		card, err := devices.CreateEthernetCard(string(model), backing)
		if err != nil {
			return spec, err
		}
		card.GetVirtualDevice().Key = nextKey
		nextKey--
		card.GetVirtualDevice().Connectable = &types.VirtualDeviceConnectInfo{StartConnected: true, AllowGuestControl: true}
		add(card, false)
	}
	return spec, nil
}

// nicBacking is the backing that connects a NIC to a network of the
// target, a standard port group or a distributed one.
func (t *Target) nicBacking(ctx context.Context, name string) (types.BaseVirtualDeviceBackingInfo, error) {
	t.mu.Lock()
	net := t.networks[name]
	t.mu.Unlock()
	if net != nil {
		return net.EthernetCardBackingInfo(ctx)
	}
	net, err := t.c.finder.Network(ctx, name)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("network %q does not exist on %s; map it with the job's network_map: %w", name, t.c.url, errdefs.ErrFailedPrecondition)
		}
		return nil, t.findErr(err, "network", name)
	}
	b, err := net.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, t.c.classify(err, "network "+name)
	}
	t.mu.Lock()
	t.networks[name] = net
	t.mu.Unlock()
	return b, nil
}

// vsphereGuestID maps a guest OS to a vSphere guest id: a vSphere id is
// kept, a family from another hypervisor gets its generic id.
func vsphereGuestID(g string) string {
	switch {
	case strings.HasSuffix(g, "Guest"):
		return g
	case strings.Contains(strings.ToLower(g), "windows"):
		return "windows2019srv_64Guest"
	case strings.Contains(strings.ToLower(g), "linux"):
		return "otherLinux64Guest"
	}
	return "otherGuest64"
}

// vsphereNICs are the adapters the target builds, by the names
// object.VirtualDeviceList.CreateEthernetCard knows.
var vsphereNICs = []sdk.NICModel{sdk.NICVmxnet3, sdk.NICE1000e, sdk.NICE1000, sdk.NICVmxnet2, sdk.NICPCNet32}

// newController makes a controller of a bus and SCSI model.
func newController(bus sdk.Bus, model sdk.ControllerModel, n int32) (types.BaseVirtualDevice, error) {
	vc := types.VirtualController{BusNumber: n}
	scsi := types.VirtualSCSIController{VirtualController: vc, SharedBus: types.VirtualSCSISharingNoSharing}
	switch bus {
	case sdk.BusIDE:
		return &types.VirtualIDEController{VirtualController: vc}, nil
	case sdk.BusSATA:
		return &types.VirtualAHCIController{VirtualSATAController: types.VirtualSATAController{VirtualController: vc}}, nil
	case sdk.BusNVMe:
		return &types.VirtualNVMEController{VirtualController: vc}, nil
	case sdk.BusSCSI:
		switch model {
		case sdk.ModelPVSCSI:
			return &types.ParaVirtualSCSIController{VirtualSCSIController: scsi}, nil
		case sdk.ModelLSILogic:
			return &types.VirtualLsiLogicController{VirtualSCSIController: scsi}, nil
		case sdk.ModelLSILogicSAS:
			return &types.VirtualLsiLogicSASController{VirtualSCSIController: scsi}, nil
		case sdk.ModelBusLogic:
			return &types.VirtualBusLogicController{VirtualSCSIController: scsi}, nil
		}
		return nil, fmt.Errorf("vSphere has no %s SCSI controller: %w", model, errdefs.ErrInvalidArgument)
	}
	return nil, fmt.Errorf("vSphere has no %q bus: %w", bus, errdefs.ErrInvalidArgument)
}

// scsiModel is the model of a SCSI controller.
func scsiModel(c types.BaseVirtualController) sdk.ControllerModel {
	switch c.(type) {
	case *types.ParaVirtualSCSIController:
		return sdk.ModelPVSCSI
	case *types.VirtualLsiLogicController:
		return sdk.ModelLSILogic
	case *types.VirtualLsiLogicSASController:
		return sdk.ModelLSILogicSAS
	case *types.VirtualBusLogicController:
		return sdk.ModelBusLogic
	}
	return ""
}

func firmware(f string) string {
	if f == "efi" {
		return "efi"
	}
	return "bios"
}

// DeleteReplica deletes a replica VM with its restore points and ferry's
// files. A committed replica is a production VM now: only ferry's marks and
// files go; the VM stays.
func (t *Target) DeleteReplica(ctx context.Context, key string) error {
	r, err := t.load(ctx, key)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	done, err := t.enter(ctx, r)
	if err != nil {
		return err
	}
	defer done()
	if r.writers > 0 {
		return fmt.Errorf("replica %q has %d disk writers open: %w", r.vm.Name, r.writers, errdefs.ErrFailedPrecondition)
	}
	if err := r.detached("delete it"); err != nil {
		return err
	}
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	r.gate.Lock()
	defer r.gate.Unlock()
	r.closeStores()
	if r.state.State == sdk.ReplicaCommitted {
		if _, err := t.c.call(ctx, "unmark "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
			return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{&types.OptionValue{Key: replicaKey, Value: ""}}})
		}); err != nil {
			return err
		}
		t.forget(r.id)
		return os.RemoveAll(r.dir)
	}
	if r.vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		if _, err := t.c.call(ctx, "power off "+r.vm.Name, obj.PowerOff); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
	}
	// ferry's files first: vSphere deletes only the files it knows.
	if err := os.RemoveAll(r.dir); err != nil {
		return fmt.Errorf("replica %q: %w", r.vm.Name, err)
	}
	if _, err := t.c.call(ctx, "destroy "+r.vm.Name, obj.Destroy); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	t.forget(r.id)
	t.log.Info("deleted replica", "replica", r.vm.Name, "id", r.id)
	return nil
}

// closeStores closes every open undo store; the caller holds gate
// exclusively or knows no one uses them.
func (r *replica) closeStores() {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	for id, ss := range r.stores {
		for _, s := range ss {
			if s != nil {
				s.close()
			}
		}
		delete(r.stores, id)
	}
	clear(r.missing)
}

// pointDir is where a restore point's undo stores are.
func (r *replica) pointDir(id string) string { return filepath.Join(r.dir, "points", id) }

func undoName(disk int) string { return "disk" + strconv.Itoa(disk) + ".undo" }

// failoverStores keys the failover stores in replica.stores; point ids
// never take that form.
const failoverStores = "/failover"

// store returns the undo store of a point's disk, opening it (creating it
// when create is set); nil when it does not exist and create is not set.
// The id failoverStores names the failover store of the disk.
func (r *replica) store(id string, disk int, create bool) (*undoStore, error) {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	ss := r.stores[id]
	if disk < len(ss) && ss[disk] != nil {
		return ss[disk], nil
	}
	miss := id + "/" + strconv.Itoa(disk)
	if !create && r.missing[miss] {
		return nil, nil
	}
	delete(r.missing, miss)
	dir := r.pointDir(id)
	if id == failoverStores {
		dir = r.failoverDir()
	}
	s, err := openUndo(filepath.Join(dir, undoName(disk)), create)
	if err != nil {
		return nil, err
	}
	if s == nil {
		r.missing[miss] = true
		return nil, nil
	}
	for len(ss) <= disk {
		ss = append(ss, nil)
	}
	ss[disk] = s
	r.stores[id] = ss
	return s, nil
}
