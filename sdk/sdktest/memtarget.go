package sdktest

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// MemTarget is an in-memory sdk.Target. Each replica has a working state
// per disk that writers change, and restore points that are copy-on-write
// copies of it, so a point never changes once made. Writes are durable
// once their writer is closed; Crash throws away what open writers hold,
// as a dying plugin would. It passes RunTarget and serves core tests that
// need a target.
//
// It is safe for concurrent use. Set Clock before first use to control the
// times it reports.
type MemTarget struct {
	// Clock gives the creation time of restore points; nil means time.Now.
	Clock func() time.Time
	// Placement is what GetPlacement returns.
	Placement sdk.Placement

	mu       sync.Mutex
	replicas []*memReplica
	nextID   int
}

var _ sdk.Target = (*MemTarget)(nil)

type memReplica struct {
	info    sdk.Replica
	before  *sdk.VM // the VM as it was before a failover, for UndoFailover
	disks   []*memDisk
	points  []*memPoint
	writers map[*memWriter]bool
	deleted bool
	// failedOver is what a failed-over replica runs on (memfailback.go).
	failedOver *memFailedOver
}

type memPoint struct {
	info  sdk.RestorePoint
	disks []*memDisk
}

// NewMemTarget returns an empty target.
func NewMemTarget() *MemTarget {
	return &MemTarget{Placement: sdk.Placement{Hosts: []string{"mem-host"}, Datastores: []string{"mem-datastore"}}}
}

// Capabilities are the features MemTarget has, to declare in a component or
// a fixture.
func (m *MemTarget) Capabilities() sdk.Capabilities {
	return sdk.Capabilities{ReIP: true, Failback: true}
}

// lockReplica locks the target for a call on one replica and finds it;
// unlock releases the lock.
func (m *MemTarget) lockReplica(ctx context.Context, replica string) (*memReplica, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	m.mu.Lock()
	r, err := m.find(replica)
	if err != nil {
		m.mu.Unlock()
		return nil, nil, err
	}
	return r, m.mu.Unlock, nil
}

func (m *MemTarget) now() time.Time {
	if m.Clock != nil {
		return m.Clock()
	}
	return time.Now()
}

// Crash simulates the death of the plugin process: writers that were not
// closed lose what they were given and fail from now on. Closed writes,
// replicas and restore points survive, as they would on storage.
func (m *MemTarget) Crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.replicas {
		for w := range r.writers {
			w.mu.Lock()
			w.lost = true
			w.pending = nil
			w.mu.Unlock()
		}
		r.writers = map[*memWriter]bool{}
	}
}

// find returns a replica by id or name; m.mu must be held.
func (m *MemTarget) find(replica string) (*memReplica, error) {
	for _, r := range m.replicas {
		if r.info.ID == replica {
			return r, nil
		}
	}
	for _, r := range m.replicas {
		if r.info.Name == replica {
			return r, nil
		}
	}
	return nil, fmt.Errorf("replica %q: %w", replica, errdefs.ErrNotFound)
}

func (r *memReplica) point(id string) (int, error) {
	for i, p := range r.points {
		if p.info.ID == id {
			return i, nil
		}
	}
	return 0, fmt.Errorf("replica %q restore point %q: %w", r.info.Name, id, errdefs.ErrNotFound)
}

func copyReplica(r sdk.Replica) *sdk.Replica {
	r.VM = copyVM(r.VM)
	return &r
}

func (m *MemTarget) GetPlacement(ctx context.Context) (*sdk.Placement, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := m.Placement
	p.Hosts = append([]string(nil), p.Hosts...)
	p.Datastores = append([]string(nil), p.Datastores...)
	p.Networks = append([]string(nil), p.Networks...)
	p.Folders = append([]string(nil), p.Folders...)
	return &p, nil
}

func (m *MemTarget) CreateReplica(ctx context.Context, req sdk.ReplicaRequest) (*sdk.Replica, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Name == "" {
		return nil, fmt.Errorf("create replica: no name: %w", errdefs.ErrInvalidArgument)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.replicas {
		if r.info.Name == req.Name {
			if r.info.Owner.IsZero() {
				r.info.Owner = req.Owner // a replica from before owners: adopted
			}
			return copyReplica(r.info), nil
		}
	}
	vm := copyVM(req.VM)
	if err := applyNetwork(&vm, sdk.NetworkConfig{NetworkMap: req.NetworkMap}); err != nil {
		return nil, fmt.Errorf("create replica %q: %w", req.Name, err)
	}
	m.nextID++
	source := req.VM.ID
	if source == "" {
		source = req.VM.Name
	}
	vm.ID, vm.Name = "replica-"+strconv.Itoa(m.nextID), req.Name
	r := &memReplica{
		info: sdk.Replica{ID: vm.ID, Name: req.Name, SourceVM: source, VM: vm, State: sdk.ReplicaReady,
			Owner: req.Owner, Incarnation: strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(m.nextID)},
		writers: map[*memWriter]bool{},
	}
	for i := range vm.Disks {
		r.info.VM.Disks[i].Index = i
		r.disks = append(r.disks, newMemDisk(vm.Disks[i].Capacity))
	}
	m.replicas = append(m.replicas, r)
	return copyReplica(r.info), nil
}

func (m *MemTarget) GetReplica(ctx context.Context, replica string) (*sdk.Replica, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return copyReplica(r.info), nil
}

func (m *MemTarget) ListReplicas(ctx context.Context) ([]sdk.Replica, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]sdk.Replica, 0, len(m.replicas))
	for _, r := range m.replicas {
		out = append(out, *copyReplica(r.info))
	}
	return out, nil
}

func (m *MemTarget) DeleteReplica(ctx context.Context, replica string) error {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return err
	}
	defer unlock()
	r.deleted = true
	for i, x := range m.replicas {
		if x == r {
			m.replicas = append(m.replicas[:i], m.replicas[i+1:]...)
			break
		}
	}
	return nil
}

func (m *MemTarget) OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (sdk.DiskWriter, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.info.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("replica %q is %s: %w", r.info.Name, r.info.State, errdefs.ErrFailedPrecondition)
	}
	if disk < 0 || disk >= len(r.disks) {
		return nil, fmt.Errorf("replica %q disk %d: %w", r.info.Name, disk, errdefs.ErrNotFound)
	}
	d := r.disks[disk]
	if size > d.size {
		// Growing only moves the end: the blocks past the old end were
		// never written, so they read as zeros.
		d.size = size
		r.info.VM.Disks[disk].Capacity = size
	}
	w := &memWriter{target: m, replica: r, disk: disk, size: d.size}
	r.writers[w] = true
	return w, nil
}

func (m *MemTarget) CreateRestorePoint(ctx context.Context, replica string, labels map[string]string) (*sdk.RestorePoint, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.info.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("replica %q is %s: %w", r.info.Name, r.info.State, errdefs.ErrFailedPrecondition)
	}
	m.nextID++
	p := &memPoint{info: sdk.RestorePoint{ID: "point-" + strconv.Itoa(m.nextID), Replica: r.info.ID, Created: m.now()}}
	if len(labels) > 0 {
		p.info.Labels = make(map[string]string, len(labels))
		for k, v := range labels {
			p.info.Labels[k] = v
		}
	}
	for i, d := range r.disks {
		p.disks = append(p.disks, d.clone())
		p.info.Disks = append(p.info.Disks, sdk.SnapshotDisk{Index: i, Capacity: d.size})
	}
	r.points = append(r.points, p)
	info := r.pointInfo(len(r.points) - 1)
	return &info, nil
}

// pointInfo describes point i, with Size counting the blocks it shares with
// neither neighbour: what deleting it would free.
func (r *memReplica) pointInfo(i int) sdk.RestorePoint {
	p := r.points[i]
	info := p.info
	info.Disks = append([]sdk.SnapshotDisk(nil), info.Disks...)
	if p.info.Labels != nil {
		info.Labels = make(map[string]string, len(p.info.Labels))
		for k, v := range p.info.Labels {
			info.Labels[k] = v
		}
	}
	shared := func(j, disk int, b int64, block []byte) bool {
		if j < 0 || j >= len(r.points) || disk >= len(r.points[j].disks) {
			return false
		}
		other, ok := r.points[j].disks[disk].blocks[b]
		return ok && &other[0] == &block[0]
	}
	info.Size = 0
	for disk, d := range p.disks {
		for b, block := range d.blocks {
			if !shared(i-1, disk, b, block) && !shared(i+1, disk, b, block) {
				info.Size += memBlockSize
			}
		}
	}
	return info
}

func (m *MemTarget) ListRestorePoints(ctx context.Context, replica string) ([]sdk.RestorePoint, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	out := make([]sdk.RestorePoint, 0, len(r.points))
	for i := range r.points {
		out = append(out, r.pointInfo(i))
	}
	return out, nil
}

func (m *MemTarget) DeleteRestorePoint(ctx context.Context, replica, point string) error {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return err
	}
	defer unlock()
	i, err := r.point(point)
	if err != nil {
		return err
	}
	if r.info.State == sdk.ReplicaFailedOver && r.info.FailoverPoint == point {
		return fmt.Errorf("replica %q runs from restore point %q: %w", r.info.Name, point, errdefs.ErrFailedPrecondition)
	}
	r.points = append(r.points[:i], r.points[i+1:]...)
	return nil
}

func (m *MemTarget) OpenRestorePointDisk(ctx context.Context, replica, point string, disk int) (sdk.DiskReader, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if point == "" {
		if disk < 0 || disk >= len(r.disks) {
			return nil, fmt.Errorf("replica %q disk %d: %w", r.info.Name, disk, errdefs.ErrNotFound)
		}
		return &memReader{disk: r.disks[disk].clone()}, nil
	}
	i, err := r.point(point)
	if err != nil {
		return nil, err
	}
	p := r.points[i]
	if disk < 0 || disk >= len(p.disks) {
		return nil, fmt.Errorf("restore point %q disk %d: %w", point, disk, errdefs.ErrNotFound)
	}
	return &memReader{disk: p.disks[disk]}, nil
}

func (m *MemTarget) Failover(ctx context.Context, req sdk.FailoverRequest) (*sdk.Replica, error) {
	r, unlock, err := m.lockReplica(ctx, req.Replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.info.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("fail over replica %q: it is %s: %w", r.info.Name, r.info.State, errdefs.ErrFailedPrecondition)
	}
	point := req.Point
	if point == "" {
		if len(r.points) == 0 {
			return nil, fmt.Errorf("fail over replica %q: no restore point: %w", r.info.Name, errdefs.ErrFailedPrecondition)
		}
		point = r.points[len(r.points)-1].info.ID
	}
	pi, err := r.point(point)
	if err != nil {
		return nil, err
	}
	vm := copyVM(r.info.VM)
	if err := applyNetwork(&vm, req.Network); err != nil {
		return nil, fmt.Errorf("fail over replica %q: %w", r.info.Name, err)
	}
	before := copyVM(r.info.VM)
	r.before = &before
	r.info.VM = vm
	r.info.State = sdk.ReplicaFailedOver
	r.info.FailoverPoint = point
	r.info.VM.PowerState = "on"
	m.startFailedOver(r, r.points[pi])
	return copyReplica(r.info), nil
}

func (m *MemTarget) UndoFailover(ctx context.Context, replica string) (*sdk.Replica, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.info.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("undo failover of replica %q: it is %s: %w", r.info.Name, r.info.State, errdefs.ErrFailedPrecondition)
	}
	r.info.VM = *r.before
	r.before, r.failedOver = nil, nil
	r.info.State = sdk.ReplicaReady
	r.info.FailoverPoint = ""
	return copyReplica(r.info), nil
}

func (m *MemTarget) CommitFailover(ctx context.Context, replica string) (*sdk.Replica, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.info.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("commit failover of replica %q: it is %s: %w", r.info.Name, r.info.State, errdefs.ErrFailedPrecondition)
	}
	r.before = nil
	r.info.State = sdk.ReplicaCommitted
	return copyReplica(r.info), nil
}

func (m *MemTarget) ApplyNetwork(ctx context.Context, replica string, net sdk.NetworkConfig) (*sdk.Replica, error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, err
	}
	defer unlock()
	vm := copyVM(r.info.VM)
	if err := applyNetwork(&vm, net); err != nil {
		return nil, fmt.Errorf("replica %q: %w", r.info.Name, err)
	}
	r.info.VM = vm
	return copyReplica(r.info), nil
}

// memWriter writes a replica disk. Writes wait in pending until Close
// applies them, in order, to the working state: until then they are not
// durable and a crash loses them.
type memWriter struct {
	target  *MemTarget
	replica *memReplica
	disk    int
	size    int64

	mu      sync.Mutex
	pending []span
	closed  bool
	lost    bool
}

var _ sdk.DiskWriter = (*memWriter)(nil)

func (w *memWriter) WriteAt(p []byte, off int64) (int, error) {
	if err := checkRange(off, len(p), w.size); err != nil {
		return 0, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.lost:
		return 0, fmt.Errorf("write replica disk: the writer was lost in a crash: %w", errdefs.ErrPluginExited)
	case w.closed:
		return 0, fmt.Errorf("write replica disk: the writer is closed: %w", errdefs.ErrFailedPrecondition)
	}
	w.pending = append(w.pending, span{off: off, data: append([]byte(nil), p...)})
	return len(p), nil
}

func (w *memWriter) Size() int64 { return w.size }

// Sync applies the pending writes to the working state: from then on a
// crash keeps them.
func (w *memWriter) Sync() error {
	w.target.mu.Lock()
	defer w.target.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.lost:
		return fmt.Errorf("sync replica disk: the writer was lost in a crash: %w", errdefs.ErrPluginExited)
	case w.closed:
		return fmt.Errorf("sync replica disk: the writer is closed: %w", errdefs.ErrFailedPrecondition)
	case w.replica.deleted:
		return fmt.Errorf("sync replica disk: replica %q: %w", w.replica.info.Name, errdefs.ErrNotFound)
	}
	w.apply()
	return nil
}

// apply writes the pending writes to the working state; target.mu and mu
// are held.
func (w *memWriter) apply() {
	d := w.replica.disks[w.disk]
	for _, s := range w.pending {
		d.writeAt(s.data, s.off)
	}
	w.pending = nil
}

// Close applies the pending writes to the working state. Closing twice is
// harmless.
func (w *memWriter) Close() error {
	w.target.mu.Lock()
	defer w.target.mu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.lost:
		return fmt.Errorf("close replica disk: the writer was lost in a crash: %w", errdefs.ErrPluginExited)
	case w.closed:
		return nil
	case w.replica.deleted:
		return fmt.Errorf("close replica disk: replica %q: %w", w.replica.info.Name, errdefs.ErrNotFound)
	}
	w.closed = true
	w.apply()
	delete(w.replica.writers, w)
	return nil
}

// applyNetwork maps NIC networks and applies re-IP rules to vm: an address
// inside a rule's FromSubnet moves to its ToSubnet with the host part
// kept, and the first address of a NIC that moves sets the NIC's gateway
// and DNS servers from its rule.
func applyNetwork(vm *sdk.VM, net sdk.NetworkConfig) error {
	type rule struct {
		from, to netip.Prefix
		gateway  string
		dns      []string
	}
	var rules []rule
	for _, r := range net.ReIP {
		from, err1 := netip.ParsePrefix(r.FromSubnet)
		to, err2 := netip.ParsePrefix(r.ToSubnet)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("re-IP rule %q -> %q: not two subnets: %w", r.FromSubnet, r.ToSubnet, errdefs.ErrInvalidArgument)
		}
		if from.Addr().Is4() != to.Addr().Is4() || from.Bits() != to.Bits() {
			return fmt.Errorf("re-IP rule %s -> %s: the subnets differ in family or size: %w", from, to, errdefs.ErrInvalidArgument)
		}
		rules = append(rules, rule{from: from.Masked(), to: to.Masked(), gateway: r.Gateway, dns: r.DNS})
	}
	for i := range vm.NICs {
		nic := &vm.NICs[i]
		for _, nm := range net.NetworkMap {
			if nic.Network == nm.From {
				nic.Network = nm.To
				break
			}
		}
		moved := false
		for j, a := range nic.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return fmt.Errorf("nic %d address %q: %w", nic.Index, a, errdefs.ErrInvalidArgument)
			}
			for _, r := range rules {
				if !r.from.Contains(p.Addr()) {
					continue
				}
				nic.Addresses[j] = netip.PrefixFrom(moveHost(p.Addr(), r.to), p.Bits()).String()
				if !moved {
					moved = true
					if r.gateway != "" {
						nic.Gateway = r.gateway
					}
					if len(r.dns) > 0 {
						nic.DNS = append([]string(nil), r.dns...)
					}
				}
				break
			}
		}
	}
	return nil
}

// moveHost returns addr with its network bits, the first to.Bits(),
// replaced by those of to.
func moveHost(addr netip.Addr, to netip.Prefix) netip.Addr {
	a, n := addr.As16(), to.Addr().As16()
	bits := to.Bits()
	if addr.Is4() {
		bits += 96 // As16 puts an IPv4 address in the last 4 bytes
	}
	for i := range a {
		keep := min(max(bits-8*i, 0), 8) // network bits in this byte
		mask := byte(0xff << (8 - keep))
		a[i] = n[i]&mask | a[i]&^mask
	}
	out := netip.AddrFrom16(a)
	if addr.Is4() {
		out = out.Unmap()
	}
	return out
}
