package sdktest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// SourceFixture is what a plugin author provides to run RunSource: a way to
// get the source under test, what it declares, and a VM it may play with.
type SourceFixture struct {
	// New returns the source under test, configured and ready. The suite
	// calls it once per check, with that check's t (register cleanup with
	// t.Cleanup). It may return the same instance every time, but the Stop
	// check, which runs last, stops what it gets.
	New func(t *testing.T) sdk.Source
	// Capabilities are what the component declares; checks of a feature it
	// does not declare are skipped.
	Capabilities sdk.Capabilities
	// VM names (by id or name) a VM the suite may snapshot and, through
	// Write, change. Give it small disks (a few MiB): checks read them in
	// full.
	VM string
	// Write writes data at off to a disk of the VM as its guest would,
	// seen by change tracking. Nil skips the checks that need guest
	// writes.
	Write func(t *testing.T, vm string, disk int, off int64, data []byte)
	// ResetChangeTracking makes the source lose track of a disk's changes,
	// as switching tracking off and on, or changing the disk while it is
	// off, does. Nil skips the reset check.
	ResetChangeTracking func(t *testing.T, vm string, disk int)
	// Deadline is how long a call with a cancelled context, or Stop, may
	// take to return. Zero means 10 seconds.
	Deadline time.Duration
	// Folder is the inventory folder the fixture's VM is in, checked when
	// the Folders capability is declared; empty checks only its form.
	Folder string
	// Tags are the tags the fixture's VM carries, checked when the Tags
	// capability is declared; nil checks only their form.
	Tags []string
}

// RunSource runs the conformance checks of a Source, each as a subtest of
// t. See the package documentation for the list.
func RunSource(t *testing.T, fx SourceFixture) {
	if fx.New == nil || fx.VM == "" {
		t.Fatal("sdktest: SourceFixture needs New and VM")
	}
	checks := []struct {
		name string
		run  func(c *sourceCheck, t *testing.T)
	}{
		{"ListVMs", (*sourceCheck).listVMs},
		{"DescribeVMUnknown", (*sourceCheck).describeUnknown},
		{"Folders", (*sourceCheck).folders},
		{"Tags", (*sourceCheck).tags},
		{"SnapshotLifecycle", (*sourceCheck).snapshotLifecycle},
		{"SnapshotQuiesce", (*sourceCheck).snapshotQuiesce},
		{"SnapshotFrozen", (*sourceCheck).snapshotFrozen},
		{"ReadExact", (*sourceCheck).readExact},
		{"ReadConcurrent", (*sourceCheck).readConcurrent},
		{"ReadPastEnd", (*sourceCheck).readPastEnd},
		{"ReadSize", (*sourceCheck).readSize},
		{"LocalPath", (*sourceCheck).localPath},
		{"ChangedAreasFull", (*sourceCheck).changedFull},
		{"ChangedAreasIncremental", (*sourceCheck).changedIncremental},
		{"ChangedAreasBogusID", (*sourceCheck).changedBogus},
		{"ChangedAreasReset", (*sourceCheck).changedReset},
		{"ChangedAreasCallbackError", (*sourceCheck).changedCallbackError},
		{"FailbackWrite", (*sourceCheck).failbackWrite},
		{"Cancel", (*sourceCheck).cancel},
		{"Stop", func(c *sourceCheck, t *testing.T) { checkStop(t, c.src, c.deadline) }},
	}
	for _, check := range checks {
		t.Run(check.name, func(t *testing.T) {
			c := &sourceCheck{fx: fx, ctx: t.Context(), rng: newRand(t), deadline: deadlineOr(fx.Deadline)}
			c.src = fx.New(t)
			check.run(c, t)
		})
	}
}

// sourceCheck is the state of one check of RunSource.
type sourceCheck struct {
	fx       SourceFixture
	src      sdk.Source
	ctx      context.Context
	rng      *rand.Rand
	deadline time.Duration
}

// describe returns the fixture's VM.
func (c *sourceCheck) describe(t *testing.T) *sdk.VM {
	t.Helper()
	vm, err := c.src.DescribeVM(c.ctx, c.fx.VM)
	if err != nil {
		t.Fatalf("DescribeVM(%q): %v", c.fx.VM, err)
	}
	if len(vm.Disks) == 0 {
		t.Fatalf("VM %q has no disks to test with", c.fx.VM)
	}
	return vm
}

// needWrite skips a check that changes the VM's disks when the fixture has
// no way to.
func (c *sourceCheck) needWrite(t *testing.T) {
	t.Helper()
	if c.fx.Write == nil {
		t.Skip("SourceFixture.Write is nil: the check needs guest writes")
	}
}

func (c *sourceCheck) needTracking(t *testing.T) {
	t.Helper()
	if !c.fx.Capabilities.ChangeTracking {
		t.Skip("capability ChangeTracking not declared")
	}
}

func (c *sourceCheck) write(t *testing.T, disk int, s span) {
	t.Helper()
	c.fx.Write(t, c.fx.VM, disk, s.off, s.data)
}

// snapshot takes a snapshot that is removed when the check ends.
func (c *sourceCheck) snapshot(t *testing.T, what string) *sdk.Snapshot {
	t.Helper()
	return c.snapshotWith(t, sdk.SnapshotRequest{VM: c.fx.VM, Name: uniqueName(c.rng, what)})
}

func (c *sourceCheck) snapshotWith(t *testing.T, req sdk.SnapshotRequest) *sdk.Snapshot {
	t.Helper()
	snap, err := c.src.CreateSnapshot(c.ctx, req)
	if err != nil {
		t.Fatalf("CreateSnapshot(%q): %v", req.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		if err := c.src.RemoveSnapshot(ctx, c.fx.VM, snap.ID); err != nil {
			t.Errorf("remove snapshot %q: %v", snap.ID, err)
		}
	})
	return snap
}

// open opens a snapshot disk; the caller closes it with closeDisk.
func (c *sourceCheck) open(t *testing.T, snap *sdk.Snapshot, disk int) sdk.DiskReader {
	t.Helper()
	r, err := c.src.OpenSnapshotDisk(c.ctx, c.fx.VM, snap.ID, disk)
	if err != nil {
		t.Fatalf("OpenSnapshotDisk(%q, %d): %v", snap.ID, disk, err)
	}
	return r
}

// closeDisk closes a reader or writer; its error says the data cannot be
// trusted, so it fails the check.
func closeDisk(t *testing.T, c io.Closer, what string) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("Close %s: %v", what, err)
	}
}

// readSnapshot reads a snapshot disk in full.
func (c *sourceCheck) readSnapshot(t *testing.T, snap *sdk.Snapshot, disk int) []byte {
	t.Helper()
	r := c.open(t, snap, disk)
	defer closeDisk(t, r, fmt.Sprintf("snapshot %q disk %d", snap.ID, disk))
	data, err := readAll(r, r.Size())
	if err != nil {
		t.Fatalf("read snapshot %q disk %d: %v", snap.ID, disk, err)
	}
	return data
}

// changedAreas collects every batch ChangedAreas gives, checking each batch
// and their order as a whole.
func (c *sourceCheck) changedAreas(t *testing.T, snap *sdk.Snapshot, disk int, changeID string) ([]sdk.Extent, error) {
	t.Helper()
	var exts []sdk.Extent
	err := c.src.ChangedAreas(c.ctx, sdk.ChangedAreasRequest{VM: c.fx.VM, Snapshot: snap.ID, Disk: disk, ChangeID: changeID}, func(batch []sdk.Extent) error {
		exts = append(exts, batch...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := checkExtents(exts, snap.Disks[disk].Capacity); err != nil {
		t.Fatalf("ChangedAreas(disk %d, change id %q): %v", disk, changeID, err)
	}
	return exts, nil
}

func (c *sourceCheck) listVMs(t *testing.T) {
	vms, err := c.src.ListVMs(c.ctx)
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	var listed *sdk.VM
	var names []string
	for i := range vms {
		names = append(names, vms[i].Name)
		if listed == nil && (vms[i].ID == c.fx.VM || vms[i].Name == c.fx.VM) {
			listed = &vms[i]
		}
	}
	if listed == nil {
		t.Fatalf("ListVMs does not list %q; it lists %q", c.fx.VM, names)
	}
	described := c.describe(t)
	if msg := diffVM(*described, *listed); msg != "" {
		t.Errorf("DescribeVM(%q) disagrees with ListVMs: %s", c.fx.VM, msg)
	}
	byID, err := c.src.DescribeVM(c.ctx, listed.ID)
	if err != nil {
		t.Fatalf("DescribeVM by id %q: %v", listed.ID, err)
	}
	if byID.ID != listed.ID {
		t.Errorf("DescribeVM by id %q returned VM %q", listed.ID, byID.ID)
	}
	for i, d := range described.Disks {
		if d.Index != i {
			t.Errorf("disk %d has Index %d, want its position", i, d.Index)
		}
		if d.Capacity <= 0 {
			t.Errorf("disk %d has capacity %d", i, d.Capacity)
		}
	}
}

// diffVM compares what ListVMs and DescribeVM both must agree on.
func diffVM(got, want sdk.VM) string {
	switch {
	case got.ID != want.ID || got.Name != want.Name:
		return fmt.Sprintf("VM %q (%q), listed as %q (%q)", got.ID, got.Name, want.ID, want.Name)
	case got.CPUs != want.CPUs || got.MemoryMiB != want.MemoryMiB:
		return fmt.Sprintf("%d CPUs and %d MiB, listed with %d and %d", got.CPUs, got.MemoryMiB, want.CPUs, want.MemoryMiB)
	case len(got.Disks) != len(want.Disks):
		return fmt.Sprintf("%d disks, listed with %d", len(got.Disks), len(want.Disks))
	case got.Folder != want.Folder:
		return fmt.Sprintf("folder %q, listed in %q", got.Folder, want.Folder)
	case !slices.Equal(got.Tags, want.Tags):
		return fmt.Sprintf("tags %q, listed with %q", got.Tags, want.Tags)
	}
	for i := range got.Disks {
		if got.Disks[i] != want.Disks[i] {
			return fmt.Sprintf("disk %d is %+v, listed as %+v", i, got.Disks[i], want.Disks[i])
		}
	}
	return ""
}

// folders checks the folder of every listed VM: an absolute path with
// names between single slashes, and the fixture VM's folder.
func (c *sourceCheck) folders(t *testing.T) {
	if !c.fx.Capabilities.Folders {
		t.Skip("capability Folders not declared")
	}
	vms, err := c.src.ListVMs(c.ctx)
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	for _, vm := range vms {
		if msg := folderProblem(vm.Folder); msg != "" {
			t.Errorf("VM %q (%s): folder %q %s", vm.Name, vm.ID, vm.Folder, msg)
		}
	}
	vm := c.describe(t)
	if c.fx.Folder != "" && vm.Folder != c.fx.Folder {
		t.Errorf("VM %q is in folder %q, the fixture says %q", c.fx.VM, vm.Folder, c.fx.Folder)
	}
}

// folderProblem says what is wrong with a folder path, or "".
func folderProblem(p string) string {
	switch {
	case p == "":
		return "is empty: a source with the Folders capability names every VM's folder"
	case p == "/":
		return ""
	case !strings.HasPrefix(p, "/"):
		return "does not start at the root (/)"
	case strings.HasSuffix(p, "/"):
		return "ends in /"
	case strings.Contains(p, "//"):
		return "has an empty name (//)"
	}
	return ""
}

// tags checks that the source lists its tags, that every VM's tags are
// well formed, sorted, unique and among them, and the fixture VM's tags.
func (c *sourceCheck) tags(t *testing.T) {
	if !c.fx.Capabilities.Tags {
		t.Skip("capability Tags not declared")
	}
	tl, ok := c.src.(sdk.TagLister)
	if !ok {
		t.Fatalf("the source declares Tags but does not implement sdk.TagLister (%T)", c.src)
	}
	known, err := tl.ListTags(c.ctx)
	if err != nil {
		t.Fatalf("ListTags: %v", err)
	}
	if msg := tagsProblem(known); msg != "" {
		t.Errorf("ListTags: %s", msg)
	}
	vms, err := c.src.ListVMs(c.ctx)
	if err != nil {
		t.Fatalf("ListVMs: %v", err)
	}
	for _, vm := range vms {
		if msg := tagsProblem(vm.Tags); msg != "" {
			t.Errorf("VM %q (%s): %s", vm.Name, vm.ID, msg)
		}
		for _, tag := range vm.Tags {
			if _, found := slices.BinarySearch(known, tag); !found {
				t.Errorf("VM %q carries tag %q, which ListTags does not list", vm.Name, tag)
			}
		}
	}
	vm := c.describe(t)
	if c.fx.Tags != nil && !slices.Equal(vm.Tags, c.fx.Tags) {
		t.Errorf("VM %q carries tags %q, the fixture says %q", c.fx.VM, vm.Tags, c.fx.Tags)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	cancel()
	if _, err := tl.ListTags(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ListTags with a cancelled context: %v, want context.Canceled", err)
	}
}

// tagsProblem says what is wrong with a list of tags, or "".
func tagsProblem(tags []string) string {
	for i, tag := range tags {
		cat, name, hasCat := strings.Cut(tag, "/")
		if !hasCat {
			name = cat
		}
		switch {
		case tag == "" || name == "" || (hasCat && cat == ""):
			return fmt.Sprintf("tag %q is not \"Category/Name\" or \"Name\"", tag)
		case i > 0 && tags[i-1] >= tag:
			return fmt.Sprintf("tags %q are not sorted and unique", tags)
		}
	}
	return ""
}

func (c *sourceCheck) describeUnknown(t *testing.T) {
	_, err := c.src.DescribeVM(c.ctx, uniqueName(c.rng, "no-such-vm"))
	wantClass(t, "DescribeVM of an unknown VM", err, errdefs.ErrNotFound)
}

func (c *sourceCheck) snapshotLifecycle(t *testing.T) {
	vm := c.describe(t)
	first := c.snapshot(t, "lifecycle")
	if first.ID == "" {
		t.Fatal("CreateSnapshot returned a snapshot without an ID")
	}
	if len(first.Disks) != len(vm.Disks) {
		t.Fatalf("snapshot has %d disks, the VM %d", len(first.Disks), len(vm.Disks))
	}
	for i, d := range first.Disks {
		if d.Index != i || d.Capacity != vm.Disks[i].Capacity {
			t.Errorf("snapshot disk %d is %+v, want index %d and capacity %d", i, d, i, vm.Disks[i].Capacity)
		}
		if c.fx.Capabilities.ChangeTracking && d.ChangeID == "" {
			t.Errorf("snapshot disk %d has no ChangeID, though ChangeTracking is declared", i)
		}
	}
	second := c.snapshot(t, "lifecycle")

	list := func() map[string]int {
		t.Helper()
		snaps, err := c.src.ListSnapshots(c.ctx, c.fx.VM)
		if err != nil {
			t.Fatalf("ListSnapshots: %v", err)
		}
		at := map[string]int{}
		for i, s := range snaps {
			at[s.ID] = i
			if (s.ID == first.ID && s.Name != first.Name) || (s.ID == second.ID && s.Name != second.Name) {
				t.Errorf("ListSnapshots names snapshot %q %q", s.ID, s.Name)
			}
		}
		return at
	}
	at := list()
	i1, ok1 := at[first.ID]
	i2, ok2 := at[second.ID]
	if !ok1 || !ok2 {
		t.Fatalf("ListSnapshots misses snapshot %q (%v) or %q (%v)", first.ID, ok1, second.ID, ok2)
	}
	if i1 > i2 {
		t.Errorf("ListSnapshots is not oldest first: %q at %d after %q at %d", first.ID, i1, second.ID, i2)
	}

	for i := range 2 {
		if err := c.src.RemoveSnapshot(c.ctx, c.fx.VM, first.ID); err != nil {
			t.Fatalf("RemoveSnapshot(%q), time %d: %v", first.ID, i+1, err)
		}
	}
	at = list()
	if _, ok := at[first.ID]; ok {
		t.Errorf("ListSnapshots lists %q after RemoveSnapshot", first.ID)
	}
	if _, ok := at[second.ID]; !ok {
		t.Errorf("removing %q also removed %q", first.ID, second.ID)
	}
	if err := c.src.RemoveSnapshot(c.ctx, c.fx.VM, uniqueName(c.rng, "no-such-snapshot")); err != nil {
		t.Errorf("RemoveSnapshot of an unknown snapshot: %v, want success", err)
	}
}

func (c *sourceCheck) snapshotQuiesce(t *testing.T) {
	if !c.fx.Capabilities.Quiesce {
		t.Skip("capability Quiesce not declared")
	}
	snap := c.snapshotWith(t, sdk.SnapshotRequest{VM: c.fx.VM, Name: uniqueName(c.rng, "quiesce"), Quiesce: true})
	if !snap.Quiesced {
		t.Error("a snapshot asked to quiesce says it is not quiesced")
	}
}

// snapshotFrozen writes after a snapshot and checks that the snapshot does
// not see the write and that a newer one does; then writes again and checks
// that removing both snapshots keeps the last write.
func (c *sourceCheck) snapshotFrozen(t *testing.T) {
	c.needWrite(t)
	vm := c.describe(t)
	regions := make([]span, len(vm.Disks))
	for d, disk := range vm.Disks {
		regions[d] = randomSpan(c.rng, disk.Capacity, 64<<10+13)
	}
	before := c.snapshot(t, "frozen-before")
	old := make([][]byte, len(vm.Disks))
	openBefore := make([]sdk.DiskReader, len(vm.Disks))
	for d := range vm.Disks {
		openBefore[d] = c.open(t, before, d)
		old[d] = make([]byte, len(regions[d].data))
		if n, err := openBefore[d].ReadAt(old[d], regions[d].off); n != len(old[d]) || (err != nil && err != io.EOF) {
			t.Fatalf("read snapshot disk %d: %d of %d bytes: %v", d, n, len(old[d]), err)
		}
		regions[d].data = differentBytes(c.rng, old[d])
		c.write(t, d, regions[d])
	}
	readRegion := func(snap *sdk.Snapshot, r sdk.DiskReader, d int) []byte {
		t.Helper()
		got := make([]byte, len(regions[d].data))
		if n, err := r.ReadAt(got, regions[d].off); n != len(got) || (err != nil && err != io.EOF) {
			t.Fatalf("read snapshot %q disk %d: %d of %d bytes: %v", snap.ID, d, n, len(got), err)
		}
		return got
	}
	for d := range vm.Disks {
		if msg := diffBytes(readRegion(before, openBefore[d], d), old[d], regions[d].off); msg != "" {
			t.Errorf("disk %d, read through a reader opened before the write: the snapshot changed: %s", d, msg)
		}
		closeDisk(t, openBefore[d], "snapshot disk")
		r := c.open(t, before, d)
		if msg := diffBytes(readRegion(before, r, d), old[d], regions[d].off); msg != "" {
			t.Errorf("disk %d, read through a reader opened after the write: the snapshot changed: %s", d, msg)
		}
		closeDisk(t, r, "snapshot disk")
	}
	after := c.snapshot(t, "frozen-after")
	for d := range vm.Disks {
		r := c.open(t, after, d)
		if msg := diffBytes(readRegion(after, r, d), regions[d].data, regions[d].off); msg != "" {
			t.Errorf("disk %d: a snapshot taken after the write does not hold it: %s", d, msg)
		}
		closeDisk(t, r, "snapshot disk")
	}
	// Write again, after both snapshots: removing either must keep it.
	for d := range vm.Disks {
		regions[d].data = differentBytes(c.rng, regions[d].data)
		c.write(t, d, regions[d])
	}
	for _, s := range []*sdk.Snapshot{before, after} {
		if err := c.src.RemoveSnapshot(c.ctx, c.fx.VM, s.ID); err != nil {
			t.Fatalf("RemoveSnapshot(%q): %v", s.ID, err)
		}
	}
	last := c.snapshot(t, "frozen-last")
	for d := range vm.Disks {
		r := c.open(t, last, d)
		if msg := diffBytes(readRegion(last, r, d), regions[d].data, regions[d].off); msg != "" {
			t.Errorf("disk %d: a write made while snapshots existed did not survive their removal: %s", d, msg)
		}
		closeDisk(t, r, "snapshot disk")
	}
}

// exactFixture writes known data to awkward places of every disk (when it
// can), snapshots, and returns the snapshot with each disk read in full.
func (c *sourceCheck) exactFixture(t *testing.T) (*sdk.Snapshot, [][]byte, [][]span) {
	vm := c.describe(t)
	written := make([][]span, len(vm.Disks))
	if c.fx.Write != nil {
		for d, disk := range vm.Disks {
			written[d] = scattered(c.rng, disk.Capacity, 6)
			for _, s := range written[d] {
				c.write(t, d, s)
			}
		}
	}
	snap := c.snapshot(t, "read")
	data := make([][]byte, len(vm.Disks))
	for d := range vm.Disks {
		data[d] = c.readSnapshot(t, snap, d)
		model := append([]byte(nil), data[d]...)
		apply(model, written[d])
		if msg := diffBytes(data[d], model, 0); msg != "" {
			t.Fatalf("disk %d does not hold what was written before the snapshot: %s", d, msg)
		}
	}
	return snap, data, written
}

// randomReads reads n random ranges of r, of up to maxLen bytes, and
// compares them with want.
func randomReads(rng *rand.Rand, r io.ReaderAt, want []byte, n, maxLen int) error {
	size := int64(len(want))
	for range n {
		s := randomSpan(rng, size, maxLen)
		got := make([]byte, len(s.data))
		k, err := r.ReadAt(got, s.off)
		if k != len(got) {
			return fmt.Errorf("ReadAt(%d bytes at %d) read %d: %v", len(got), s.off, k, err)
		}
		if err != nil && !(err == io.EOF && s.end() == size) {
			return fmt.Errorf("ReadAt(%d bytes at %d): %v", len(got), s.off, err)
		}
		if msg := diffBytes(got, want[s.off:s.end()], s.off); msg != "" {
			return fmt.Errorf("ReadAt(%d bytes at %d): %s", len(got), s.off, msg)
		}
	}
	return nil
}

func (c *sourceCheck) readExact(t *testing.T) {
	snap, data, _ := c.exactFixture(t)
	for d := range data {
		r := c.open(t, snap, d)
		if err := randomReads(c.rng, r, data[d], 200, 256<<10); err != nil {
			t.Errorf("disk %d: %v", d, err)
		}
		closeDisk(t, r, "snapshot disk")
	}
}

func (c *sourceCheck) readConcurrent(t *testing.T) {
	snap, data, _ := c.exactFixture(t)
	for d := range data {
		r := c.open(t, snap, d)
		var wg sync.WaitGroup
		for g := range 8 {
			rng := rand.New(rand.NewPCG(c.rng.Uint64(), uint64(g)))
			wg.Go(func() {
				if err := randomReads(rng, r, data[d], 25, 64<<10); err != nil {
					t.Errorf("disk %d, goroutine %d: %v", d, g, err)
				}
			})
		}
		wg.Wait()
		closeDisk(t, r, "snapshot disk")
	}
}

func (c *sourceCheck) readPastEnd(t *testing.T) {
	snap, data, _ := c.exactFixture(t)
	for d := range data {
		r := c.open(t, snap, d)
		checkReadPastEnd(t, r, data[d])
		closeDisk(t, r, "snapshot disk")
	}
}

// checkReadPastEnd holds r to io.ReaderAt at the end of the disk: a short
// read returns io.EOF itself (callers compare with ==), a read at the end
// returns 0 and io.EOF, a read before the start fails.
func checkReadPastEnd(t *testing.T, r io.ReaderAt, want []byte) {
	t.Helper()
	size := int64(len(want))
	buf := make([]byte, 100)
	n, err := r.ReadAt(buf[:10], size)
	if n != 0 || err != io.EOF {
		t.Errorf("ReadAt(10 bytes at the end, %d) = %d, %v; want 0, io.EOF", size, n, err)
	}
	n, err = r.ReadAt(buf[:10], size+4096)
	if n != 0 || err != io.EOF {
		t.Errorf("ReadAt(10 bytes past the end, %d) = %d, %v; want 0, io.EOF", size+4096, n, err)
	}
	tail := min(size, 10)
	n, err = r.ReadAt(buf, size-tail)
	if n != int(tail) || err != io.EOF {
		t.Errorf("ReadAt(100 bytes at %d, %d before the end) = %d, %v; want %d, io.EOF (unwrapped)", size-tail, tail, n, err, tail)
	} else if msg := diffBytes(buf[:n], want[size-tail:], size-tail); msg != "" {
		t.Errorf("a read across the end: %s", msg)
	}
	n, err = r.ReadAt(buf[:tail], size-tail)
	if n != int(tail) || (err != nil && err != io.EOF) {
		t.Errorf("ReadAt(the last %d bytes) = %d, %v; want %d, nil or io.EOF", tail, n, err, tail)
	}
	if _, err := r.ReadAt(buf[:10], -1); err == nil {
		t.Error("ReadAt at offset -1 succeeded")
	}
}

func (c *sourceCheck) readSize(t *testing.T) {
	vm := c.describe(t)
	snap := c.snapshot(t, "size")
	for d, disk := range vm.Disks {
		r := c.open(t, snap, d)
		if r.Size() != disk.Capacity || snap.Disks[d].Capacity != disk.Capacity {
			t.Errorf("disk %d: reader Size %d, snapshot capacity %d, VM disk capacity %d: want all equal", d, r.Size(), snap.Disks[d].Capacity, disk.Capacity)
		}
		closeDisk(t, r, "snapshot disk")
	}
}

func (c *sourceCheck) localPath(t *testing.T) {
	if !c.fx.Capabilities.DirectData {
		t.Skip("capability DirectData not declared")
	}
	snap, data, _ := c.exactFixture(t)
	offered := false
	for d := range data {
		r := c.open(t, snap, d)
		lp, ok := r.(sdk.LocalPather)
		if !ok {
			closeDisk(t, r, "snapshot disk")
			continue
		}
		offered = true
		if err := compareFile(lp.LocalPath(), data[d]); err != nil {
			t.Errorf("disk %d: the local path disagrees with ReadAt: %v", d, err)
		}
		closeDisk(t, r, "snapshot disk")
	}
	if !offered {
		t.Skip("no snapshot disk reader implements sdk.LocalPather")
	}
}

// compareFile compares the first len(want) bytes of a file with want.
func compareFile(path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return compareReader(f, want)
}

func (c *sourceCheck) changedFull(t *testing.T) {
	snap, data, _ := c.exactFixture(t)
	for d := range data {
		exts, err := c.changedAreas(t, snap, d, "")
		if err != nil {
			t.Fatalf("ChangedAreas(disk %d, every allocated area): %v", d, err)
		}
		if off, ok := firstUncoveredNonZero(data[d], exts); ok {
			t.Errorf("disk %d: byte %d is not zero but no area covers it", d, off)
		}
	}
}

// changedIncremental writes between snapshots and checks that the changed
// areas since an older change id cover every byte written since.
func (c *sourceCheck) changedIncremental(t *testing.T) {
	c.needTracking(t)
	c.needWrite(t)
	vm := c.describe(t)
	first := c.snapshot(t, "cbt-1")
	writesA := make([][]span, len(vm.Disks))
	for d, disk := range vm.Disks {
		writesA[d] = scattered(c.rng, disk.Capacity, 24)
		for _, s := range writesA[d] {
			c.write(t, d, s)
		}
	}
	second := c.snapshot(t, "cbt-2")
	writesB := make([][]span, len(vm.Disks))
	for d, disk := range vm.Disks {
		writesB[d] = scattered(c.rng, disk.Capacity, 8)
		for _, s := range writesB[d] {
			c.write(t, d, s)
		}
	}
	third := c.snapshot(t, "cbt-3")
	cases := []struct {
		name      string
		from, to  *sdk.Snapshot
		wantCover func(d int) []span
	}{
		{"first to second", first, second, func(d int) []span { return writesA[d] }},
		{"second to third", second, third, func(d int) []span { return writesB[d] }},
		{"first to third", first, third, func(d int) []span { return append(append([]span(nil), writesA[d]...), writesB[d]...) }},
	}
	for _, tc := range cases {
		for d := range vm.Disks {
			id := tc.from.Disks[d].ChangeID
			exts, err := c.changedAreas(t, tc.to, d, id)
			if err != nil {
				t.Errorf("%s, disk %d: ChangedAreas since %q: %v", tc.name, d, id, err)
				continue
			}
			for _, s := range tc.wantCover(d) {
				if off, missed := firstUncovered(exts, sdk.Extent{Offset: s.off, Length: int64(len(s.data))}); missed {
					t.Errorf("%s, disk %d: the write [%d, %d) is not covered: byte %d is in no changed area", tc.name, d, s.off, s.end(), off)
					break
				}
			}
		}
	}
}

func (c *sourceCheck) changedBogus(t *testing.T) {
	c.needTracking(t)
	snap := c.snapshot(t, "cbt-bogus")
	_, err := c.changedAreas(t, snap, 0, "sdktest-bogus-change-id")
	wantClass(t, "ChangedAreas since a change id the source never gave", err, errdefs.ErrChangeIDReset)
}

func (c *sourceCheck) changedReset(t *testing.T) {
	c.needTracking(t)
	if c.fx.ResetChangeTracking == nil {
		t.Skip("SourceFixture.ResetChangeTracking is nil")
	}
	first := c.snapshot(t, "cbt-reset-1")
	c.fx.ResetChangeTracking(t, c.fx.VM, 0)
	second := c.snapshot(t, "cbt-reset-2")
	_, err := c.changedAreas(t, second, 0, first.Disks[0].ChangeID)
	wantClass(t, "ChangedAreas since a change id from before a tracking reset", err, errdefs.ErrChangeIDReset)

	// Tracking works again from the reset on.
	var writes []span
	if c.fx.Write != nil {
		writes = scattered(c.rng, second.Disks[0].Capacity, 8)
		for _, s := range writes {
			c.write(t, 0, s)
		}
	}
	third := c.snapshot(t, "cbt-reset-3")
	exts, err := c.changedAreas(t, third, 0, second.Disks[0].ChangeID)
	if err != nil {
		t.Fatalf("ChangedAreas since a change id taken after the reset: %v", err)
	}
	for _, s := range writes {
		if off, missed := firstUncovered(exts, sdk.Extent{Offset: s.off, Length: int64(len(s.data))}); missed {
			t.Errorf("after the reset, the write [%d, %d) is not covered: byte %d is in no changed area", s.off, s.end(), off)
		}
	}
}

func (c *sourceCheck) changedCallbackError(t *testing.T) {
	if c.fx.Write != nil {
		c.write(t, 0, randomSpan(c.rng, c.describe(t).Disks[0].Capacity, 4096))
	}
	snap := c.snapshot(t, "cbt-callback")
	stop := errors.New("sdktest: the callback says stop")
	calls := 0
	err := c.src.ChangedAreas(c.ctx, sdk.ChangedAreasRequest{VM: c.fx.VM, Snapshot: snap.ID, Disk: 0}, func([]sdk.Extent) error {
		calls++
		return stop
	})
	if calls == 0 && err == nil {
		t.Skip("the disk has no allocated areas to report, so the callback was never called")
	}
	if !errors.Is(err, stop) {
		t.Errorf("ChangedAreas whose callback fails: got %v, want the callback's error", err)
	}
	if calls > 1 {
		t.Errorf("ChangedAreas called its callback %d times after it failed", calls-1)
	}
}

func (c *sourceCheck) cancel(t *testing.T) {
	snap := c.snapshot(t, "cancel")
	name := uniqueName(c.rng, "cancel")
	calls := []struct {
		what string
		call func(ctx context.Context) error
	}{
		{"ListVMs", func(ctx context.Context) error { _, err := c.src.ListVMs(ctx); return err }},
		{"DescribeVM", func(ctx context.Context) error { _, err := c.src.DescribeVM(ctx, c.fx.VM); return err }},
		{"ListSnapshots", func(ctx context.Context) error { _, err := c.src.ListSnapshots(ctx, c.fx.VM); return err }},
		{"CreateSnapshot", func(ctx context.Context) error {
			_, err := c.src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: c.fx.VM, Name: name})
			return err
		}},
		{"ChangedAreas", func(ctx context.Context) error {
			return c.src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: c.fx.VM, Snapshot: snap.ID}, func([]sdk.Extent) error { return nil })
		}},
		{"OpenSnapshotDisk", func(ctx context.Context) error {
			r, err := c.src.OpenSnapshotDisk(ctx, c.fx.VM, snap.ID, 0)
			if err == nil {
				r.Close()
			}
			return err
		}},
	}
	for _, call := range calls {
		expectCanceled(t, c.deadline, call.what, call.call)
	}
	// A snapshot whose creation was cancelled may still have been made;
	// the core finds such leftovers by name, and so does this check.
	snaps, err := c.src.ListSnapshots(c.ctx, c.fx.VM)
	if err != nil {
		t.Fatalf("ListSnapshots: %v", err)
	}
	for _, s := range snaps {
		if s.Name == name {
			if err := c.src.RemoveSnapshot(c.ctx, c.fx.VM, s.ID); err != nil {
				t.Errorf("remove the snapshot left by a cancelled CreateSnapshot: %v", err)
			}
		}
	}
}
