package replicameta

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// The delta tests use segments of 256 blocks (1 MiB), so that a few
// blocks are far below the compaction threshold (1/16: 16 blocks).
const (
	bigBlks = 256
	bigSize = bs * bigBlks
)

type rig struct {
	t       *testing.T
	repo    sdk.Repository
	replica []byte
	opened  int
	point   int // restore points made
}

func newRig(t *testing.T, segs int) *rig {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, segs*bigSize)
	for i := range b {
		if (i/bs)%3 != 0 { // every third block is zeros
			b[i] = byte(r.Uint32())
		}
	}
	return &rig{t: t, repo: sdktest.NewMemRepository(), replica: b}
}

// open opens the store for the next run: the previous run made point
// p<n>.
func (g *rig) open(fresh bool) *Store {
	g.t.Helper()
	b := Binding{Replica: "r1", Incarnation: "i1"}
	if g.point > 0 {
		b.Point, b.PointSession = "p"+string(rune('0'+g.point)), "s"+string(rune('0'+g.point))
	}
	s, err := Open(context.Background(), g.repo, Prefix("j", "vm", 0), Options{
		Session: "s" + string(rune('0'+g.point+1)), Size: int64(len(g.replica)), BlockSize: bs, SegmentBlocks: bigBlks, Fresh: fresh, Binding: b,
		Recompute: func(ctx context.Context) (io.ReaderAt, error) {
			g.opened++
			return bytes.NewReader(g.replica), nil
		},
	})
	if err != nil {
		g.t.Fatal(err)
	}
	return s
}

// finish ends a run: the manifest is finished and the point made.
func (g *rig) finish(s *Store) {
	g.t.Helper()
	if err := s.Finish(context.Background(), int64(len(g.replica))); err != nil {
		g.t.Fatal(err)
	}
	s.Close()
	g.point++
}

func (g *rig) digest(block int64) datamover.Digest {
	return datamover.BlockDigest(g.replica[block*bs : (block+1)*bs])
}

// write changes blocks of the replica (as a run would) and returns the
// update of segment seg naming them.
func (g *rig) write(seg int, blocks ...int) datamover.Update {
	u := datamover.Update{Seg: seg, Digests: make([]datamover.Digest, bigBlks), Handled: make([]uint64, bigBlks/64)}
	for _, i := range blocks {
		b := int64(seg*bigBlks + i)
		g.replica[b*bs] ^= 0x5A
		g.replica[b*bs+1]++
		u.Digests[i] = g.digest(b)
		u.Handled[i/64] |= 1 << (i % 64)
	}
	return u
}

func spansOf(seg int, blocks ...int) []sdk.Extent {
	var out []sdk.Extent
	for _, i := range blocks {
		out = append(out, sdk.Extent{Offset: int64(seg*bigSize + i*bs), Length: bs})
	}
	return out
}

func (g *rig) full() {
	g.t.Helper()
	ctx := context.Background()
	s := g.open(true)
	n := (len(g.replica) + bigSize - 1) / bigSize
	var takes []datamover.Take
	var ups []datamover.Update
	for seg := range n {
		hi := min((seg+1)*bigSize, len(g.replica))
		takes = append(takes, datamover.Take{Seg: seg, Spans: []sdk.Extent{{Offset: int64(seg * bigSize), Length: int64(hi - seg*bigSize)}}})
		d, _ := datamover.DigestRange(bytes.NewReader(g.replica), int64(seg*bigSize), int64(hi), bs)
		ups = append(ups, datamover.Update{Seg: seg, Digests: d})
	}
	if _, err := s.Take(ctx, takes, true); err != nil {
		g.t.Fatal(err)
	}
	if err := s.Put(ctx, ups); err != nil {
		g.t.Fatal(err)
	}
	g.finish(s)
}

// check is a digest run that finds nothing changed: it takes every
// segment whole, compares what the store knows with the replica, puts the
// same digests back and finishes.
func (g *rig) check(wantRecomputed int64) {
	g.t.Helper()
	ctx := context.Background()
	s := g.open(false)
	for seg := range (len(g.replica) + bigSize - 1) / bigSize {
		lo, hi := seg*bigSize, min((seg+1)*bigSize, len(g.replica))
		ps, err := s.Take(ctx, []datamover.Take{{Seg: seg, Spans: []sdk.Extent{{Offset: int64(lo), Length: int64(hi - lo)}}}}, true)
		if err != nil {
			g.t.Fatal(err)
		}
		d, _ := ps[0].Wait(ctx)
		all, err := every(d)
		if err != nil {
			g.t.Fatalf("segment %d: %v", seg, err)
		}
		for i, v := range all {
			if v != g.digest(int64(seg*bigBlks+i)) {
				g.t.Fatalf("segment %d block %d: the stored digest is not the replica's", seg, i)
			}
		}
		if err := s.Put(ctx, []datamover.Update{{Seg: seg, Digests: all}}); err != nil {
			g.t.Fatal(err)
		}
	}
	if st := s.Stats(); st.BytesRecomputed != wantRecomputed {
		g.t.Fatalf("recomputed %d bytes from the replica, want %d", st.BytesRecomputed, wantRecomputed)
	}
	g.finish(s)
	if m := manifestAt(g.t, g.repo, Prefix("j", "vm", 0)); len(m.Dirty) != 0 {
		g.t.Fatalf("a finished digest run left dirty ranges %v", m.Dirty)
	}
}

// A change-tracked run writing a few blocks stores a delta of them, not
// its segments again; the next run finds them in the delta, and a digest
// run finds base and delta together describing the replica.
func TestTrackedRunsWriteDeltas(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 4)
	g.full()

	s := g.open(false)
	if _, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spansOf(1, 3, 4, 200)}, {Seg: 3, Spans: spansOf(3, 7)}}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, []datamover.Update{g.write(1, 3, 4, 200), g.write(3, 7)}); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.BasesWritten != 0 || st.DeltaEntries != 4 || st.ObjectsLoaded != 0 {
		t.Fatalf("stats %+v: want 4 delta entries, no base written or loaded", st)
	}
	g.finish(s)
	m := storedManifest2(t, g.repo)
	if len(m.Deltas) != 1 || m.Deltas[0].Blocks[1] != 3 || m.Deltas[0].Blocks[3] != 1 || len(m.Dirty) != 0 {
		t.Fatalf("manifest deltas %+v, dirty %v", m.Deltas, m.Dirty)
	}

	// The next change-tracked run of a few blocks loads only the delta.
	s = g.open(false)
	ps, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spansOf(1, 4, 5)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ps[0].Wait(ctx)
	if err != nil || d == nil {
		t.Fatalf("take: %v, %v", d, err)
	}
	if v, ok := d.Digest(4); !ok || v != g.digest(bigBlks+4) {
		t.Fatal("block 4's digest is not the delta's")
	}
	if _, ok := d.Digest(5); ok {
		t.Fatal("block 5 is known without its base being loaded")
	}
	if st := s.Stats(); st.ObjectsLoaded != 1 {
		t.Fatalf("loaded %d objects, want the delta alone", st.ObjectsLoaded)
	}
	if err := s.Put(ctx, []datamover.Update{g.write(1, 4, 5)}); err != nil {
		t.Fatal(err)
	}
	g.finish(s)
	g.check(0)
}

// A change-tracked run looks up, in the deltas it loads, only the blocks
// it writes, the newest delta's digest of each: its work follows the
// change, not the deltas' history.
func TestTrackedLookupsFollowTheSpans(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 2)
	g.full()
	tracked := func(blocks ...int) {
		s := g.open(false)
		if _, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spansOf(1, blocks...)}}, false); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, []datamover.Update{g.write(1, blocks...)}); err != nil {
			t.Fatal(err)
		}
		g.finish(s)
	}
	tracked(3, 4, 200)
	tracked(4, 150)

	s := g.open(false)
	// Two spans: blocks 4 and 5 (the second ending inside block 5), and
	// from inside block 150 to the end of block 151.
	spans := []sdk.Extent{{Offset: bigSize + 4*bs, Length: bs + 100}, {Offset: bigSize + 150*bs + 7, Length: 2*bs - 7}}
	ps, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spans}}, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ps[0].Wait(ctx)
	if err != nil || d == nil {
		t.Fatalf("take: %v, %v", d, err)
	}
	for _, b := range []int{4, 150} {
		if v, ok := d.Digest(b); !ok || v != g.digest(bigBlks+int64(b)) {
			t.Errorf("block %d: known %v, want the newest delta's digest", b, ok)
		}
	}
	for _, b := range []int{3, 5, 151, 200} {
		if _, ok := d.Digest(b); ok {
			t.Errorf("block %d, outside the spans or in no delta, is known", b)
		}
	}
	if st := s.Stats(); st.ObjectsLoaded != 2 {
		t.Fatalf("loaded %d objects, want the two deltas", st.ObjectsLoaded)
	}
	s.Close()
}

// Deltas are folded into a new base once they hold 1/CompactEntries of a
// segment's blocks; the deltas no segment needs are deleted.
func TestDeltasAreCompacted(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 2)
	g.full()
	// Each run writes 4 blocks of segment 0: the run that brings its
	// deltas to 1/CompactEntries of the segment folds them.
	folds := bigBlks/CompactEntries/4 - 1
	for run := range folds + 2 {
		s := g.open(false)
		blocks := []int{run * 4, run*4 + 1, run*4 + 2, 100 + run}
		if _, err := s.Take(ctx, []datamover.Take{{Seg: 0, Spans: spansOf(0, blocks...)}}, false); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, []datamover.Update{g.write(0, blocks...)}); err != nil {
			t.Fatal(err)
		}
		st := s.Stats()
		g.finish(s)
		m := storedManifest2(t, g.repo)
		if want := run == folds; (st.BasesWritten == 1) != want {
			t.Fatalf("run %d: %+v; want a base written: %v", run, st, want)
		}
		if run == folds && len(m.Deltas) != 0 {
			t.Fatalf("after compaction, deltas %+v are still named", m.Deltas)
		}
	}
	objs, _ := g.repo.List(ctx, Prefix("j", "vm", 0)+"delta/")
	if len(objs) != 1 {
		t.Fatalf("delta objects %v, want the last run's alone", objs)
	}
	g.check(0)
}

// A change-tracked run killed after it marked its blocks dirty costs a
// re-read of those blocks alone, never of whole segments; the blocks it
// named are unknown to the next change-tracked run.
func TestKilledTrackedRunLeavesItsBlocksUnknown(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 2)
	g.full()
	s := g.open(false)
	if _, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spansOf(1, 10, 11, 12)}}, false); err != nil {
		t.Fatal(err)
	}
	g.write(1, 10, 11) // written, then killed: no put, no point
	s.Close()

	s = g.open(false)
	ps, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spansOf(1, 10, 13)}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := ps[0].Wait(ctx); d != nil {
		t.Fatalf("a killed run's blocks: %v known, want nothing loaded (no deltas, base not worth it)", d)
	}
	s.Close() // cut short too: block 13 is dirty as well
	// A digest run recomputes the four dirty blocks alone.
	g.check(4 * bs)
}

// A segment written in part whose digests were never known stays unknown.
func TestPartialWriteOfUnknownSegmentStaysUnknown(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 2)
	s := g.open(false) // a replica with no metadata at all
	if _, err := s.Take(ctx, []datamover.Take{{Seg: 0, Spans: spansOf(0, 1)}}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, []datamover.Update{g.write(0, 1)}); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Unknown != 1 || s.Known() != 0 {
		t.Fatalf("stats %+v, known %d; want the segment unknown", st, s.Known())
	}
	s.Close()
}

// A trusted version 2 manifest is taken over: its segment objects become
// bases, nothing is recomputed, and the next write makes it version 3.
func TestVersion2ManifestIsMigrated(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 2)
	prefix := Prefix("j", "vm", 0)
	segs := map[int]string{}
	for seg := range 2 {
		d, _ := datamover.DigestRange(bytes.NewReader(g.replica), int64(seg*bigSize), int64((seg+1)*bigSize), bs)
		b := []byte("FDG1")
		b = binary.LittleEndian.AppendUint32(b, uint32(len(d)))
		for _, v := range d {
			b = append(b, v[:]...)
		}
		b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
		segs[seg] = prefix + "seg/" + string(rune('0'+seg)) + "-old"
		g.repo.Put(ctx, segs[seg], b, sdk.IfAbsent)
	}
	v2, _ := json.Marshal(map[string]any{"version": 2, "size": len(g.replica), "block_size": bs, "segment_blocks": bigBlks, "segments": segs,
		"session": "s1", "replica": "r1", "incarnation": "i1", "base": "", "finished": true})
	g.repo.Put(ctx, prefix+"manifest", v2, sdk.IfAbsent)
	g.point = 1

	s := g.open(false)
	if s.Distrusted() != "" || s.Known() != 2 {
		t.Fatalf("version 2 manifest: distrusted %q, known %d", s.Distrusted(), s.Known())
	}
	if _, err := s.Take(ctx, []datamover.Take{{Seg: 0, Spans: spansOf(0, 9)}}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, []datamover.Update{g.write(0, 9)}); err != nil {
		t.Fatal(err)
	}
	g.finish(s)
	if m := storedManifest2(t, g.repo); m.Version != 3 || m.Bases[1].Key != segs[1] || len(m.Segments) != 0 {
		t.Fatalf("after the first run: version %d, bases %v, segments %v", m.Version, m.Bases, m.Segments)
	}
	g.check(0)
	if g.opened != 0 {
		t.Fatal("the replica was read: the version 2 digests were not used")
	}
}

func storedManifest2(t *testing.T, repo sdk.Repository) Manifest {
	t.Helper()
	return manifestAt(t, repo, Prefix("j", "vm", 0))
}

func TestEncodings(t *testing.T) {
	zero := datamover.BlockDigest(make([]byte, bs))
	g := newRig(t, 1)
	d, _ := datamover.DigestRange(bytes.NewReader(g.replica), 0, bigSize, bs)
	enc := encodeBase(d, zero)
	if len(enc) >= 8+len(d)*digestLen {
		t.Fatalf("a base with a third of zero blocks takes %d bytes, more than them all", len(enc))
	}
	back, err := decodeBase(enc, zero)
	if err != nil || len(back) != len(d) || back[0] != d[0] || back[1] != d[1] {
		t.Fatalf("base round trip: %v", err)
	}
	es := []entry{{0, zero}, {5, d[1]}, {1 << 40, d[2]}}
	got, err := decodeDelta(encodeDelta(es, zero), zero)
	if err != nil || len(got) != 3 || got[2] != es[2] || got[0] != es[0] {
		t.Fatalf("delta round trip: %v %v", got, err)
	}
	for _, bad := range [][]byte{nil, []byte("FDG2"), enc[:40], append(enc, 0), encodeDelta(es, zero)[:20]} {
		if _, err := decodeBase(bad, zero); err == nil {
			t.Errorf("decoded %d bad bytes as a base", len(bad))
		}
		if _, err := decodeDelta(bad, zero); err == nil {
			t.Errorf("decoded %d bad bytes as a delta", len(bad))
		}
	}
}

// FuzzDecode: hostile objects give an error, never a panic or an
// allocation larger than they justify.
func FuzzDecode(f *testing.F) {
	zero := datamover.BlockDigest(make([]byte, bs))
	f.Add(encodeBase([]datamover.Digest{zero, {1}}, zero))
	f.Add(encodeDelta([]entry{{3, zero}, {9, datamover.Digest{2}}}, zero))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Objects pass their checksum to be decoded at all: fix it up so
		// the fuzzer reaches the decoders.
		if len(b) >= 12 {
			b = binary.LittleEndian.AppendUint32(b[:len(b)-4], crc32.Checksum(b[:len(b)-4], crcTable))
		}
		if d, err := decodeBase(b, zero); err == nil && len(d) > len(b)*8 {
			t.Fatalf("%d digests from %d bytes", len(d), len(b))
		}
		if es, err := decodeDelta(b, zero); err == nil && len(es) > len(b) {
			t.Fatalf("%d entries from %d bytes", len(es), len(b))
		}
	})
}

// Segments seldom written do not keep deltas alive for ever: beyond
// MaxDeltas, the oldest delta's segments fold into new bases.
func TestDeltasAreBounded(t *testing.T) {
	ctx := context.Background()
	segs := MaxDeltas + 6
	g := newRig(t, segs)
	g.full()
	for run := range segs {
		s := g.open(false)
		if _, err := s.Take(ctx, []datamover.Take{{Seg: run, Spans: spansOf(run, 7)}}, false); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, []datamover.Update{g.write(run, 7)}); err != nil {
			t.Fatal(err)
		}
		g.finish(s)
		if m := storedManifest2(t, g.repo); len(m.Deltas) > MaxDeltas {
			t.Fatalf("run %d: the manifest names %d deltas", run, len(m.Deltas))
		}
	}
	g.check(0)
}

// A disk that grew since its bases: the grown part reads as zeros, deltas
// may name blocks past a base's end, and a digest run still finds every
// digest without reading the replica.
func TestDeltasPastAGrownBase(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 2)
	g.replica = g.replica[:len(g.replica)-bigSize/2] // segment 1 is half a segment
	g.full()
	g.replica = append(g.replica, make([]byte, bigSize/2)...) // the disk grew by half a segment
	s := g.open(false)
	blocks := []int{10, bigBlks/2 + 3} // one block before the old end, one after it
	if _, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spansOf(1, blocks...)}}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, []datamover.Update{g.write(1, blocks...)}); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.DeltaEntries != 2 || st.BasesWritten != 0 {
		t.Fatalf("stats %+v: want the two blocks in a delta", st)
	}
	g.finish(s)
	g.check(0)
	if g.opened != 0 {
		t.Fatal("the replica was read")
	}
	// A run killed while writing a block of the grown segment: the next
	// digest run reads back that block alone.
	s = g.open(false)
	if _, err := s.Take(ctx, []datamover.Take{{Seg: 1, Spans: spansOf(1, 20)}}, false); err != nil {
		t.Fatal(err)
	}
	g.write(1, 20)
	s.Close()
	g.check(bs)
}

// An object the manifest names that is gone from the repository is lost
// digests: recomputed from the replica, never a failed run.
func TestMissingObjectsAreUnknown(t *testing.T) {
	ctx := context.Background()
	g := newRig(t, 2)
	g.full()
	s := g.open(false)
	if _, err := s.Take(ctx, []datamover.Take{{Seg: 0, Spans: spansOf(0, 1)}}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, []datamover.Update{g.write(0, 1)}); err != nil {
		t.Fatal(err)
	}
	g.finish(s)
	m := manifestAt(t, g.repo, Prefix("j", "vm", 0))
	g.repo.Delete(ctx, m.Bases[1].Key, sdk.IfAny)
	g.repo.Delete(ctx, m.Deltas[0].Key, sdk.IfAny)
	g.check(2 * bigSize) // both segments: 0 lost its delta, 1 its base
}
