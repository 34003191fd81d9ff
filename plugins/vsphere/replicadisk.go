package vsphere

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// OpenReplicaDisk opens the working state of a replica disk for writing:
// the base flat file on the datastore, through its local mount. A disk
// smaller than size is grown first (vSphere extends the virtual disk, the
// flat file follows). While the replica has no restore point the writer
// offers its path (the direct lane); afterwards every write goes through
// the plugin, which saves the blocks it overwrites for the newest point.
func (t *Target) OpenReplicaDisk(ctx context.Context, key string, disk int, size int64) (sdk.DiskWriter, error) {
	r, unlock, err := t.lockReplica(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.state.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("replica %q is %s: %w", r.vm.Name, r.state.State, errdefs.ErrFailedPrecondition)
	}
	if disk < 0 || disk >= len(r.disks) {
		return nil, fmt.Errorf("replica %q has %d disks, no disk %d: %w", r.vm.Name, len(r.disks), disk, errdefs.ErrNotFound)
	}
	if size > r.disks[disk].capacity {
		if err := t.growDisk(ctx, r, disk, size); err != nil {
			return nil, err
		}
	}
	d := r.disks[disk]
	if d.file != "" {
		if err := growFile(d.file, d.capacity); err != nil {
			return nil, fmt.Errorf("replica %q disk %d: %w", r.vm.Name, disk, err)
		}
	}
	r.gate.Lock()
	if r.gens == nil {
		r.gens = map[int]int64{}
	}
	r.gens[disk]++
	gen := r.gens[disk]
	r.points = parsePoints(r.vm)
	// The direct lane is for the flat file of a replica without points.
	direct := len(r.points) == 0 && !r.hotadd
	r.gate.Unlock()
	path, release, err := t.working(ctx, r, disk, true)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		release()
		return nil, fmt.Errorf("replica %q disk %d: %w", r.vm.Name, disk, err)
	}
	done, err := r.use()
	if err != nil {
		f.Close()
		release()
		return nil, err
	}
	r.writers++
	w := &replicaWriter{r: r, disk: disk, gen: gen, f: f, path: path, size: d.capacity, direct: direct, release: release, done: done}
	if direct {
		r.direct++
		return &directWriter{w}, nil
	}
	return w, nil
}

// growDisk extends a replica disk to size in vSphere and its flat file.
// vSphere refuses to extend a disk that has snapshots, so a replica with
// restore points has them taken again around the extension (regrow.go).
func (t *Target) growDisk(ctx context.Context, r *replica, disk int, size int64) error {
	if size%1024 != 0 {
		return fmt.Errorf("replica %q disk %d: %d bytes; vSphere disks are whole KiB: %w", r.vm.Name, disk, size, errdefs.ErrInvalidArgument)
	}
	// ESXi keeps the files of attached disks locked: the writers of the
	// other disks finish first.
	if err := r.waitDetached(ctx); err != nil {
		return err
	}
	if r.vm.Snapshot != nil && len(r.vm.Snapshot.RootSnapshotList) > 0 {
		return t.growWithPoints(ctx, r, disk, size)
	}
	return t.extend(ctx, r, disk, size)
}

// extend extends a replica disk that has no snapshots to size.
func (t *Target) extend(ctx context.Context, r *replica, disk int, size int64) error {
	vd := virtualDisks(r.vm.Config.Hardware.Device)[disk]
	vd.CapacityInBytes, vd.CapacityInKB = size, size/1024
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	_, err := t.c.call(ctx, fmt.Sprintf("grow disk %d of %s to %d bytes", disk, r.vm.Name, size), func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: vd}}})
	})
	if err != nil {
		return err
	}
	t.log.Info("grew replica disk", "replica", r.vm.Name, "disk", disk, "size", size)
	return t.refresh(ctx, r)
}

// replicaWriter writes a replica's working image. Before the first write
// to a block after the newest restore point, the block is saved in that
// point's undo store (fsynced), so no restore point ever changes, whatever
// happens to the writer.
type replicaWriter struct {
	r      *replica
	disk   int
	gen    int64 // the disk's writer generation when this writer opened
	f      *os.File
	path   string
	size   int64
	direct bool
	closed atomic.Bool
	// release ends the writer's use of the working image (detaches a
	// HotAdd disk when it was the last user); done its use of the
	// replica, under r.mu.
	release, done func()
}

func (w *replicaWriter) Size() int64 { return w.size }

func (w *replicaWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.closed.Load() {
		return 0, os.ErrClosed
	}
	if off < 0 || off+int64(len(p)) > w.size {
		return 0, fmt.Errorf("write of %d bytes at %d: outside the disk of %d bytes: %w", len(p), off, w.size, errdefs.ErrInvalidArgument)
	}
	if len(p) == 0 {
		return 0, nil
	}
	r := w.r
	r.gate.RLock()
	defer r.gate.RUnlock()
	if r.gens[w.disk] != w.gen {
		return 0, fmt.Errorf("write replica %q disk %d: a newer writer of the disk was opened: %w", r.vm.Name, w.disk, errdefs.ErrFailedPrecondition)
	}
	if n := len(r.points); n > 0 {
		if w.direct {
			return 0, fmt.Errorf("a restore point was made while a direct writer was open: %w", errdefs.ErrFailedPrecondition)
		}
		newest := r.points[n-1]
		limit := newest.capacity(w.disk)
		var blocks []int64
		for b := off / undoBlock; b*undoBlock < off+int64(len(p)) && b*undoBlock < limit; b++ {
			blocks = append(blocks, b)
		}
		if len(blocks) > 0 {
			s, err := r.store(newest.id, w.disk, true)
			if err != nil {
				return 0, fmt.Errorf("undo store of restore point %s: %w", newest.id, err)
			}
			if err := s.save(blocks, func(b int64, buf []byte) error { return readBlock(w.f, b, buf) }); err != nil {
				return 0, err
			}
		}
	}
	return w.f.WriteAt(p, off)
}

// Sync makes the writes so far durable (the undo blocks they needed were
// saved durably before each write).
func (w *replicaWriter) Sync() error {
	if w.closed.Load() {
		return os.ErrClosed
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", w.path, err)
	}
	return nil
}

// Close makes the writes durable.
func (w *replicaWriter) Close() error {
	if w.closed.Swap(true) {
		return nil
	}
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.release()
	w.r.mu.Lock()
	w.done()
	w.r.writers--
	if w.direct {
		w.r.direct--
	}
	w.r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("flush %s: %w", w.path, err)
	}
	return nil
}

// directWriter is a writer whose file the data mover may write itself: the
// replica has no restore point to protect yet.
type directWriter struct{ *replicaWriter }

func (w *directWriter) LocalPath() string { return w.path }

var (
	_ sdk.DiskWriter  = (*replicaWriter)(nil)
	_ sdk.LocalPather = (*directWriter)(nil)
	_ sdk.DiskReader  = (*pointReader)(nil)
)

// OpenRestorePointDisk opens a disk of a restore point, or with an empty
// point the working state (the flat file as it is now).
func (t *Target) OpenRestorePointDisk(ctx context.Context, key, id string, disk int) (sdk.DiskReader, error) {
	r, unlock, err := t.lockReplica(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if disk < 0 || disk >= len(r.disks) {
		return nil, fmt.Errorf("replica %q has %d disks, no disk %d: %w", r.vm.Name, len(r.disks), disk, errdefs.ErrNotFound)
	}
	d := r.disks[disk]
	if id == "" {
		if r.hotadd && r.state.State == sdk.ReplicaFailedOver {
			return nil, fmt.Errorf("replica %q runs from a restore point (failed over): its disks are the running VM's; read a restore point, or undo or commit the failover first: %w",
				r.vm.Name, errdefs.ErrFailedPrecondition)
		}
		path, release, err := t.working(ctx, r, disk, false)
		if err != nil {
			return nil, err
		}
		fr, err := openFileReader(path, d.capacity)
		if err != nil {
			release()
			return nil, fmt.Errorf("replica %q disk %d: %w", r.vm.Name, disk, err)
		}
		done, err := r.use()
		if err != nil {
			fr.Close()
			release()
			return nil, err
		}
		return &workingReader{fileReader: fr, r: r, release: release, done: done}, nil
	}
	r.gate.Lock()
	r.points = parsePoints(r.vm)
	k := pointIndex(r.points, id)
	var size int64
	if k >= 0 {
		size = r.points[k].capacity(disk)
	}
	r.gate.Unlock()
	if k < 0 {
		return nil, fmt.Errorf("restore point %q of replica %q: %w", id, r.vm.Name, errdefs.ErrNotFound)
	}
	if r.state.State == sdk.ReplicaCommitted {
		return nil, fmt.Errorf("replica %q is committed; its restore points are gone: %w", r.vm.Name, errdefs.ErrNotFound)
	}
	path, release, err := t.working(ctx, r, disk, false)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		release()
		return nil, fmt.Errorf("replica %q disk %d: %w", r.vm.Name, disk, err)
	}
	done, err := r.use()
	if err != nil {
		f.Close()
		release()
		return nil, err
	}
	return &pointReader{r: r, id: id, disk: disk, f: f, size: size, release: release, done: done}, nil
}

// workingReader reads the working state of a disk; closing it ends its use
// of the working image and of the replica.
type workingReader struct {
	*fileReader
	r             *replica
	release, done func()
	once          sync.Once
}

func (wr *workingReader) Close() error {
	err := wr.fileReader.Close()
	wr.once.Do(func() {
		wr.release()
		wr.r.mu.Lock()
		wr.done()
		wr.r.mu.Unlock()
	})
	return err
}

// pointReader reads a disk of a restore point: each block from the first
// undo store that holds it, of this point or a newer one, else from the
// working image. A block read from the working image is looked up again
// in the newest store afterwards: a writer that overwrote it meanwhile
// saved it there first.
type pointReader struct {
	r      *replica
	id     string
	disk   int
	f      *os.File
	size   int64
	closed atomic.Bool
	// release ends the reader's use of the working image, done its use
	// of the replica (under r.mu).
	release, done func()
}

func (pr *pointReader) Size() int64 { return pr.size }

func (pr *pointReader) ReadAt(p []byte, off int64) (int, error) {
	if pr.closed.Load() {
		return 0, os.ErrClosed
	}
	n, err := checkRead(p, off, pr.size)
	if n == 0 {
		return 0, err
	}
	r := pr.r
	r.gate.RLock()
	defer r.gate.RUnlock()
	k := pointIndex(r.points, pr.id)
	if k < 0 {
		return 0, fmt.Errorf("restore point %q was deleted while it was read: %w", pr.id, errdefs.ErrNotFound)
	}
	buf := make([]byte, undoBlock)
	end := off + int64(n)
	for b := off / undoBlock; b*undoBlock < end; b++ {
		if err := pr.block(k, b, buf); err != nil {
			return 0, err
		}
		from, to := max(off, b*undoBlock), min(end, (b+1)*undoBlock)
		copy(p[from-off:to-off], buf[from-b*undoBlock:to-b*undoBlock])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// block fills buf with block b as it was at point index k.
func (pr *pointReader) block(k int, b int64, buf []byte) error {
	r := pr.r
	for j := k; j < len(r.points); j++ {
		s, err := r.store(r.points[j].id, pr.disk, false)
		if err != nil {
			return err
		}
		if s == nil {
			continue
		}
		if ok, err := s.read(b, buf); ok || err != nil {
			return err
		}
	}
	// While failed over, the working image holds an older point; the
	// blocks that differ from the working state are in the failover store.
	if r.failedOver.Load() {
		if s, err := r.store(failoverStores, pr.disk, false); err != nil {
			return err
		} else if s != nil {
			if ok, err := s.read(b, buf); ok || err != nil {
				return err
			}
		}
	}
	if err := readBlock(pr.f, b, buf); err != nil {
		return err
	}
	newest := r.points[len(r.points)-1]
	s, err := r.store(newest.id, pr.disk, false)
	if err != nil || s == nil {
		return err
	}
	_, err = s.read(b, buf)
	return err
}

func (pr *pointReader) Close() error {
	if pr.closed.Swap(true) {
		return nil
	}
	err := pr.f.Close()
	pr.release()
	pr.r.mu.Lock()
	pr.done()
	pr.r.mu.Unlock()
	return err
}
