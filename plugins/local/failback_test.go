package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// changes collects what FailedOverChanges reports.
func changes(t *testing.T, tgt *Target, replica string, disk int, since string) ([]sdk.Extent, string, error) {
	t.Helper()
	var out []sdk.Extent
	mark, err := tgt.FailedOverChanges(context.Background(), sdk.FailedOverChangesRequest{Replica: replica, Disk: disk, Since: since}, func(b []sdk.Extent) error {
		out = append(out, b...)
		return nil
	})
	return out, mark, err
}

// covers reports whether the extents cover [off, off+n).
func covers(ext []sdk.Extent, off, n int64) bool {
	for _, e := range sdk.MergeExtents(ext) {
		if e.Offset <= off && off+n <= e.End() {
			return true
		}
	}
	return false
}

func TestFailedOverChanges(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	tgt, _ := NewTarget(root)
	r := newReplica(t, tgt, "fo")
	rng := testRand(t)
	r.fill(t, rng)
	r.point(t, nil)
	if _, _, err := changes(t, tgt, "fo", 0, ""); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("changes of a replica not failed over: %v", err)
	}
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo"}); err != nil {
		t.Fatal(err)
	}
	ext, m0, err := changes(t, tgt, "fo", 0, "")
	if err != nil || len(ext) != 0 || m0 == "" {
		t.Fatalf("changes right after the failover: %v %v %q", ext, err, m0)
	}
	guest := newSite(root)
	if err := guest.trackedWrite(ctx, "fo", 0, 12345, []byte("written at dr")); err != nil {
		t.Fatal(err)
	}
	ext, m1, err := changes(t, tgt, "fo", 0, "")
	if err != nil || !covers(ext, 12345, 13) {
		t.Fatalf("changes since the failover: %v %v", ext, err)
	}
	if err := guest.trackedWrite(ctx, "fo", 0, 1<<20, []byte("later")); err != nil {
		t.Fatal(err)
	}
	ext, _, err = changes(t, tgt, "fo", 0, m1)
	if err != nil || covers(ext, 12345, 13) || !covers(ext, 1<<20, 5) {
		t.Fatalf("changes since a mark: %v %v", ext, err)
	}
	if ext, _, err := changes(t, tgt, "fo", 1, ""); err != nil || len(ext) != 0 {
		t.Fatalf("changes of a disk nobody wrote: %v %v", ext, err)
	}

	rd, err := tgt.OpenFailedOverDisk(ctx, "fo", 0)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := os.ReadFile(diskFile(filepath.Join(root, "fo"), 0))
	mustEqual(t, "failed-over disk", readAllAt(t, rd), img)
	rd.Close()

	if rep, err := tgt.SetReplicaPower(ctx, "fo", false); err != nil || rep.VM.PowerState != "off" {
		t.Fatalf("power off: %v %+v", err, rep)
	}
	if err := guest.trackedWrite(ctx, "fo", 0, 0, []byte("x")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a guest write into a powered-off vm: %v", err)
	}
	if rep, err := tgt.SetReplicaPower(ctx, "fo", true); err != nil || rep.VM.PowerState != "on" {
		t.Fatalf("power on: %v %+v", err, rep)
	}

	// An untracked change: tracking cannot tell any more.
	f, _ := os.OpenFile(diskFile(filepath.Join(root, "fo"), 0), os.O_RDWR, 0)
	f.WriteAt([]byte("dd"), 4096)
	f.Close()
	if _, _, err := changes(t, tgt, "fo", 0, m1); !errors.Is(err, errdefs.ErrChangeIDReset) {
		t.Errorf("changes after an untracked write: %v", err)
	}
	if _, err := tgt.UndoFailover(ctx, "fo"); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.OpenFailedOverDisk(ctx, "fo", 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("open a disk of a replica no longer failed over: %v", err)
	}
}

// prodVM makes a production site with VM "app" filled with data, and
// returns its source and each disk's content.
func prodVM(t *testing.T) (*Source, [][]byte) {
	t.Helper()
	s := newTestSite(t, "app", 1<<20, 256<<10+512)
	rng := testRand(t)
	var disks [][]byte
	for i, size := range []int64{1 << 20, 256<<10 + 512} {
		d := randomData(rng, int(size))
		if err := s.trackedWrite(context.Background(), "app", i, 0, d); err != nil {
			t.Fatal(err)
		}
		disks = append(disks, d)
	}
	return &Source{site: s}, disks
}

func readVMDisk(t *testing.T, src *Source, vm string, disk int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := src.site.readCurrent(context.Background(), vm, disk, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// failbackWrite writes spans into a disk through a failback writer.
func failbackWrite(t *testing.T, src *Source, id string, disk int, spans ...span) {
	t.Helper()
	w, err := src.OpenFailbackDisk(context.Background(), "app", id, disk, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if _, err := w.WriteAt(s.data, s.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFailbackWriter(t *testing.T) {
	ctx := context.Background()
	src, orig := prodVM(t)
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "app", Name: "before"})
	if err != nil {
		t.Fatal(err)
	}
	changeID := snap.Disks[0].ChangeID
	if err := src.RemoveSnapshot(ctx, "app", snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := src.OpenFailbackDisk(ctx, "app", "fb1", 0, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("open before begin: %v", err)
	}
	vm, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb1", VM: "app"})
	if err != nil || vm.PowerState != "off" {
		t.Fatalf("begin: %v %+v", err, vm)
	}
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb1", VM: "app"}); err != nil {
		t.Errorf("begin again: %v", err)
	}
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb2", VM: "app"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a second failback: %v", err)
	}
	rng := testRand(t)
	spans := scatter(rng, 1<<20, 6)
	failbackWrite(t, src, "fb1", 0, spans...)
	want := bytes.Clone(orig[0])
	for _, s := range spans {
		copy(want[s.off:], s.data)
	}
	mustEqual(t, "disk after failback writes", readVMDisk(t, src, "app", 0), want)

	// The writes are tracked: a run after the commit sends them.
	snap, err = src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "app", Name: "after"})
	if err != nil {
		t.Fatal(err)
	}
	var ext []sdk.Extent
	if err := src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: "app", Snapshot: snap.ID, Disk: 0, ChangeID: changeID}, func(b []sdk.Extent) error {
		ext = append(ext, b...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if !covers(ext, s.off, int64(len(s.data))) {
			t.Errorf("change tracking misses the failback write at %d", s.off)
		}
	}
	if err := src.RemoveSnapshot(ctx, "app", snap.ID); err != nil {
		t.Fatal(err)
	}

	if err := src.site.trackedWrite(ctx, "app", 1, 0, []byte("a guest write while off")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a guest write while the failback keeps the vm off: %v", err)
	}
	if v, err := src.StartFailback(ctx, "app", "fb1"); err != nil || v.PowerState != "on" {
		t.Fatalf("start: %v %+v", err, v)
	}
	// Production runs and its guest writes: undo gives that back too.
	if err := src.site.trackedWrite(ctx, "app", 1, 5000, []byte("after the switch")); err != nil {
		t.Fatal(err)
	}
	if err := src.UndoFailback(ctx, "app", "fb2"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("undo of another failback: %v", err)
	}
	if err := src.UndoFailback(ctx, "app", "fb1"); err != nil {
		t.Fatal(err)
	}
	for d := range orig {
		mustEqual(t, "disk after undo", readVMDisk(t, src, "app", d), orig[d])
	}
	if v, _ := src.DescribeVM(ctx, "app"); v.PowerState != "on" {
		t.Errorf("power after undo: %s", v.PowerState)
	}
	if err := src.UndoFailback(ctx, "app", "fb1"); err != nil {
		t.Errorf("undo again: %v", err)
	}

	// Commit keeps the writes and drops the undo store.
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb2", VM: "app"}); err != nil {
		t.Fatal(err)
	}
	failbackWrite(t, src, "fb2", 1, span{1000, []byte("committed")})
	if err := src.CommitFailback(ctx, "app", "fb2"); err != nil {
		t.Fatal(err)
	}
	if err := src.CommitFailback(ctx, "app", "fb2"); err != nil {
		t.Errorf("commit again: %v", err)
	}
	if err := src.UndoFailback(ctx, "app", "fb2"); err != nil {
		t.Errorf("undo after commit: %v", err)
	}
	got := readVMDisk(t, src, "app", 1)
	if !bytes.Equal(got[1000:1009], []byte("committed")) {
		t.Errorf("a committed failback write is gone")
	}
	if _, err := os.Stat(failbackDir(filepath.Join(src.site.root, "app"))); !os.IsNotExist(err) {
		t.Errorf("undo store after commit: %v", err)
	}
}

func TestFailbackCreatesVM(t *testing.T) {
	ctx := context.Background()
	src, _ := prodVM(t)
	desc := testVM()
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb", VM: "new-01"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("begin of a missing vm without a description: %v", err)
	}
	vm, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb", VM: "new-01", Create: &desc})
	if err != nil {
		t.Fatal(err)
	}
	if vm.Name != "new-01" || len(vm.Disks) != 2 || vm.Disks[1].Capacity != desc.Disks[1].Capacity || vm.PowerState != "off" || vm.NICs[0].Addresses[0] != "10.1.0.5/24" {
		t.Fatalf("created vm: %+v", vm)
	}
	w, err := src.OpenFailbackDisk(ctx, "new-01", "fb", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt([]byte("data"), 0)
	w.Close()
	if err := src.UndoFailback(ctx, "new-01", "fb"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.DescribeVM(ctx, "new-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("the vm a failback created survives its undo: %v", err)
	}
	if _, err := src.DescribeVM(ctx, "app"); err != nil {
		t.Errorf("undo of a created vm touched another: %v", err)
	}
}

// TestFailbackWriterCrashes kills the writer and the undo at each step;
// undo afterwards always gives the original disks back.
func TestFailbackWriterCrashes(t *testing.T) {
	for _, step := range []string{"failback-begun", "failback-saved", "write-logged", "failback-undo-journalled", "failback-undo-restored"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			src, orig := prodVM(t)
			src.site.crash = crashAt(step, 1)
			crashed := survive(t, func() {
				if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb", VM: "app"}); err != nil {
					t.Fatal(err)
				}
				w, err := src.OpenFailbackDisk(ctx, "app", "fb", 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				for _, s := range scatter(testRand(t), 1<<20, 4) {
					if _, err := w.WriteAt(s.data, s.off); err != nil {
						t.Fatal(err)
					}
				}
				w.Close()
				if err := src.UndoFailback(ctx, "app", "fb"); err != nil {
					t.Fatal(err)
				}
			})
			if !crashed {
				t.Fatalf("never reached step %s", step)
			}
			src = &Source{site: newSite(src.site.root)}
			if err := src.UndoFailback(ctx, "app", "fb"); err != nil {
				t.Fatal(err)
			}
			for d := range orig {
				mustEqual(t, "disk after a crash and undo", readVMDisk(t, src, "app", d), orig[d])
			}
			if v, _ := src.DescribeVM(ctx, "app"); v.PowerState != "on" {
				t.Errorf("power after undo: %s", v.PowerState)
			}
		})
	}
}
