package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
)

// Kind is what a granule of an image, or a change, holds.
type Kind uint8

const (
	Zero   Kind = iota // zeros: never sent by a tool that detects them
	Text               // compressible: prose, logs, records
	Random             // incompressible: media, encrypted or compressed files
)

func (k Kind) String() string {
	switch k {
	case Zero:
		return "zero"
	case Text:
		return "text"
	case Random:
		return "random"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Mix gives the share of each kind in percent of the bytes.
type Mix struct{ Zero, Text, Random int }

// DiskMix is a used disk as DESIGN.md §10 measures its peers on: about 30%
// zeros, 40% compressible and 30% random.
var DiskMix = Mix{Zero: 30, Text: 40, Random: 30}

func (m Mix) check() error {
	if m.Zero < 0 || m.Text < 0 || m.Random < 0 || m.Zero+m.Text+m.Random != 100 {
		return fmt.Errorf("mix %d/%d/%d: shares must be at least 0 and add up to 100", m.Zero, m.Text, m.Random)
	}
	return nil
}

// pick draws a kind with the mix's probabilities.
func (m Mix) pick(rng *rand.Rand) Kind {
	r := rng.IntN(m.Zero + m.Text + m.Random)
	switch {
	case r < m.Zero:
		return Zero
	case r < m.Zero+m.Text:
		return Text
	}
	return Random
}

// Granules are 4 to 64 KiB, in steps of 4 KiB and aligned to 4 KiB: a tool
// comparing 4 KiB blocks finds every zero granule, one comparing 1 MiB
// blocks almost none.
const (
	GranuleUnit = 4 << 10
	MaxGranule  = 64 << 10
	// chunkSize is the unit an image is generated in: each chunk has a
	// layout and content of its own, from the seed and its index alone, so
	// any part of the image can be generated without the rest.
	chunkSize = 1 << 20
)

// Image is a deterministic disk-like image: the same seed and size give the
// same bytes. It is an io.ReaderAt over content it generates on demand.
type Image struct {
	seed uint64
	size int64
	mix  Mix
}

// NewImage describes an image of size bytes.
func NewImage(seed uint64, size int64, mix Mix) (*Image, error) {
	if err := mix.check(); err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, fmt.Errorf("image size %d: must be positive", size)
	}
	return &Image{seed: seed, size: size, mix: mix}, nil
}

// Size is the image's size in bytes.
func (im *Image) Size() int64 { return im.size }

func (im *Image) chunks() int64 { return (im.size + chunkSize - 1) / chunkSize }

// chunkLen is the length of chunk c (the last may be short).
func (im *Image) chunkLen(c int64) int64 { return min(chunkSize, im.size-c*chunkSize) }

// splitmix is a 64-bit mixer, to derive independent seeds.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Streams of one seed, kept apart so that a chunk's layout can be drawn
// without drawing its content.
const (
	streamLayout uint64 = iota + 1
	streamText
	streamRandom
	streamChanges
	streamChangeData
)

func derive(seed, stream, index uint64) uint64 {
	return splitmix(splitmix(seed^splitmix(stream)) ^ index)
}

// layout calls fn for each granule of chunk c, in order, with its offset
// within the chunk, its length and its kind.
func (im *Image) layout(c int64, fn func(off, n int, k Kind)) {
	rng := rand.New(rand.NewPCG(derive(im.seed, streamLayout, uint64(c)), uint64(c)))
	n := int(im.chunkLen(c))
	for off := 0; off < n; {
		g := min(GranuleUnit*(1+rng.IntN(MaxGranule/GranuleUnit)), n-off)
		fn(off, g, im.mix.pick(rng))
		off += g
	}
}

// fillChunk writes chunk c's content into dst (of the chunk's length).
func (im *Image) fillChunk(c int64, dst []byte) {
	text := rand.New(rand.NewPCG(derive(im.seed, streamText, uint64(c)), uint64(c)))
	random := newRandomSource(derive(im.seed, streamRandom, uint64(c)))
	im.layout(c, func(off, n int, k Kind) {
		g := dst[off : off+n]
		switch k {
		case Zero:
			clear(g)
		case Text:
			fillText(g, text)
		case Random:
			random.Read(g)
		}
	})
}

func newRandomSource(seed uint64) *rand.ChaCha8 {
	var key [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(key[8*i:], splitmix(seed+uint64(i)))
	}
	return rand.NewChaCha8(key)
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// ReadAt reads the image's bytes at off. It is safe for concurrent use.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read image at %d: negative offset", off)
	}
	if off >= im.size {
		return 0, io.EOF
	}
	want := len(p)
	p = p[:min(int64(len(p)), im.size-off)]
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		c := pos / chunkSize
		in := int(pos - c*chunkSize)
		cl := int(im.chunkLen(c))
		if in == 0 && len(p)-done >= cl {
			im.fillChunk(c, p[done:done+cl])
			done += cl
			continue
		}
		buf := (*bp)[:cl]
		im.fillChunk(c, buf)
		done += copy(p[done:], buf[in:])
	}
	if done < want {
		return done, io.EOF
	}
	return done, nil
}

// Composition is how many bytes of each kind an image holds.
type Composition struct {
	Zero   int64 `json:"zero_bytes"`
	Text   int64 `json:"text_bytes"`
	Random int64 `json:"random_bytes"`
}

// Total is the image's size.
func (c Composition) Total() int64 { return c.Zero + c.Text + c.Random }

// Share is the fraction of the bytes that are of kind k.
func (c Composition) Share(k Kind) float64 {
	if c.Total() == 0 {
		return 0
	}
	switch k {
	case Zero:
		return float64(c.Zero) / float64(c.Total())
	case Text:
		return float64(c.Text) / float64(c.Total())
	}
	return float64(c.Random) / float64(c.Total())
}

// Composition counts the bytes of each kind from the layout alone, without
// generating the content.
func (im *Image) Composition() Composition {
	var out Composition
	for c := range im.chunks() {
		im.layout(c, func(_, n int, k Kind) {
			switch k {
			case Zero:
				out.Zero += int64(n)
			case Text:
				out.Text += int64(n)
			case Random:
				out.Random += int64(n)
			}
		})
	}
	return out
}

// Extents lists where the granules of kind k lie, merged where they touch.
func (im *Image) Extents(k Kind) []Extent {
	var out []Extent
	for c := range im.chunks() {
		im.layout(c, func(off, n int, kind Kind) {
			if kind == k {
				out = appendMerged(out, Extent{Offset: c*chunkSize + int64(off), Length: int64(n)})
			}
		})
	}
	return out
}

// WriteFile writes the whole image, zeros included (a thick disk: finding
// the zeros is up to the tool reading it), into the file at path, which
// must exist, with workers goroutines, and syncs it.
func (im *Image) WriteFile(ctx context.Context, path string, workers int) error {
	return im.writeChunks(ctx, path, workers, 1)
}

// WriteSparse writes one chunk of the image's in every: the chunks whose
// index is a multiple of every, at their place, into the file at path,
// which must exist, and leaves the rest of the file as holes (a thin disk
// holding 1/every of the image's content). It returns the bytes written.
func (im *Image) WriteSparse(ctx context.Context, path string, workers int, every int64) (int64, error) {
	if every < 1 {
		return 0, fmt.Errorf("write sparse image: one chunk in %d", every)
	}
	var n int64
	for c := int64(0); c < im.chunks(); c += every {
		n += im.chunkLen(c)
	}
	return n, im.writeChunks(ctx, path, workers, every)
}

func (im *Image) writeChunks(ctx context.Context, path string, workers int, every int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write image: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(im.size); err != nil {
		return fmt.Errorf("write image %s: %w", path, err)
	}
	workers = max(workers, 1)
	next := make(chan int64)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunkSize)
			for c := range next {
				b := buf[:im.chunkLen(c)]
				im.fillChunk(c, b)
				if _, err := f.WriteAt(b, c*chunkSize); err != nil {
					errs <- fmt.Errorf("write image %s at %d: %w", path, c*chunkSize, err)
					return
				}
			}
		}()
	}
	var werr error
feed:
	for c := int64(0); c < im.chunks(); c += every {
		select {
		case next <- c:
		case werr = <-errs:
			break feed
		case <-ctx.Done():
			werr = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if werr == nil {
		werr = <-errs
	}
	if werr != nil {
		return werr
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync image %s: %w", path, err)
	}
	return f.Close()
}
