package local

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

// TestBlockStoreDamage: a torn or corrupt index tail ends the index (and a
// writer cuts it off before appending); a block whose data does not match
// its checksum is an error; a later record for a block wins.
func TestBlockStoreDamage(t *testing.T) {
	const bs = 4096
	block := func(c byte) []byte { return bytes.Repeat([]byte{c}, bs) }
	tests := []struct {
		name   string
		damage func(t *testing.T, data, idx string)
		want   map[int64]byte // what each block reads, 0: absent
	}{
		{"intact", func(*testing.T, string, string) {}, map[int64]byte{1: 'b', 2: 'c', 7: 'd'}},
		{"torn record", func(t *testing.T, _, idx string) { appendBytes(t, idx, []byte("half a rec")) }, map[int64]byte{1: 'b', 2: 'c', 7: 'd'}},
		{"corrupt third record", func(t *testing.T, _, idx string) { flipByte(t, idx, storeHeaderSize+2*storeRecordSize+3) }, map[int64]byte{1: 'a', 2: 'c', 7: 0}},
		{"corrupt last record", func(t *testing.T, _, idx string) { flipByte(t, idx, -3) }, map[int64]byte{1: 'b', 2: 'c', 7: 0}},
		{"header only", func(t *testing.T, _, idx string) { os.Truncate(idx, storeHeaderSize) }, map[int64]byte{1: 0, 2: 0, 7: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := openStoreWriter(dir, "d", bs)
			if err != nil {
				t.Fatal(err)
			}
			w.put([]int64{1, 2}, append(block('a'), block('c')...))
			w.put([]int64{1, 7}, append(block('b'), block('d')...))
			w.close()
			data, idx := storePaths(dir, "d")
			tt.damage(t, data, idx)
			r, err := openStoreReader(dir, "d", bs)
			if err != nil {
				t.Fatal(err)
			}
			defer r.close()
			for b, c := range tt.want {
				e, ok := r.lookup(b)
				if ok != (c != 0) {
					t.Fatalf("block %d present: %v, want %v", b, ok, c != 0)
				}
				if !ok {
					continue
				}
				buf := make([]byte, bs)
				if err := r.readBlock(e, buf); err != nil || buf[0] != c {
					t.Fatalf("block %d reads %q, %v; want %q", b, buf[0], err, c)
				}
			}
			// A writer reopening the store appends after the good part.
			w, err = openStoreWriter(dir, "d", bs)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.put([]int64{9}, block('z')); err != nil {
				t.Fatal(err)
			}
			w.close()
			r2, _ := openStoreReader(dir, "d", bs)
			defer r2.close()
			if _, ok := r2.lookup(9); !ok {
				t.Fatal("a block appended after damage is lost")
			}
		})
	}
	t.Run("corrupt data", func(t *testing.T) {
		dir := t.TempDir()
		w, _ := openStoreWriter(dir, "d", bs)
		w.put([]int64{3}, block('q'))
		w.close()
		data, _ := storePaths(dir, "d")
		flipByte(t, data, 100)
		r, _ := openStoreReader(dir, "d", bs)
		defer r.close()
		e, _ := r.lookup(3)
		if err := r.readBlock(e, make([]byte, bs)); err == nil || !strings.Contains(err.Error(), "checksum") {
			t.Fatalf("reading a corrupt block: %v", err)
		}
	})
	t.Run("other block size", func(t *testing.T) {
		dir := t.TempDir()
		w, _ := openStoreWriter(dir, "d", bs)
		w.put([]int64{3}, block('q'))
		w.close()
		if _, err := openStoreWriter(dir, "d", 2*bs); err == nil {
			t.Fatal("a store opened with another block size")
		}
	})
}

func appendBytes(t *testing.T, path string, b []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(b)
}

// flipByte flips the byte at off (from the end when negative).
func flipByte(t *testing.T, path string, off int) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0xff
	os.WriteFile(path, b, 0o644)
}

// TestChangeLogTornTail: a torn last record is ignored and cut off by the
// next append; a log with a bad header is reported for a reset.
func TestChangeLogTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.log")
	l, err := resetChangeLog(path)
	if err != nil {
		t.Fatal(err)
	}
	l.recordWrite(0, 10)
	l.recordWrite(100, 10)
	appendBytes(t, path, []byte("torn"))
	l, err = loadChangeLog(path)
	if err != nil || l.seq != 2 || len(l.recs) != 2 {
		t.Fatalf("after a torn tail: %+v, %v", l, err)
	}
	if err := l.recordWrite(200, 10); err != nil {
		t.Fatal(err)
	}
	l, _ = loadChangeLog(path)
	if got := l.changedBetween(0, l.seq); len(got) != 3 || got[2].Offset != 200 {
		t.Fatalf("records after the cut: %v", got)
	}
	flipByte(t, path, 10)
	if _, err := loadChangeLog(path); err == nil {
		t.Fatal("a log with a corrupt header loaded")
	}
}

func TestMergeExtents(t *testing.T) {
	type e = struct{ off, n int64 }
	tests := []struct {
		name string
		in   []e
		want []e
	}{
		{"empty", nil, nil},
		{"apart", []e{{10, 5}, {0, 5}}, []e{{0, 5}, {10, 5}}},
		{"touching", []e{{0, 5}, {5, 5}}, []e{{0, 10}}},
		{"overlapping", []e{{0, 10}, {3, 4}, {8, 10}}, []e{{0, 18}}},
		{"zero length dropped", []e{{4, 0}, {0, 2}}, []e{{0, 2}}},
	}
	for _, tt := range tests {
		var in []sdkExtent
		for _, x := range tt.in {
			in = append(in, sdkExtent{Offset: x.off, Length: x.n})
		}
		got := sdk.MergeExtents(in)
		var out []e
		for _, x := range got {
			out = append(out, e{x.Offset, x.Length})
		}
		if len(out) != len(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, out, tt.want)
			continue
		}
		for i := range out {
			if out[i] != tt.want[i] {
				t.Errorf("%s: %v, want %v", tt.name, out, tt.want)
			}
		}
	}
}

type sdkExtent = sdk.Extent

// TestBlockStoreStage: staged blocks are not in the store until commit;
// a writer closed (or killed) before commit leaves them as bytes no record
// points at, which the next writer appends after; an aborted stage is
// written over. readBlocks reads runs stored back to back and checks each
// block.
func TestBlockStoreStage(t *testing.T) {
	const bs = 4096
	block := func(c byte) []byte { return bytes.Repeat([]byte{c}, bs) }
	dir := t.TempDir()
	w, err := openStoreWriter(dir, "d", bs)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.stage([]int64{1, 2}, append(block('a'), block('b')...)); err != nil {
		t.Fatal(err)
	}
	if w.has(1) {
		t.Fatal("a staged block is in the store before commit")
	}
	w.close() // killed before commit
	w, err = openStoreWriter(dir, "d", bs)
	if err != nil {
		t.Fatal(err)
	}
	if w.has(1) || w.has(2) {
		t.Fatal("an uncommitted block is in the store after reopening")
	}
	w.stage([]int64{5}, block('x'))
	w.abort()
	for _, c := range []struct {
		blocks []int64
		data   []byte
	}{{[]int64{3, 4}, append(block('c'), block('d')...)}, {[]int64{9}, block('e')}} {
		if err := w.stage(c.blocks, c.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	if w.has(5) || !w.has(3) || !w.has(9) {
		t.Fatal("commit did not add exactly the staged blocks")
	}
	w.close()
	r, err := openStoreReader(dir, "d", bs)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	ix := r.snapshotIndex()
	if len(ix) != 3 {
		t.Fatalf("store holds %d blocks, want 3", len(ix))
	}
	buf := make([]byte, 3*bs)
	if err := r.readBlocks(ix, []int64{3, 4, 9}, buf); err != nil {
		t.Fatal(err)
	}
	if want := append(append(block('c'), block('d')...), block('e')...); !bytes.Equal(buf, want) {
		t.Fatal("readBlocks read other data")
	}
	data, _ := storePaths(dir, "d")
	flipByte(t, data, int(ix[4].off)+100)
	if err := r.readBlocks(ix, []int64{3, 4}, buf[:2*bs]); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("a corrupt block in a run reads with %v, want a checksum error", err)
	}
}

// TestBlockStoreZeroBlocks: a new store records blocks of zeros without
// data and reads them back as zeros, one by one and in runs; a store made
// before that ("FRYBLK01") keeps writing their data, so an older plugin
// still reads it, and reads the same.
func TestBlockStoreZeroBlocks(t *testing.T) {
	const bs = 4096
	blocks := []int64{3, 4, 5, 6, 7, 9}
	fill := []byte{'a', 0, 'b', 0, 0, 'c'}
	var buf []byte
	for _, c := range fill {
		buf = append(buf, bytes.Repeat([]byte{c}, bs)...)
	}
	for _, v1 := range []bool{false, true} {
		dir := t.TempDir()
		if v1 {
			// An empty store as an older plugin made it.
			h := binaryCRC(append([]byte(storeMagicV1), storeHeader(bs)[8:12]...))
			data, idx := storePaths(dir, "s")
			if err := os.WriteFile(data, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(idx, h, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		w, err := openStoreWriter(dir, "s", bs)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.put(blocks, buf); err != nil {
			t.Fatal(err)
		}
		w.close()
		data, idx := storePaths(dir, "s")
		st, err := os.Stat(data)
		if err != nil {
			t.Fatal(err)
		}
		want := int64(3 * bs)
		if v1 {
			want = int64(len(buf))
		}
		if st.Size() != want {
			t.Errorf("v1 %v: data file of %d bytes, want %d", v1, st.Size(), want)
		}
		head, _ := os.ReadFile(idx)
		if magic := string(head[:8]); (magic == storeMagicV1) != v1 {
			t.Errorf("v1 %v: the store's magic is %q", v1, magic)
		}
		r, err := openStoreReader(dir, "s", bs)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(buf))
		if err := r.readBlocks(r.snapshotIndex(), blocks, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, buf) {
			t.Errorf("v1 %v: blocks read in runs differ", v1)
		}
		for i, b := range blocks {
			e, ok := r.lookup(b)
			one := bytes.Repeat([]byte{1}, bs)
			if !ok || r.readBlock(e, one) != nil || !bytes.Equal(one, buf[i*bs:(i+1)*bs]) {
				t.Errorf("v1 %v: block %d read alone differs", v1, b)
			}
		}
		r.close()
	}
}

// binaryCRC appends the header CRC to the first 12 bytes of a header.
func binaryCRC(h []byte) []byte {
	out := make([]byte, storeHeaderSize)
	copy(out, h[:12])
	binary.LittleEndian.PutUint32(out[12:], crc32.Checksum(out[:12], castagnoli))
	return out
}

// TestBlockStoreDirectWrites: a store written past the page cache reads
// back the same as one written through it, whatever the caller's buffer:
// aligned and large (written from itself), unaligned or small (gathered),
// more than a slab (written in parts), with zero blocks between data
// runs; its appends start aligned after a data file whose end is not (a
// store written through the cache and torn by a crash), and an aborted
// stage is written over.
func TestBlockStoreDirectWrites(t *testing.T) {
	const bs = 4096
	dir := t.TempDir()
	w, err := openStoreWriter(dir, "u", bs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64][]byte{}
	put := func(blocks []int64, buf []byte) {
		t.Helper()
		if err := w.stage(blocks, buf); err != nil {
			t.Fatal(err)
		}
		for i, b := range blocks {
			want[b] = buf[i*bs : (i+1)*bs]
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int, zeros ...int) []byte {
		b := make([]byte, n*bs)
		for i := range b {
			b[i] = byte(rng.Uint32()) | 1
		}
		for _, z := range zeros {
			clear(b[z*bs : (z+1)*bs])
		}
		return b
	}
	put([]int64{0, 1}, fill(2)) // through the cache
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	w.close()
	data, _ := storePaths(dir, "u")
	appendBytes(t, data, []byte("torn")) // a crash in the middle of an append

	w, err = openStoreWriter(dir, "u", bs)
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	w.writeDirect()
	if w.direct == nil {
		t.Log("this file system refuses direct writes: the store is written through the cache")
	} else if w.stagedEnd%directAlign != 0 {
		t.Fatalf("direct appends start at %d, not a multiple of %d", w.stagedEnd, directAlign)
	}
	if err := w.stage([]int64{90}, fill(1)); err != nil {
		t.Fatal(err)
	}
	w.abort() // staged, never committed: written over below
	slab := alignedSlab()
	defer putSlab(slab)
	big := (*slab)[:slabSize]
	copy(big, fill(slabBlocks, 7, 8, 100))
	blocks := make([]int64, slabBlocks)
	for i := range blocks {
		blocks[i] = int64(1000 + i)
	}
	put(blocks, big)                                            // aligned and large, with zero runs inside
	put([]int64{10, 11, 12}, fill(4, 1)[512:512+3*bs])          // unaligned in memory
	put([]int64{20}, fill(1))                                   // small
	put([]int64{30, 31, 32, 33, 34}, fill(5, 0, 4))             // zeros at both ends
	many := fill(slabBlocks + 41)[100 : 100+(slabBlocks+40)*bs] // more than a slab, unaligned: gathered
	manyBlocks := make([]int64, slabBlocks+40)
	for i := range manyBlocks {
		manyBlocks[i] = int64(5000 + i)
	}
	put(manyBlocks, many)
	if err := w.commit(); err != nil {
		t.Fatal(err)
	}
	r, err := openStoreReader(dir, "u", bs)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	ix := r.snapshotIndex()
	if len(ix) != len(want) {
		t.Fatalf("the store holds %d blocks, want %d", len(ix), len(want))
	}
	got := make([]byte, bs)
	for b, data := range want {
		e, ok := r.lookup(b)
		if !ok {
			t.Fatalf("block %d is missing", b)
		}
		if err := r.readBlock(e, got); err != nil {
			t.Fatalf("block %d: %v", b, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("block %d reads other data", b)
		}
	}
}
