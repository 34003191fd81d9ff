package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Snapshots are redirect-on-write: creating snapshot S_i starts layer L_i,
// which takes every tracked write from then on; S_i sees the base under
// L_1..L_(i-1), which no longer change. Removing S_i merges L_i into
// L_(i-1), or into the base image when S_i is the oldest.
//
// A merge is journalled: the snapshot is marked removing (and can no
// longer be opened) before any block moves; merging replays whole blocks
// and so can be repeated after a crash; the layer is dropped from
// state.json only when the merge is durable, and its files deleted after.

// createSnapshot freezes every disk of a VM.
func (s *site) createSnapshot(ctx context.Context, req sdk.SnapshotRequest) (*sdk.Snapshot, error) {
	dir, v, unlock, err := s.lockVM(ctx, req.VM)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	if err := s.dropOrphanLayers(dir, st); err != nil {
		return nil, err
	}
	for _, d := range []string{dir, metaDir(dir), filepath.Join(metaDir(dir), "track")} {
		if err := removeTemps(d); err != nil {
			return nil, err
		}
	}
	id := st.NextID
	sn := &snapState{
		ID: strconv.FormatInt(id, 10), Name: req.Name, Created: s.now().UTC(),
		Quiesced: req.Quiesce, Layer: id, MaxLayer: id,
	}
	for i := range v.Disks {
		d := &v.Disks[i]
		size, err := capacity(dir, d)
		if err != nil {
			return nil, fmt.Errorf("snapshot vm %q: %w", req.VM, err)
		}
		if _, err := s.checkBase(dir, st, d.Index); err != nil {
			return nil, fmt.Errorf("snapshot vm %q: %w", req.VM, err)
		}
		ds := st.disk(d.Index)
		path := trackPath(dir, d.Index)
		l, err := loadChangeLog(path)
		if err != nil || ds.Dirty || ds.TrackedCap != size {
			// An untracked change, a disk that grew, or no usable log:
			// a new epoch.
			if err := mkdirDurable(filepath.Dir(path)); err != nil {
				return nil, err
			}
			if l, err = resetChangeLog(path); err != nil {
				return nil, fmt.Errorf("snapshot vm %q disk %d: %w", req.VM, d.Index, err)
			}
			ds.Dirty, ds.TrackedCap = false, size
		}
		cid, err := l.mark()
		if err != nil {
			return nil, fmt.Errorf("snapshot vm %q disk %d: %w", req.VM, d.Index, err)
		}
		sn.Disks = append(sn.Disks, snapDisk{Index: d.Index, Capacity: size, ChangeID: cid, BaseGen: ds.UntrackedGen})
	}
	s.step("snapshot-marked")
	st.NextID++
	st.Snapshots = append(st.Snapshots, sn)
	if err := saveState(dir, st); err != nil {
		return nil, fmt.Errorf("snapshot vm %q: %w", req.VM, err)
	}
	return sn.sdk(v.ID), nil
}

func (sn *snapState) sdk(vmID string) *sdk.Snapshot {
	out := &sdk.Snapshot{ID: sn.ID, VM: vmID, Name: sn.Name, Created: sn.Created, Quiesced: sn.Quiesced}
	for _, d := range sn.Disks {
		out.Disks = append(out.Disks, sdk.SnapshotDisk{Index: d.Index, Capacity: d.Capacity, ChangeID: d.ChangeID})
	}
	return out
}

// dropOrphanLayers deletes layer folders no snapshot owns: what a crash
// left after a removal was committed.
func (s *site) dropOrphanLayers(dir string, st *vmState) error {
	root := filepath.Join(metaDir(dir), "layers")
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list layers: %w", err)
	}
	owned := map[string]bool{}
	for _, sn := range st.Snapshots {
		owned[strconv.FormatInt(sn.Layer, 10)] = true
	}
	for _, e := range entries {
		if !owned[e.Name()] {
			if err := removeAllDurable(filepath.Join(root, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// listSnapshots lists a VM's snapshots, oldest first.
func (s *site) listSnapshots(vm string) ([]sdk.Snapshot, error) {
	dir, err := s.resolve(vm)
	if err != nil {
		return nil, err
	}
	v, err := readVM(dir)
	if err != nil {
		return nil, err
	}
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	out := make([]sdk.Snapshot, 0, len(st.Snapshots))
	for _, sn := range st.Snapshots {
		out = append(out, *sn.sdk(v.ID))
	}
	return out, nil
}

// removeSnapshot merges a snapshot's layer down and forgets it. Removing a
// snapshot that is gone succeeds.
func (s *site) removeSnapshot(ctx context.Context, vm, ref string) error {
	dir, v, unlock, err := s.lockVM(ctx, vm)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	i := st.snapshot(ref)
	if i < 0 {
		return nil
	}
	sn := st.Snapshots[i]
	if !sn.Removing {
		sn.Removing = true
		if err := saveState(dir, st); err != nil {
			return fmt.Errorf("remove snapshot %q of vm %q: %w", ref, vm, err)
		}
	}
	s.step("remove-journalled")
	for di := range v.Disks {
		d := &v.Disks[di]
		if i == 0 {
			err = s.mergeIntoBase(ctx, dir, st, sn, d)
		} else {
			err = s.mergeIntoLayer(ctx, dir, sn, st.Snapshots[i-1], d.Index)
		}
		if err != nil {
			return fmt.Errorf("remove snapshot %q of vm %q: disk %d: %w", ref, vm, d.Index, err)
		}
	}
	if i > 0 {
		prev := st.Snapshots[i-1]
		prev.MaxLayer = max(prev.MaxLayer, sn.MaxLayer)
	}
	st.Snapshots = append(st.Snapshots[:i], st.Snapshots[i+1:]...)
	if err := saveState(dir, st); err != nil {
		return fmt.Errorf("remove snapshot %q of vm %q: %w", ref, vm, err)
	}
	s.step("remove-committed")
	return removeAllDurable(layerDir(dir, sn.Layer))
}

// mergeIntoLayer appends every block of sn's layer to prev's layer. Replay
// after a crash appends the same blocks again, which changes nothing.
func (s *site) mergeIntoLayer(ctx context.Context, dir string, sn, prev *snapState, index int) error {
	src, err := openStoreReader(layerDir(dir, sn.Layer), diskStoreName(index), deltaBlockSize)
	if err != nil {
		return err
	}
	defer src.close()
	if src.len() == 0 {
		return nil
	}
	dst, err := openStoreWriter(layerDir(dir, prev.Layer), diskStoreName(index), deltaBlockSize)
	if err != nil {
		return err
	}
	defer dst.close()
	ix := src.snapshotIndex()
	blocks := ix.sortedBlocks()
	buf := getSlab()
	defer putSlab(buf)
	const batch = slabSize / deltaBlockSize
	staged := 0
	for len(blocks) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(blocks), batch)
		if err := src.readBlocks(ix, blocks[:n], (*buf)[:n*deltaBlockSize]); err != nil {
			return err
		}
		if err := dst.stage(blocks[:n], (*buf)[:n*deltaBlockSize]); err != nil {
			return err
		}
		s.step("merge-layer-batch")
		blocks = blocks[n:]
		if staged += n; staged >= mergeCommitBlocks || len(blocks) == 0 {
			if err := dst.commit(); err != nil {
				return err
			}
			staged = 0
		}
	}
	return nil
}

// mergeCommitBlocks is how many blocks a merge into a layer stages between
// two fsync pairs (64 MiB).
const mergeCommitBlocks = (64 << 20) / deltaBlockSize

// mergeIntoBase writes every block of the oldest snapshot's layer into the
// base image. The base changes in place, so its fingerprint is checked
// first: an image changed behind our back is an untracked change, and so
// is one a crashed merge left half-written (the retry cannot tell the two
// apart, so it assumes the worst).
func (s *site) mergeIntoBase(ctx context.Context, dir string, st *vmState, sn *snapState, d *sdk.Disk) error {
	if _, err := s.checkBase(dir, st, d.Index); err != nil {
		return err
	}
	ds := st.disk(d.Index)
	src, err := openStoreReader(layerDir(dir, sn.Layer), diskStoreName(d.Index), deltaBlockSize)
	if err != nil {
		return err
	}
	defer src.close()
	ds.BaseMaxLayer = max(ds.BaseMaxLayer, sn.MaxLayer)
	if src.len() == 0 {
		return nil
	}
	size, err := capacity(dir, d)
	if err != nil {
		return err
	}
	path := diskFile(dir, d.Index)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer f.Close()
	ix := src.snapshotIndex()
	blocks := ix.sortedBlocks()
	// Blocks at or past the disk's end are skipped.
	for len(blocks) > 0 && blocks[len(blocks)-1]*deltaBlockSize >= size {
		blocks = blocks[:len(blocks)-1]
	}
	buf := getSlab()
	defer putSlab(buf)
	const batch = slabSize / deltaBlockSize
	first := true
	for len(blocks) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(blocks), batch)
		if err := src.readBlocks(ix, blocks[:n], (*buf)[:n*deltaBlockSize]); err != nil {
			return err
		}
		// One write per run of consecutive blocks: they lie back to back
		// in buf too.
		for i := 0; i < n; {
			j := i + 1
			for j < n && blocks[j] == blocks[j-1]+1 {
				j++
			}
			off := blocks[i] * deltaBlockSize
			end := min(blocks[j-1]*deltaBlockSize+deltaBlockSize, size)
			if _, err := f.WriteAt((*buf)[i*deltaBlockSize:int64(i)*deltaBlockSize+end-off], off); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			if first {
				s.step("merge-base-block")
				first = false
			}
			i = j
		}
		blocks = blocks[n:]
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	fp, err := restamp(path, s.now())
	if err != nil {
		return err
	}
	ds.Base = fp
	return nil
}

// openSnapshotDisk opens a disk of a snapshot. The reader remembers what
// it relies on; Close reports a base image changed under it.
func (s *site) openSnapshotDisk(ctx context.Context, vm, ref string, index int) (sdk.DiskReader, error) {
	dir, unlock, err := s.lockDir(ctx, vm)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	i, sd, err := s.snapshotDisk(st, vm, ref, index)
	if err != nil {
		return nil, err
	}
	if changed, err := s.checkBase(dir, st, index); err != nil {
		return nil, fmt.Errorf("open snapshot %q of vm %q: %w", ref, vm, err)
	} else if changed {
		if err := saveState(dir, st); err != nil {
			return nil, err
		}
	}
	ds := st.disk(index)
	if ds.UntrackedGen != sd.BaseGen {
		return nil, fmt.Errorf("open snapshot %q of vm %q: disk %d (%s) was changed outside ferry after the snapshot: %w",
			ref, vm, index, diskFile(dir, index), errdefs.ErrFailedPrecondition)
	}
	stack := &blockStack{bs: deltaBlockSize, size: sd.Capacity}
	for j := i - 1; j >= 0; j-- {
		r, err := openStoreReader(layerDir(dir, st.Snapshots[j].Layer), diskStoreName(index), deltaBlockSize)
		if err != nil {
			stack.close()
			return nil, err
		}
		stack.stores = append(stack.stores, r)
	}
	if stack.base, err = openBase(diskFile(dir, index)); err != nil {
		stack.close()
		return nil, err
	}
	r := &snapshotReader{
		s: s, dir: dir, vm: vm, snap: ref, disk: index, stack: stack,
		gen: ds.UntrackedGen, seen: ds.BaseMaxLayer,
	}
	if i > 0 {
		r.seen = st.Snapshots[i-1].MaxLayer
	}
	empty := true
	for _, st := range stack.stores {
		empty = empty && st.len() == 0
	}
	if empty {
		return &directSnapshotReader{r}, nil
	}
	return r, nil
}

// snapshotDisk finds a readable snapshot and its disk.
func (s *site) snapshotDisk(st *vmState, vm, ref string, index int) (int, snapDisk, error) {
	i := st.snapshot(ref)
	if i < 0 {
		return 0, snapDisk{}, fmt.Errorf("snapshot %q of vm %q in site %s: %w", ref, vm, s.root, errdefs.ErrNotFound)
	}
	if st.Snapshots[i].Removing {
		return 0, snapDisk{}, fmt.Errorf("snapshot %q of vm %q: being removed: %w", ref, vm, errdefs.ErrFailedPrecondition)
	}
	for _, d := range st.Snapshots[i].Disks {
		if d.Index == index {
			return i, d, nil
		}
	}
	return 0, snapDisk{}, fmt.Errorf("disk %d of snapshot %q of vm %q: %w", index, ref, vm, errdefs.ErrNotFound)
}

// snapshotReader reads one disk of a snapshot.
type snapshotReader struct {
	s     *site
	dir   string
	vm    string
	snap  string
	disk  int
	stack *blockStack
	gen   int64 // the disk's UntrackedGen at open
	seen  int64 // the newest layer the view includes

	once sync.Once
	err  error
}

var _ sdk.DiskReader = (*snapshotReader)(nil)

func (r *snapshotReader) ReadAt(p []byte, off int64) (int, error) {
	n, _, err := r.stack.readAt(p, off)
	return n, err
}

func (r *snapshotReader) Size() int64 { return r.stack.size }

// Close reports, with class ErrFailedPrecondition, a base image that
// changed while the reader was open: by someone else (an untracked change)
// or by the removal of this snapshot, whose merge wrote newer blocks into
// the base. The data read is then not the snapshot's.
func (r *snapshotReader) Close() error {
	r.once.Do(func() { r.err = r.close() })
	return r.err
}

func (r *snapshotReader) close() error {
	cerr := r.stack.close()
	ctx := context.Background()
	lock, err := r.s.vmLock(ctx, r.dir)
	if err != nil {
		return err
	}
	defer lock.Release()
	st, err := loadState(r.dir)
	if err != nil {
		return err
	}
	if changed, err := r.s.checkBase(r.dir, st, r.disk); err != nil {
		return fmt.Errorf("close snapshot %q of vm %q: %w", r.snap, r.vm, err)
	} else if changed {
		if err := saveState(r.dir, st); err != nil {
			return err
		}
	}
	ds := st.disk(r.disk)
	if ds.UntrackedGen != r.gen {
		return fmt.Errorf("read snapshot %q of vm %q: disk %d (%s) changed outside ferry while it was read: %w",
			r.snap, r.vm, r.disk, diskFile(r.dir, r.disk), errdefs.ErrFailedPrecondition)
	}
	if ds.BaseMaxLayer > r.seen {
		return fmt.Errorf("read snapshot %q of vm %q: disk %d: the snapshot was removed while it was read: %w",
			r.snap, r.vm, r.disk, errdefs.ErrFailedPrecondition)
	}
	return cerr
}

// directSnapshotReader is a snapshot reader whose view is the base image
// alone, so the data mover may read the file itself.
type directSnapshotReader struct{ *snapshotReader }

var _ sdk.LocalPather = directSnapshotReader{}

func (r directSnapshotReader) LocalPath() string { return diskFile(r.dir, r.disk) }

// changedAreas lists what changed in a snapshot's disk since changeID, or
// every allocated area when changeID is empty.
func (s *site) changedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	ext, err := s.changedExtents(ctx, req)
	if err != nil {
		return err
	}
	for len(ext) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(ext), extentBatch)
		if err := fn(ext[:n]); err != nil {
			return err
		}
		ext = ext[n:]
	}
	return nil
}

func (s *site) changedExtents(ctx context.Context, req sdk.ChangedAreasRequest) ([]sdk.Extent, error) {
	dir, unlock, err := s.lockDir(ctx, req.VM)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := loadState(dir)
	if err != nil {
		return nil, err
	}
	i, sd, err := s.snapshotDisk(st, req.VM, req.Snapshot, req.Disk)
	if err != nil {
		return nil, err
	}
	if req.ChangeID == "" {
		return allocatedInView(dir, st, i, sd)
	}
	l, err := loadChangeLog(trackPath(dir, req.Disk))
	if err != nil {
		return nil, fmt.Errorf("changed areas of vm %q disk %d: %w: %w", req.VM, req.Disk, err, errdefs.ErrChangeIDReset)
	}
	from, to, err := l.answer(req.ChangeID, sd.ChangeID)
	if err != nil {
		return nil, fmt.Errorf("changed areas of vm %q disk %d: %w", req.VM, req.Disk, err)
	}
	return clipExtents(l.changedBetween(from, to), sd.Capacity), nil
}

// allocatedInView lists the allocated areas of snapshot i's disk: the data
// regions of the base image and the blocks of the layers below i.
func allocatedInView(dir string, st *vmState, i int, sd snapDisk) ([]sdk.Extent, error) {
	base, err := openBase(diskFile(dir, sd.Index))
	if err != nil {
		return nil, err
	}
	defer base.Close()
	ext, err := allocatedExtents(base, sd.Capacity)
	if err != nil {
		return nil, err
	}
	for j := 0; j < i; j++ {
		r, err := openStoreReader(layerDir(dir, st.Snapshots[j].Layer), diskStoreName(sd.Index), deltaBlockSize)
		if err != nil {
			return nil, err
		}
		for b := range r.snapshotIndex() {
			ext = append(ext, sdk.Extent{Offset: b * deltaBlockSize, Length: deltaBlockSize})
		}
		r.close()
	}
	return clipExtents(sdk.MergeExtents(ext), sd.Capacity), nil
}
