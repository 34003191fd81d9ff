package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The source's half of failback (sdk.FailbackWriter). A production VM in
// failback keeps, beside its other source state:
//
//	SITE/<vm>/.ferry/failback.json             the failback: id, power state before, created, undoing
//	SITE/<vm>/.ferry/failback/disk<N>.{data,idx} the undo store: each block's content before
//	                                           the failback first overwrote it
//
// Order of a write: the blocks it overwrites that the undo store lacks are
// appended to it and fsynced, then the write is logged in the change log
// and lands (as a guest's tracked write). A kill at any moment leaves the
// undo store holding the original of every block the failback may have
// changed. Undo writes the stored blocks back (tracked too), restores the
// power state, then drops the store and failback.json; a journalled undo
// (undoing) is finished by the next UndoFailback, never rolled back.
// Commit drops the store, then failback.json.

const (
	failbackFile    = "failback.json"
	failbackDirName = "failback"
)

var _ sdk.FailbackWriter = (*Source)(nil)

type failbackState struct {
	ID string `json:"id"`
	// Power is the VM's power state before the failback.
	Power string `json:"power"`
	// Created: the failback created the VM; undo removes it.
	Created bool `json:"created,omitempty"`
	// Undoing journals an undo under way.
	Undoing bool `json:"undoing,omitempty"`
}

func failbackPath(vmDir string) string { return filepath.Join(metaDir(vmDir), failbackFile) }
func failbackDir(vmDir string) string  { return filepath.Join(metaDir(vmDir), failbackDirName) }

// loadFailback reads failback.json; nil when the VM is in no failback.
func loadFailback(vmDir string) (*failbackState, error) {
	var fb failbackState
	err := readJSON(failbackPath(vmDir), &fb)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &fb, nil
}

// BeginFailback implements sdk.FailbackWriter.
func (s *Source) BeginFailback(ctx context.Context, req sdk.FailbackRequest) (*sdk.VM, error) {
	if err := sdk.CheckFailbackID(req.ID); err != nil {
		return nil, err
	}
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	dir, err := s.site.resolve(req.VM)
	if errors.Is(err, errdefs.ErrNotFound) && req.Create != nil {
		dir, err = s.createForFailback(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("begin failback %s: %w", req.ID, err)
	}
	lock, err := s.site.vmLock(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	vm, err := readVM(dir)
	if err != nil {
		return nil, err
	}
	fb, err := loadFailback(dir)
	if err != nil {
		return nil, err
	}
	switch {
	case fb != nil && fb.ID != req.ID:
		return nil, fmt.Errorf("begin failback %s of vm %q: the vm is in failback %s: %w", req.ID, req.VM, fb.ID, errdefs.ErrFailedPrecondition)
	case fb != nil && fb.Undoing:
		return nil, fmt.Errorf("begin failback %s of vm %q: its undo is under way; undo it again to finish: %w", req.ID, req.VM, errdefs.ErrFailedPrecondition)
	case fb == nil:
		// An undo store no failback.json names is what a killed commit
		// or undo left: nothing uses it.
		if err := removeAllDurable(failbackDir(dir)); err != nil {
			return nil, err
		}
		fb = &failbackState{ID: req.ID, Power: vm.PowerState}
		if err := writeJSONAtomic(failbackPath(dir), fb); err != nil {
			return nil, err
		}
	}
	s.site.step("failback-begun")
	if vm.PowerState != "off" {
		vm.PowerState = "off"
		if err := writeVM(dir, vm); err != nil {
			return nil, err
		}
	}
	fixCapacities(dir, vm)
	return vm, nil
}

// createForFailback creates the VM req.Create describes, named req.VM,
// with empty disks, recording first that the failback created it (undo
// removes it; a retry after a kill creates it again).
func (s *Source) createForFailback(ctx context.Context, req sdk.FailbackRequest) (string, error) {
	if !validName(req.VM) {
		return "", fmt.Errorf("create vm %q: not a valid folder name: %w", req.VM, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Join(s.site.root, req.VM)
	if err := mkdirDurable(metaDir(dir)); err != nil {
		return "", err
	}
	fb, err := loadFailback(dir)
	if err != nil {
		return "", err
	}
	if fb != nil && fb.ID != req.ID {
		return "", fmt.Errorf("create vm %q: a folder of failback %s is there: %w", req.VM, fb.ID, errdefs.ErrFailedPrecondition)
	}
	if err := writeJSONAtomic(failbackPath(dir), &failbackState{ID: req.ID, Power: "off", Created: true}); err != nil {
		return "", err
	}
	c := req.Create
	spec := VMSpec{Name: req.VM, CPUs: c.CPUs, MemoryMiB: c.MemoryMiB, NICs: c.NICs, Folder: c.Folder, Tags: c.Tags}
	for _, d := range c.Disks {
		spec.Disks = append(spec.Disks, d.Capacity)
	}
	if _, err := s.site.createVM(ctx, spec); err != nil {
		return "", err
	}
	return dir, nil
}

// lockFailback locks VM vm and reads its failback; what names the
// operation in errors. fb is nil when the VM is in no failback.
func (s *Source) lockFailback(ctx context.Context, vm, id, what string) (dir string, fb *failbackState, unlock func(), err error) {
	if err := sdk.CheckFailbackID(id); err != nil {
		return "", nil, nil, err
	}
	dir, unlock, err = s.site.lockDir(ctx, vm)
	if err != nil {
		return "", nil, nil, err
	}
	fb, err = loadFailback(dir)
	if err == nil && fb != nil && fb.ID != id {
		err = fmt.Errorf("%s vm %q: the vm is in failback %s, not %s: %w", what, vm, fb.ID, id, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		unlock()
		return "", nil, nil, err
	}
	return dir, fb, unlock, nil
}

// OpenFailbackDisk implements sdk.FailbackWriter.
func (s *Source) OpenFailbackDisk(ctx context.Context, vm, id string, disk int, size int64) (sdk.DiskWriter, error) {
	dir, fb, unlock, err := s.lockFailback(ctx, vm, id, "open failback disk of")
	if err != nil {
		return nil, err
	}
	if fb == nil || fb.Undoing {
		unlock()
		return nil, fmt.Errorf("open failback disk of vm %q: failback %s has not begun, or is being undone: %w", vm, id, errdefs.ErrFailedPrecondition)
	}
	v, err := readVM(dir)
	if err == nil && v.PowerState != "off" {
		// Guest writes save into the undo store too, through a store
		// writer of their own: the two never append at once because
		// guests write only into a VM that is on.
		err = fmt.Errorf("failback %s writes only a vm that is off; this one was started: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err == nil {
		var d *sdk.Disk
		if d, err = s.site.findDisk(v, disk); err == nil {
			var have int64
			if have, err = capacity(dir, d); err == nil && size > have {
				unlock()
				if err = s.site.resize(ctx, vm, disk, size); err != nil {
					return nil, err
				}
				return s.OpenFailbackDisk(ctx, vm, id, disk, 0)
			}
			size = max(size, have)
		}
	}
	unlock()
	if err != nil {
		return nil, fmt.Errorf("open failback disk of vm %q: %w", vm, err)
	}
	w, err := openStoreWriter(failbackDir(dir), diskStoreName(disk), deltaBlockSize)
	if err != nil {
		return nil, err
	}
	return &failbackWriter{s: s.site, vm: vm, dir: dir, disk: disk, size: size, undo: w}, nil
}

// failbackWriter writes a failback into a production VM's disk, saving
// each block's original first.
type failbackWriter struct {
	s    *site
	vm   string
	dir  string
	disk int
	size int64

	mu   sync.Mutex // serialises writes: undo is not safe for concurrent use
	undo *storeWriter
}

var _ sdk.DiskWriter = (*failbackWriter)(nil)

func (w *failbackWriter) Size() int64 { return w.size }

func (w *failbackWriter) WriteAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.undo == nil {
		return 0, fmt.Errorf("write failback disk %d of vm %q: closed: %w", w.disk, w.vm, errdefs.ErrFailedPrecondition)
	}
	lock, err := w.s.vmLock(context.Background(), w.dir)
	if err != nil {
		return 0, err
	}
	defer lock.Release()
	err = w.s.writeLocked(w.dir, w.vm, w.disk, w.size, off, p, func(st *vmState) error {
		return w.s.saveOriginals(w.undo, w.dir, st, w.disk, w.size, off, int64(len(p)))
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// saveOriginals appends to undo store u the blocks of [off, off+n) of a
// disk of size bytes that it lacks, read from the disk's current view,
// and makes them durable.
func (s *site) saveOriginals(u *storeWriter, dir string, st *vmState, disk int, size, off, n int64) error {
	const bs = deltaBlockSize
	var blocks []int64
	for b := off / bs; b <= (off+n-1)/bs; b++ {
		if !u.has(b) {
			blocks = append(blocks, b)
		}
	}
	if len(blocks) == 0 {
		return nil
	}
	view, err := currentStack(dir, st, disk, size)
	if err != nil {
		return err
	}
	defer view.close()
	buf := make([]byte, int64(len(blocks))*bs)
	for i, b := range blocks {
		chunk := buf[int64(i)*bs : int64(i+1)*bs]
		if _, _, err := view.readAt(chunk[:min(bs, size-b*bs)], b*bs); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	if err := u.put(blocks, buf); err != nil {
		return fmt.Errorf("save overwritten blocks: %w", err)
	}
	s.step("failback-saved")
	return nil
}

// guestSave is what a guest's write into a VM saves first: while a
// failback is under way, the blocks it overwrites, so that an undo after
// the switch (production ran and wrote) gives the disk back as it was
// before the failback. Nil when there is nothing to save.
func (s *site) guestSave(dir string, disk int, size, off, n int64) (func(st *vmState) error, func(), error) {
	fb, err := loadFailback(dir)
	if err != nil || fb == nil || fb.Undoing {
		return nil, func() {}, err
	}
	u, err := openStoreWriter(failbackDir(dir), diskStoreName(disk), deltaBlockSize)
	if err != nil {
		return nil, nil, err
	}
	return func(st *vmState) error { return s.saveOriginals(u, dir, st, disk, size, off, n) }, func() { u.close() }, nil
}

// Sync: every write was made durable before it returned.
func (w *failbackWriter) Sync() error { return nil }

func (w *failbackWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.undo == nil {
		return nil
	}
	err := w.undo.close()
	w.undo = nil
	return err
}

// StartFailback implements sdk.FailbackWriter: power on. The VM's
// description, networks included, is its own: failback never changed it.
func (s *Source) StartFailback(ctx context.Context, vm, id string) (*sdk.VM, error) {
	dir, fb, unlock, err := s.lockFailback(ctx, vm, id, "start")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if fb == nil || fb.Undoing {
		return nil, fmt.Errorf("start vm %q: failback %s has not begun, or is being undone: %w", vm, id, errdefs.ErrFailedPrecondition)
	}
	v, err := readVM(dir)
	if err != nil {
		return nil, err
	}
	if v.PowerState != "on" {
		v.PowerState = "on"
		if err := writeVM(dir, v); err != nil {
			return nil, err
		}
	}
	fixCapacities(dir, v)
	return v, nil
}

// UndoFailback implements sdk.FailbackWriter.
func (s *Source) UndoFailback(ctx context.Context, vm, id string) error {
	dir, fb, unlock, err := s.lockFailback(ctx, vm, id, "undo failback of")
	if errors.Is(err, errdefs.ErrNotFound) {
		return s.undoCreated(vm, id)
	}
	if err != nil {
		return err
	}
	created, err := s.undoLocked(dir, vm, fb)
	unlock()
	if err != nil || !created {
		return err
	}
	return s.undoCreated(vm, id)
}

// undoLocked journals and carries out the undo of failback fb with the
// VM's lock held; for a VM the failback created it only journals, and
// says so: the caller removes the VM once the lock is released.
func (s *Source) undoLocked(dir, vm string, fb *failbackState) (created bool, err error) {
	if fb == nil {
		return false, nil
	}
	if !fb.Undoing {
		fb.Undoing = true
		if err := writeJSONAtomic(failbackPath(dir), fb); err != nil {
			return false, err
		}
	}
	s.site.step("failback-undo-journalled")
	if fb.Created {
		return true, nil
	}
	return false, s.restoreVM(dir, vm, fb)
}

// restoreVM writes back what failback fb overwrote, restores the power
// state and drops the failback.
func (s *Source) restoreVM(dir, vm string, fb *failbackState) error {
	v, err := readVM(dir)
	if err != nil {
		return err
	}
	for _, d := range v.Disks {
		if err := s.restoreDisk(dir, vm, &d); err != nil {
			return fmt.Errorf("undo failback of vm %q: %w", vm, err)
		}
	}
	if v.PowerState != fb.Power {
		v.PowerState = fb.Power
		if err := writeVM(dir, v); err != nil {
			return err
		}
	}
	s.site.step("failback-undo-restored")
	if err := removeAllDurable(failbackDir(dir)); err != nil {
		return err
	}
	return removeDurable(failbackPath(dir))
}

// undoCreated removes a VM folder that failback id created: renamed out of
// the site's sight, then removed. A folder that is not such is left alone.
func (s *Source) undoCreated(vm, id string) error {
	if !validName(vm) {
		return nil
	}
	dir := filepath.Join(s.site.root, vm)
	fb, err := loadFailback(dir)
	if err != nil || fb == nil || fb.ID != id || !fb.Created {
		return err
	}
	gone := filepath.Join(s.site.root, deletingPrefix+vm+"-"+randomHex(4))
	if err := os.Rename(dir, gone); err != nil {
		return fmt.Errorf("undo failback of vm %q: remove the vm it created: %w", vm, err)
	}
	if err := syncDir(s.site.root); err != nil {
		return err
	}
	return removeAllDurable(gone)
}

// restoreDisk writes every block of a disk's undo store back, as tracked
// writes, runs of neighbouring blocks together.
func (s *Source) restoreDisk(dir, vm string, d *sdk.Disk) error {
	r, err := openStoreReader(failbackDir(dir), diskStoreName(d.Index), deltaBlockSize)
	if err != nil {
		return err
	}
	defer r.close()
	ix := r.snapshotIndex()
	blocks := ix.sortedBlocks()
	size, err := capacity(dir, d)
	if err != nil {
		return err
	}
	const bs = deltaBlockSize
	const run = 256 // blocks written back at once: 1 MiB
	for i := 0; i < len(blocks); {
		j := i + 1
		for j < len(blocks) && j-i < run && blocks[j] == blocks[j-1]+1 {
			j++
		}
		buf := make([]byte, int64(j-i)*bs)
		if err := r.readBlocks(ix, blocks[i:j], buf); err != nil {
			return err
		}
		off := blocks[i] * bs
		data := buf[:min(int64(len(buf)), size-off)]
		if err := s.site.writeLocked(dir, vm, d.Index, size, off, data, nil); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// CommitFailback implements sdk.FailbackWriter.
func (s *Source) CommitFailback(ctx context.Context, vm, id string) error {
	dir, fb, unlock, err := s.lockFailback(ctx, vm, id, "commit failback of")
	if err != nil {
		return err
	}
	defer unlock()
	if fb == nil {
		return nil
	}
	if fb.Undoing {
		return fmt.Errorf("commit failback of vm %q: its undo is under way; undo it again to finish: %w", vm, errdefs.ErrFailedPrecondition)
	}
	if err := removeAllDurable(failbackDir(dir)); err != nil {
		return err
	}
	s.site.step("failback-commit-dropped")
	return removeDurable(failbackPath(dir))
}

// removeDurable removes a file, and succeeds when it is gone already.
func removeDurable(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}
