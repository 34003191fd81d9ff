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
