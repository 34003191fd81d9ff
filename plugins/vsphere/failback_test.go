package vsphere

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// fbSite is a source site with one running VM of two disks holding data.
func fbSite(t *testing.T) (*vcsimtest.Site, [][]byte) {
	t.Helper()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "app", Disks: []int64{2 << 20, 1 << 20}, PoweredOn: true,
		NICs: []vcsimtest.NICSpec{{Network: "VM Network"}}})
	rng := rand.New(rand.NewPCG(3, 5))
	var before [][]byte
	for d, size := range []int64{2 << 20, 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		s.Write(t, "app", d, 0, data)
		before = append(before, data)
	}
	return s, before
}

func powerOf(t *testing.T, s *vcsimtest.Site, vm string) types.VirtualMachinePowerState {
	t.Helper()
	return s.VM(t, vm).Runtime.PowerState
}

// TestFailbackNeedsTheMount: a source that cannot reach the VM's
// datastore through a mount refuses a failback before it changes
// anything, naming the datastore.
func TestFailbackNeedsTheMount(t *testing.T) {
	t.Parallel()
	s, _ := fbSite(t)
	src := newTestSource(t, s, false, nil)
	_, err := src.BeginFailback(context.Background(), sdk.FailbackRequest{ID: "fb-1", VM: "app"})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !bytes.Contains([]byte(err.Error()), []byte(`"LocalDS_0"`)) {
		t.Fatalf("BeginFailback without the mount: %v, want ErrFailedPrecondition naming the datastore", err)
	}
	if p := powerOf(t, s, "app"); p != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("a refused failback left the VM %s", p)
	}
}

// TestFailbackKilledWriterUndone: a source process dies while a failback
// writes (its writer never closed); another instance undoes the failback
// and every byte is back, the VM running as before. A commit in a third
// failback resets change tracking: a change id from before is answered
// with ErrChangeIDReset.
func TestFailbackKilledWriterUndone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, before := fbSite(t)
	src := newTestSource(t, s, true, nil)
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb-1", VM: "app"}); err != nil {
		t.Fatal(err)
	}
	w, err := src.OpenFailbackDisk(ctx, "app", "fb-1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := bytes.Repeat([]byte{0xEE}, 200<<10)
	for _, off := range []int64{0, 700 << 10, 2<<20 - 200<<10} {
		if _, err := w.WriteAt(junk, off); err != nil {
			t.Fatal(err)
		}
	}
	if files := s.Files(t, "app"); !slices.Contains(files, filepath.Join(ferryDir, failbackFile)) || !slices.Contains(files, filepath.Join(ferryDir, failbackStoreDir, undoName(0))) {
		t.Fatalf("the VM's folder during a failback: %v, want its failback and undo store", files)
	}
	// The process dies: w is never closed; a new instance goes on.
	again := newTestSource(t, s, true, nil)
	if _, err := again.OpenFailbackDisk(ctx, "app", "fb-2", 0, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a writer of another failback: %v, want ErrFailedPrecondition", err)
	}
	if err := again.UndoFailback(ctx, "app", "fb-1"); err != nil {
		t.Fatal(err)
	}
	for d := range before {
		if !bytes.Equal(s.Disk(t, "app", d), before[d]) {
			t.Fatalf("disk %d differs after the undo", d)
		}
	}
	if p := powerOf(t, s, "app"); p != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("after the undo the VM is %s, was on", p)
	}
	if slices.Contains(s.Files(t, "app"), filepath.Join(ferryDir, failbackFile)) {
		t.Error("failback.json survived the undo")
	}

	snap, err := again.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "app", Name: "before"})
	if err != nil {
		t.Fatal(err)
	}
	id := snap.Disks[0].ChangeID
	if err := again.RemoveSnapshot(ctx, "app", snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := again.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb-3", VM: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, err := again.StartFailback(ctx, "app", "fb-3"); err != nil {
		t.Fatal(err)
	}
	if err := again.CommitFailback(ctx, "app", "fb-3"); err != nil {
		t.Fatal(err)
	}
	after, err := again.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "app", Name: "after"})
	if err != nil {
		t.Fatal(err)
	}
	defer again.RemoveSnapshot(ctx, "app", after.ID)
	err = again.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: "app", Snapshot: after.ID, Disk: 0, ChangeID: id}, func([]sdk.Extent) error { return nil })
	if !errors.Is(err, errdefs.ErrChangeIDReset) {
		t.Fatalf("changed areas since a change id from before a committed failback: %v, want ErrChangeIDReset", err)
	}
}

// TestFailbackCreatesVM: a failback to a VM that does not exist creates
// it, off, with the description's disks (empty) and NICs; it takes the
// writes, starts, and its undo destroys it. A VM created by a call that
// died before failback.json was written is known by its mark: undo
// destroys it too.
func TestFailbackCreatesVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, _ := fbSite(t)
	src := newTestSource(t, s, true, nil)
	desc, err := src.DescribeVM(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	create := *desc
	create.Name, create.ID = "app-copy", ""
	vm, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb-1", VM: "app-copy", Create: &create})
	if err != nil {
		t.Fatal(err)
	}
	if vm.PowerState != "off" || len(vm.Disks) != 2 || vm.Disks[0].Capacity != 2<<20 || len(vm.NICs) != 1 || vm.NICs[0].Network != "VM Network" {
		t.Fatalf("the created VM: %+v", vm)
	}
	w, err := src.OpenFailbackDisk(ctx, "app-copy", "fb-1", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("ferry"), 1000)
	if _, err := w.WriteAt(data, 4096); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.Disk(t, "app-copy", 1); !bytes.Equal(got[4096:4096+len(data)], data) {
		t.Fatal("the created VM's disk does not hold the write")
	}
	if v, err := src.StartFailback(ctx, "app-copy", "fb-1"); err != nil || v.PowerState != "on" {
		t.Fatalf("StartFailback: %+v, %v", v, err)
	}
	for range 2 {
		if err := src.UndoFailback(ctx, "app-copy", "fb-1"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.DescribeVM(ctx, "app-copy"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the created VM after undo: %v, want ErrNotFound", err)
	}

	// Created, then the process died before recording the failback.
	if _, err := src.createVM(ctx, sdk.FailbackRequest{ID: "fb-2", VM: "app-copy", Create: &create}); err != nil {
		t.Fatal(err)
	}
	if err := newTestSource(t, s, true, nil).UndoFailback(ctx, "app-copy", "fb-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.DescribeVM(ctx, "app-copy"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a VM created by a killed begin survived its undo: %v", err)
	}
}

// TestFailbackUndoAfterSwitch: production started by the switch writes;
// an undo then gives back every byte as before the failback (what the
// failback wrote and what production wrote since), and a commit keeps
// both. Neither leaves a snapshot.
func TestFailbackUndoAfterSwitch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, before := fbSite(t)
	src := newTestSource(t, s, true, nil)
	fail := func(id string) []byte {
		t.Helper()
		if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: id, VM: "app"}); err != nil {
			t.Fatal(err)
		}
		w, err := src.OpenFailbackDisk(ctx, "app", id, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(bytes.Repeat([]byte{0xAB}, 100<<10), 64<<10); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := src.StartFailback(ctx, "app", id); err != nil {
			t.Fatal(err)
		}
		if _, err := src.StartFailback(ctx, "app", id); err != nil {
			t.Fatalf("StartFailback again: %v", err)
		}
		// Production runs and writes, inside and outside the failback's
		// blocks.
		s.Write(t, "app", 0, 100<<10, bytes.Repeat([]byte{0xCD}, 8<<10))
		s.Write(t, "app", 0, 1<<20, bytes.Repeat([]byte{0xCD}, 8<<10))
		s.Write(t, "app", 1, 0, bytes.Repeat([]byte{0xCD}, 8<<10))
		return s.Disk(t, "app", 0)
	}
	noSnapshots := func(when string) {
		t.Helper()
		if snap := s.VM(t, "app").Snapshot; snap != nil && len(snap.RootSnapshotList) > 0 {
			t.Fatalf("%s: snapshots left: %+v", when, snap.RootSnapshotList)
		}
	}

	fail("fb-1")
	if err := src.UndoFailback(ctx, "app", "fb-1"); err != nil {
		t.Fatal(err)
	}
	for d := range before {
		if !bytes.Equal(s.Disk(t, "app", d), before[d]) {
			t.Fatalf("disk %d after an undo after the switch differs from before the failback", d)
		}
	}
	if p := powerOf(t, s, "app"); p != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("after the undo the VM is %s", p)
	}
	noSnapshots("after the undo")

	want := fail("fb-2")
	if err := src.CommitFailback(ctx, "app", "fb-2"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Disk(t, "app", 0), want) {
		t.Fatal("the commit lost writes")
	}
	noSnapshots("after the commit")
}

// TestFailbackRefusesHotAdd: a replica written through HotAdd fails over
// without failback tracking; failback's reads of it are refused, saying
// why, and its writes are ErrChangeIDReset.
func TestFailbackRefusesHotAdd(t *testing.T) {
	t.Parallel()
	s := hotaddDRSite(t)
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "dr-proxy"})
	tgt := hotaddTarget(t, s, p, t.TempDir())
	r := pointedReplica(t, tgt, "fb-hotadd")
	if _, err := tgt.Failover(t.Context(), sdk.FailoverRequest{Replica: r.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.OpenFailedOverDisk(t.Context(), r.ID, 0); !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("OpenFailedOverDisk of a HotAdd replica = %v, want ErrUnimplemented", err)
	}
	_, err := tgt.FailedOverChanges(t.Context(), sdk.FailedOverChangesRequest{Replica: r.ID}, func([]sdk.Extent) error { return nil })
	if !errors.Is(err, errdefs.ErrChangeIDReset) {
		t.Fatalf("FailedOverChanges of a HotAdd replica = %v, want ErrChangeIDReset", err)
	}
	if _, err := tgt.UndoFailover(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
}
