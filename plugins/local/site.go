package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/ferry-dr/ferry/plugins/internal/filelock"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A site folder holds one sub-folder per VM:
//
//	SITE/<vm>/vm.json                       the description, an sdk.VM
//	SITE/<vm>/disk<N>.img                   raw, sparse disk images (the base)
//	SITE/<vm>/.ferry/lock                   flock: one change at a time
//	SITE/<vm>/.ferry/state.json             snapshots, layers, base fingerprints
//	SITE/<vm>/.ferry/layers/<L>/disk<N>.*   delta layer L (a block store)
//	SITE/<vm>/.ferry/track/disk<N>.log      the change log of disk N

const (
	vmFile       = "vm.json"
	metaDirName  = ".ferry"
	stateFile    = "state.json"
	lockFileName = "lock"
	// deltaBlockSize is the grain of delta layers, as VMware's SE sparse.
	deltaBlockSize = 4096
	// copyChunk is the buffer size of whole-disk copies.
	copyChunk = 1 << 20
)

// site is a folder of VMs. It is safe for concurrent use, also by several
// processes: every change to a VM holds the VM's lock.
type site struct {
	root string
	now  func() time.Time
	// crash, when set (tests only), is called at named steps of multi-step
	// changes; a test makes it panic to simulate a process killed there.
	crash func(step string)
}

func newSite(root string) *site {
	return &site{root: root, now: time.Now}
}

func (s *site) step(name string) {
	if s.crash != nil {
		s.crash(name)
	}
}

func diskFile(dir string, index int) string {
	return filepath.Join(dir, "disk"+strconv.Itoa(index)+".img")
}

func diskStoreName(index int) string { return "disk" + strconv.Itoa(index) }

func metaDir(vmDir string) string { return filepath.Join(vmDir, metaDirName) }

func layerDir(vmDir string, layer int64) string {
	return filepath.Join(metaDir(vmDir), "layers", strconv.FormatInt(layer, 10))
}

func trackPath(vmDir string, index int) string {
	return filepath.Join(metaDir(vmDir), "track", "disk"+strconv.Itoa(index)+".log")
}

// vmNotFound is the error for a VM the site does not hold.
func (s *site) vmNotFound(vm string) error {
	return fmt.Errorf("vm %q in site %s: %w", vm, s.root, errdefs.ErrNotFound)
}

// resolve finds the folder of a VM named by folder name or by id.
func (s *site) resolve(vm string) (string, error) {
	if validName(vm) {
		dir := filepath.Join(s.root, vm)
		if _, err := os.Stat(filepath.Join(dir, vmFile)); err == nil && !isReplicaInProgress(dir) {
			return dir, nil
		}
	}
	vms, err := s.scan()
	if err != nil {
		return "", err
	}
	for _, v := range vms {
		if v.vm.ID == vm {
			return v.dir, nil
		}
	}
	return "", s.vmNotFound(vm)
}

type foundVM struct {
	dir string
	vm  *sdk.VM
}

// scan reads every VM of the site, in folder-name order.
func (s *site) scan() ([]foundVM, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, fmt.Errorf("list site %s: %w", s.root, err)
	}
	var out []foundVM
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		dir := filepath.Join(s.root, e.Name())
		vm, err := readVM(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if isReplicaInProgress(dir) {
			// A replica still receiving replication: its disks are not
			// VM disks yet (see replica.go).
			continue
		}
		out = append(out, foundVM{dir: dir, vm: vm})
	}
	return out, nil
}

// readVM reads vm.json and completes what it may leave out.
func readVM(dir string) (*sdk.VM, error) {
	var vm sdk.VM
	if err := readJSON(filepath.Join(dir, vmFile), &vm); err != nil {
		return nil, err
	}
	if vm.Name == "" {
		vm.Name = filepath.Base(dir)
	}
	if vm.ID == "" {
		vm.ID = vm.Name
	}
	if vm.Folder == "" {
		vm.Folder = rootFolder
	}
	vm.Tags = normalTags(vm.Tags) // a person may have edited vm.json
	return &vm, nil
}

func writeVM(dir string, vm *sdk.VM) error {
	return writeJSONAtomic(filepath.Join(dir, vmFile), vm)
}

// findDisk returns the disk with index, or ErrNotFound naming VM and site.
func (s *site) findDisk(vm *sdk.VM, index int) (*sdk.Disk, error) {
	for i := range vm.Disks {
		if vm.Disks[i].Index == index {
			return &vm.Disks[i], nil
		}
	}
	return nil, fmt.Errorf("disk %d of vm %q in site %s: %w", index, vm.Name, s.root, errdefs.ErrNotFound)
}

// capacity is the size of a disk now: what vm.json says, or more when the
// image grew behind its back.
func capacity(dir string, d *sdk.Disk) (int64, error) {
	st, err := os.Stat(diskFile(dir, d.Index))
	if err != nil {
		return 0, fmt.Errorf("disk %d: %w", d.Index, err)
	}
	return max(d.Capacity, st.Size()), nil
}

// vmState is .ferry/state.json: what the source knows about a VM beyond its
// description. Snapshots are oldest first; snapshot S owns delta layer
// S.Layer, which took the writes made while S was the newest. S's view is
// the base under the layers of the snapshots before it; the VM's current
// view is the base under every layer.
type vmState struct {
	Version   int          `json:"version"`
	NextID    int64        `json:"next_id"`
	Snapshots []*snapState `json:"snapshots"`
	Disks     []*diskState `json:"disks"`
}

type snapState struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Created  time.Time `json:"created"`
	Quiesced bool      `json:"quiesced,omitempty"`
	// Removing is set before RemoveSnapshot merges the layer: the snapshot
	// can no longer be read, and removing it again finishes the merge.
	Removing bool  `json:"removing,omitempty"`
	Layer    int64 `json:"layer"`
	// MaxLayer is the newest layer whose writes this layer holds (merging
	// a layer into the one below passes its writes down).
	MaxLayer int64      `json:"max_layer"`
	Disks    []snapDisk `json:"disks"`
}

type snapDisk struct {
	Index    int    `json:"index"`
	Capacity int64  `json:"capacity"`
	ChangeID string `json:"change_id"`
	// BaseGen is the disk's UntrackedGen when the snapshot was taken; a
	// later untracked change to the base invalidates the snapshot.
	BaseGen int64 `json:"base_gen"`
}

type diskState struct {
	Index int `json:"index"`
	// Base is the fingerprint of disk<N>.img after the last change this
	// package made or saw; Known is false before the first look.
	Base  fingerprint `json:"base"`
	Known bool        `json:"known"`
	// Dirty: an untracked change was seen; tracking resets at the next
	// snapshot.
	Dirty bool `json:"dirty,omitempty"`
	// UntrackedGen counts the untracked changes seen.
	UntrackedGen int64 `json:"untracked_gen"`
	// BaseMaxLayer is the newest layer merged into the base.
	BaseMaxLayer int64 `json:"base_max_layer"`
	// TrackedCap is the capacity the current tracking epoch knows; a disk
	// that grew past it resets tracking.
	TrackedCap int64 `json:"tracked_capacity"`
}

func loadState(vmDir string) (*vmState, error) {
	var st vmState
	err := readJSON(filepath.Join(metaDir(vmDir), stateFile), &st)
	if errors.Is(err, fs.ErrNotExist) {
		return &vmState{Version: 1, NextID: 1}, nil
	}
	if err != nil {
		return nil, err
	}
	if st.NextID < 1 {
		st.NextID = 1
	}
	return &st, nil
}

func saveState(vmDir string, st *vmState) error {
	return writeJSONAtomic(filepath.Join(metaDir(vmDir), stateFile), st)
}

func (st *vmState) disk(index int) *diskState {
	for _, d := range st.Disks {
		if d.Index == index {
			return d
		}
	}
	d := &diskState{Index: index}
	st.Disks = append(st.Disks, d)
	sort.Slice(st.Disks, func(i, j int) bool { return st.Disks[i].Index < st.Disks[j].Index })
	return d
}

// snapshot finds a snapshot by id, then by name; -1 when there is none.
func (st *vmState) snapshot(ref string) int {
	for i, sn := range st.Snapshots {
		if sn.ID == ref {
			return i
		}
	}
	for i, sn := range st.Snapshots {
		if sn.Name == ref {
			return i
		}
	}
	return -1
}

// lockVM resolves a VM, locks its folder for a change and reads its
// description; unlock releases the lock.
// lockDisk locks VM vm (lockVM) and finds its disk index and the disk's
// current size; what names the caller's operation in errors.
func (s *site) lockDisk(ctx context.Context, vm string, index int, what string) (dir string, v *sdk.VM, d *sdk.Disk, size int64, unlock func(), err error) {
	dir, v, unlock, err = s.lockVM(ctx, vm)
	if err != nil {
		return "", nil, nil, 0, nil, err
	}
	if d, err = s.findDisk(v, index); err == nil {
		if size, err = capacity(dir, d); err != nil {
			err = fmt.Errorf("%s vm %q: %w", what, vm, err)
		}
	}
	if err != nil {
		unlock()
		return "", nil, nil, 0, nil, err
	}
	return dir, v, d, size, unlock, nil
}

func (s *site) lockVM(ctx context.Context, vm string) (dir string, v *sdk.VM, unlock func(), err error) {
	if dir, unlock, err = s.lockDir(ctx, vm); err != nil {
		return "", nil, nil, err
	}
	if v, err = readVM(dir); err != nil {
		unlock()
		return "", nil, nil, err
	}
	return dir, v, unlock, nil
}

// lockDir finds VM vm's folder and locks it for a change.
func (s *site) lockDir(ctx context.Context, vm string) (dir string, unlock func(), err error) {
	if dir, err = s.resolve(vm); err != nil {
		return "", nil, err
	}
	lock, err := s.vmLock(ctx, dir)
	if err != nil {
		return "", nil, err
	}
	return dir, lock.Release, nil
}

// vmLock locks one VM folder for a change.
func (s *site) vmLock(ctx context.Context, vmDir string) (*filelock.Lock, error) {
	if err := mkdirDurable(metaDir(vmDir)); err != nil {
		return nil, err
	}
	return filelock.Acquire(ctx, filepath.Join(metaDir(vmDir), lockFileName))
}

// checkBase compares disk<N>.img with its recorded fingerprint. A
// difference is an untracked change: the disk turns dirty (tracking resets
// at the next snapshot) and UntrackedGen grows (snapshots taken before
// cannot be read any more). It reports whether st changed.
func (s *site) checkBase(vmDir string, st *vmState, index int) (bool, error) {
	path := diskFile(vmDir, index)
	fp, err := statFingerprint(path)
	if err != nil {
		return false, fmt.Errorf("disk %d: %w", index, err)
	}
	ds := st.disk(index)
	if ds.Known && fp == ds.Base {
		return false, nil
	}
	if ds.Known {
		ds.Dirty = true
		ds.UntrackedGen++
	}
	fp, err = restamp(path, s.now())
	if err != nil {
		return false, err
	}
	ds.Base, ds.Known = fp, true
	return true, nil
}

// VMSpec is what `vm create` makes.
type VMSpec struct {
	Name      string
	CPUs      int
	MemoryMiB int64
	Disks     []int64 // capacities in bytes
	NICs      []sdk.NIC
	Folder    string   // the inventory folder; "" for the root, "/"
	Tags      []string // "Category/Name" or "Name"
}

// createVM makes a new VM folder with empty sparse disks.
func (s *site) createVM(ctx context.Context, spec VMSpec) (*sdk.VM, error) {
	if !validName(spec.Name) {
		return nil, fmt.Errorf("create vm %q: not a valid folder name: %w", spec.Name, errdefs.ErrInvalidArgument)
	}
	if spec.Folder == "" {
		spec.Folder = rootFolder
	}
	if err := checkInventoryFolder(spec.Folder); err != nil {
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	for _, tag := range spec.Tags {
		if err := checkTag(tag); err != nil {
			return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
		}
	}
	if err := mkdirDurable(s.root); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.root, spec.Name)
	if _, err := os.Stat(filepath.Join(dir, vmFile)); err == nil {
		return nil, fmt.Errorf("create vm %q in site %s: %w", spec.Name, s.root, errdefs.ErrAlreadyExists)
	}
	lock, err := s.vmLock(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	if _, err := os.Stat(filepath.Join(dir, vmFile)); err == nil {
		return nil, fmt.Errorf("create vm %q in site %s: %w", spec.Name, s.root, errdefs.ErrAlreadyExists)
	}
	vm := &sdk.VM{
		ID: spec.Name, Name: spec.Name, CPUs: max(spec.CPUs, 1), MemoryMiB: spec.MemoryMiB,
		Firmware: "bios", GuestOS: "linux", PowerState: "on", NICs: spec.NICs,
		Folder: spec.Folder, Tags: normalTags(spec.Tags),
	}
	if vm.MemoryMiB <= 0 {
		vm.MemoryMiB = 1024
	}
	st := &vmState{Version: 1, NextID: 1}
	for i, size := range spec.Disks {
		if size <= 0 {
			return nil, fmt.Errorf("create vm %q: disk %d: size %d: %w", spec.Name, i, size, errdefs.ErrInvalidArgument)
		}
		vm.Disks = append(vm.Disks, sdk.Disk{Index: i, Name: "disk" + strconv.Itoa(i), Capacity: size, Thin: true})
		if err := createSparse(diskFile(dir, i), size); err != nil {
			return nil, err
		}
		if _, err := s.checkBase(dir, st, i); err != nil {
			return nil, err
		}
		if err := mkdirDurable(filepath.Dir(trackPath(dir, i))); err != nil {
			return nil, err
		}
		if _, err := resetChangeLog(trackPath(dir, i)); err != nil {
			return nil, err
		}
		st.disk(i).TrackedCap = size
	}
	for i := range vm.NICs {
		vm.NICs[i].Index = i
		if vm.NICs[i].MAC == "" {
			vm.NICs[i].MAC = macFor(spec.Name, i)
		}
	}
	if err := saveState(dir, st); err != nil {
		return nil, err
	}
	// vm.json last: a VM exists once its description does.
	if err := writeVM(dir, vm); err != nil {
		return nil, err
	}
	return vm, nil
}

// createSparse creates an empty sparse file of size bytes, durably.
func createSparse(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	defer f.Close()
	markSparse(f)
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size disk image %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync disk image %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// listVMs lists the VMs of the site.
func (s *site) listVMs() ([]sdk.VM, error) {
	vms, err := s.scan()
	if err != nil {
		return nil, err
	}
	out := make([]sdk.VM, 0, len(vms))
	for _, v := range vms {
		fixCapacities(v.dir, v.vm)
		out = append(out, *v.vm)
	}
	return out, nil
}

// describe returns one VM.
func (s *site) describe(vm string) (*sdk.VM, error) {
	dir, err := s.resolve(vm)
	if err != nil {
		return nil, err
	}
	v, err := readVM(dir)
	if err != nil {
		return nil, err
	}
	fixCapacities(dir, v)
	return v, nil
}

// fixCapacities reports a disk that grew behind vm.json's back at its real
// size.
func fixCapacities(dir string, vm *sdk.VM) {
	for i := range vm.Disks {
		if c, err := capacity(dir, &vm.Disks[i]); err == nil {
			vm.Disks[i].Capacity = c
		}
	}
}

// currentStack opens the current view of a disk: the base under every
// layer. The caller holds the VM lock for as long as it reads.
func currentStack(vmDir string, st *vmState, index int, size int64) (*blockStack, error) {
	stack := &blockStack{bs: deltaBlockSize, size: size}
	for i := len(st.Snapshots) - 1; i >= 0; i-- {
		r, err := openStoreReader(layerDir(vmDir, st.Snapshots[i].Layer), diskStoreName(index), deltaBlockSize)
		if err != nil {
			stack.close()
			return nil, err
		}
		stack.stores = append(stack.stores, r)
	}
	base, err := openBase(diskFile(vmDir, index))
	if err != nil {
		stack.close()
		return nil, err
	}
	stack.base = base
	return stack, nil
}

// trackedWrite writes data at off into a disk's current view, recording it
// in the change log first. With snapshots, the write lands in the newest
// snapshot's layer (redirect-on-write); without, in the base image.
// A VM that is powered off takes no guest writes: its guest is not
// running (failback powers a replica off before its last sync).
func (s *site) trackedWrite(ctx context.Context, vm string, index int, off int64, data []byte) error {
	dir, v, _, size, unlock, err := s.lockDisk(ctx, vm, index, "write")
	if err != nil {
		return err
	}
	defer unlock()
	if v.PowerState == "off" {
		return fmt.Errorf("write vm %q disk %d: the vm is powered off: %w", vm, index, errdefs.ErrFailedPrecondition)
	}
	save, done, err := s.guestSave(dir, index, size, off, int64(len(data)))
	if err != nil {
		return fmt.Errorf("write vm %q disk %d: %w", vm, index, err)
	}
	defer done()
	return s.writeLocked(dir, vm, index, size, off, data, save)
}

// writeLocked is trackedWrite with the VM's lock held and its disk's size
// known. before, when set, runs after the change log is checked and
// before anything is logged or written, with the VM's state: failback
// saves what the write overwrites there.
func (s *site) writeLocked(dir, vm string, index int, size, off int64, data []byte, before func(st *vmState) error) error {
	if off < 0 || off+int64(len(data)) > size {
		return fmt.Errorf("write vm %q disk %d: %d bytes at %d do not fit in %d: %w", vm, index, len(data), off, size, errdefs.ErrInvalidArgument)
	}
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	changed, err := s.checkBase(dir, st, index)
	if err != nil {
		return fmt.Errorf("write vm %q: %w", vm, err)
	}
	if before != nil {
		if err := before(st); err != nil {
			return fmt.Errorf("write vm %q disk %d: %w", vm, index, err)
		}
	}
	if l, err := loadChangeLog(trackPath(dir, index)); err == nil {
		if err := l.recordWrite(off, int64(len(data))); err != nil {
			return fmt.Errorf("write vm %q disk %d: %w", vm, index, err)
		}
	} else {
		// No usable log: the next snapshot starts a new epoch anyway.
		ds := st.disk(index)
		changed = changed || !ds.Dirty
		ds.Dirty = true
	}
	s.step("write-logged")
	if len(st.Snapshots) == 0 {
		if err := writeBase(diskFile(dir, index), off, data); err != nil {
			return fmt.Errorf("write vm %q: %w", vm, err)
		}
		fp, err := restamp(diskFile(dir, index), s.now())
		if err != nil {
			return err
		}
		st.disk(index).Base = fp
		changed = true
	} else if err := s.writeDelta(dir, st, index, size, off, data); err != nil {
		return fmt.Errorf("write vm %q disk %d: %w", vm, index, err)
	}
	if changed {
		return saveState(dir, st)
	}
	return nil
}

func writeBase(path string, off int64, data []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}

// writeDelta writes into the newest layer: whole blocks, completing partial
// ones from the current view.
func (s *site) writeDelta(dir string, st *vmState, index int, size, off int64, data []byte) error {
	top := st.Snapshots[len(st.Snapshots)-1]
	w, err := openStoreWriter(layerDir(dir, top.Layer), diskStoreName(index), deltaBlockSize)
	if err != nil {
		return err
	}
	defer w.close()
	view, err := currentStack(dir, st, index, size)
	if err != nil {
		return err
	}
	defer view.close()
	const bs = deltaBlockSize
	first, last := off/bs, (off+int64(len(data))-1)/bs
	buf := make([]byte, (last-first+1)*bs)
	blocks := make([]int64, 0, last-first+1)
	for b := first; b <= last; b++ {
		blocks = append(blocks, b)
	}
	// Only the first and last block can be partial.
	for _, b := range []int64{first, last} {
		if off > b*bs || off+int64(len(data)) < min((b+1)*bs, size) {
			chunk := buf[(b-first)*bs : (b-first+1)*bs]
			if _, _, err := view.readAt(chunk[:min(bs, size-b*bs)], b*bs); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
		}
	}
	copy(buf[off-first*bs:], data)
	return w.put(blocks, buf)
}

// resize grows a disk. Growing is tracked as a reset: the change log
// starts a new epoch.
func (s *site) resize(ctx context.Context, vm string, index int, newSize int64) error {
	dir, v, d, size, unlock, err := s.lockDisk(ctx, vm, index, "resize")
	if err != nil {
		return err
	}
	defer unlock()
	if newSize < size {
		return fmt.Errorf("resize vm %q disk %d to %d: smaller than %d, and disks only grow: %w", vm, index, newSize, size, errdefs.ErrInvalidArgument)
	}
	if newSize == size && d.Capacity == size {
		return nil
	}
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	if _, err := s.checkBase(dir, st, index); err != nil {
		return fmt.Errorf("resize vm %q: %w", vm, err)
	}
	path := diskFile(dir, index)
	if err := os.Truncate(path, newSize); err != nil {
		return fmt.Errorf("resize vm %q disk %d: %w", vm, index, err)
	}
	if err := syncFile(path); err != nil {
		return err
	}
	fp, err := restamp(path, s.now())
	if err != nil {
		return err
	}
	ds := st.disk(index)
	ds.Base = fp
	d.Capacity = newSize
	if err := writeVM(dir, v); err != nil {
		return err
	}
	if err := mkdirDurable(filepath.Dir(trackPath(dir, index))); err != nil {
		return err
	}
	if _, err := resetChangeLog(trackPath(dir, index)); err != nil {
		return err
	}
	ds.TrackedCap = newSize
	return saveState(dir, st)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// readCurrent copies a disk's current view to w, holding the VM lock so
// that no write lands half-way.
func (s *site) readCurrent(ctx context.Context, vm string, index int, w io.Writer) error {
	dir, _, _, size, unlock, err := s.lockDisk(ctx, vm, index, "read")
	if err != nil {
		return err
	}
	defer unlock()
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	stack, err := currentStack(dir, st, index, size)
	if err != nil {
		return err
	}
	defer stack.close()
	return copyDisk(ctx, w, stack, size)
}

// copyDisk writes size bytes of a block stack to w.
func copyDisk(ctx context.Context, w io.Writer, stack *blockStack, size int64) error {
	buf := make([]byte, copyChunk)
	for off := int64(0); off < size; off += copyChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(copyChunk), size-off)
		if _, _, err := stack.readAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}
