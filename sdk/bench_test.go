package sdk_test

import (
	"context"
	"math/rand/v2"
	"testing"
)

// BenchmarkStreamLaneWriteScattered writes scattered 4-64 KiB pieces
// through a replica disk's stream lane, as a change-tracked run does, and
// waits for the plugin to apply them (Sync) once per 64.
func BenchmarkStreamLaneWriteScattered(b *testing.B) {
	g, w := openGlueWriter(b)
	defer w.Close()
	g.writer.noSnapshot = true
	r := rand.New(rand.NewPCG(1, 2))
	data := diskData()
	type piece struct{ off, n int64 }
	pieces := make([]piece, 1024)
	var total int64
	for i := range pieces {
		n := int64(4096 * (1 + r.IntN(16)))
		pieces[i] = piece{r.Int64N(diskSize-n) / 4096 * 4096, n}
		total += n
	}
	for i := range data {
		data[i] |= 1 // no zero runs: every piece carries data
	}
	b.SetBytes(total / int64(len(pieces)))
	i := 0
	for b.Loop() {
		p := pieces[i%len(pieces)]
		if _, err := w.WriteAt(data[p.off:p.off+p.n], p.off); err != nil {
			b.Fatal(err)
		}
		if i++; i%64 == 0 {
			if err := w.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := w.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkStreamLaneRead reads 4 MiB at a time through a source disk's
// stream lane.
func BenchmarkStreamLaneRead(b *testing.B) {
	_, c := newGlue(b)
	src := configureSource(b, c)
	ctx := context.Background()
	r, err := src.OpenSnapshotDisk(ctx, "web-01", "s", 0)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := r.ReadAt(buf, 0); err != nil {
			b.Fatal(err)
		}
	}
}
