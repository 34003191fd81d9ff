package bench

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestImageComposition(t *testing.T) {
	im, err := NewImage(7, 32<<20, DiskMix)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, im.Size())
	if _, err := im.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	comp := im.Composition()
	if comp.Total() != im.Size() {
		t.Fatalf("composition covers %d bytes, want %d", comp.Total(), im.Size())
	}
	for _, tc := range []struct {
		kind Kind
		want float64
	}{{Zero, 0.30}, {Text, 0.40}, {Random, 0.30}} {
		if got := comp.Share(tc.kind); got < tc.want-0.03 || got > tc.want+0.03 {
			t.Errorf("%s: %.3f of the bytes, want %.2f ± 0.03", tc.kind, got, tc.want)
		}
	}

	// Zeros show at 4 KiB and hardly at 1 MiB.
	zero4k := countZeroBlocks(data, 4<<10)
	if got := float64(zero4k*(4<<10)) / float64(len(data)); got < comp.Share(Zero)-0.001 {
		t.Errorf("zero 4 KiB blocks hold %.3f of the disk, want at least the zero share %.3f", got, comp.Share(Zero))
	}
	if n := countZeroBlocks(data, 1<<20); n > 0 {
		t.Errorf("%d zero 1 MiB blocks, want none", n)
	}

	// The layout matches the content: zero granules read as zeros, the
	// others do not hold a zero 4 KiB block.
	for _, e := range im.Extents(Zero) {
		if !isZero(data[e.Offset:e.End()]) {
			t.Fatalf("zero extent at %d holds data", e.Offset)
		}
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	var text []byte
	for _, e := range im.Extents(Text) {
		if countZeroBlocks(data[e.Offset:e.End()], 4<<10) > 0 {
			t.Fatalf("text extent at %d holds a zero block", e.Offset)
		}
		if len(text) < 4<<20 {
			text = append(text, data[e.Offset:e.End()]...)
		}
	}
	ratio := float64(len(text)) / float64(len(enc.EncodeAll(text, nil)))
	if ratio < 2.5 || ratio > 3.5 {
		t.Errorf("text compresses %.2fx with zstd fastest, want 2.5-3.5", ratio)
	}
	var random []byte
	for _, e := range im.Extents(Random) {
		if len(random) < 1<<20 {
			random = append(random, data[e.Offset:e.End()]...)
		}
	}
	if r := float64(len(random)) / float64(len(enc.EncodeAll(random, nil))); r > 1.01 {
		t.Errorf("random data compresses %.3fx, want none", r)
	}
	t.Logf("zeros %.3f text %.3f (zstd %.2fx) random %.3f", comp.Share(Zero), comp.Share(Text), ratio, comp.Share(Random))
}

func countZeroBlocks(data []byte, bs int) int {
	n := 0
	for off := 0; off+bs <= len(data); off += bs {
		if isZero(data[off : off+bs]) {
			n++
		}
	}
	return n
}

func isZero(b []byte) bool {
	return len(bytes.TrimLeft(b, "\x00")) == 0
}

func TestImageDeterministic(t *testing.T) {
	const size = 5<<20 + 12345 // a short last chunk
	a, _ := NewImage(42, size, DiskMix)
	b, _ := NewImage(42, size, DiskMix)
	c, _ := NewImage(43, size, DiskMix)
	da, db, dc := make([]byte, size), make([]byte, size), make([]byte, size)
	for _, x := range []struct {
		im  *Image
		buf []byte
	}{{a, da}, {b, db}, {c, dc}} {
		if n, err := x.im.ReadAt(x.buf, 0); n != size || err != nil {
			t.Fatalf("ReadAt: %d, %v", n, err)
		}
	}
	if !bytes.Equal(da, db) {
		t.Fatal("the same seed gave different images")
	}
	if bytes.Equal(da, dc) {
		t.Fatal("different seeds gave the same image")
	}
	// Any range reads the same as the whole.
	for _, r := range []struct{ off, n int64 }{{0, 1}, {4095, 8193}, {1<<20 - 7, 3 << 20}, {size - 100, 100}} {
		p := make([]byte, r.n)
		if _, err := a.ReadAt(p, r.off); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(p, da[r.off:r.off+r.n]) {
			t.Fatalf("ReadAt(%d, %d) differs from the whole image", r.off, r.n)
		}
	}
	p := make([]byte, 200)
	if n, err := a.ReadAt(p, size-100); n != 100 || err != io.EOF {
		t.Fatalf("ReadAt past the end: %d, %v; want 100, EOF", n, err)
	}

	// The file holds the same bytes.
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteFile(context.Background(), path, 3); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, da) {
		t.Fatal("the written file differs from the image")
	}
}

func TestWriteSparse(t *testing.T) {
	const size = 7<<20 + 4096 // chunks 0, 3 and 6 written; 6 is whole, 7 is short
	im, _ := NewImage(42, size, DiskMix)
	whole := make([]byte, size)
	if _, err := im.ReadAt(whole, 0); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := im.WriteSparse(context.Background(), path, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3<<20 {
		t.Errorf("wrote %d bytes, want 3 MiB", n)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != size {
		t.Fatalf("the file holds %d bytes, want %d", len(got), size)
	}
	for c := int64(0); c*chunkSize < size; c++ {
		want := make([]byte, im.chunkLen(c))
		if c%3 == 0 {
			want = whole[c*chunkSize : c*chunkSize+im.chunkLen(c)]
		}
		if !bytes.Equal(got[c*chunkSize:c*chunkSize+im.chunkLen(c)], want) {
			t.Errorf("chunk %d: want the image's bytes when its index is a multiple of 3, else zeros", c)
		}
	}
	if _, err := im.WriteSparse(context.Background(), path, 2, 0); err == nil {
		t.Error("one chunk in 0: no error")
	}
}

func TestMixInvalid(t *testing.T) {
	for _, m := range []Mix{{}, {50, 50, 1}, {-10, 60, 50}} {
		if _, err := NewImage(1, 1<<20, m); err == nil {
			t.Errorf("mix %+v accepted", m)
		}
	}
	if _, err := NewImage(1, 0, DiskMix); err == nil {
		t.Error("an empty image accepted")
	}
}
