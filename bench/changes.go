package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sort"

	"github.com/klauspost/compress/zstd"
)

// Extent is a byte range of a disk.
type Extent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
}

// End is the first byte past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// appendMerged appends e to sorted extents, merging it into the last one
// when they touch or overlap.
func appendMerged(es []Extent, e Extent) []Extent {
	if n := len(es); n > 0 && e.Offset <= es[n-1].End() {
		es[n-1].Length = max(es[n-1].End(), e.End()) - es[n-1].Offset
		return es
	}
	return append(es, e)
}

// Change is one guest write of new data: 4 to 64 KiB at a 4 KiB boundary,
// as file systems write.
type Change struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	Kind   Kind  `json:"kind"` // Text or Random, never Zero: every byte is new
	seed   uint64
}

// End is the first byte past the write.
func (c Change) End() int64 { return c.Offset + c.Length }

// Data fills p, of the change's length, with the change's data.
func (c Change) Data(p []byte) {
	if c.Kind == Text {
		fillText(p, rand.New(rand.NewPCG(c.seed, uint64(c.Offset))))
		return
	}
	newRandomSource(c.seed).Read(p)
}

// Changes are scattered writes over one disk, in the order a guest made
// them; later writes may overlap earlier ones.
type Changes struct {
	Size   int64    // the disk's size
	Writes []Change // in write order
}

// NewChanges draws writes at random 4 KiB-aligned places until they cover
// percent of a disk of size bytes (a little more: the last write is whole).
// Each write holds text or random data in the proportion of mix's Text and
// Random shares; mix's zero share is ignored, since a write of new data
// changes every byte it covers. percent is in (0, 50]: past half the disk,
// scattered writes stop being what the scenarios measure.
func NewChanges(seed uint64, size int64, percent float64, mix Mix) (*Changes, error) {
	if err := mix.check(); err != nil {
		return nil, err
	}
	if mix.Text+mix.Random == 0 {
		return nil, fmt.Errorf("mix %d/%d/%d: changes need text or random data", mix.Zero, mix.Text, mix.Random)
	}
	if percent <= 0 || percent > 50 {
		return nil, fmt.Errorf("changes over %g%% of the disk: must be more than 0 and at most 50", percent)
	}
	blocks := size / GranuleUnit
	if blocks < 1 {
		return nil, fmt.Errorf("changes on a disk of %d bytes: it must hold at least one %d-byte block", size, GranuleUnit)
	}
	target := int64(percent / 100 * float64(blocks))
	target = max(target, 1)
	rng := rand.New(rand.NewPCG(derive(seed, streamChanges, 0), uint64(size)))
	covered := make([]uint64, (blocks+63)/64)
	var done int64
	cs := &Changes{Size: size}
	dataMix := Mix{Text: mix.Text, Random: mix.Random}
	for i := uint64(0); done < target; i++ {
		n := min(int64(1+rng.IntN(MaxGranule/GranuleUnit)), blocks)
		b := rng.Int64N(blocks - n + 1)
		for x := b; x < b+n; x++ {
			w, bit := x/64, uint64(1)<<(x%64)
			if covered[w]&bit == 0 {
				covered[w] |= bit
				done++
			}
		}
		cs.Writes = append(cs.Writes, Change{
			Offset: b * GranuleUnit,
			Length: n * GranuleUnit,
			Kind:   dataMix.pick(rng),
			seed:   derive(seed, streamChangeData, i),
		})
	}
	return cs, nil
}

// Extents is the union of the writes: sorted, merged, what the changes
// really changed.
func (cs *Changes) Extents() []Extent {
	es := make([]Extent, len(cs.Writes))
	for i, w := range cs.Writes {
		es[i] = Extent{Offset: w.Offset, Length: w.Length}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Offset < es[j].Offset })
	var out []Extent
	for _, e := range es {
		out = appendMerged(out, e)
	}
	return out
}

// Bytes is how many bytes of the disk the changes cover.
func (cs *Changes) Bytes() int64 {
	var n int64
	for _, e := range cs.Extents() {
		n += e.Length
	}
	return n
}

// WrittenBytes is the sum of the writes' lengths (overlaps counted twice).
func (cs *Changes) WrittenBytes() int64 {
	var n int64
	for _, w := range cs.Writes {
		n += w.Length
	}
	return n
}

// Apply makes each write, in order, through write, with a buffer that is
// reused after write returns.
func (cs *Changes) Apply(write func(off int64, data []byte) error) error {
	buf := make([]byte, MaxGranule)
	for _, w := range cs.Writes {
		b := buf[:w.Length]
		w.Data(b)
		if err := write(w.Offset, b); err != nil {
			return err
		}
	}
	return nil
}

// Compressed is what the bytes of some extents of a disk come to.
type Compressed struct {
	Raw        int64 `json:"raw_bytes"`
	Compressed int64 `json:"zstd_bytes"` // one zstd stream at SpeedFastest
}

// CompressedSize reads the extents from r and compresses them, one after
// the other, as one zstd stream at its fastest level: the least a tool
// could send for them with that codec without knowing the data beforehand.
func CompressedSize(r io.ReaderAt, es []Extent) (Compressed, error) {
	var cw countingWriter
	enc, err := zstd.NewWriter(&cw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return Compressed{}, fmt.Errorf("zstd encoder: %w", err)
	}
	var out Compressed
	buf := make([]byte, 1<<20)
	for _, e := range es {
		for off := e.Offset; off < e.End(); {
			n := min(int64(len(buf)), e.End()-off)
			k, err := r.ReadAt(buf[:n], off)
			if int64(k) < n {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				enc.Close()
				return Compressed{}, fmt.Errorf("read %d bytes at %d: %w", n, off, err)
			}
			if _, err := enc.Write(buf[:n]); err != nil {
				enc.Close()
				return Compressed{}, fmt.Errorf("compress: %w", err)
			}
			out.Raw += n
			off += n
		}
	}
	if err := enc.Close(); err != nil {
		return Compressed{}, fmt.Errorf("compress: %w", err)
	}
	out.Compressed = cw.n
	return out, nil
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }
