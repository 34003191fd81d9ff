package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

const testDisk = 2 << 20

// model is what a VM's disks must read: the current view and, per
// snapshot id, the view frozen at the snapshot.
type model struct {
	current [][]byte
	snaps   map[string][][]byte
}

func newModel(sizes ...int64) *model {
	m := &model{snaps: map[string][][]byte{}}
	for _, s := range sizes {
		m.current = append(m.current, make([]byte, s))
	}
	return m
}

func (m *model) freeze(id string) {
	var disks [][]byte
	for _, d := range m.current {
		disks = append(disks, bytes.Clone(d))
	}
	m.snaps[id] = disks
}

func write(t *testing.T, s *site, m *model, vm string, disk int, off int64, data []byte) {
	t.Helper()
	if err := s.trackedWrite(context.Background(), vm, disk, off, data); err != nil {
		t.Fatal(err)
	}
	copy(m.current[disk][off:], data)
}

func snapshot(t *testing.T, s *site, m *model, vm, name string) *sdk.Snapshot {
	t.Helper()
	sn, err := s.createSnapshot(context.Background(), sdk.SnapshotRequest{VM: vm, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	m.freeze(sn.ID)
	return sn
}

func readSnapshot(t *testing.T, s *site, vm, id string, disk int) []byte {
	t.Helper()
	r, err := s.openSnapshotDisk(context.Background(), vm, id, disk)
	if err != nil {
		t.Fatal(err)
	}
	data := readAllAt(t, r)
	if err := r.Close(); err != nil {
		t.Fatalf("close snapshot %s disk %d: %v", id, disk, err)
	}
	return data
}

func readCurrent(t *testing.T, s *site, vm string, disk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := s.readCurrent(context.Background(), vm, disk, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// verify compares every live snapshot and the current view with the model.
func (m *model) verify(t *testing.T, s *site, vm, when string) {
	t.Helper()
	snaps, err := s.listSnapshots(vm)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range snaps {
		want, ok := m.snaps[sn.ID]
		if !ok {
			t.Fatalf("%s: snapshot %s is not in the model", when, sn.ID)
		}
		for d := range want {
			mustEqual(t, when+": snapshot "+sn.ID, readSnapshot(t, s, vm, sn.ID, d), want[d])
		}
	}
	for d := range m.current {
		mustEqual(t, when+": current view", readCurrent(t, s, vm, d), m.current[d])
	}
}

// TestSnapshotsStayFrozen writes between snapshots, from the CLI and from
// a second goroutine while a snapshot is being read, and checks every
// snapshot reads exactly what the disks held when it was taken.
func TestSnapshotsStayFrozen(t *testing.T) {
	ctx := context.Background()
	s := newTestSite(t, "vm", testDisk, testDisk/2+4096+17)
	m := newModel(testDisk, testDisk/2+4096+17)
	rng := testRand(t)
	// A write through the CLI, as a person would make it.
	data := randomData(rng, 70000)
	if err := RunCLI(ctx, []string{"vm", "write", s.root, "vm", "0", "4093"}, bytes.NewReader(data), new(bytes.Buffer), new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	copy(m.current[0][4093:], data)
	s1 := snapshot(t, s, m, "vm", "one")
	r1, err := s.openSnapshotDisk(ctx, "vm", s1.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Writes race the reader: the snapshot must not move.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Go(func() {
		wrng := testRand(t)
		for i := range 40 {
			off := wrng.Int64N(testDisk - 9000)
			d := randomData(wrng, 1+wrng.IntN(9000))
			if err := s.trackedWrite(ctx, "vm", i%2, off%int64(len(m.current[i%2])-len(d)), d); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			copy(m.current[i%2][off%int64(len(m.current[i%2])-len(d)):], d)
			mu.Unlock()
		}
	})
	for range 5 {
		mustEqual(t, "snapshot one while written", readAllAt(t, r1), m.snaps[s1.ID][0])
	}
	wg.Wait()
	if err := r1.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	s2 := snapshot(t, s, m, "vm", "two")
	for i := range 10 {
		write(t, s, m, "vm", 0, int64(i)*150001, randomData(rng, 5000+i))
	}
	snapshot(t, s, m, "vm", "three")
	write(t, s, m, "vm", 1, 0, randomData(rng, 10))
	m.verify(t, s, "vm", "three snapshots")
	if s2.Disks[1].Capacity != int64(len(m.current[1])) {
		t.Errorf("snapshot capacity %d, want %d", s2.Disks[1].Capacity, len(m.current[1]))
	}
}

// TestRemoveSnapshotMerges removes snapshots in every order and checks the
// rest stay as they were and every write survives.
func TestRemoveSnapshotMerges(t *testing.T) {
	orders := [][]int{{0, 1, 2}, {2, 1, 0}, {1, 0, 2}, {1, 2, 0}, {0, 2, 1}, {2, 0, 1}}
	for _, order := range orders {
		t.Run(formatInts(order), func(t *testing.T) {
			ctx := context.Background()
			s := newTestSite(t, "vm", testDisk)
			m := newModel(testDisk)
			rng := testRand(t)
			write(t, s, m, "vm", 0, 0, randomData(rng, 100000))
			var ids []string
			for i := range 3 {
				ids = append(ids, snapshot(t, s, m, "vm", "s").ID)
				for j := range 4 {
					write(t, s, m, "vm", 0, int64(j)*300000+int64(i)*7919, randomData(rng, 12345))
				}
			}
			for _, i := range order {
				if err := s.removeSnapshot(ctx, "vm", ids[i]); err != nil {
					t.Fatal(err)
				}
				delete(m.snaps, ids[i])
				m.verify(t, s, "vm", "after removing "+ids[i])
			}
			if _, err := os.Stat(filepath.Join(s.root, "vm", metaDirName, "layers")); err == nil {
				entries, _ := os.ReadDir(filepath.Join(s.root, "vm", metaDirName, "layers"))
				if len(entries) != 0 {
					t.Errorf("%d layer folders left after removing every snapshot", len(entries))
				}
			}
		})
	}
}

func formatInts(xs []int) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteByte(byte('0' + x))
	}
	return b.String()
}

// collect gathers what ChangedAreas reports, checking batches are sorted
// and do not overlap.
func collect(t *testing.T, s *site, vm, snap string, disk int, id string) ([]sdk.Extent, error) {
	t.Helper()
	var all []sdk.Extent
	err := s.changedAreas(context.Background(), sdk.ChangedAreasRequest{VM: vm, Snapshot: snap, Disk: disk, ChangeID: id}, func(b []sdk.Extent) error {
		all = append(all, b...)
		return nil
	})
	for i := 1; i < len(all); i++ {
		if all[i].Offset < all[i-1].End() {
			t.Fatalf("extents %v and %v overlap or are out of order", all[i-1], all[i])
		}
	}
	return all, err
}

func covered(ext []sdk.Extent, off, n int64) bool {
	for p := off; p < off+n; {
		ok := false
		for _, e := range ext {
			if p >= e.Offset && p < e.End() {
				p = e.End()
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// TestChangedAreas checks change tracking: incremental answers cover every
// tracked write (also across a log compaction), an empty id covers every
// written byte, and anything that makes tracking unsure resets it.
func TestChangedAreas(t *testing.T) {
	ctx := context.Background()
	s := newTestSite(t, "vm", testDisk)
	rng := testRand(t)
	type w struct{ off, n int64 }
	var since []w
	writeAt := func(off int64, n int) {
		if err := s.trackedWrite(ctx, "vm", 0, off, randomData(rng, n)); err != nil {
			t.Fatal(err)
		}
		since = append(since, w{off, int64(n)})
	}
	writeAt(0, 1)
	writeAt(testDisk-3, 3)
	s1, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	full, err := collect(t, s, "vm", s1.ID, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range since {
		if !covered(full, x.off, x.n) {
			t.Errorf("every allocated area misses the write at %d", x.off)
		}
	}
	since = nil
	// Enough writes to compact the log more than once, with a snapshot in
	// between.
	defer func(n int) { trackCompactAt = n }(trackCompactAt)
	trackCompactAt = 64
	var s2 *sdk.Snapshot
	for i := range 2*trackCompactAt + 100 {
		writeAt(rng.Int64N(256<<10), 1+rng.IntN(600))
		if i == trackCompactAt/2 {
			if s2, err = s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "b"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	s3, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "c"})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := collect(t, s, "vm", s3.ID, 0, s1.Disks[0].ChangeID)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range since {
		if !covered(inc, x.off, x.n) {
			t.Fatalf("changed areas since snapshot a miss the write [%d, +%d)", x.off, x.n)
		}
	}
	if l, err := loadChangeLog(trackPath(filepath.Join(s.root, "vm"), 0)); err != nil {
		t.Fatal(err)
	} else if l.compacted == 0 || len(l.recs) >= len(since) {
		t.Errorf("log holds %d records for %d writes: it was never compacted", len(l.recs), len(since))
	}
	tail, err := collect(t, s, "vm", s3.ID, 0, s2.Disks[0].ChangeID)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range since[trackCompactAt/2+1:] {
		if !covered(tail, x.off, x.n) {
			t.Fatalf("changed areas since snapshot b miss the write [%d, +%d)", x.off, x.n)
		}
	}
	if same, err := collect(t, s, "vm", s3.ID, 0, s3.Disks[0].ChangeID); err != nil || len(same) != 0 {
		t.Errorf("changed since the snapshot's own id = %v, %v; want nothing", same, err)
	}

	dir := filepath.Join(s.root, "vm")
	resets := []struct {
		name   string
		change func(t *testing.T)
	}{
		{"untracked write", func(t *testing.T) {
			f, err := os.OpenFile(diskFile(dir, 0), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{1, 2, 3}, 777); err != nil {
				t.Fatal(err)
			}
		}},
		{"untracked truncate", func(t *testing.T) {
			if err := os.Truncate(diskFile(dir, 0), testDisk+8192); err != nil {
				t.Fatal(err)
			}
		}},
		{"resize", func(t *testing.T) {
			if err := s.resize(ctx, "vm", 0, testDisk+65536); err != nil {
				t.Fatal(err)
			}
		}},
		{"lost log", func(t *testing.T) {
			if err := os.Remove(trackPath(dir, 0)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, rc := range resets {
		t.Run(rc.name, func(t *testing.T) {
			before, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "before"})
			if err != nil {
				t.Fatal(err)
			}
			rc.change(t)
			after, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "after"})
			if err != nil {
				t.Fatal(err)
			}
			_, err = collect(t, s, "vm", after.ID, 0, before.Disks[0].ChangeID)
			if !errors.Is(err, errdefs.ErrChangeIDReset) {
				t.Fatalf("changed areas across a %s: %v, want ErrChangeIDReset", rc.name, err)
			}
			// Tracking answers again from the new epoch on.
			writeAt(4096*3, 100)
			next, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "next"})
			if err != nil {
				t.Fatal(err)
			}
			got, err := collect(t, s, "vm", next.ID, 0, after.Disks[0].ChangeID)
			if err != nil || !covered(got, 4096*3, 100) {
				t.Fatalf("after the reset: %v, %v", got, err)
			}
			for _, id := range []string{before.ID, after.ID, next.ID} {
				if err := s.removeSnapshot(ctx, "vm", id); err != nil {
					t.Fatal(err)
				}
			}
		})
	}

	bogus := []struct{ name, id string }{
		{"malformed", "nonsense"},
		{"other epoch", "0123456789abcdef-1"},
		{"future", ""},
	}
	s4, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "d"})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bogus {
		id := b.id
		if id == "" {
			e, seq, _ := parseChangeID(s4.Disks[0].ChangeID)
			id = e + "-" + formatUint(seq+5)
		}
		if _, err := collect(t, s, "vm", s4.ID, 0, id); !errors.Is(err, errdefs.ErrChangeIDReset) {
			t.Errorf("%s change id %q: %v, want ErrChangeIDReset", b.name, id, err)
		}
	}
}

func formatUint(n uint64) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// TestSnapshotReaderReportsChanges: a reader whose data could be wrong says
// so on Close, naming the VM and the disk.
func TestSnapshotReaderReportsChanges(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		change  func(t *testing.T, s *site, snaps []*sdk.Snapshot)
		read    int // which snapshot is read
		wantErr bool
	}{
		{"untracked write", func(t *testing.T, s *site, _ []*sdk.Snapshot) {
			f, err := os.OpenFile(diskFile(filepath.Join(s.root, "vm"), 0), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.WriteAt([]byte("x"), 5)
		}, 0, true},
		{"own snapshot removed into the base", func(t *testing.T, s *site, snaps []*sdk.Snapshot) {
			if err := s.removeSnapshot(ctx, "vm", snaps[0].ID); err != nil {
				t.Fatal(err)
			}
		}, 0, true},
		{"own and older snapshot removed", func(t *testing.T, s *site, snaps []*sdk.Snapshot) {
			for _, sn := range snaps[:2] {
				if err := s.removeSnapshot(ctx, "vm", sn.ID); err != nil {
					t.Fatal(err)
				}
			}
		}, 1, true},
		{"older snapshot removed", func(t *testing.T, s *site, snaps []*sdk.Snapshot) {
			if err := s.removeSnapshot(ctx, "vm", snaps[0].ID); err != nil {
				t.Fatal(err)
			}
		}, 1, false},
		{"tracked writes", func(t *testing.T, s *site, _ []*sdk.Snapshot) {
			if err := s.trackedWrite(ctx, "vm", 0, 0, []byte("tracked")); err != nil {
				t.Fatal(err)
			}
		}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSite(t, "vm", 1<<20)
			var snaps []*sdk.Snapshot
			for i := range 3 {
				if err := s.trackedWrite(ctx, "vm", 0, int64(i)*4096, []byte("data")); err != nil {
					t.Fatal(err)
				}
				sn, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "s"})
				if err != nil {
					t.Fatal(err)
				}
				snaps = append(snaps, sn)
			}
			r, err := s.openSnapshotDisk(ctx, "vm", snaps[tc.read].ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			tc.change(t, s, snaps)
			err = r.Close()
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Close: %v", err)
				}
				return
			}
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `vm "vm"`) || !strings.Contains(err.Error(), "disk 0") {
				t.Fatalf("Close = %v, want ErrFailedPrecondition naming the VM and disk", err)
			}
		})
	}
}

// TestSnapshotLocalPath: only a view that is the base image alone offers
// its path, and the path holds the snapshot's data.
func TestSnapshotLocalPath(t *testing.T) {
	ctx := context.Background()
	s := newTestSite(t, "vm", 1<<20)
	if err := s.trackedWrite(ctx, "vm", 0, 100, []byte("before")); err != nil {
		t.Fatal(err)
	}
	s1, _ := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "a"})
	s2, _ := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "b"})
	if err := s.trackedWrite(ctx, "vm", 0, 100, []byte("after!")); err != nil {
		t.Fatal(err)
	}
	s3, _ := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "c"})
	for _, tc := range []struct {
		snap string
		want bool
	}{{s1.ID, true}, {s2.ID, true}, {s3.ID, false}} {
		r, err := s.openSnapshotDisk(ctx, "vm", tc.snap, 0)
		if err != nil {
			t.Fatal(err)
		}
		lp, ok := r.(sdk.LocalPather)
		if ok != tc.want {
			t.Errorf("snapshot %s offers a path: %v, want %v", tc.snap, ok, tc.want)
		}
		if ok {
			data, err := os.ReadFile(lp.LocalPath())
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "local path", data, readAllAt(t, r))
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSourceErrors checks error classes and that messages name what failed.
func TestSourceErrors(t *testing.T) {
	ctx := context.Background()
	s := newTestSite(t, "vm", 1<<20)
	src, err := NewSource(s.root)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		call     func() error
		class    error
		mentions []string
	}{
		{"unknown vm", func() error { _, err := src.DescribeVM(ctx, "ghost"); return err }, errdefs.ErrNotFound, []string{`"ghost"`, s.root}},
		{"unknown snapshot", func() error { _, err := src.OpenSnapshotDisk(ctx, "vm", "nope", 0); return err }, errdefs.ErrNotFound, []string{`"nope"`, `"vm"`}},
		{"unknown disk", func() error { _, err := src.OpenSnapshotDisk(ctx, "vm", snap.ID, 7); return err }, errdefs.ErrNotFound, []string{"disk 7"}},
		{"write past end", func() error { return s.trackedWrite(ctx, "vm", 0, 1<<20-1, []byte("ab")) }, errdefs.ErrInvalidArgument, []string{"disk 0"}},
		{"shrink", func() error { return s.resize(ctx, "vm", 0, 4096) }, errdefs.ErrInvalidArgument, []string{"disk 0"}},
		{"missing site", func() error { _, err := NewSource(filepath.Join(s.root, "nope")); return err }, errdefs.ErrNotFound, []string{"nope"}},
		{"remove missing snapshot", func() error { return src.RemoveSnapshot(ctx, "vm", "gone") }, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.class == nil {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				return
			}
			if !errors.Is(err, tc.class) {
				t.Fatalf("got %v, want class %v", err, tc.class)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%q does not mention %q", err, m)
				}
			}
		})
	}
}

// TestSourceCrashes kills a removal, a snapshot and a write at each step
// (the crash hook panics there, and the site is used afresh from its
// files) and checks the data stays right and the interrupted call can be
// repeated.
func TestSourceCrashes(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		step string
		n    int
		call func(s *site, m *model, ids []string) error
		// after the crash and the retry
		retry func(s *site, m *model, ids []string) error
	}{
		{"remove-journalled", 1, removeCall(1), removeCall(1)},
		{"merge-layer-batch", 1, removeCall(1), removeCall(1)},
		{"remove-committed", 1, removeCall(1), removeCall(1)},
		{"merge-base-block", 1, removeCall(0), removeCall(0)},
		{"remove-committed", 1, removeCall(0), removeCall(0)},
		{"snapshot-marked", 1, func(s *site, m *model, ids []string) error {
			_, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "lost"})
			return err
		}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.step, func(t *testing.T) {
			s := newTestSite(t, "vm", testDisk)
			m := newModel(testDisk)
			rng := testRand(t)
			var ids []string
			write(t, s, m, "vm", 0, 0, randomData(rng, 300000))
			for range 3 {
				ids = append(ids, snapshot(t, s, m, "vm", "s").ID)
				write(t, s, m, "vm", 0, rng.Int64N(testDisk-300000), randomData(rng, 300000))
			}
			s.crash = crashAt(tc.step, tc.n)
			if !survive(t, func() { tc.call(s, m, ids) }) {
				t.Fatalf("never reached step %s", tc.step)
			}
			s = newSite(s.root) // a new process
			if tc.retry != nil {
				if err := tc.retry(s, m, ids); err != nil {
					t.Fatalf("retry: %v", err)
				}
			}
			// Snapshots a merge into the base left behind may refuse to be
			// read (the base changed under them), never read wrong data.
			snaps, _ := s.listSnapshots("vm")
			for _, sn := range snaps {
				want, ok := m.snaps[sn.ID]
				if !ok {
					t.Fatalf("snapshot %s exists, but its creation never returned", sn.ID)
				}
				r, err := s.openSnapshotDisk(ctx, "vm", sn.ID, 0)
				if errors.Is(err, errdefs.ErrFailedPrecondition) && tc.step == "merge-base-block" {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				mustEqual(t, "snapshot "+sn.ID+" after the crash", readAllAt(t, r), want[0])
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
			}
			mustEqual(t, "current view after the crash", readCurrent(t, s, "vm", 0), m.current[0])
			for _, sn := range snaps {
				if err := s.removeSnapshot(ctx, "vm", sn.ID); err != nil {
					t.Fatal(err)
				}
			}
			mustEqual(t, "disk after removing every snapshot", readCurrent(t, s, "vm", 0), m.current[0])
			base, err := os.ReadFile(diskFile(filepath.Join(s.root, "vm"), 0))
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "disk0.img after removing every snapshot", base, m.current[0])
		})
	}
}

func removeCall(i int) func(s *site, m *model, ids []string) error {
	return func(s *site, m *model, ids []string) error {
		delete(m.snaps, ids[i])
		return s.removeSnapshot(context.Background(), "vm", ids[i])
	}
}

// TestCrashDuringTrackedWrite: a write logged but not made is reported as
// changed (a superset), never a write made but not logged.
func TestCrashDuringTrackedWrite(t *testing.T) {
	ctx := context.Background()
	s := newTestSite(t, "vm", 1<<20)
	s1, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	s.crash = crashAt("write-logged", 1)
	if !survive(t, func() { s.trackedWrite(ctx, "vm", 0, 8192, []byte("lost")) }) {
		t.Fatal("never crashed")
	}
	s = newSite(s.root)
	if err := s.trackedWrite(ctx, "vm", 0, 65536, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	s2, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := collect(t, s, "vm", s2.ID, 0, s1.Disks[0].ChangeID)
	if err != nil {
		t.Fatal(err)
	}
	if !covered(got, 8192, 4) || !covered(got, 65536, 4) {
		t.Fatalf("changed areas %v miss a write", got)
	}
}

// TestWriteExtents: `vm write --extents` writes each listed extent from
// standard input in turn (at OFFSET plus the extent's), through the change
// tracker like one write each; a bad line or standard input ending early
// is an error naming the file and the line.
func TestWriteExtents(t *testing.T) {
	ctx := context.Background()
	s := newTestSite(t, "vm", testDisk)
	want := readCurrent(t, s, "vm", 0)
	rng := testRand(t)
	ext := filepath.Join(t.TempDir(), "extents")
	write := func(lines string, data []byte, base string) (string, error) {
		t.Helper()
		if err := os.WriteFile(ext, []byte(lines), 0o644); err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		err := RunCLI(ctx, []string{"vm", "write", s.root, "vm", "0", base, "--extents", ext}, bytes.NewReader(data), new(bytes.Buffer), &stderr)
		return stderr.String(), err
	}
	var lines string
	var data []byte
	for _, e := range [][2]int64{{8192, 5000}, {100, 17}, {testDisk - 4096, 4096}, {9000, 0}} {
		d := randomData(rng, int(e[1]))
		copy(want[e[0]:], d)
		lines += fmt.Sprintf("%d %d\n", e[0], e[1])
		data = append(data, d...)
	}
	said, err := write(lines+"\n", data, "0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(said, "in 4 writes") {
		t.Errorf("it says %q", said)
	}
	mustEqual(t, "after --extents", readCurrent(t, s, "vm", 0), want)
	if _, err := write("10 3\n", []byte("abc"), "4096"); err != nil {
		t.Fatal(err)
	}
	copy(want[4106:], "abc")
	mustEqual(t, "after --extents from OFFSET", readCurrent(t, s, "vm", 0), want)
	for _, c := range []struct{ lines, input, err string }{
		{"0 10\nbad line\n", "0123456789", "line 2"},
		{"0 10\n20 10\n", "0123456789abc", "line 2: standard input ends"},
		{"-5 1\n", "x", "line 1"},
	} {
		_, err := write(c.lines, []byte(c.input), "0")
		if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), ext) {
			t.Errorf("lines %q: %v, want an error naming %s and %q", c.lines, err, ext, c.err)
		}
	}
}
