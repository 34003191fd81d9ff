package sdktest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The failback halves of the reference components: MemTarget is an
// sdk.FailbackReader, MemSource an sdk.FailbackWriter, both declared with
// the Failback capability.

var (
	_ sdk.FailbackReader = (*MemTarget)(nil)
	_ sdk.FailbackWriter = (*MemSource)(nil)
)

// memFailedOver is what a failed-over MemTarget replica runs on: a copy
// of its point's disks, with its own change tracking (an epoch per
// failover, a sequence number per write).
type memFailedOver struct {
	epoch int
	disks []*trackedDisk
}

// startFailedOver gives a replica failing over from point p its running
// disks; m.mu is held.
func (m *MemTarget) startFailedOver(r *memReplica, p *memPoint) {
	m.nextID++
	fo := &memFailedOver{epoch: m.nextID}
	for _, d := range p.disks {
		fo.disks = append(fo.disks, &trackedDisk{data: d.clone(), epoch: fo.epoch, changed: map[int64]uint64{}})
	}
	r.failedOver = fo
}

// WriteFailedOver writes to a failed-over replica's disk as its guest
// would: FailedOverChanges reports it. A replica that is powered off
// refuses it.
func (m *MemTarget) WriteFailedOver(replica string, disk int, off int64, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, err := m.find(replica)
	if err != nil {
		return err
	}
	if r.info.State != sdk.ReplicaFailedOver || r.failedOver == nil {
		return fmt.Errorf("write replica %q: it is %s: %w", r.info.Name, r.info.State, errdefs.ErrFailedPrecondition)
	}
	if r.info.VM.PowerState == "off" {
		return fmt.Errorf("write replica %q: it is powered off: %w", r.info.Name, errdefs.ErrFailedPrecondition)
	}
	if disk < 0 || disk >= len(r.failedOver.disks) {
		return fmt.Errorf("replica %q disk %d: %w", r.info.Name, disk, errdefs.ErrNotFound)
	}
	d := r.failedOver.disks[disk]
	if err := checkRange(off, len(data), d.data.size); err != nil {
		return err
	}
	d.seq++
	first, last := d.data.writeAt(data, off)
	for b := first; b <= last; b++ {
		d.changed[b] = d.seq
	}
	return nil
}

// failedOver finds a failed-over replica; m.mu is held by the caller
// through lockReplica.
func (m *MemTarget) failedOverReplica(ctx context.Context, replica, what string) (*memReplica, func(), error) {
	r, unlock, err := m.lockReplica(ctx, replica)
	if err != nil {
		return nil, nil, err
	}
	if r.info.State != sdk.ReplicaFailedOver || r.failedOver == nil {
		unlock()
		return nil, nil, fmt.Errorf("%s of replica %q: it is %s, not failed over: %w", what, r.info.Name, r.info.State, errdefs.ErrFailedPrecondition)
	}
	return r, unlock, nil
}

// FailedOverChanges implements sdk.FailbackReader. Marks read
// "fo:<epoch>:<seq>".
func (m *MemTarget) FailedOverChanges(ctx context.Context, req sdk.FailedOverChangesRequest, fn func([]sdk.Extent) error) (string, error) {
	r, unlock, err := m.failedOverReplica(ctx, req.Replica, "changes")
	if err != nil {
		return "", err
	}
	fo := r.failedOver
	if req.Disk < 0 || req.Disk >= len(fo.disks) {
		unlock()
		return "", fmt.Errorf("replica %q disk %d: %w", r.info.Name, req.Disk, errdefs.ErrNotFound)
	}
	d := fo.disks[req.Disk]
	since := uint64(0)
	if req.Since != "" {
		e, s, ok := strings.Cut(strings.TrimPrefix(req.Since, "fo:"), ":")
		epoch, err1 := strconv.Atoi(e)
		seq, err2 := strconv.ParseUint(s, 10, 64)
		if !ok || err1 != nil || err2 != nil || epoch != fo.epoch || seq > d.seq {
			unlock()
			return "", fmt.Errorf("replica %q disk %d: mark %q is not one of this failover's: %w", r.info.Name, req.Disk, req.Since, errdefs.ErrChangeIDReset)
		}
		since = seq
	}
	var blocks []int64
	for b, seq := range d.changed {
		if seq > since {
			blocks = append(blocks, b)
		}
	}
	slices.Sort(blocks)
	ext := blockExtents(blocks, d.data.size)
	mark := fmt.Sprintf("fo:%d:%d", fo.epoch, d.seq)
	unlock()
	if len(ext) > 0 {
		if err := fn(ext); err != nil {
			return "", err
		}
	}
	return mark, nil
}

// OpenFailedOverDisk implements sdk.FailbackReader: a copy of the disk as
// it is now.
func (m *MemTarget) OpenFailedOverDisk(ctx context.Context, replica string, disk int) (sdk.DiskReader, error) {
	r, unlock, err := m.failedOverReplica(ctx, replica, "open disk")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if disk < 0 || disk >= len(r.failedOver.disks) {
		return nil, fmt.Errorf("replica %q disk %d: %w", r.info.Name, disk, errdefs.ErrNotFound)
	}
	return &memReader{disk: r.failedOver.disks[disk].data.clone()}, nil
}

// SetReplicaPower implements sdk.FailbackReader.
func (m *MemTarget) SetReplicaPower(ctx context.Context, replica string, on bool) (*sdk.Replica, error) {
	r, unlock, err := m.failedOverReplica(ctx, replica, "power")
	if err != nil {
		return nil, err
	}
	defer unlock()
	r.info.VM.PowerState = "off"
	if on {
		r.info.VM.PowerState = "on"
	}
	return copyReplica(r.info), nil
}

// memFailback is a failback under way on a MemSource VM.
type memFailback struct {
	id      string
	power   string
	created bool
	// saved holds, by disk, the blocks as they were before the failback
	// first overwrote them (nil: the block was absent, zeros).
	saved []map[int64][]byte
}

// BeginFailback implements sdk.FailbackWriter.
func (s *MemSource) BeginFailback(ctx context.Context, req sdk.FailbackRequest) (*sdk.VM, error) {
	if err := sdk.CheckFailbackID(req.ID); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.find(req.VM)
	if err != nil && req.Create != nil {
		vm := copyVM(*req.Create)
		vm.ID, vm.Name, vm.PowerState = req.VM, req.VM, "off"
		m = &memSourceVM{vm: vm}
		for i := range vm.Disks {
			m.vm.Disks[i].Index = i
			s.nextID++
			m.disks = append(m.disks, &trackedDisk{data: newMemDisk(vm.Disks[i].Capacity), epoch: s.nextID, changed: map[int64]uint64{}})
		}
		m.failback = &memFailback{id: req.ID, power: "off", created: true}
		s.vms = append(s.vms, m)
	} else if err != nil {
		return nil, err
	}
	switch fb := m.failback; {
	case fb != nil && fb.id != req.ID:
		return nil, fmt.Errorf("begin failback %s of vm %q: it is in failback %s: %w", req.ID, req.VM, fb.id, errdefs.ErrFailedPrecondition)
	case fb == nil:
		m.failback = &memFailback{id: req.ID, power: m.vm.PowerState}
	}
	m.vm.PowerState = "off"
	v := copyVM(m.vm)
	return &v, nil
}

// memFailbackVM finds VM vm in failback id; s.mu is held. fb is nil when
// the VM is in no failback.
func (s *MemSource) memFailbackVM(vm, id string) (*memSourceVM, *memFailback, error) {
	m, err := s.find(vm)
	if err != nil {
		return nil, nil, err
	}
	if fb := m.failback; fb != nil && fb.id != id {
		return nil, nil, fmt.Errorf("vm %q is in failback %s, not %s: %w", vm, fb.id, id, errdefs.ErrFailedPrecondition)
	}
	return m, m.failback, nil
}

// OpenFailbackDisk implements sdk.FailbackWriter.
func (s *MemSource) OpenFailbackDisk(ctx context.Context, vm, id string, disk int, size int64) (sdk.DiskWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, fb, err := s.memFailbackVM(vm, id)
	if err != nil {
		return nil, err
	}
	if fb == nil {
		return nil, fmt.Errorf("vm %q: failback %s has not begun: %w", vm, id, errdefs.ErrFailedPrecondition)
	}
	d, err := m.disk(disk)
	if err != nil {
		return nil, err
	}
	if size > d.data.size {
		return nil, fmt.Errorf("vm %q disk %d: growing a disk in failback: %w", vm, disk, errdefs.ErrUnimplemented)
	}
	return &memFailbackWriter{s: s, vm: vm, id: id, disk: disk, size: d.data.size}, nil
}

type memFailbackWriter struct {
	s        *MemSource
	vm, id   string
	disk     int
	size     int64
	unsaving bool // a planted bug for the suites' own tests: nothing saved
}

func (w *memFailbackWriter) WriteAt(p []byte, off int64) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	m, fb, err := w.s.memFailbackVM(w.vm, w.id)
	if err != nil {
		return 0, err
	}
	if fb == nil {
		return 0, fmt.Errorf("vm %q: failback %s ended: %w", w.vm, w.id, errdefs.ErrFailedPrecondition)
	}
	d := m.disks[w.disk]
	if err := checkRange(off, len(p), d.data.size); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for len(fb.saved) <= w.disk {
		fb.saved = append(fb.saved, map[int64][]byte{})
	}
	if !w.unsaving {
		for b := off / memBlockSize; b <= (off+int64(len(p))-1)/memBlockSize; b++ {
			if _, ok := fb.saved[w.disk][b]; !ok {
				fb.saved[w.disk][b] = d.data.blocks[b] // blocks are never modified in place
			}
		}
	}
	d.seq++
	first, last := d.data.writeAt(p, off)
	for b := first; b <= last; b++ {
		d.changed[b] = d.seq
	}
	return len(p), nil
}

func (w *memFailbackWriter) Size() int64  { return w.size }
func (w *memFailbackWriter) Sync() error  { return nil }
func (w *memFailbackWriter) Close() error { return nil }

// StartFailback implements sdk.FailbackWriter.
func (s *MemSource) StartFailback(ctx context.Context, vm, id string) (*sdk.VM, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, fb, err := s.memFailbackVM(vm, id)
	if err != nil {
		return nil, err
	}
	if fb == nil {
		return nil, fmt.Errorf("vm %q: failback %s has not begun: %w", vm, id, errdefs.ErrFailedPrecondition)
	}
	m.vm.PowerState = "on"
	v := copyVM(m.vm)
	return &v, nil
}

// UndoFailback implements sdk.FailbackWriter.
func (s *MemSource) UndoFailback(ctx context.Context, vm, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, fb, err := s.memFailbackVM(vm, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil || fb == nil {
		return err
	}
	if fb.created {
		s.vms = slices.DeleteFunc(s.vms, func(v *memSourceVM) bool { return v == m })
		return nil
	}
	for disk, saved := range fb.saved {
		d := m.disks[disk]
		d.seq++
		for _, b := range slices.Sorted(maps.Keys(saved)) {
			if saved[b] == nil {
				delete(d.data.blocks, b)
			} else {
				d.data.blocks[b] = saved[b]
			}
			d.changed[b] = d.seq
		}
	}
	m.vm.PowerState = fb.power
	m.failback = nil
	return nil
}

// CommitFailback implements sdk.FailbackWriter.
func (s *MemSource) CommitFailback(ctx context.Context, vm, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, fb, err := s.memFailbackVM(vm, id)
	if err != nil || fb == nil {
		return err
	}
	m.failback = nil
	return nil
}
