package datamover

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ferry-dr/ferry/sdk"
)

// synthDisk is a disk of any size that holds no memory: each 8-byte word
// is made from its offset and a generation, so a changed extent reads
// differently from the replica's digests.
type synthDisk struct{ size int64 }

func (d synthDisk) ReadAt(p []byte, off int64) (int, error) {
	n := int(min(int64(len(p)), d.size-off))
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], uint64(off+int64(i))*0x9e3779b97f4a7c15)
	}
	return n, nil
}

func (d synthDisk) Size() int64  { return d.size }
func (d synthDisk) Close() error { return nil }

// discard is a replica disk that forgets what it is given.
type discard struct{}

func (discard) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }

// segmentDigests is a DigestStore that, like replicameta's for a
// change-tracked run writing little of each segment, loads no segment
// whole: it knows no digests and keeps none.
type segmentDigests struct{}

func (segmentDigests) Take(ctx context.Context, takes []Take, wait bool) ([]*Pending, error) {
	return make([]*Pending, len(takes)), nil
}

func (segmentDigests) Put(ctx context.Context, us []Update) error { return nil }

// scatterExtents names random 4-64 KiB extents over about pct percent of
// a disk of size bytes.
func scatterExtents(seed uint64, size int64, pct float64) []sdk.Extent {
	r := rand.New(rand.NewPCG(seed, 1))
	var out []sdk.Extent
	target := int64(float64(size) * pct / 100)
	for done := int64(0); done < target; {
		n := int64(4096 * (1 + r.IntN(16)))
		off := r.Int64N(size-n) / 4096 * 4096
		out = append(out, sdk.Extent{Offset: off, Length: n})
		done += n
	}
	return out
}

// heapPeak samples the live heap until stop is called and returns the
// highest value seen, in bytes.
func heapPeak() (stop func() uint64) {
	runtime.GC()
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// liveHeap is the live heap after a collection, in bytes.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkMoveScattered moves a change-tracked 1% of scattered 4-64 KiB
// writes on sparse disks of growing size into a receiver, and reports the
// host's peak live heap: it must follow the changed bytes, not the disk.
func BenchmarkMoveScattered(b *testing.B) {
	for _, gib := range []int64{4, 16, 64} {
		b.Run(fmt.Sprintf("%dGiB", gib), func(b *testing.B) {
			size := gib << 30
			changed := scatterExtents(uint64(gib), size, 1)
			b.SetBytes(CoveredBytes(changed, DefaultBlockSize, size))
			var peak uint64
			for b.Loop() {
				stop := heapPeak()
				req := Request{Source: synthDisk{size}, Size: size, Changed: changed, Allocated: changed,
					Digests: segmentDigests{}, Sink: NewReceiver(discard{}, size)}
				if _, err := Move(context.Background(), req, Options{}); err != nil {
					b.Fatal(err)
				}
				peak = max(peak, stop())
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// diskLikeImage builds, once, an in-memory disk image like the one
// bench/image.go generates for `make bench`: granules of 4-64 KiB, about
// 30% zeros, 40% text-like (prose and log lines over a Zipf vocabulary,
// about 3x with zstd at its fastest) and 30% random bytes.
var diskLikeImage = sync.OnceValue(func() []byte {
	const size = 256 << 20
	img := make([]byte, size)
	r := rand.New(rand.NewPCG(12, 12))
	words := make([]string, 2048)
	for i := range words {
		w := make([]byte, 2+r.IntN(9))
		for j := range w {
			w[j] = "etaoinshrdlucmfwypvbgkjqxz"[min(r.IntN(26), r.IntN(26))]
		}
		words[i] = string(w)
	}
	word := func() string { return words[min(r.IntN(len(words)), r.IntN(len(words)), r.IntN(len(words)))] }
	random := rand.NewChaCha8([32]byte{12})
	for off := 0; off < size; {
		g := img[off:min(off+4096*(1+r.IntN(16)), size)]
		switch k := r.IntN(10); {
		case k < 3: // zeros: already there
		case k < 7:
			t := g[:0]
			for len(t) < len(g) {
				if r.IntN(2) == 0 {
					t = fmt.Appendf(t, "2025-11-%02d %05d INFO [%s] ", 1+r.IntN(28), r.IntN(86400), word())
				}
				for range 4 + r.IntN(12) {
					t = append(t, word()...)
					t = append(t, ' ')
				}
				t = append(t, ".\n"...)
			}
			// t grew past g's room into memory of its own: copy it back.
			copy(g, t)
		default:
			random.Read(g)
		}
		off += len(g)
	}
	return img
})

// imageDisk is a source disk held in memory, read like a page-cached file
// (without memDisk's lock, which would make the reads take turns).
type imageDisk []byte

func (d imageDisk) ReadAt(p []byte, off int64) (int, error) { return copy(p, d[off:]), nil }
func (d imageDisk) Size() int64                             { return int64(len(d)) }
func (d imageDisk) Close() error                            { return nil }

// slowDisk reads and writes like a plugin across a gRPC connection, at
// about 1 GiB/s: a call that brings the bytes moved to a whole MiB waits a
// millisecond per MiB (timers are not finer) without using a core.
type slowDisk struct {
	imageDisk
	moved *atomic.Int64
}

func (d slowDisk) slowDown(n int) {
	after := d.moved.Add(int64(n))
	if mib := after>>20 - (after-int64(n))>>20; mib > 0 {
		time.Sleep(time.Duration(mib) * time.Millisecond)
	}
}

func (d slowDisk) ReadAt(p []byte, off int64) (int, error) {
	d.slowDown(len(p))
	return d.imageDisk.ReadAt(p, off)
}

func (d slowDisk) WriteAt(p []byte, off int64) (int, error) {
	d.slowDown(len(p))
	return len(p), nil
}

// coresUsed starts counting and returns a function that reports the
// process's CPU time per operation and over the wall time ("cores"): on a
// machine others share, the first is what the work costs, the second
// tells a stage that waits from one that is short of a core.
func coresUsed(b *testing.B) (report func()) {
	cpu0, t0 := cpuTime(), time.Now()
	return func() {
		cpu, wall := cpuTime()-cpu0, time.Since(t0)
		if wall > 0 && cpu0 >= 0 && b.N > 0 {
			b.ReportMetric(float64(cpu)/float64(wall), "cores")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
		}
	}
}

// BenchmarkMoveFull is a full copy of a disk-like image into an empty
// replica, into a sink that forgets the frames (source) or into a
// receiver that decodes, verifies and forgets them (both sides in one
// process, as the engine runs them), or, as "plugins", into a receiver
// with both disks behind a slowDisk. MB/s is of the whole disk; the peak
// live heap is counted above what was live before (the image).
func BenchmarkMoveFull(b *testing.B) {
	img := diskLikeImage()
	size := int64(len(img))
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		for _, side := range []string{"source", "receiver", "plugins"} {
			b.Run(fmt.Sprintf("%v/%s", codec, side), func(b *testing.B) {
				b.SetBytes(size)
				var sent int64
				var peak uint64
				base := liveHeap()
				defer coresUsed(b)()
				for b.Loop() {
					stop := heapPeak()
					req := Request{Source: imageDisk(img), Size: size, TargetZero: true, Sink: &countSink{}}
					switch side {
					case "receiver":
						req.Sink = NewReceiver(discard{}, size)
					case "plugins":
						req.Source = slowDisk{imageDisk(img), new(atomic.Int64)}
						req.Sink = NewReceiver(slowDisk{nil, new(atomic.Int64)}, size)
					}
					st, err := Move(context.Background(), req, Options{Codec: codec})
					if err != nil {
						b.Fatal(err)
					}
					sent = st.BytesSent
					peak = max(peak, stop())
				}
				b.ReportMetric(float64(size)/float64(sent), "ratio")
				b.ReportMetric(float64(peak-min(peak, base))/(1<<20), "peak-heap-MiB")
			})
		}
	}
}

// BenchmarkZstdCeiling compresses the image's data runs (what a full copy
// frames: zeros are skipped) in pieces of at most DefaultReadSize with
// EncodeAll at SpeedFastest on 1 and 2 goroutines, one encoder each: the
// most a full copy with zstd can do here. MB/s is of the whole disk.
func BenchmarkZstdCeiling(b *testing.B) {
	img := diskLikeImage()
	var runs [][]byte
	for off := 0; off < len(img); {
		for off < len(img) && isZero(img[off:off+DefaultBlockSize]) {
			off += DefaultBlockSize
		}
		start := off
		for off < len(img) && off-start < DefaultReadSize && !isZero(img[off:off+DefaultBlockSize]) {
			off += DefaultBlockSize
		}
		if off > start {
			runs = append(runs, img[start:off])
		}
	}
	for _, g := range []int{1, 2} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			b.SetBytes(int64(len(img)))
			defer coresUsed(b)()
			for b.Loop() {
				var next atomic.Int64
				var wg sync.WaitGroup
				for range g {
					wg.Go(func() {
						enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
						if err != nil {
							panic(err)
						}
						dst := make([]byte, 0, DefaultReadSize+DefaultReadSize>>7+1<<10)
						for i := next.Add(1) - 1; i < int64(len(runs)); i = next.Add(1) - 1 {
							dst = enc.EncodeAll(runs[i], dst[:0])
						}
					})
				}
				wg.Wait()
			}
		})
	}
}
