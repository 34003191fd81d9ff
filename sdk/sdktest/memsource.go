package sdktest

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// MemSource is an in-memory sdk.Source: a hypervisor whose VMs and disks
// live in memory. Snapshots are copy-on-write and frozen, change tracking
// works in 64 KiB blocks, and guest writes are made with WriteDisk. It
// passes RunSource and serves core tests that need a source.
//
// It is safe for concurrent use. Set Clock before first use to control the
// times it reports.
type MemSource struct {
	// Clock gives the creation time of snapshots; nil means time.Now.
	Clock func() time.Time

	mu     sync.Mutex
	vms    []*memSourceVM
	nextID int // numbers snapshots and change-tracking epochs
}

var (
	_ sdk.Source    = (*MemSource)(nil)
	_ sdk.TagLister = (*MemSource)(nil)
)

type memSourceVM struct {
	vm    sdk.VM
	disks []*trackedDisk
	snaps []*memSnapshot
	// failback is the failback under way (memfailback.go).
	failback *memFailback
}

// trackedDisk is a live disk with its change tracking: the epoch changes
// when tracking is reset, and changed holds, for each block written during
// the epoch, the sequence number of its last write.
type trackedDisk struct {
	data    *memDisk
	epoch   int
	seq     uint64
	changed map[int64]uint64
}

// memSnapshot is a snapshot: every disk frozen with its tracking state.
type memSnapshot struct {
	info  sdk.Snapshot
	disks []trackedDisk
}

// NewMemSource returns a source holding the given VMs, with disks of their
// declared capacity reading as zeros. A VM without an ID gets its name as
// ID; disk indexes are set from their position.
func NewMemSource(vms ...sdk.VM) *MemSource {
	s := &MemSource{}
	for _, vm := range vms {
		vm = copyVM(vm)
		if vm.ID == "" {
			vm.ID = vm.Name
		}
		sort.Strings(vm.Tags)
		m := &memSourceVM{vm: vm}
		for i := range vm.Disks {
			m.vm.Disks[i].Index = i
			s.nextID++
			m.disks = append(m.disks, &trackedDisk{data: newMemDisk(vm.Disks[i].Capacity), epoch: s.nextID, changed: map[int64]uint64{}})
		}
		s.vms = append(s.vms, m)
	}
	return s
}

// Capabilities are the features MemSource has, to declare in a component
// or a fixture.
func (s *MemSource) Capabilities() sdk.Capabilities {
	return sdk.Capabilities{ChangeTracking: true, Quiesce: true, Folders: true, Tags: true, Failback: true}
}

func (s *MemSource) now() time.Time {
	if s.Clock != nil {
		return s.Clock()
	}
	return time.Now()
}

// find returns a VM by id or name; s.mu must be held.
func (s *MemSource) find(vm string) (*memSourceVM, error) {
	for _, m := range s.vms {
		if m.vm.ID == vm {
			return m, nil
		}
	}
	for _, m := range s.vms {
		if m.vm.Name == vm {
			return m, nil
		}
	}
	return nil, fmt.Errorf("vm %q: %w", vm, errdefs.ErrNotFound)
}

func (m *memSourceVM) disk(i int) (*trackedDisk, error) {
	if i < 0 || i >= len(m.disks) {
		return nil, fmt.Errorf("vm %q disk %d: %w", m.vm.Name, i, errdefs.ErrNotFound)
	}
	return m.disks[i], nil
}

// WriteDisk writes to a VM's disk as its guest would: the write is seen by
// change tracking and by later snapshots, never by earlier ones.
func (s *MemSource) WriteDisk(vm string, disk int, off int64, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(vm)
	if err != nil {
		return err
	}
	d, err := m.disk(disk)
	if err != nil {
		return err
	}
	if err := checkRange(off, len(data), d.data.size); err != nil {
		return fmt.Errorf("vm %q disk %d: %w", vm, disk, err)
	}
	d.seq++
	first, last := d.data.writeAt(data, off)
	for b := first; b <= last; b++ {
		d.changed[b] = d.seq
	}
	return nil
}

// ResetChangeTracking makes the source lose track of a disk's changes, as a
// hypervisor does when tracking is switched off and on: change ids taken
// before fail with errdefs.ErrChangeIDReset, ids taken after work.
func (s *MemSource) ResetChangeTracking(vm string, disk int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(vm)
	if err != nil {
		return err
	}
	d, err := m.disk(disk)
	if err != nil {
		return err
	}
	s.nextID++
	d.epoch = s.nextID
	d.changed = map[int64]uint64{}
	return nil
}

func (s *MemSource) ListVMs(ctx context.Context) ([]sdk.VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	vms := make([]sdk.VM, 0, len(s.vms))
	for _, m := range s.vms {
		vms = append(vms, copyVM(m.vm))
	}
	return vms, nil
}

// ListTags implements sdk.TagLister: the tags its VMs carry, sorted. A
// memory hypervisor has no tag catalog of its own.
func (s *MemSource) ListTags(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	tags := []string{}
	for _, m := range s.vms {
		for _, tag := range m.vm.Tags {
			if !seen[tag] {
				seen[tag] = true
				tags = append(tags, tag)
			}
		}
	}
	sort.Strings(tags)
	return tags, nil
}

func (s *MemSource) DescribeVM(ctx context.Context, vm string) (*sdk.VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(vm)
	if err != nil {
		return nil, err
	}
	c := copyVM(m.vm)
	return &c, nil
}

func (s *MemSource) CreateSnapshot(ctx context.Context, req sdk.SnapshotRequest) (*sdk.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(req.VM)
	if err != nil {
		return nil, err
	}
	s.nextID++
	snap := &memSnapshot{info: sdk.Snapshot{
		ID:       "snapshot-" + strconv.Itoa(s.nextID),
		VM:       m.vm.ID,
		Name:     req.Name,
		Created:  s.now(),
		Quiesced: req.Quiesce,
	}}
	for i, d := range m.disks {
		changed := make(map[int64]uint64, len(d.changed))
		for b, seq := range d.changed {
			changed[b] = seq
		}
		snap.disks = append(snap.disks, trackedDisk{data: d.data.clone(), epoch: d.epoch, seq: d.seq, changed: changed})
		snap.info.Disks = append(snap.info.Disks, sdk.SnapshotDisk{Index: i, Capacity: d.data.size, ChangeID: changeID(d.epoch, d.seq)})
	}
	m.snaps = append(m.snaps, snap)
	info := copySnapshot(snap.info)
	return &info, nil
}

// RemoveSnapshot forgets a snapshot. The live disks hold every write made
// since, so nothing needs merging.
func (s *MemSource) RemoveSnapshot(ctx context.Context, vm, snapshot string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(vm)
	if err != nil {
		return nil // the VM is gone, and its snapshots with it
	}
	for i, sn := range m.snaps {
		if sn.info.ID == snapshot {
			m.snaps = append(m.snaps[:i], m.snaps[i+1:]...)
			break
		}
	}
	return nil
}

func (s *MemSource) ListSnapshots(ctx context.Context, vm string) ([]sdk.Snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(vm)
	if err != nil {
		return nil, err
	}
	snaps := make([]sdk.Snapshot, 0, len(m.snaps))
	for _, sn := range m.snaps {
		snaps = append(snaps, copySnapshot(sn.info))
	}
	return snaps, nil
}

// snapshotDisk returns a frozen disk of a snapshot.
func (s *MemSource) snapshotDisk(vm, snapshot string, disk int) (*trackedDisk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(vm)
	if err != nil {
		return nil, err
	}
	for _, sn := range m.snaps {
		if sn.info.ID != snapshot {
			continue
		}
		if disk < 0 || disk >= len(sn.disks) {
			return nil, fmt.Errorf("snapshot %q disk %d: %w", snapshot, disk, errdefs.ErrNotFound)
		}
		return &sn.disks[disk], nil
	}
	return nil, fmt.Errorf("vm %q snapshot %q: %w", vm, snapshot, errdefs.ErrNotFound)
}

// changedBatch is how many extents ChangedAreas hands fn at a time.
const changedBatch = 16

func (s *MemSource) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, err := s.snapshotDisk(req.VM, req.Snapshot, req.Disk)
	if err != nil {
		return err
	}
	var exts []sdk.Extent
	if req.ChangeID == "" {
		exts = d.data.allocated()
	} else {
		epoch, seq, ok := parseChangeID(req.ChangeID)
		if !ok || epoch != d.epoch || seq > d.seq {
			return fmt.Errorf("vm %q disk %d: change id %q: %w", req.VM, req.Disk, req.ChangeID, errdefs.ErrChangeIDReset)
		}
		var blocks []int64
		for b, at := range d.changed {
			if at > seq {
				blocks = append(blocks, b)
			}
		}
		exts = blockExtents(blocks, d.data.size)
	}
	for len(exts) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(exts), changedBatch)
		if err := fn(exts[:n:n]); err != nil {
			return err
		}
		exts = exts[n:]
	}
	return nil
}

func (s *MemSource) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (sdk.DiskReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := s.snapshotDisk(vm, snapshot, disk)
	if err != nil {
		return nil, err
	}
	return &memReader{disk: d.data}, nil
}

// Change ids read "mem:<epoch>:<seq>": the tracking epoch of the disk and
// the number of writes it had seen.
func changeID(epoch int, seq uint64) string {
	return fmt.Sprintf("mem:%d:%d", epoch, seq)
}

func parseChangeID(id string) (epoch int, seq uint64, ok bool) {
	parts := strings.Split(id, ":")
	if len(parts) != 3 || parts[0] != "mem" {
		return 0, 0, false
	}
	epoch, err1 := strconv.Atoi(parts[1])
	seq, err2 := strconv.ParseUint(parts[2], 10, 64)
	return epoch, seq, err1 == nil && err2 == nil
}

// copyVM returns a deep copy, so callers never share slices or maps with
// the component.
func copyVM(vm sdk.VM) sdk.VM {
	vm.Disks = append([]sdk.Disk(nil), vm.Disks...)
	nics := make([]sdk.NIC, len(vm.NICs))
	for i, n := range vm.NICs {
		n.Addresses = append([]string(nil), n.Addresses...)
		n.DNS = append([]string(nil), n.DNS...)
		nics[i] = n
	}
	if vm.NICs == nil {
		nics = nil
	}
	vm.NICs = nics
	if vm.Tags != nil {
		vm.Tags = append([]string(nil), vm.Tags...)
	}
	if vm.Attributes != nil {
		attrs := make(map[string]string, len(vm.Attributes))
		for k, v := range vm.Attributes {
			attrs[k] = v
		}
		vm.Attributes = attrs
	}
	return vm
}

func copySnapshot(s sdk.Snapshot) sdk.Snapshot {
	s.Disks = append([]sdk.SnapshotDisk(nil), s.Disks...)
	return s
}
