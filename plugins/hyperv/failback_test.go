package hyperv

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// currentDisk reads a disk of a VM as it is now: its newest file's chain.
func currentDisk(t *testing.T, h host.Host, vm string, disk int) []byte {
	t.Helper()
	v, err := h.GetVM(context.Background(), vm)
	if err != nil {
		t.Fatal(err)
	}
	r, err := openReader(v.Disks[disk].Path, v.Disks[disk].Capacity)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b := make([]byte, r.Size())
	if _, err := r.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func randomData(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func overlaps(ext []sdk.Extent, off, n int64) bool {
	for _, e := range ext {
		if e.Offset < off+n && off < e.End() {
			return true
		}
	}
	return false
}

// failedOverReplica makes a replica on h holding data, with one restore
// point, and fails it over.
func failedOverReplica(t *testing.T, h *simhost.Host, r *rand.Rand) (*Target, *sdk.Replica) {
	t.Helper()
	ctx := context.Background()
	tgt := NewTarget(h, "")
	vm := sdktest.DefaultVM()
	rep, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "app-replica", VM: vm, NetworkMap: []sdk.NetworkMapping{{From: "prod-lan", To: "prod-lan-dr"}, {From: "prod-backup", To: "prod-backup-dr"}}})
	if err != nil {
		t.Fatal(err)
	}
	for d, disk := range vm.Disks {
		w, err := tgt.OpenReplicaDisk(ctx, rep.ID, d, disk.Capacity)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(randomData(r, int(disk.Capacity/2)), 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tgt.CreateRestorePoint(ctx, rep.ID, nil); err != nil {
		t.Fatal(err)
	}
	if rep, err = tgt.Failover(ctx, sdk.FailoverRequest{Replica: rep.ID}); err != nil {
		t.Fatal(err)
	}
	return tgt, rep
}

// TestFailedOverChangesFollowTheGuest: what a failed-over replica's guest
// writes is reported by RCT (never a reset on the simulated host), since
// the failover and since each mark, and nothing older; marks are bounded,
// a mark checkpoint a killed call left is removed, and the failover's
// undo leaves no mark behind.
func TestFailedOverChangesFollowTheGuest(t *testing.T) {
	ctx := context.Background()
	h := newSim(t)
	r := rand.New(rand.NewPCG(1, 2))
	tgt, rep := failedOverReplica(t, h, r)
	size := rep.VM.Disks[0].Capacity
	changes := func(since string) ([]sdk.Extent, string) {
		t.Helper()
		var ext []sdk.Extent
		mark, err := tgt.FailedOverChanges(ctx, sdk.FailedOverChangesRequest{Replica: rep.ID, Disk: 0, Since: since}, func(b []sdk.Extent) error {
			ext = append(ext, b...)
			return nil
		})
		if err != nil {
			t.Fatalf("FailedOverChanges since %q: %v", since, err)
		}
		return ext, mark
	}
	if ext, _ := changes(""); len(ext) != 0 {
		t.Errorf("changes of a replica that wrote nothing since its failover: %v", ext)
	}
	offA, offB := int64(64<<10), size-256<<10
	if err := h.GuestWrite(ctx, rep.ID, 0, offA, randomData(r, 8<<10)); err != nil {
		t.Fatal(err)
	}
	ext, m1 := changes("")
	if !covered(ext, offA, 8<<10) || sumExtents(ext) > 2<<20 {
		t.Errorf("changes since the failover = %v; want the 8 KiB at %d and at most a block or two", ext, offA)
	}
	if err := h.GuestWrite(ctx, rep.ID, 0, offB, randomData(r, 4<<10)); err != nil {
		t.Fatal(err)
	}
	ext, m2 := changes(m1)
	if !covered(ext, offB, 4<<10) || overlaps(ext, offA, 8<<10) {
		t.Errorf("changes since mark %s = %v; want the write at %d alone", m1, ext, offB)
	}
	if ext, _ := changes(""); !covered(ext, offA, 8<<10) || !covered(ext, offB, 4<<10) {
		t.Errorf("changes since the failover = %v; want both writes", ext)
	}
	if ext, _ := changes(m2); len(ext) != 0 {
		t.Errorf("changes since the newest mark, nothing written: %v", ext)
	}
	// A kill between a mark's checkpoint and its conversion leaves it;
	// the next call removes it. Marks stay bounded.
	if _, err := h.CreateCheckpoint(ctx, rep.ID, host.CheckpointRequest{Name: markCheckpoint, Type: host.Recovery}); err != nil {
		t.Fatal(err)
	}
	for range maxMarks + 2 {
		changes("")
	}
	cps, _ := h.ListCheckpoints(ctx, rep.ID)
	refs, _ := h.ListReferencePoints(ctx, rep.ID)
	if slices.ContainsFunc(cps, func(c host.Checkpoint) bool { return c.Name == markCheckpoint }) || len(refs) != maxMarks {
		t.Errorf("after many marks: checkpoints %v, %d reference points (want none of marks, %d)", cps, len(refs), maxMarks)
	}
	if _, err := tgt.UndoFailover(ctx, rep.ID); err != nil {
		t.Fatal(err)
	}
	if refs, _ := h.ListReferencePoints(ctx, rep.ID); len(refs) != 0 {
		t.Errorf("the failover's undo left %d mark reference points", len(refs))
	}
	if _, err := tgt.FailedOverChanges(ctx, sdk.FailedOverChangesRequest{Replica: rep.ID}, func([]sdk.Extent) error { return nil }); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("changes of a replica no longer failed over: %v", err)
	}
}

func covered(ext []sdk.Extent, off, n int64) bool {
	for _, e := range ext {
		if e.Offset <= off && off+n <= e.End() {
			return true
		}
	}
	return false
}

func sumExtents(ext []sdk.Extent) (n int64) {
	for _, e := range ext {
		n += e.Length
	}
	return n
}

// production is a running production VM "prod" on its own simulated host,
// replicated once: orig is its content, change the change id of disk 0 at
// that run.
type prodFixture struct {
	h      *simhost.Host
	id     string
	orig   [][]byte
	change string
	r      *rand.Rand
}

func newProduction(t *testing.T) *prodFixture {
	t.Helper()
	ctx := context.Background()
	h := newSim(t)
	v := sourceVM(t, h, "prod")
	if err := h.SetNotes(ctx, v.ID, "the web server; call Ann"); err != nil {
		t.Fatal(err)
	}
	p := &prodFixture{h: h, id: v.ID, r: rand.New(rand.NewPCG(3, 4))}
	for d, disk := range v.Disks {
		if err := h.GuestWrite(ctx, v.ID, d, 0, randomData(p.r, int(disk.Capacity/2))); err != nil {
			t.Fatal(err)
		}
	}
	src := NewSource(h)
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: v.ID, Name: "ferry-run"})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.RemoveSnapshot(ctx, v.ID, snap.ID); err != nil {
		t.Fatal(err)
	}
	p.change = snap.Disks[0].ChangeID
	if err := h.SetRunning(ctx, v.ID, true); err != nil {
		t.Fatal(err)
	}
	for d := range v.Disks {
		p.orig = append(p.orig, currentDisk(t, h, v.ID, d))
	}
	return p
}

// write writes n random bytes at off through a failback writer.
func (p *prodFixture) write(t *testing.T, src *Source, id string, off int64, n int) []byte {
	t.Helper()
	w, err := src.OpenFailbackDisk(context.Background(), p.id, id, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := currentDisk(t, p.h, p.id, 0)
	data := randomData(p.r, n)
	if _, err := w.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	copy(want[off:], data)
	return want
}

func (p *prodFixture) same(t *testing.T, what string, want [][]byte) {
	t.Helper()
	for d := range want {
		if !bytes.Equal(currentDisk(t, p.h, p.id, d), want[d]) {
			t.Errorf("%s: disk %d differs", what, d)
		}
	}
}

func (p *prodFixture) state(t *testing.T) (running bool, notes string, undo int) {
	t.Helper()
	v, err := p.h.GetVM(context.Background(), p.id)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := p.h.ListCheckpoints(context.Background(), p.id)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cps {
		if c.Type == host.Standard {
			undo++
		}
	}
	return v.Running, v.Notes, undo
}

// TestFailbackCommitKeepsTracking: a committed failback's writes are in
// the next run's changed areas since the change id of the run before the
// failback (the simulated host's RCT sees them); the marker stays in the
// VM's notes, after the VM's own, until that run's snapshot is removed.
func TestFailbackCommitKeepsTracking(t *testing.T) {
	ctx := context.Background()
	p := newProduction(t)
	src := NewSource(p.h)
	v, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb1", VM: "prod"})
	if err != nil || v.PowerState != "off" {
		t.Fatalf("BeginFailback = %+v, %v", v, err)
	}
	const off, n = 1<<20 + 4096, 64 << 10
	want := p.write(t, src, "fb1", off, n)
	if _, err := src.StartFailback(ctx, "prod", "fb1"); err != nil {
		t.Fatal(err)
	}
	if err := src.CommitFailback(ctx, "prod", "fb1"); err != nil {
		t.Fatal(err)
	}
	running, notes, undo := p.state(t)
	own, m, err := splitNotes(notes)
	if !running || undo != 0 || err != nil || m == nil || m.State != fbCommitted || own != "the web server; call Ann" {
		t.Fatalf("after the commit: running %v, %d undo checkpoints, notes %q (%+v, %v)", running, undo, notes, m, err)
	}
	p.same(t, "after the commit", [][]byte{want, p.orig[1]})
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "prod", Name: "ferry-run"})
	if err != nil {
		t.Fatal(err)
	}
	var ext []sdk.Extent
	if err := src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: "prod", Snapshot: snap.ID, Disk: 0, ChangeID: p.change}, func(b []sdk.Extent) error {
		ext = append(ext, b...)
		return nil
	}); err != nil {
		t.Fatalf("changed areas since the run before the failback: %v", err)
	}
	if !covered(ext, off, n) || sumExtents(ext) > 4<<20 {
		t.Errorf("changed areas after the commit = %v; want the failback's write at %d", ext, off)
	}
	if err := src.RemoveSnapshot(ctx, "prod", snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, notes, _ := p.state(t); notes != "the web server; call Ann" {
		t.Errorf("the notes after the run that followed the commit: %q", notes)
	}
}

// TestFailbackCreatesAVM: --to a VM that does not exist creates it, off,
// with the description's disks and adapters; undo removes it, and a
// commit keeps it without the marker's creation flag.
func TestFailbackCreatesAVM(t *testing.T) {
	ctx := context.Background()
	h := newSim(t)
	src := NewSource(h)
	desc := sdktest.DefaultVM()
	desc.Name = "app-copy"
	for i := range desc.NICs {
		desc.NICs[i].MAC = ""
	}
	v, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb1", VM: "app-copy", Create: &desc})
	if err != nil {
		t.Fatal(err)
	}
	if v.PowerState != "off" || len(v.Disks) != len(desc.Disks) || len(v.NICs) != len(desc.NICs) || v.NICs[0].Network != desc.NICs[0].Network {
		t.Fatalf("the created vm: %+v", v)
	}
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb1", VM: "app-copy", Create: &desc}); err != nil {
		t.Fatalf("BeginFailback again: %v", err)
	}
	if vms, _ := h.ListVMs(ctx); len(vms) != 1 {
		t.Fatalf("%d vms after two begins, want 1", len(vms))
	}
	w, err := src.OpenFailbackDisk(ctx, "app-copy", "fb1", 0, desc.Disks[0].Capacity)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("boot sector"), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := src.UndoFailback(ctx, "app-copy", "fb1"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.GetVM(ctx, "app-copy"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the vm a failback created survived its undo: %v", err)
	}
	if err := src.UndoFailback(ctx, "app-copy", "fb1"); err != nil {
		t.Errorf("undo again: %v", err)
	}
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb2", VM: "app-copy", Create: &desc}); err != nil {
		t.Fatal(err)
	}
	if err := src.CommitFailback(ctx, "app-copy", "fb2"); err != nil {
		t.Fatal(err)
	}
	got, err := h.GetVM(ctx, "app-copy")
	if err != nil {
		t.Fatal(err)
	}
	if _, m, _ := splitNotes(got.Notes); m == nil || m.Created || m.State != fbCommitted {
		t.Errorf("the committed vm's marker: %+v", m)
	}
	if err := src.UndoFailback(ctx, "app-copy", "fb2"); err != nil {
		t.Errorf("undo of a committed failback: %v", err)
	}
	if _, err := h.GetVM(ctx, "app-copy"); err != nil {
		t.Errorf("undo of a committed failback removed the vm it created: %v", err)
	}
}

// killed is what the step hook panics with: the call dies there.
type killed struct{ step string }

// dieAt runs fn with a source whose failback dies at step; it fails the
// test when fn does not get there.
func dieAt(t *testing.T, h host.Host, step string, fn func(src *Source)) {
	t.Helper()
	src := NewSource(h)
	src.step = func(name string) {
		if name == step {
			panic(killed{step})
		}
	}
	died := func() (died bool) {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(killed); !ok {
					panic(r)
				}
				died = true
			}
		}()
		fn(src)
		return false
	}()
	if !died {
		t.Fatalf("the call did not reach step %s", step)
	}
}

// TestFailbackKillAtEachStep kills a failback call at each of its steps;
// the same call, made again by a new process, finishes it: production
// reads as it was after an undo and as written after a commit, its power
// state is what it was, and no checkpoint or marker is left.
func TestFailbackKillAtEachStep(t *testing.T) {
	ctx := context.Background()
	const off, n = 512 << 10, 96 << 10
	begin := func(t *testing.T, src *Source) {
		t.Helper()
		if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb1", VM: "prod"}); err != nil {
			t.Fatal(err)
		}
	}
	undone := func(t *testing.T, p *prodFixture) {
		t.Helper()
		p.same(t, "after the undo", p.orig)
		if running, notes, undo := p.state(t); !running || undo != 0 || notes != "the web server; call Ann" {
			t.Errorf("after the undo: running %v, %d undo checkpoints, notes %q", running, undo, notes)
		}
	}
	for _, step := range []string{"failback-marked", "failback-checkpointed"} {
		t.Run("begin at "+step, func(t *testing.T) {
			p := newProduction(t)
			dieAt(t, p.h, step, func(src *Source) { begin(t, src) })
			src := NewSource(p.h)
			begin(t, src)
			if running, _, undo := p.state(t); running || undo != 1 {
				t.Fatalf("after begin ran again: running %v, %d undo checkpoints", running, undo)
			}
			p.write(t, src, "fb1", off, n)
			if err := src.UndoFailback(ctx, "prod", "fb1"); err != nil {
				t.Fatal(err)
			}
			undone(t, p)
		})
	}
	for _, step := range []string{"failback-undo-journalled", "failback-undo-applied", "failback-undo-deleted", "failback-undo-powered"} {
		t.Run("undo at "+step, func(t *testing.T) {
			p := newProduction(t)
			src := NewSource(p.h)
			begin(t, src)
			p.write(t, src, "fb1", off, n)
			if _, err := src.StartFailback(ctx, "prod", "fb1"); err != nil {
				t.Fatal(err)
			}
			// Production runs and writes after the switch: undo drops that too.
			if err := p.h.GuestWrite(ctx, p.id, 1, 0, []byte("after the switch")); err != nil {
				t.Fatal(err)
			}
			dieAt(t, p.h, step, func(src *Source) { src.UndoFailback(ctx, "prod", "fb1") })
			src = NewSource(p.h)
			if err := src.CommitFailback(ctx, "prod", "fb1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("commit of a failback being undone: %v", err)
			}
			if err := src.UndoFailback(ctx, "prod", "fb1"); err != nil {
				t.Fatal(err)
			}
			undone(t, p)
		})
	}
	for _, step := range []string{"failback-commit-journalled", "failback-commit-deleted"} {
		t.Run("commit at "+step, func(t *testing.T) {
			p := newProduction(t)
			src := NewSource(p.h)
			begin(t, src)
			want := p.write(t, src, "fb1", off, n)
			dieAt(t, p.h, step, func(src *Source) { src.CommitFailback(ctx, "prod", "fb1") })
			src = NewSource(p.h)
			if err := src.UndoFailback(ctx, "prod", "fb1"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("undo of a failback being committed: %v", err)
			}
			if err := src.CommitFailback(ctx, "prod", "fb1"); err != nil {
				t.Fatal(err)
			}
			p.same(t, "after the commit", [][]byte{want, p.orig[1]})
			_, notes, undo := p.state(t)
			if _, m, _ := splitNotes(notes); undo != 0 || m == nil || m.State != fbCommitted {
				t.Errorf("after the commit: %d undo checkpoints, marker %+v", undo, m)
			}
		})
	}
	t.Run("a writer abandoned", func(t *testing.T) {
		p := newProduction(t)
		src := NewSource(p.h)
		begin(t, src)
		w, err := src.OpenFailbackDisk(ctx, "prod", "fb1", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(randomData(p.r, n), off); err != nil {
			t.Fatal(err)
		}
		w.(*diskWriter).drop() // the process died: its block table was never synced
		src = NewSource(p.h)
		p.write(t, src, "fb1", off+n, n)
		if err := src.UndoFailback(ctx, "prod", "fb1"); err != nil {
			t.Fatal(err)
		}
		undone(t, p)
		begin(t, src)
		want := p.write(t, src, "fb1", off, n)
		if err := src.CommitFailback(ctx, "prod", "fb1"); err != nil {
			t.Fatal(err)
		}
		p.same(t, "after the commit", [][]byte{want, p.orig[1]})
	})
	t.Run("create at failback-created", func(t *testing.T) {
		h := newSim(t)
		desc := sdktest.DefaultVM()
		req := sdk.FailbackRequest{ID: "fb1", VM: "app-copy", Create: &desc}
		dieAt(t, h, "failback-created", func(src *Source) { src.BeginFailback(ctx, req) })
		src := NewSource(h)
		if _, err := src.BeginFailback(ctx, req); err != nil {
			t.Fatal(err)
		}
		if vms, _ := h.ListVMs(ctx); len(vms) != 1 {
			t.Fatalf("%d vms after begin ran again, want 1", len(vms))
		}
		dieAt(t, h, "failback-undo-journalled", func(src *Source) { src.UndoFailback(ctx, "app-copy", "fb1") })
		if err := NewSource(h).UndoFailback(ctx, "app-copy", "fb1"); err != nil {
			t.Fatal(err)
		}
		if vms, _ := h.ListVMs(ctx); len(vms) != 0 {
			t.Errorf("%d vms after the undo, want none", len(vms))
		}
	})
}

// The notes keep the VM's own text whatever the marker holds.
func TestFailbackNotes(t *testing.T) {
	for _, own := range []string{"", "one line", "two\nlines", "mentions " + failbackHeader + " inline"} {
		m := &failbackMeta{ID: "fb-1", Running: true, State: fbCommitting, Before: []string{"a"}}
		gotOwn, got, err := splitNotes(joinNotes(own, m))
		if err != nil || gotOwn != own || got == nil || got.ID != m.ID || !got.Running || got.State != m.State {
			t.Errorf("split(join(%q)) = %q, %+v, %v", own, gotOwn, got, err)
		}
		if o, m, err := splitNotes(own); o != own || m != nil || err != nil {
			t.Errorf("split(%q) = %q, %+v, %v", own, o, m, err)
		}
	}
	if _, _, err := splitNotes("x\n" + failbackHeader + "{not json"); !errors.Is(err, errdefs.ErrDataLoss) {
		t.Errorf("a broken marker: %v", err)
	}
}

// A snapshot of production closes the failback writers of its disks: a
// write after it would land in the file the snapshot froze.
func TestFailbackWriterSupersededBySnapshot(t *testing.T) {
	ctx := context.Background()
	p := newProduction(t)
	src := NewSource(p.h)
	if _, err := src.BeginFailback(ctx, sdk.FailbackRequest{ID: "fb1", VM: "prod"}); err != nil {
		t.Fatal(err)
	}
	w, err := src.OpenFailbackDisk(ctx, "prod", "fb1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "prod", Name: "look"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("late"), 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a write after a snapshot: %v, want ErrFailedPrecondition", err)
	}
	w.Close()
	want := p.write(t, src, "fb1", 0, 4096)
	w, err = src.OpenFailbackDisk(ctx, "prod", "fb1", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.RemoveSnapshot(ctx, "prod", snap.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("late"), 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a write after a snapshot's removal: %v, want ErrFailedPrecondition", err)
	}
	p.same(t, "after the writers were superseded", [][]byte{want, p.orig[1]})
}
