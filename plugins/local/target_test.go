package local

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func testVM() sdk.VM {
	return sdk.VM{
		ID: "web-01", Name: "web-01", CPUs: 2, MemoryMiB: 2048, Firmware: "bios", PowerState: "on",
		Disks: []sdk.Disk{{Index: 0, Name: "sys", Capacity: 2 << 20}, {Index: 1, Name: "data", Capacity: 1<<20 + 5<<10}},
		NICs: []sdk.NIC{
			{Index: 0, Network: "prod", MAC: "00:50:56:00:00:01", Addresses: []string{"10.1.0.5/24"}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.53"}},
			{Index: 1, Network: "backup", Addresses: []string{"172.16.3.7/16", "fd00:1::7/64"}},
		},
	}
}

// replica is a test model of a replica: its working state and every
// point's disks.
type replica struct {
	t      *Target
	name   string
	disks  [][]byte
	points map[string][][]byte
	order  []string
}

func newReplica(t *testing.T, tgt *Target, name string) *replica {
	t.Helper()
	vm := testVM()
	if _, err := tgt.CreateReplica(context.Background(), sdk.ReplicaRequest{Name: name, VM: vm}); err != nil {
		t.Fatal(err)
	}
	r := &replica{t: tgt, name: name, points: map[string][][]byte{}}
	for _, d := range vm.Disks {
		r.disks = append(r.disks, make([]byte, d.Capacity))
	}
	return r
}

// write writes spans into a disk through one writer and closes it.
// fill writes random data over every disk of the replica.
func (r *replica) fill(t *testing.T, rng *rand.Rand) {
	t.Helper()
	for d := range r.disks {
		r.write(t, d, span{0, randomData(rng, len(r.disks[d]))})
	}
}

func (r *replica) write(t *testing.T, disk int, spans ...span) {
	t.Helper()
	w, err := r.t.OpenReplicaDisk(context.Background(), r.name, disk, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if _, err := w.WriteAt(s.data, s.off); err != nil {
			t.Fatal(err)
		}
		copy(r.disks[disk][s.off:], s.data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

type span struct {
	off  int64
	data []byte
}

func scatter(rng *rand.Rand, size int64, n int) []span {
	var out []span
	for range n {
		l := 1 + rng.IntN(200<<10)
		off := rng.Int64N(size - int64(l) + 1)
		out = append(out, span{off, randomData(rng, l)})
	}
	return out
}

func (r *replica) point(t *testing.T, labels map[string]string) string {
	t.Helper()
	rp, err := r.t.CreateRestorePoint(context.Background(), r.name, labels)
	if err != nil {
		t.Fatal(err)
	}
	var disks [][]byte
	for _, d := range r.disks {
		disks = append(disks, bytes.Clone(d))
	}
	r.points[rp.ID] = disks
	r.order = append(r.order, rp.ID)
	return rp.ID
}

func (r *replica) readPoint(t *testing.T, id string, disk int) []byte {
	t.Helper()
	rd, err := r.t.OpenRestorePointDisk(context.Background(), r.name, id, disk)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	return readAllAt(t, rd)
}

// verify reads every point back and compares it byte for byte, and
// checks the list.
func (r *replica) verify(t *testing.T, when string) {
	t.Helper()
	list, err := r.t.ListRestorePoints(context.Background(), r.name)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range list {
		ids = append(ids, p.ID)
	}
	if !slices.Equal(ids, r.order) {
		t.Fatalf("%s: points %v, want %v", when, ids, r.order)
	}
	for _, id := range r.order {
		for d := range r.points[id] {
			mustEqual(t, when+": point "+id, r.readPoint(t, id, d), r.points[id][d])
		}
	}
}

func (r *replica) deletePoint(t *testing.T, id string) {
	t.Helper()
	if err := r.t.DeleteRestorePoint(context.Background(), r.name, id); err != nil {
		t.Fatal(err)
	}
	r.order = slices.DeleteFunc(r.order, func(s string) bool { return s == id })
	delete(r.points, id)
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := allocatedBytes(p)
			n += b
		}
		return nil
	})
	return n
}

// TestRestorePoints: points read back exactly what was written when each
// was made; deleting the oldest and a middle point frees space and leaves
// the others exact; labels and sizes are kept.
func TestRestorePoints(t *testing.T) {
	tgt, err := NewTarget(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, tgt, "web")
	rng := testRand(t)
	r.fill(t, rng)
	first := r.point(t, map[string]string{"job": "nightly", "run": "1"})
	for i := range 4 {
		for d := range r.disks {
			r.write(t, d, scatter(rng, int64(len(r.disks[d])), 6)...)
		}
		r.point(t, map[string]string{"run": string(rune('2' + i))})
	}
	r.verify(t, "five points")
	list, _ := tgt.ListRestorePoints(context.Background(), "web")
	if list[0].Labels["job"] != "nightly" || list[0].ID != first {
		t.Errorf("first point %+v lost its labels", list[0])
	}
	if list[1].Size == 0 {
		t.Errorf("point 2 holds undo blocks but says it holds 0 bytes")
	}

	pointsDir := filepath.Join(tgt.root, "web", replicaDirName, "points")
	before := dirBytes(t, pointsDir)
	held := dirBytes(t, filepath.Join(pointsDir, first))
	if held == 0 {
		t.Fatal("the oldest point holds no blocks")
	}
	r.deletePoint(t, first)
	if after := dirBytes(t, pointsDir); after > before-held {
		t.Errorf("deleting the oldest point freed %d bytes, want %d", before-after, held)
	}
	r.verify(t, "after deleting the oldest point")

	before = dirBytes(t, pointsDir)
	r.deletePoint(t, r.order[1])
	if after := dirBytes(t, pointsDir); after >= before {
		t.Errorf("deleting a middle point freed nothing (%d -> %d bytes)", before, after)
	}
	r.verify(t, "after deleting a middle point")
	r.deletePoint(t, r.order[len(r.order)-1])
	r.verify(t, "after deleting the newest point")
	// Replication goes on.
	r.write(t, 0, scatter(rng, 2<<20, 5)...)
	r.point(t, nil)
	r.verify(t, "after another run")
	// The working state (an empty point) reads what was written last.
	r.write(t, 1, scatter(rng, int64(len(r.disks[1])), 3)...)
	for d := range r.disks {
		mustEqual(t, "working state", r.readPoint(t, "", d), r.disks[d])
	}
	if slices.Equal(r.disks[1], r.points[r.order[len(r.order)-1]][1]) {
		t.Fatal("test is void: the working state equals the newest point")
	}
}

// TestDiskGrowsKeepsPointSizes: a grown disk keeps the earlier point at
// its old size.
func TestDiskGrowsKeepsPointSizes(t *testing.T) {
	ctx := context.Background()
	tgt, _ := NewTarget(t.TempDir())
	r := newReplica(t, tgt, "grow")
	rng := testRand(t)
	r.write(t, 1, span{0, randomData(rng, len(r.disks[1]))})
	p1 := r.point(t, nil)
	w, err := tgt.OpenReplicaDisk(ctx, "grow", 1, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != 3<<20 {
		t.Fatalf("size %d after growing", w.Size())
	}
	data := randomData(rng, 1<<20)
	if _, err := w.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	w.Close()
	r.disks[1] = append(r.disks[1], make([]byte, 3<<20-len(r.disks[1]))...)
	copy(r.disks[1][1<<20:], data)
	r.point(t, nil)
	r.verify(t, "after growing")
	rd, _ := tgt.OpenRestorePointDisk(ctx, "grow", p1, 1)
	if rd.Size() != 1<<20+5<<10 {
		t.Errorf("the older point has size %d", rd.Size())
	}
	rd.Close()
	rep, _ := tgt.GetReplica(ctx, "grow")
	if rep.VM.Disks[1].Capacity != 3<<20 {
		t.Errorf("the replica description says disk 1 is %d bytes", rep.VM.Disks[1].Capacity)
	}
}

// TestWritersAndPoints: the plain direct lane is offered only before the
// first point (then only with writes prepared); a point can be made while (non-direct) writers stay open, and
// later writes through them land in the next point only; a point being
// read does not change while the replica is written.
func TestWritersAndPoints(t *testing.T) {
	ctx := context.Background()
	tgt, _ := NewTarget(t.TempDir())
	r := newReplica(t, tgt, "w")
	rng := testRand(t)
	w, err := tgt.OpenReplicaDisk(ctx, "w", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	lp, ok := w.(sdk.LocalPather)
	if !ok {
		t.Fatal("a replica without points offers no direct lane")
	}
	if _, err := tgt.CreateRestorePoint(ctx, "w", nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a point while a direct-lane writer is open: %v, want ErrFailedPrecondition", err)
	}
	// The data mover writes the file itself.
	full := randomData(rng, 2<<20)
	if err := os.WriteFile(lp.LocalPath(), full, 0o644); err != nil {
		t.Fatal(err)
	}
	copy(r.disks[0], full)
	w.Close()
	p1 := r.point(t, nil)

	w, err = tgt.OpenReplicaDisk(ctx, "w", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.(sdk.WritePreparer); !ok {
		t.Fatal("a replica with points offers its file without asking for writes to be prepared")
	}
	reader, err := tgt.OpenRestorePointDisk(ctx, "w", p1, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Four goroutines write disjoint ranges that share undo blocks, while
	// the point is read.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			grng := rand.New(rand.NewPCG(uint64(g), 9))
			for i := range 16 {
				off := int64(i*4+g) * 32000
				d := randomData(grng, 32000)
				if _, err := w.WriteAt(d, off); err != nil {
					t.Error(err)
					return
				}
				copy(r.disks[0][off:], d) // disjoint ranges: no race
			}
		})
	}
	for range 3 {
		mustEqual(t, "point 1 read while written", readAllAt(t, reader), r.points[p1][0])
	}
	wg.Wait()
	mustEqual(t, "point 1 read after the writes", readAllAt(t, reader), r.points[p1][0])
	// A point while the writer stays open.
	p2 := r.point(t, nil)
	late := randomData(rng, 100000)
	if _, err := w.WriteAt(late, 500000); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "point 1, read by a reader opened before point 2", readAllAt(t, reader), r.points[p1][0])
	reader.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	copy(r.disks[0][500000:], late)
	r.verify(t, "after writes through a writer that outlived a point")
	if slices.Equal(r.points[p2][0], r.disks[0]) {
		t.Fatal("test is void: the late write changed nothing")
	}
}

// TestTargetCrashes kills the target at each step of each change (a crash
// hook panics there; the instance's files are closed as a dying process's
// would be) and checks, on a target opened afresh, that every point made
// before is intact and the change can be made again.
func TestTargetCrashes(t *testing.T) {
	ctx := context.Background()
	type op func(t *testing.T, tgt *Target, r *replica, rng *rand.Rand)
	writeOp := func(t *testing.T, tgt *Target, r *replica, rng *rand.Rand) {
		w, err := tgt.OpenReplicaDisk(ctx, r.name, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range scatter(rng, 2<<20, 6) {
			w.WriteAt(s.data, s.off)
		}
		w.Close()
	}
	pointOp := func(t *testing.T, tgt *Target, r *replica, rng *rand.Rand) {
		tgt.CreateRestorePoint(ctx, r.name, nil)
	}
	deleteOp := func(i int) op {
		return func(t *testing.T, tgt *Target, r *replica, rng *rand.Rand) {
			tgt.DeleteRestorePoint(ctx, r.name, r.order[i])
		}
	}
	failoverOp := func(t *testing.T, tgt *Target, r *replica, rng *rand.Rand) {
		tgt.Failover(ctx, sdk.FailoverRequest{Replica: r.name})
	}
	cases := []struct {
		name, step string
		n          int
		op         op
		// finish is what the caller does after the crash: retry, or
		// nothing when the change never returned success.
		finish func(t *testing.T, tgt *Target, r *replica)
	}{
		{"write, after saving undo blocks", "undo-saved", 3, writeOp, nil},
		{"create point, before commit", "point-synced", 1, pointOp, nil},
		{"delete oldest, journalled", "delete-journalled", 1, deleteOp(0), retryDelete(0)},
		{"delete middle, journalled", "delete-journalled", 1, deleteOp(1), retryDelete(1)},
		{"delete middle, mid-fold", "fold-batch", 1, deleteOp(1), retryDelete(1)},
		{"delete newest, committed", "delete-committed", 1, deleteOp(2), retryDelete(2)},
		{"failover, journalled", "failover-journalled", 1, failoverOp, nil},
		{"failover, described", "failover-described", 1, failoverOp, nil},
		{"create replica, described", "replica-described", 1, func(t *testing.T, tgt *Target, r *replica, rng *rand.Rand) {
			tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "other", VM: testVM()})
		}, func(t *testing.T, tgt *Target, r *replica) {
			if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "other", VM: testVM()}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tgt, _ := NewTarget(root)
			r := newReplica(t, tgt, "crash")
			rng := testRand(t)
			r.write(t, 0, span{0, randomData(rng, 2<<20)})
			for range 3 {
				r.point(t, nil)
				r.write(t, 0, scatter(rng, 2<<20, 5)...)
			}
			wantState := bytes.Clone(r.disks[0])
			tgt.crash = crashAt(tc.step, tc.n)
			if !survive(t, func() { tc.op(t, tgt, r, rng) }) {
				t.Fatalf("never reached step %s", tc.step)
			}
			tgt.crashForTest()
			tgt, err := NewTarget(root)
			if err != nil {
				t.Fatal(err)
			}
			r.t = tgt
			rep, err := tgt.GetReplica(ctx, "crash")
			if err != nil {
				t.Fatal(err)
			}
			if rep.State != sdk.ReplicaReady {
				t.Fatalf("after the crash the replica is %s", rep.State)
			}
			if tc.finish != nil {
				tc.finish(t, tgt, r)
			} else if tc.step == "point-synced" {
				if pts, _ := tgt.ListRestorePoints(ctx, "crash"); len(pts) != len(r.order) {
					t.Fatalf("a point whose creation was killed exists: %d points, want %d", len(pts), len(r.order))
				}
			}
			r.verify(t, "after the crash")
			// The replica works on: a full rewrite, a point, a failover.
			_ = wantState
			r.write(t, 0, span{0, randomData(rng, 2<<20)})
			r.point(t, nil)
			r.verify(t, "replicating after the crash")
			if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "crash"}); err != nil {
				t.Fatal(err)
			}
			if _, err := tgt.UndoFailover(ctx, "crash"); err != nil {
				t.Fatal(err)
			}
			r.verify(t, "after failover and undo")
		})
	}
}

func retryDelete(i int) func(t *testing.T, tgt *Target, r *replica) {
	return func(t *testing.T, tgt *Target, r *replica) {
		r.deletePoint(t, r.order[i])
		if entries, _ := os.ReadDir(filepath.Join(tgt.root, "crash", replicaDirName, "points")); len(entries) != len(r.order) {
			t.Errorf("%d point folders for %d points", len(entries), len(r.order))
		}
	}
}

// TestTargetDamagedFiles: torn index tails, stray temporary files and a
// half-written replica.json temp file change no point; a corrupt undo
// block is reported, never read as data.
func TestTargetDamagedFiles(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	tgt, _ := NewTarget(root)
	r := newReplica(t, tgt, "dmg")
	rng := testRand(t)
	r.write(t, 0, span{0, randomData(rng, 2<<20)})
	p1 := r.point(t, nil)
	r.write(t, 0, scatter(rng, 2<<20, 5)...)
	r.point(t, nil)
	r.write(t, 0, scatter(rng, 2<<20, 5)...)
	dir := filepath.Join(root, "dmg", replicaDirName)
	idx := filepath.Join(dir, "points", p1, "disk0.idx")
	f, _ := os.OpenFile(idx, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("torn record bytes"))
	f.Close()
	os.WriteFile(filepath.Join(dir, tempPrefix+"replica.json-123"), []byte(`{"half`), 0o644)
	os.WriteFile(filepath.Join(root, "dmg", tempPrefix+"disk0.img-9"), []byte("junk"), 0o644)
	tgt, _ = NewTarget(root)
	r.t = tgt
	r.verify(t, "with damaged files")
	// Writing again appends after the torn tail, which is cut off.
	r.write(t, 0, scatter(rng, 2<<20, 5)...)
	r.point(t, nil)
	r.verify(t, "after writing past a torn tail")
	if _, err := os.Stat(filepath.Join(root, "dmg", tempPrefix+"disk0.img-9")); err == nil {
		t.Error("a stray temporary file was not cleared")
	}
	// Flip a byte of a saved block: reading it must fail, not lie.
	data := filepath.Join(dir, "points", p1, "disk0.data")
	b, _ := os.ReadFile(data)
	b[10] ^= 0xff
	os.WriteFile(data, b, 0o644)
	rd, _ := tgt.OpenRestorePointDisk(ctx, "dmg", p1, 0)
	defer rd.Close()
	buf := make([]byte, rd.Size())
	if _, err := rd.ReadAt(buf, 0); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("reading a corrupt block: %v, want a checksum error", err)
	}
}

// TestFailover: failover materializes the point with the network map and
// re-IP applied; undo restores everything; commit leaves a plain VM that a
// source can read for failback.
func TestFailover(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	tgt, _ := NewTarget(root)
	r := newReplica(t, tgt, "fo")
	rng := testRand(t)
	r.fill(t, rng)
	p1 := r.point(t, map[string]string{"k": "v"})
	r.write(t, 0, scatter(rng, 2<<20, 4)...)
	r.point(t, nil)
	before, _ := tgt.GetReplica(ctx, "fo")
	net := sdk.NetworkConfig{
		NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "dr"}},
		ReIP:       []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/16", Gateway: "10.2.0.1", DNS: []string{"10.2.0.53"}}},
	}
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo", Point: "p9", Network: net}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("failover to a missing point: %v", err)
	}
	bad := net
	bad.ReIP = []sdk.ReIPRule{{FromSubnet: "10.1.0.0/33", ToSubnet: "10.2.0.0/16"}}
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo", Network: bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("failover with a bad subnet: %v", err)
	}
	rep, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo", Point: p1, Network: net})
	if err != nil {
		t.Fatal(err)
	}
	nic := rep.VM.NICs[0]
	if rep.State != sdk.ReplicaFailedOver || rep.FailoverPoint != p1 || nic.Network != "dr" ||
		nic.Addresses[0] != "10.2.0.5/24" || nic.Gateway != "10.2.0.1" || nic.DNS[0] != "10.2.0.53" || rep.VM.PowerState != "on" {
		t.Fatalf("failed over replica: %+v", rep)
	}
	if rep.VM.NICs[1].Network != "backup" || rep.VM.NICs[1].Addresses[0] != "172.16.3.7/16" {
		t.Errorf("a NIC no rule matches changed: %+v", rep.VM.NICs[1])
	}
	onDisk, _ := readVM(filepath.Join(root, "fo"))
	if onDisk.NICs[0].Addresses[0] != "10.2.0.5/24" {
		t.Errorf("vm.json was not rewritten: %+v", onDisk.NICs[0])
	}
	for d := range r.disks {
		img, err := os.ReadFile(diskFile(filepath.Join(root, "fo"), d))
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "failover disk", img, r.points[p1][d])
	}
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo"}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("failover twice: %v", err)
	}
	if _, err := tgt.OpenReplicaDisk(ctx, "fo", 0, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("writing a failed-over replica: %v", err)
	}
	// A source reads the failed-over VM, for failback.
	src, _ := NewSource(root)
	if _, err := src.DescribeVM(ctx, "fo"); err != nil {
		t.Errorf("a source cannot see the failed-over VM: %v", err)
	}
	undone, err := tgt.UndoFailover(ctx, "fo")
	if err != nil {
		t.Fatal(err)
	}
	if undone.State != sdk.ReplicaReady || !slices.EqualFunc(undone.VM.NICs, before.VM.NICs, nicEqual) || undone.VM.PowerState != before.VM.PowerState {
		t.Errorf("undo did not restore the description: %+v", undone.VM)
	}
	if _, err := os.Stat(diskFile(filepath.Join(root, "fo"), 0)); err == nil {
		t.Error("undo left the failover disks")
	}
	if vms, _ := src.ListVMs(ctx); len(vms) != 0 {
		t.Errorf("a source lists a replica that is not failed over: %v", vms)
	}
	r.verify(t, "after undo")

	// Commit: a plain VM, readable by a source, with no replica data left.
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo", Network: net}); err != nil {
		t.Fatal(err)
	}
	rep, err = tgt.CommitFailover(ctx, "fo")
	if err != nil || rep.State != sdk.ReplicaCommitted {
		t.Fatalf("commit: %v, %v", rep, err)
	}
	for _, call := range []func() error{
		func() error { _, err := tgt.OpenReplicaDisk(ctx, "fo", 0, 0); return err },
		func() error { _, err := tgt.CreateRestorePoint(ctx, "fo", nil); return err },
		func() error { _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo"}); return err },
	} {
		if err := call(); !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Errorf("a change to a committed replica: %v, want ErrFailedPrecondition", err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "fo", replicaDirName, "points")); err == nil {
		t.Error("commit left the restore points")
	}
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "fo", Name: "failback"})
	if err != nil {
		t.Fatal(err)
	}
	sr, err := src.OpenSnapshotDisk(ctx, "fo", snap.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "committed VM read by a source", readAllAt(t, sr), r.points[r.order[1]][0])
	sr.Close()
	if err := tgt.DeleteReplica(ctx, "fo"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(diskFile(filepath.Join(root, "fo"), 0)); err != nil {
		t.Errorf("deleting a committed replica removed the production VM: %v", err)
	}
}

// TestLockingCallsRemoveTemps: every call that locks a replica, not only
// the changes to restore points, removes the temporary files a killed
// process left (a failover's disk copy can be as large as the disk).
func TestLockingCallsRemoveTemps(t *testing.T) {
	ctx := context.Background()
	tgt, _ := NewTarget(t.TempDir())
	r := newReplica(t, tgt, "tmp")
	r.write(t, 0, span{0, randomData(testRand(t), 1000)})
	p1 := r.point(t, nil)
	dir := filepath.Join(tgt.root, "tmp")
	for _, call := range []struct {
		name string
		f    func() error
	}{
		{"OpenRestorePointDisk", func() error {
			rd, err := tgt.OpenRestorePointDisk(ctx, "tmp", p1, 0)
			if err == nil {
				rd.Close()
			}
			return err
		}},
		{"OpenReplicaDisk", func() error {
			w, err := tgt.OpenReplicaDisk(ctx, "tmp", 0, 0)
			if err == nil {
				err = w.Close()
			}
			return err
		}},
		{"ApplyNetwork", func() error { _, err := tgt.ApplyNetwork(ctx, "tmp", sdk.NetworkConfig{}); return err }},
	} {
		planted := []string{
			filepath.Join(dir, tempPrefix+"disk0.img-1"),
			filepath.Join(dir, replicaDirName, tempPrefix+"replica.json-1"),
		}
		for _, p := range planted {
			if err := os.WriteFile(p, []byte("left by a killed process"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := call.f(); err != nil {
			t.Fatalf("%s: %v", call.name, err)
		}
		for _, p := range planted {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s left %s (%v)", call.name, filepath.Base(p), err)
			}
		}
	}
	r.verify(t, "after the calls")
}

// TestCommitFailoverMissingDisk: a failed-over replica with a disk
// missing (as an undo killed before undos were journalled leaves it) is
// not committed: the restore points stay, and undo still works.
func TestCommitFailoverMissingDisk(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	tgt, _ := NewTarget(root)
	r := newReplica(t, tgt, "fo")
	rng := testRand(t)
	r.fill(t, rng)
	r.point(t, nil)
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "fo"}); err != nil {
		t.Fatal(err)
	}
	missing := diskFile(filepath.Join(root, "fo"), 1)
	if err := os.Remove(missing); err != nil {
		t.Fatal(err)
	}
	_, err := tgt.CommitFailover(ctx, "fo")
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("commit with disk 1 missing: %v, want ErrFailedPrecondition", err)
	}
	for _, want := range []string{`replica "fo"`, "disk 1", missing} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error %q does not name %s", err, want)
		}
	}
	if rep, _ := tgt.GetReplica(ctx, "fo"); rep.State != sdk.ReplicaFailedOver {
		t.Errorf("after a refused commit the replica is %s", rep.State)
	}
	r.verify(t, "after a refused commit")
	if _, err := tgt.UndoFailover(ctx, "fo"); err != nil {
		t.Fatal(err)
	}
	r.verify(t, "after undo")
}

func nicEqual(a, b sdk.NIC) bool {
	return a.Network == b.Network && slices.Equal(a.Addresses, b.Addresses) && a.Gateway == b.Gateway && slices.Equal(a.DNS, b.DNS)
}

// TestReplicaLifecycle: create is idempotent, a foreign VM folder is not
// taken over, placement lists networks, delete removes everything.
func TestReplicaLifecycle(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	tgt, _ := NewTarget(root)
	a, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "a", VM: testVM(), NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "dr-lan"}}})
	if err != nil {
		t.Fatal(err)
	}
	again, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "a", VM: testVM()})
	if err != nil || again.ID != a.ID {
		t.Fatalf("create again: %v, %v", again, err)
	}
	if a.VM.NICs[0].Network != "dr-lan" {
		t.Errorf("the network map was not applied: %+v", a.VM.NICs[0])
	}
	byID, err := tgt.GetReplica(ctx, a.ID)
	if err != nil || byID.Name != "a" {
		t.Fatalf("get by id: %v, %v", byID, err)
	}
	s := newSite(root)
	if _, err := s.createVM(ctx, VMSpec{Name: "plain", Disks: []int64{1 << 20}, NICs: []sdk.NIC{{Network: "lab"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "plain", VM: testVM()}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("a replica over a plain VM: %v", err)
	}
	if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "../x", VM: testVM()}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a replica named ../x: %v", err)
	}
	p, err := tgt.GetPlacement(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Networks, []string{"backup", "default", "dr-lan", "lab"}) || !slices.Equal(p.Datastores, []string{root}) {
		t.Errorf("placement %+v", p)
	}
	list, _ := tgt.ListReplicas(ctx)
	if len(list) != 1 || list[0].Name != "a" {
		t.Errorf("list %+v", list)
	}
	if err := tgt.DeleteReplica(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the replica folder is still there: %v", err)
	}
	if err := tgt.DeleteReplica(ctx, "a"); err != nil {
		t.Errorf("delete again: %v", err)
	}
	if _, err := tgt.GetReplica(ctx, "a"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("get after delete: %v", err)
	}
}

// TestNewerWriterSupersedes: a writer opened while an older one of the
// same disk is still open supersedes it. The older writer's writes are
// refused from then on, so that writes of an abandoned writer still on
// their way (queued in a stream whose caller died) never land after the
// newer writer's; what the older writer wrote before stays, and is
// overwritten by the newer writer where both wrote.
func TestNewerWriterSupersedes(t *testing.T) {
	ctx := context.Background()
	tgt, _ := NewTarget(t.TempDir())
	r := newReplica(t, tgt, "s")
	rng := testRand(t)
	w, _ := tgt.OpenReplicaDisk(ctx, "s", 0, 0)
	w.Close()
	r.point(t, nil)

	old, err := tgt.OpenReplicaDisk(ctx, "s", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := randomData(rng, 64<<10)
	if _, err := old.WriteAt(before, 0); err != nil {
		t.Fatal(err)
	}
	newer, err := tgt.OpenReplicaDisk(ctx, "s", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.WriteAt(randomData(rng, 4096), 8192); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a superseded writer's write = %v, want ErrFailedPrecondition", err)
	}
	after := randomData(rng, 16<<10)
	if _, err := newer.WriteAt(after, 4096); err != nil {
		t.Fatal(err)
	}
	if err := newer.Close(); err != nil {
		t.Fatal(err)
	}
	old.Close()
	copy(r.disks[0], before)
	copy(r.disks[0][4096:], after)
	r.point(t, nil)
	r.verify(t, "after a superseded writer")
}
