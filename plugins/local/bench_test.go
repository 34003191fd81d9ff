//go:build unix

package local

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
)

// The benchmarks below measure the data paths of an incremental run: the
// target's scattered writes into a replica with a restore point, the
// source's snapshot removal after tracked writes, and the repository's
// puts and gets of metadata objects. Besides time and allocations they
// report what the process wrote (wchar-B/op, from /proc/self/io: every
// byte handed to write calls, page cache included), its write calls
// (syscw/op) and the CPU time it used (cpu-ns/op, user and system), which
// varies less than the wall time on a shared machine. The CPU time of the
// background goroutines counts too.
//
//	go test -run '^$' -bench . -benchtime 10x -count 5 ./plugins/local

// benchDiskSize is the replica disk of the target benchmarks.
const benchDiskSize = 512 << 20

// procIO reads the write counters of this process.
func procIO(b *testing.B) (wchar, syscw int64) {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "wchar":
			wchar = n
		case "syscw":
			syscw = n
		}
	}
	return wchar, syscw
}

// cpuTime is the CPU time (user and system) the process has used: on a
// shared machine it varies less than the wall time, which waits on
// storage.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ioMeter reports what the process wrote and the CPU time it used per
// operation of a benchmark.
type ioMeter struct {
	wchar, syscw int64
	cpu          time.Duration
}

func startIO(b *testing.B) *ioMeter {
	w, s := procIO(b)
	return &ioMeter{w, s, cpuTime()}
}

func (m *ioMeter) report(b *testing.B) {
	w, s := procIO(b)
	b.ReportMetric(float64(w-m.wchar)/float64(b.N), "wchar-B/op")
	b.ReportMetric(float64(s-m.syscw)/float64(b.N), "syscw/op")
	b.ReportMetric(float64(cpuTime()-m.cpu)/float64(b.N), "cpu-ns/op")
}

// benchChanges makes scattered writes of 4-64 KiB (whole 4 KiB blocks,
// like the data mover's) covering about percent of size.
func benchChanges(rng *rand.Rand, size int64, percent float64) []span {
	var out []span
	var total int64
	for float64(total) < float64(size)*percent/100 {
		l := int64(4<<10) * (1 + rng.Int64N(16))
		off := rng.Int64N((size-l)/4096) * 4096
		data := make([]byte, l)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		out = append(out, span{off, data})
		total += l
	}
	return out
}

// newBenchReplica makes a replica of one disk of size bytes, filled with
// random data, and a restore point of it.
func newBenchReplica(b *testing.B, size int64) *Target {
	b.Helper()
	ctx := context.Background()
	tgt, err := NewTarget(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	vm := sdk.VM{Name: "bench", CPUs: 1, MemoryMiB: 64, Disks: []sdk.Disk{{Index: 0, Capacity: size}}}
	if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "bench", VM: vm}); err != nil {
		b.Fatal(err)
	}
	w, err := tgt.OpenReplicaDisk(ctx, "bench", 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	chunk := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		for i := 0; i < len(chunk); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				chunk[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := w.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if _, err := tgt.CreateRestorePoint(ctx, "bench", nil); err != nil {
		b.Fatal(err)
	}
	return tgt
}

// BenchmarkReplicaWriteScattered is one incremental run into a replica
// with restore points: scattered writes through the disk writer, Close,
// and the restore point that ends the run. Every run saves into a new
// point, so every overwritten block is saved.
func BenchmarkReplicaWriteScattered(b *testing.B) {
	for _, pct := range []float64{1, 10} {
		b.Run(fmt.Sprintf("%g%%", pct), func(b *testing.B) {
			ctx := context.Background()
			tgt := newBenchReplica(b, benchDiskSize)
			rng := rand.New(rand.NewPCG(3, uint64(pct)))
			runs := make([][]span, 4)
			var changed int64
			for i := range runs {
				runs[i] = benchChanges(rng, benchDiskSize, pct)
			}
			for _, s := range runs[0] {
				changed += int64(len(s.data))
			}
			b.SetBytes(changed)
			b.ReportAllocs()
			io := startIO(b)
			b.ResetTimer()
			for i := range b.N {
				w, err := tgt.OpenReplicaDisk(ctx, "bench", 0, 0)
				if err != nil {
					b.Fatal(err)
				}
				for _, s := range runs[i%len(runs)] {
					if _, err := w.WriteAt(s.data, s.off); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
				if _, err := tgt.CreateRestorePoint(ctx, "bench", nil); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			io.report(b)
		})
	}
}

// BenchmarkSnapshotRemove is the source's side of a run while the guest
// writes: a snapshot, tracked writes over 1% of the disk (not timed:
// they land in the snapshot's layer), then the snapshot's removal, which
// merges the layer into the base image. wchar-B/op is what the removal
// wrote.
func BenchmarkSnapshotRemove(b *testing.B) {
	const size = 256 << 20
	ctx := context.Background()
	s := newSite(b.TempDir())
	if _, err := s.createVM(ctx, VMSpec{Name: "vm", Disks: []int64{size}, CPUs: 1, MemoryMiB: 64}); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	changes := benchChanges(rng, size, 1)
	var changed int64
	for _, c := range changes {
		changed += int64(len(c.data))
	}
	b.SetBytes(changed)
	b.ReportAllocs()
	var wchar, syscw int64
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		sn, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "vm", Name: "run"})
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range changes {
			if err := s.trackedWrite(ctx, "vm", 0, c.off, c.data); err != nil {
				b.Fatal(err)
			}
		}
		w0, s0 := procIO(b)
		c0 := cpuTime()
		b.StartTimer()
		if err := s.removeSnapshot(ctx, "vm", sn.ID); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		w1, s1 := procIO(b)
		wchar += w1 - w0
		syscw += s1 - s0
		cpu += cpuTime() - c0
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(wchar)/float64(b.N), "wchar-B/op")
	b.ReportMetric(float64(syscw)/float64(b.N), "syscw/op")
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkRepository puts and gets objects of the sizes the data mover
// stores: digest segments (about 200 KiB) and larger ones (1 MiB).
func BenchmarkRepository(b *testing.B) {
	for _, size := range []int{200 << 10, 1 << 20} {
		data := bytes.Repeat([]byte("ferry digest segment "), size/21+1)[:size]
		b.Run(fmt.Sprintf("Put/%dKiB", size>>10), func(b *testing.B) {
			r, err := NewRepository(filepath.Join(b.TempDir(), "repo"))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			io := startIO(b)
			for i := range b.N {
				if _, err := r.Put(context.Background(), "seg/"+strconv.Itoa(i%8), data, sdk.IfAny); err != nil {
					b.Fatal(err)
				}
			}
			io.report(b)
		})
		b.Run(fmt.Sprintf("Get/%dKiB", size>>10), func(b *testing.B) {
			r, err := NewRepository(filepath.Join(b.TempDir(), "repo"))
			if err != nil {
				b.Fatal(err)
			}
			for i := range 8 {
				if _, err := r.Put(context.Background(), "seg/"+strconv.Itoa(i), data, sdk.IfAny); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				got, _, err := r.Get(context.Background(), "seg/"+strconv.Itoa(i%8))
				if err != nil || len(got) != size {
					b.Fatal(len(got), err)
				}
			}
		})
	}
}
