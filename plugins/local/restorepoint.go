package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ferry-dr/ferry/plugins/internal/filelock"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Restore points are reverse-incremental. The working image of a disk is
// the replica's newest state; restore point P_k owns an undo store holding,
// for every block overwritten after P_k was made and before P_(k+1) was,
// the block as it was. Reading P_k takes each block from the first of
// undo(P_k), undo(P_(k+1)), ..., undo(P_n) that holds it, else from the
// working image.
//
// Write order (copy-before-write): before a WriteAt overwrites blocks of
// the working image, the blocks the newest point has not saved yet are
// read, appended to its undo store and fsynced (data, then index); only
// then is the working image written. A kill at any moment therefore leaves
// every point readable: a block is either saved or not yet overwritten.
// CreateRestorePoint fsyncs the working images and then commits the point
// to replica.json with an atomic rename: the point exists only complete.
// Deleting the oldest point deletes its store; deleting P_k otherwise folds
// the blocks P_(k-1) lacks into undo(P_(k-1)), journalled in replica.json
// so that a kill half-way is finished by the next change.

// undoBlockSize is the grain of copy-before-write: the comparison block of
// ferry's data mover, so that saving what a write overwrites costs about
// what the write itself does (at 64 KiB, scattered 4-64 KiB changes made
// the target read and save about three times what changed).
const undoBlockSize = 4 << 10

// replicaWriters is what the open disk writers of one replica share in
// this process. The writers lock keeps other processes' writers and point
// changes out while any is open.
type replicaWriters struct {
	refs  int
	wlock *filelock.Lock
	disks map[int]*sharedDisk
}

// sharedDisk is one working image open for writing.
type sharedDisk struct {
	disk   int
	refs   int
	direct int // open writers that offered their local path
	f      *os.File
	path   string
	size   atomic.Int64

	// gate is held shared by every WriteAt and exclusively by a change to
	// the replica's points or state, so that no write straddles one.
	gate sync.RWMutex
	// The fields below change only under gate held exclusively.
	undo      *storeWriter // the newest point's store; nil without points
	undoPoint string
	limit     int64 // the newest point's size of this disk
	disabled  error // set when the replica takes no more writes

	mu sync.Mutex // orders copy-before-write decisions of concurrent writes
	// gen counts the writers opened on the disk (under mu): a writer
	// opened before the newest one is superseded, and its writes are
	// refused, so that writes of an abandoned writer still on their way
	// (queued in a stream when its caller died) never land after the
	// newer writer's.
	gen int64
	// pending holds writes accepted but not yet applied (under mu): they
	// are applied in batches, so that one durable save of undo blocks
	// serves many scattered writes. Nothing is durable before Sync or
	// Close, so a crash loses only what no caller was told is safe.
	pending batch
	// A full batch is applied in the background while the next one fills
	// (one at a time, in order): inflight is closed when it is done, and
	// asyncErr, read only after that, is its failure. Every path that
	// changes points or state flushes first, which waits for it.
	inflight chan struct{}
	asyncErr error
	// spare is the write list of the batch applied last, for the next
	// one; ranges and blocks are apply's and saveUndo's lists of ranges
	// and blocks. They are touched only by
	// the one batch being applied, or under mu once it is done.
	spare  []pendingWrite
	ranges []sdk.Extent
	blocks []int64
}

type pendingWrite struct {
	off  int64
	data []byte // in a slab of the batch
}

// batch is pending writes, their data copied back to back into slabs
// from the pool (see buffers.go).
type batch struct {
	writes []pendingWrite
	slabs  []*[]byte
	used   int // bytes used in the last slab
	bytes  int64
}

// add copies a write into the batch. A write that goes on where the one
// before it ended, on the disk and in the slab (the data mover's chunks
// of one extent), extends it, so that one call applies both.
func (b *batch) add(p []byte, off int64) {
	b.bytes += int64(len(p))
	for len(p) > 0 {
		if len(b.slabs) == 0 || b.used == slabSize {
			b.slabs = append(b.slabs, getSlab())
			b.used = 0
		}
		s := *b.slabs[len(b.slabs)-1]
		n := copy(s[b.used:], p)
		k := len(b.writes) - 1
		if k >= 0 && b.used > 0 && b.writes[k].off+int64(len(b.writes[k].data)) == off &&
			&b.writes[k].data[len(b.writes[k].data)-1] == &s[b.used-1] {
			b.writes[k].data = b.writes[k].data[:len(b.writes[k].data)+n]
		} else {
			b.writes = append(b.writes, pendingWrite{off: off, data: s[b.used : b.used+n]})
		}
		b.used += n
		off += int64(n)
		p = p[n:]
	}
}

// release gives the batch's slabs back to the pool and returns its write
// list, emptied, for reuse.
func (b *batch) release() []pendingWrite {
	for _, s := range b.slabs {
		putSlab(s)
	}
	clear(b.writes)
	return b.writes[:0]
}

// Batch limits of pending writes. A replica disk holds at most two
// batches (one filling, one being applied) and one chunk of undo blocks:
// 2 x 16 + 4 MiB, whatever the disk's size.
const (
	maxPendingBytes  = 16 << 20
	maxPendingWrites = 4096
	// undoChunkBlocks is how many old blocks are read at a time; a batch
	// saves them all with one fsync pair, however many chunks it takes.
	undoChunkBlocks = (4 << 20) / undoBlockSize
	// slabBlocks is how many undo blocks a slab holds.
	slabBlocks = slabSize / undoBlockSize
	// undoReaders is how many reads of old blocks are in flight at once:
	// they are scattered, and a cold random read waits on storage.
	undoReaders = 16
)

// OpenReplicaDisk opens the working image of a disk for writing, growing
// it to size first when it is larger. WriteAt is safe for concurrent use on
// disjoint ranges; Close fsyncs. The writer offers the direct lane
// (LocalPather): while the replica has no restore point, plainly; once it
// has, only to hosts that prepare their writes (sdk.WritePreparer). While
// a writer the host wrote itself is open, no point can be made.
func (t *Target) OpenReplicaDisk(ctx context.Context, ref string, disk int, size int64) (sdk.DiskWriter, error) {
	if disk < 0 || size < 0 {
		return nil, fmt.Errorf("open replica %q disk %d size %d: %w", ref, disk, size, errdefs.ErrInvalidArgument)
	}
	x, err := t.begin(ctx, ref, false)
	if err != nil {
		return nil, err
	}
	defer x.release()
	if x.rs.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("open replica %q disk %d: replica is %s: %w", ref, disk, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	rw := t.writers[x.dir]
	if rw == nil {
		wl, err := filelock.Try(filepath.Join(replicaMeta(x.dir), writersLockName))
		if errors.Is(err, filelock.ErrLocked) {
			return nil, fmt.Errorf("open replica %q disk %d: written by another process: %w", ref, disk, errdefs.ErrFailedPrecondition)
		}
		if err != nil {
			return nil, err
		}
		x.wlock = wl
		if err := t.recover(ctx, x); err != nil {
			return nil, fmt.Errorf("open replica %q: finish interrupted change: %w", ref, err)
		}
		rw = &replicaWriters{wlock: wl, disks: map[int]*sharedDisk{}}
		x.wlock = nil // rw owns it now
		defer func() {
			if rw.refs == 0 {
				rw.wlock.Release()
			} else {
				t.writers[x.dir] = rw
			}
		}()
	}
	if cur, ok := x.rs.disk(disk); !ok || size > cur.Size {
		if err := t.growDisk(x, disk, size); err != nil {
			return nil, fmt.Errorf("open replica %q disk %d: %w", ref, disk, err)
		}
	}
	cur, _ := x.rs.disk(disk)
	sd := rw.disks[disk]
	if sd == nil {
		if sd, err = openSharedDisk(x, disk); err != nil {
			return nil, fmt.Errorf("open replica %q disk %d: %w", ref, disk, err)
		}
		rw.disks[disk] = sd
	}
	sd.size.Store(cur.Size)
	sd.refs++
	rw.refs++
	sd.mu.Lock()
	sd.gen++
	w := &replicaWriter{t: t, dir: x.dir, replica: ref, sd: sd, gen: sd.gen}
	sd.mu.Unlock()
	if len(x.rs.Points) == 0 {
		sd.direct++
		w.direct = true
		return directReplicaWriter{w}, nil
	}
	return w, nil
}

// growDisk adds a disk or grows its working image, and records its size
// in replica.json and vm.json.
func (t *Target) growDisk(x *txn, disk int, size int64) error {
	path := workingImage(x.dir, disk)
	if _, ok := x.rs.disk(disk); !ok {
		if err := createSparse(path, size); err != nil {
			return err
		}
		x.rs.Disks = append(x.rs.Disks, replicaDisk{Index: disk, Size: size})
		sort.Slice(x.rs.Disks, func(i, j int) bool { return x.rs.Disks[i].Index < x.rs.Disks[j].Index })
	} else {
		if err := os.Truncate(path, size); err != nil {
			return fmt.Errorf("grow working image: %w", err)
		}
		if err := syncFile(path); err != nil {
			return err
		}
		for i := range x.rs.Disks {
			if x.rs.Disks[i].Index == disk {
				x.rs.Disks[i].Size = size
			}
		}
	}
	vm, err := readVM(x.dir)
	if err != nil {
		return err
	}
	found := false
	for i := range vm.Disks {
		if vm.Disks[i].Index == disk {
			vm.Disks[i].Capacity, found = size, true
		}
	}
	if !found {
		vm.Disks = append(vm.Disks, sdk.Disk{Index: disk, Name: "disk" + strconv.Itoa(disk), Capacity: size, Thin: true})
	}
	if err := writeVM(x.dir, vm); err != nil {
		return err
	}
	return x.save()
}

func openSharedDisk(x *txn, disk int) (*sharedDisk, error) {
	path := workingImage(x.dir, disk)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open working image: %w", err)
	}
	sd := &sharedDisk{disk: disk, f: f, path: path}
	x.target.resync(x, sd)
	if sd.disabled != nil {
		f.Close()
		return nil, sd.disabled
	}
	return sd, nil
}

// resync points a shared disk at the undo store of the replica's newest
// restore point, or stops its writes when the replica takes no more. The
// caller holds sd.gate exclusively, or is its only user.
func (t *Target) resync(x *txn, sd *sharedDisk) {
	if x.deleted || x.rs.State != sdk.ReplicaReady {
		sd.disabled = fmt.Errorf("replica %s is %s: %w", x.rs.Name, x.rs.State, errdefs.ErrFailedPrecondition)
		if x.deleted {
			sd.disabled = fmt.Errorf("replica %s was deleted: %w", x.rs.Name, errdefs.ErrFailedPrecondition)
		}
		return
	}
	sd.disabled = nil
	var want string
	var limit int64
	if n := len(x.rs.Points); n > 0 {
		newest := x.rs.Points[n-1]
		if l, ok := newest.capacity(sd.disk); ok {
			want, limit = newest.ID, l
		}
	}
	if want == sd.undoPoint && (want == "" || sd.undo != nil) {
		sd.limit = limit
		return
	}
	if sd.undo != nil {
		sd.undo.close()
		sd.undo = nil
	}
	sd.undoPoint, sd.limit = "", 0
	if want == "" {
		return
	}
	u, err := openStoreWriter(pointDir(x.dir, want), diskStoreName(sd.disk), undoBlockSize)
	if err != nil {
		sd.disabled = fmt.Errorf("open undo store of point %s: %w", want, err)
		return
	}
	u.writeDirect()
	sd.undo, sd.undoPoint, sd.limit = u, want, limit
}

// replicaWriter is one open handle on a working image.
type replicaWriter struct {
	t       *Target
	dir     string
	replica string
	sd      *sharedDisk
	gen     int64 // the disk's writer generation when this writer opened
	direct  bool
	closed  atomic.Bool
	once    sync.Once
	err     error
}

var (
	_ sdk.DiskWriter    = (*replicaWriter)(nil)
	_ sdk.WritePreparer = (*replicaWriter)(nil)
	_ sdk.LocalPather   = (*replicaWriter)(nil)
)

func (w *replicaWriter) Size() int64 { return w.sd.size.Load() }

// WriteAt saves the blocks the newest restore point still needs, then
// writes the working image.
func (w *replicaWriter) WriteAt(p []byte, off int64) (int, error) {
	sd := w.sd
	sd.gate.RLock()
	defer sd.gate.RUnlock()
	if err := w.usable(off, int64(len(p))); err != nil {
		return 0, fmt.Errorf("write replica %q disk %d: %w", w.replica, sd.disk, err)
	}
	if len(p) == 0 {
		return 0, nil
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if err := w.superseded(); err != nil {
		return 0, fmt.Errorf("write replica %q disk %d: %w", w.replica, sd.disk, err)
	}
	sd.pending.add(p, off)
	if sd.pending.bytes >= maxPendingBytes || len(sd.pending.writes) >= maxPendingWrites {
		if err := sd.handOffLocked(w.t); err != nil {
			return 0, fmt.Errorf("write replica %q disk %d: %w", w.replica, sd.disk, err)
		}
	}
	return len(p), nil
}

// LocalPath offers the working image to a host that prepares its writes
// (sdk.WritePreparer): the data mover may write a range of the file itself
// once PrepareWrites returned for it. The sdk offers it to no other host.
func (w *replicaWriter) LocalPath() string { return w.sd.path }

// PrepareWrites saves, durably, the blocks of the ranges that the newest
// restore point has not saved yet, so that the host may then write the
// ranges into the working image itself: copy-before-write with the write
// done by the data mover. From its first call the writer counts as one
// that offered its path, so points cannot change (pause refuses) until it
// is closed: the host's writes are out of this process's sight. Writes
// accepted by WriteAt before it are applied first.
func (w *replicaWriter) PrepareWrites(extents []sdk.Extent) error {
	sd := w.sd
	w.t.mu.Lock()
	if !w.direct && !w.closed.Load() {
		w.direct = true
		sd.direct++
	}
	w.t.mu.Unlock()
	sd.gate.RLock()
	defer sd.gate.RUnlock()
	if err := w.prepare(extents); err != nil {
		return fmt.Errorf("prepare writes of replica %q disk %d: %w", w.replica, sd.disk, err)
	}
	return nil
}

// prepare is PrepareWrites under gate.
func (w *replicaWriter) prepare(extents []sdk.Extent) error {
	sd := w.sd
	if err := w.usable(0, 0); err != nil {
		return err
	}
	for _, e := range extents {
		if err := w.usable(e.Offset, e.Length); err != nil {
			return err
		}
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if err := w.superseded(); err != nil {
		return err
	}
	if err := sd.flushLocked(w.t); err != nil {
		return err
	}
	return sd.saveUndo(w.t, extents)
}

// usable says why the writer cannot write n bytes at off, or nil. The
// caller holds gate.
func (w *replicaWriter) usable(off, n int64) error {
	sd := w.sd
	switch {
	case w.closed.Load():
		return fmt.Errorf("writer closed: %w", errdefs.ErrFailedPrecondition)
	case sd.disabled != nil:
		return sd.disabled
	case off < 0 || n < 0 || off > sd.size.Load()-n:
		return fmt.Errorf("%d bytes at %d do not fit in %d: %w", n, off, sd.size.Load(), errdefs.ErrInvalidArgument)
	}
	return nil
}

// superseded says so when a newer writer of the disk was opened. The
// caller holds sd.mu.
func (w *replicaWriter) superseded() error {
	if w.gen != w.sd.gen {
		return fmt.Errorf("a newer writer of the disk was opened: %w", errdefs.ErrFailedPrecondition)
	}
	return nil
}

// flush applies the pending writes of the writer's disk.
func (w *replicaWriter) flush() error {
	w.sd.gate.RLock()
	defer w.sd.gate.RUnlock()
	return w.sd.flush(w.t)
}

// flush applies the pending writes. The caller holds gate (shared or
// exclusive).
func (sd *sharedDisk) flush(t *Target) error {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return sd.flushLocked(t)
}

// flushLocked waits for the batch applied in the background, then applies
// the pending writes. The caller holds sd.mu and gate.
func (sd *sharedDisk) flushLocked(t *Target) error {
	if err := sd.waitLocked(); err != nil {
		return err
	}
	b := sd.takeLocked()
	err := sd.apply(t, &b)
	sd.spare = b.release()
	return err
}

// takeLocked takes the pending writes, once the batch before them is done,
// and starts the next batch on the spare write list. The caller holds
// sd.mu.
func (sd *sharedDisk) takeLocked() batch {
	b := sd.pending
	sd.pending = batch{writes: sd.spare}
	sd.spare = nil
	return b
}

// waitLocked waits for the batch applied in the background, if any, and
// returns the first failure of any. The caller holds sd.mu.
func (sd *sharedDisk) waitLocked() error {
	if sd.inflight != nil {
		<-sd.inflight
		sd.inflight = nil
	}
	return sd.asyncErr
}

// handOffLocked starts applying the pending writes in the background, once
// the batch before them is done. The caller holds sd.mu and gate shared;
// whoever takes gate exclusively flushes first, so the batch never straddles
// a change of points.
func (sd *sharedDisk) handOffLocked(t *Target) error {
	if err := sd.waitLocked(); err != nil {
		return err
	}
	b := sd.takeLocked()
	done := make(chan struct{})
	sd.inflight = done
	go func() {
		defer close(done)
		sd.asyncErr = sd.apply(t, &b)
		sd.spare = b.release()
	}()
	return nil
}

// apply saves, in one durable step, every block the writes overwrite that
// the newest point still needs, then applies the writes in the order they
// came. One batch is applied at a time.
func (sd *sharedDisk) apply(t *Target, b *batch) error {
	if len(b.writes) == 0 {
		return nil
	}
	ranges := sd.ranges[:0]
	for _, pw := range b.writes {
		ranges = append(ranges, sdk.Extent{Offset: pw.off, Length: int64(len(pw.data))})
	}
	sd.ranges = ranges
	if err := sd.saveUndo(t, ranges); err != nil {
		return err
	}
	for _, pw := range b.writes {
		t.step("undo-saved")
		if _, err := sd.f.WriteAt(pw.data, pw.off); err != nil {
			return err
		}
	}
	return nil
}

// saveUndo copies the blocks of the ranges (about to be overwritten) that
// the newest point has not saved yet into its undo store, durably: the
// old blocks are read a chunk at a time into slabs and staged in the
// store, and one fsync pair at the end makes them all durable. One batch
// at a time calls it, under gate.
func (sd *sharedDisk) saveUndo(t *Target, ranges []sdk.Extent) error {
	if sd.undo == nil {
		return nil
	}
	blocks := sd.blocks[:0]
	for _, r := range ranges {
		if r.Length <= 0 {
			continue
		}
		first, last := r.Offset/undoBlockSize, (r.End()-1)/undoBlockSize
		for b := first; b <= last && b*undoBlockSize < sd.limit; b++ {
			if !sd.undo.has(b) {
				blocks = append(blocks, b)
			}
		}
	}
	slices.Sort(blocks)
	blocks = slices.Compact(blocks)
	sd.blocks = blocks
	if len(blocks) == 0 {
		return nil
	}
	bufs := make([]*[]byte, 0, undoChunkBlocks/slabBlocks)
	for range min((len(blocks)+slabBlocks-1)/slabBlocks, cap(bufs)) {
		bufs = append(bufs, getSlab())
	}
	defer func() {
		for _, b := range bufs {
			putSlab(b)
		}
	}()
	for len(blocks) > 0 {
		chunk := blocks[:min(len(blocks), undoChunkBlocks)]
		if err := readBlockRuns(sd.f, chunk, bufs); err != nil {
			sd.undo.abort()
			return fmt.Errorf("read working image: %w", err)
		}
		for i := 0; i < len(chunk); i += slabBlocks {
			part := chunk[i:min(len(chunk), i+slabBlocks)]
			if err := sd.undo.stage(part, (*bufs[i/slabBlocks])[:len(part)*undoBlockSize]); err != nil {
				return err
			}
		}
		blocks = blocks[len(chunk):]
		t.step("undo-staged")
	}
	return sd.undo.commit()
}

// readBlockRuns reads the sorted blocks of f into the slabs bufs, back to
// back (block i in slab i/slabBlocks): each run of consecutive blocks in
// one slab with one read, up to undoReaders reads at once. What lies past
// the end of f reads as zeros.
func readBlockRuns(f *os.File, blocks []int64, bufs []*[]byte) error {
	type run struct{ i, n int } // blocks[i:i+n] are consecutive
	var runs []run
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && blocks[j] == blocks[j-1]+1 && j%slabBlocks != 0 {
			j++
		}
		runs = append(runs, run{i, j - i})
		i = j
	}
	next := make(chan run)
	errs := make(chan error, undoReaders)
	var wg sync.WaitGroup
	for range min(undoReaders, len(runs)) {
		wg.Go(func() {
			var first error
			for r := range next {
				if first != nil {
					continue
				}
				at := r.i % slabBlocks * undoBlockSize
				p := (*bufs[r.i/slabBlocks])[at : at+r.n*undoBlockSize]
				n, err := f.ReadAt(p, blocks[r.i]*undoBlockSize)
				if err != nil && !errors.Is(err, io.EOF) {
					first = err
					continue
				}
				clear(p[n:])
			}
			errs <- first
		})
	}
	for _, r := range runs {
		next <- r
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Sync applies the pending writes and fsyncs the working image: every
// write before the call is durable once it returns nil.
func (w *replicaWriter) Sync() error {
	if w.closed.Load() {
		return fmt.Errorf("sync replica %q disk %d: writer closed: %w", w.replica, w.sd.disk, errdefs.ErrFailedPrecondition)
	}
	if err := w.flush(); err != nil {
		return fmt.Errorf("sync replica %q disk %d: %w", w.replica, w.sd.disk, err)
	}
	if err := w.sd.f.Sync(); err != nil {
		return fmt.Errorf("sync replica %q disk %d: %w", w.replica, w.sd.disk, err)
	}
	return nil
}

// Close fsyncs the working image; the writes are durable once it returns
// nil.
func (w *replicaWriter) Close() error {
	w.once.Do(func() {
		w.closed.Store(true)
		if err := w.flush(); err != nil {
			w.err = fmt.Errorf("close replica %q disk %d: %w", w.replica, w.sd.disk, err)
			w.t.release(w.dir, w)
			return
		}
		if err := w.sd.f.Sync(); err != nil {
			w.err = fmt.Errorf("close replica %q disk %d: sync: %w", w.replica, w.sd.disk, err)
		}
		w.t.release(w.dir, w)
	})
	return w.err
}

// release drops one writer of a replica disk; the last one closes the
// files and the writers lock.
func (t *Target) release(dir string, w *replicaWriter) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rw := t.writers[dir]
	if rw == nil {
		return
	}
	sd := w.sd
	if w.direct {
		sd.direct--
	}
	sd.refs--
	if sd.refs == 0 {
		sd.gate.Lock() // wait for a change that holds it paused
		sd.f.Close()
		if sd.undo != nil {
			sd.undo.close()
			sd.undo = nil
		}
		sd.disabled = fmt.Errorf("writer closed: %w", errdefs.ErrFailedPrecondition)
		sd.gate.Unlock()
		delete(rw.disks, sd.disk)
	}
	rw.refs--
	if rw.refs == 0 {
		rw.wlock.Release()
		delete(t.writers, dir)
	}
}

// directReplicaWriter is a writer of a replica without restore points:
// the data mover may write the working image itself, with nothing to
// prepare (it is not a WritePreparer).
type directReplicaWriter struct{ w *replicaWriter }

var _ sdk.LocalPather = directReplicaWriter{}

func (d directReplicaWriter) Size() int64                              { return d.w.Size() }
func (d directReplicaWriter) WriteAt(p []byte, off int64) (int, error) { return d.w.WriteAt(p, off) }
func (d directReplicaWriter) Sync() error                              { return d.w.Sync() }
func (d directReplicaWriter) Close() error                             { return d.w.Close() }
func (d directReplicaWriter) LocalPath() string                        { return d.w.sd.path }

// CreateRestorePoint freezes the working images as a new point. It fails
// with ErrFailedPrecondition while disk writers are open or the replica is
// not ready.
func (t *Target) CreateRestorePoint(ctx context.Context, ref string, labels map[string]string) (*sdk.RestorePoint, error) {
	x, err := t.begin(ctx, ref, true)
	if err != nil {
		return nil, err
	}
	defer x.release()
	if x.rs.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("create restore point of replica %q: replica is %s: %w", ref, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	for _, d := range x.rs.Disks {
		if err := syncFile(workingImage(x.dir, d.Index)); err != nil {
			return nil, fmt.Errorf("create restore point of replica %q: %w", ref, err)
		}
	}
	t.step("point-synced")
	p := &pointState{
		ID: "p" + strconv.FormatInt(x.rs.NextPoint, 10), Seq: x.rs.NextPoint,
		Created: t.now().UTC(), Disks: append([]replicaDisk(nil), x.rs.Disks...),
	}
	if len(labels) > 0 {
		p.Labels = make(map[string]string, len(labels))
		for k, v := range labels {
			p.Labels[k] = v
		}
	}
	x.rs.NextPoint++
	x.rs.Points = append(x.rs.Points, p)
	if err := x.save(); err != nil {
		return nil, fmt.Errorf("create restore point of replica %q: %w", ref, err)
	}
	return t.pointOf(x.dir, x.rs, p), nil
}

func (t *Target) pointOf(dir string, rs *replicaState, p *pointState) *sdk.RestorePoint {
	rp := &sdk.RestorePoint{ID: p.ID, Replica: rs.ID, Created: p.Created}
	if len(p.Labels) > 0 {
		rp.Labels = make(map[string]string, len(p.Labels))
		for k, v := range p.Labels {
			rp.Labels[k] = v
		}
	}
	for _, d := range p.Disks {
		rp.Disks = append(rp.Disks, sdk.SnapshotDisk{Index: d.Index, Capacity: d.Size})
		for _, ext := range []string{".data", ".idx"} {
			if n, err := allocatedBytes(filepath.Join(pointDir(dir, p.ID), diskStoreName(d.Index)+ext)); err == nil {
				rp.Size += n
			}
		}
	}
	return rp
}

// ListRestorePoints lists a replica's points, oldest first.
func (t *Target) ListRestorePoints(ctx context.Context, ref string) ([]sdk.RestorePoint, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	dir, err := t.resolve(ref)
	if err != nil {
		return nil, err
	}
	rs, err := loadReplica(dir)
	if err != nil {
		return nil, err
	}
	out := []sdk.RestorePoint{}
	for _, p := range rs.livePoints() {
		out = append(out, *t.pointOf(dir, rs, p))
	}
	return out, nil
}

// DeleteRestorePoint deletes a point and frees its space; the others stay
// readable. Deleting a point that is gone succeeds.
func (t *Target) DeleteRestorePoint(ctx context.Context, ref, point string) error {
	x, err := t.begin(ctx, ref, true)
	if err != nil {
		return err
	}
	defer x.release()
	i := x.rs.point(point)
	if i < 0 {
		return nil
	}
	if x.rs.State == sdk.ReplicaFailedOver && x.rs.FailoverPoint == point {
		return fmt.Errorf("delete restore point %q of replica %q: the replica runs from it: %w", point, ref, errdefs.ErrFailedPrecondition)
	}
	x.rs.Points[i].Deleting = true
	if err := x.save(); err != nil {
		return fmt.Errorf("delete restore point %q of replica %q: %w", point, ref, err)
	}
	t.step("delete-journalled")
	if err := t.finishDelete(ctx, x, i); err != nil {
		return fmt.Errorf("delete restore point %q of replica %q: %w", point, ref, err)
	}
	return nil
}

// finishDelete folds point i's undo blocks into the point before it where
// that one lacks them, then drops point i. Folding again after a kill
// appends only what is still missing.
func (t *Target) finishDelete(ctx context.Context, x *txn, i int) error {
	p := x.rs.Points[i]
	if i > 0 {
		prev := x.rs.Points[i-1]
		for _, d := range p.Disks {
			limit, ok := prev.capacity(d.Index)
			if !ok {
				continue
			}
			if err := t.fold(ctx, x.dir, p, prev, d.Index, limit); err != nil {
				return err
			}
		}
	}
	x.rs.Points = append(x.rs.Points[:i], x.rs.Points[i+1:]...)
	if err := x.save(); err != nil {
		return err
	}
	t.step("delete-committed")
	return removeAllDurable(pointDir(x.dir, p.ID))
}

func (t *Target) fold(ctx context.Context, dir string, p, prev *pointState, disk int, limit int64) error {
	src, err := openStoreReader(pointDir(dir, p.ID), diskStoreName(disk), undoBlockSize)
	if err != nil {
		return err
	}
	defer src.close()
	if src.len() == 0 {
		return nil
	}
	dst, err := openStoreWriter(pointDir(dir, prev.ID), diskStoreName(disk), undoBlockSize)
	if err != nil {
		return err
	}
	defer dst.close()
	dst.writeDirect()
	ix := src.snapshotIndex()
	var todo []int64
	for _, b := range ix.sortedBlocks() {
		if b*undoBlockSize < limit && !dst.has(b) {
			todo = append(todo, b)
		}
	}
	buf := getSlab()
	defer putSlab(buf)
	staged := 0
	for len(todo) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(todo), slabBlocks)
		if err := src.readBlocks(ix, todo[:n], (*buf)[:n*undoBlockSize]); err != nil {
			return err
		}
		if err := dst.stage(todo[:n], (*buf)[:n*undoBlockSize]); err != nil {
			return err
		}
		t.step("fold-batch")
		todo = todo[n:]
		if staged += n; staged >= foldCommitBlocks || len(todo) == 0 {
			if err := dst.commit(); err != nil {
				return err
			}
			staged = 0
		}
	}
	return nil
}

// foldCommitBlocks is how many blocks a fold stages between two fsync
// pairs (64 MiB): few syncs, and a record list bounded whatever the size
// of the store.
const foldCommitBlocks = (64 << 20) / undoBlockSize

// OpenRestorePointDisk opens a disk of a restore point for reading. The
// reader stays right while the replica goes on being written: blocks it
// took from the working image are checked against the undo stores again
// after the read, and newer points are picked up as they appear. An empty
// point opens the working state, what the next point would freeze.
func (t *Target) OpenRestorePointDisk(ctx context.Context, ref, point string, disk int) (sdk.DiskReader, error) {
	x, err := t.begin(ctx, ref, false)
	if err != nil {
		return nil, err
	}
	defer x.release()
	return t.openPoint(x.dir, x.rs, ref, point, disk)
}

func (t *Target) openPoint(dir string, rs *replicaState, ref, point string, disk int) (*pointReader, error) {
	if point == "" {
		return t.openWorking(dir, rs, ref, disk)
	}
	i := rs.point(point)
	if i < 0 || rs.Points[i].Deleting {
		return nil, fmt.Errorf("restore point %q of replica %q: %w", point, ref, errdefs.ErrNotFound)
	}
	size, ok := rs.Points[i].capacity(disk)
	if !ok {
		return nil, fmt.Errorf("disk %d of restore point %q of replica %q: %w", disk, point, ref, errdefs.ErrNotFound)
	}
	r := &pointReader{dir: dir, disk: disk, stack: &blockStack{bs: undoBlockSize, size: size}}
	for _, p := range rs.Points[i:] {
		if err := r.addPoint(p); err != nil {
			r.stack.close()
			return nil, err
		}
	}
	base, err := openBase(workingImage(dir, disk))
	if err != nil {
		r.stack.close()
		return nil, err
	}
	r.stack.base = base
	if r.stamp, err = statFingerprint(filepath.Join(replicaMeta(dir), replicaFile)); err != nil {
		r.stack.close()
		return nil, err
	}
	return r, nil
}

// openWorking opens the working image of a disk for reading.
func (t *Target) openWorking(dir string, rs *replicaState, ref string, disk int) (*pointReader, error) {
	if rs.State == sdk.ReplicaCommitted {
		return nil, fmt.Errorf("working state of replica %q: replica is %s: %w", ref, rs.State, errdefs.ErrFailedPrecondition)
	}
	d, ok := rs.disk(disk)
	if !ok {
		return nil, fmt.Errorf("disk %d of replica %q: %w", disk, ref, errdefs.ErrNotFound)
	}
	base, err := openBase(workingImage(dir, disk))
	if err != nil {
		return nil, err
	}
	return &pointReader{dir: dir, disk: disk, working: true, stack: &blockStack{bs: undoBlockSize, size: d.Size, base: base}}, nil
}

// pointReader reads one disk of a restore point, or the working state.
type pointReader struct {
	working bool // the working state: the image as it is, no stores
	dir     string
	disk    int
	stack   *blockStack

	mu     sync.Mutex
	newest int64       // Seq of the newest point in the stack
	stamp  fingerprint // of replica.json when the points were last read
}

var _ sdk.DiskReader = (*pointReader)(nil)

func (r *pointReader) addPoint(p *pointState) error {
	s, err := openStoreReader(pointDir(r.dir, p.ID), diskStoreName(r.disk), undoBlockSize)
	if err != nil {
		return err
	}
	r.stack.mu.Lock()
	r.stack.stores = append(r.stack.stores, s)
	r.stack.mu.Unlock()
	r.newest = p.Seq
	return nil
}

func (r *pointReader) Size() int64 { return r.stack.size }

func (r *pointReader) ReadAt(p []byte, off int64) (int, error) {
	n, fromWorking, err := r.stack.readAt(p, off)
	if len(fromWorking) == 0 || r.working {
		return n, err
	}
	// A writer saves a block before it overwrites it, so a block read from
	// the working image that no store holds even now was read intact.
	if rerr := r.refresh(); rerr != nil {
		return 0, rerr
	}
	for _, b := range fromWorking {
		if _, rerr := r.stack.reread(p[:n], off, b); rerr != nil {
			return 0, rerr
		}
	}
	return n, err
}

// refresh picks up points created since the reader opened and records
// appended to every store.
func (r *pointReader) refresh() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fp, err := statFingerprint(filepath.Join(replicaMeta(r.dir), replicaFile))
	if err == nil && fp != r.stamp {
		rs, err := loadReplica(r.dir)
		if err == nil {
			for _, p := range rs.Points {
				if p.Seq > r.newest {
					if err := r.addPoint(p); err != nil {
						return err
					}
				}
			}
			r.stamp = fp
		}
	}
	r.stack.mu.RLock()
	stores := append([]*storeReader(nil), r.stack.stores...)
	r.stack.mu.RUnlock()
	for _, s := range stores {
		if err := s.refresh(); err != nil {
			return err
		}
	}
	return nil
}

func (r *pointReader) Close() error { return r.stack.close() }
