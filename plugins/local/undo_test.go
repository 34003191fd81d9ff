package local

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestBatchAdd: a batch keeps its writes' data in slabs; a write that goes
// on where the one before ended is merged into it, across no slab
// boundary; applying the batch in order gives what the writes give.
func TestBatchAdd(t *testing.T) {
	type w struct {
		off int64
		n   int
	}
	tests := []struct {
		name   string
		writes []w
		want   int // pending writes after merging
	}{
		{"scattered", []w{{0, 4096}, {1 << 20, 100}, {8192, 1}}, 3},
		{"adjacent", []w{{4096, 4096}, {8192, 8192}, {16384, 1}}, 1},
		{"adjacent, then back", []w{{0, 10}, {10, 10}, {5, 10}}, 2},
		{"overlapping", []w{{0, 4096}, {2048, 4096}}, 2},
		{"larger than a slab", []w{{0, slabSize + 5000}}, 2},
		{"adjacent across a slab boundary", []w{{0, slabSize - 10}, {slabSize - 10, 20}}, 2},
	}
	rng := testRand(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := make([]byte, 3<<20)
			var b batch
			for _, x := range tt.writes {
				p := randomData(rng, x.n)
				copy(want[x.off:], p)
				b.add(p, x.off)
				clear(p) // the batch holds a copy
			}
			if len(b.writes) != tt.want {
				t.Errorf("%d pending writes, want %d", len(b.writes), tt.want)
			}
			got := make([]byte, len(want))
			var n int64
			for _, pw := range b.writes {
				copy(got[pw.off:], pw.data)
				n += int64(len(pw.data))
			}
			if n != b.bytes {
				t.Errorf("writes hold %d bytes, batch counts %d", n, b.bytes)
			}
			mustEqual(t, "applied batch", got, want)
			if spare := b.release(); len(spare) != 0 {
				t.Errorf("released write list holds %d writes", len(spare))
			}
		})
	}
}

// TestTargetCrashesInBigBatches: a writer whose writes span several
// batches (the first applied in the background) and several chunks of
// undo blocks, killed while the last batch's old blocks are partly staged,
// all staged but not committed, and committed with half of its writes
// applied: every point reads right after, and the replica replicates on.
func TestTargetCrashesInBigBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MiB")
	}
	const (
		size = 48 << 20
		slot = 128 << 10 // writes of 64 KiB at every other 64 KiB: never adjacent
		n    = 384       // 24 MiB: one full batch, then half of one
	)
	ctx := context.Background()
	// The first batch (16 MiB, 256 writes, 4096 old blocks in 4 chunks)
	// passes "undo-staged" 4 times and "undo-saved" 256 times in the
	// background; the second, at Close, 2 and 128 times.
	cases := []struct {
		step string
		n    int
	}{
		{"undo-staged", 5}, // one chunk of the last batch staged
		{"undo-staged", 6}, // all staged, before the fsync pair
		{"undo-saved", 300},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s %d", tc.step, tc.n), func(t *testing.T) {
			root := t.TempDir()
			tgt, err := NewTarget(root)
			if err != nil {
				t.Fatal(err)
			}
			vm := sdk.VM{Name: "big", CPUs: 1, MemoryMiB: 64, Disks: []sdk.Disk{{Index: 0, Capacity: size}}}
			if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "big", VM: vm}); err != nil {
				t.Fatal(err)
			}
			r := &replica{t: tgt, name: "big", disks: [][]byte{make([]byte, size)}, points: map[string][][]byte{}}
			rng := testRand(t)
			r.write(t, 0, span{0, fastRandom(rng, size)})
			r.point(t, nil)
			r.write(t, 0, scatter(rng, size, 20)...)
			r.point(t, nil)

			var spans []span
			for _, s := range rng.Perm(size / slot)[:n] {
				spans = append(spans, span{int64(s) * slot, fastRandom(rng, 64<<10)})
			}
			tgt.crash = crashAt(tc.step, tc.n)
			if !survive(t, func() {
				w, err := tgt.OpenReplicaDisk(ctx, "big", 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range spans {
					if _, err := w.WriteAt(s.data, s.off); err != nil {
						t.Fatal(err)
					}
				}
				w.Close()
			}) {
				t.Fatalf("never reached step %s %d times", tc.step, tc.n)
			}
			tgt.crashForTest()
			if tgt, err = NewTarget(root); err != nil {
				t.Fatal(err)
			}
			r.t = tgt
			r.verify(t, "after the crash")

			// The working state is some mix of old and new; the next run
			// writes on from it.
			rd, err := tgt.OpenRestorePointDisk(ctx, "big", "", 0)
			if err != nil {
				t.Fatal(err)
			}
			r.disks[0] = readAllAt(t, rd)
			rd.Close()
			for i, s := range spans {
				if i%2 == 0 {
					spans[i].data = bytes.Repeat([]byte{byte(i)}, len(s.data))
				}
			}
			r.write(t, 0, spans...)
			r.point(t, nil)
			r.verify(t, "replicating after the crash")
		})
	}
}

// fastRandom is randomData eight bytes at a time, for large disks.
func fastRandom(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

// TestPreparedWrites: the prepared lane of a replica with points. The host
// writes prepared ranges into the working image itself; points stay whole,
// a crash while the undo blocks are saved (or right after) loses no point,
// a superseded writer and ranges past the disk are refused, and points
// cannot change until the writer is closed.
func TestPreparedWrites(t *testing.T) {
	ctx := context.Background()
	for _, crash := range []string{"", "undo-staged", "prepared"} {
		t.Run("crash at "+crash, func(t *testing.T) {
			root := t.TempDir()
			tgt, err := NewTarget(root)
			if err != nil {
				t.Fatal(err)
			}
			r := newReplica(t, tgt, "p")
			rng := testRand(t)
			r.fill(t, rng)
			r.point(t, nil)
			r.write(t, 0, scatter(rng, int64(len(r.disks[0])), 5)...)
			r.point(t, nil)

			w, err := tgt.OpenReplicaDisk(ctx, "p", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			wp := w.(sdk.WritePreparer)
			path := w.(sdk.LocalPather).LocalPath()
			spans := scatter(rng, int64(len(r.disks[0])), 8)
			var es []sdk.Extent
			for _, s := range spans {
				es = append(es, sdk.Extent{Offset: s.off, Length: int64(len(s.data))})
			}
			if crash != "" {
				// The host writes only after PrepareWrites returned: a
				// crash before that leaves the file as it was; one after
				// it, with the file half written, keeps the points too.
				if crash == "undo-staged" {
					tgt.crash = crashAt(crash, 1)
					if !survive(t, func() { wp.PrepareWrites(es) }) {
						t.Fatal("PrepareWrites never staged an undo block")
					}
				} else {
					if err := wp.PrepareWrites(es); err != nil {
						t.Fatal(err)
					}
					writeFile(t, path, spans[:len(spans)/2])
				}
				tgt.crashForTest()
				if tgt, err = NewTarget(root); err != nil {
					t.Fatal(err)
				}
				r.t = tgt
				r.verify(t, "after a crash around prepared writes")
				return
			}
			if err := wp.PrepareWrites([]sdk.Extent{{Offset: int64(len(r.disks[0])) - 10, Length: 11}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("a range past the disk: %v, want ErrInvalidArgument", err)
			}
			if err := wp.PrepareWrites(es); err != nil {
				t.Fatal(err)
			}
			if _, err := tgt.CreateRestorePoint(ctx, "p", nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("a point while the host may write the file: %v, want ErrFailedPrecondition", err)
			}
			writeFile(t, path, spans)
			r.verify(t, "with the prepared ranges written, writer open")

			// A newer writer supersedes this one: its prepares are refused.
			w2, err := tgt.OpenReplicaDisk(ctx, "p", 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := wp.PrepareWrites(es[:1]); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Errorf("a superseded writer's prepare: %v, want ErrFailedPrecondition", err)
			}
			w2.Close()
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			for _, s := range spans {
				copy(r.disks[0][s.off:], s.data)
			}
			r.point(t, nil)
			r.verify(t, "after prepared writes")
		})
	}
}

// writeFile writes spans into a file and syncs it, as a host's data mover
// writes a replica's working image.
func writeFile(t *testing.T, path string, spans []span) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spans {
		if _, err := f.WriteAt(s.data, s.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		t.Fatal(err)
	}
}
