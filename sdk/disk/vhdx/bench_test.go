package vhdx

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The throughput goal: a dynamic VHDX reads and writes at 70% or more of
// a raw file's speed. Each benchmark moves benchSize bytes per iteration
// in 1 MiB pieces, the raw ones through an *os.File, so the ratio of the
// MB/s columns is the figure to watch:
//
//	go test -run '^$' -bench . -benchtime 3x ./disk/vhdx/
//	FERRY_VHDX_BENCH_MIB=1024 go test -run '^$' -bench . -benchtime 3x ./disk/vhdx/

func benchSize(b *testing.B) int64 {
	mibs := int64(128)
	if s := os.Getenv("FERRY_VHDX_BENCH_MIB"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("FERRY_VHDX_BENCH_MIB=%q: want a positive number of MiB", s)
		}
		mibs = n
	}
	return mibs * mib
}

// benchChunk is written data (not the kernel's zero page) that is not
// all zero, so nothing is skipped.
func benchChunk() []byte {
	p := make([]byte, mib)
	for i := range p {
		p[i] = byte(i*31 + 7)
	}
	return p
}

func BenchmarkWriteDynamic(b *testing.B) {
	size, p, dir := benchSize(b), benchChunk(), b.TempDir()
	b.SetBytes(size)
	for b.Loop() {
		path := filepath.Join(dir, "w.vhdx")
		img, err := Create(path, Options{Size: size})
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += mib {
			if _, err := img.WriteAt(p, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := img.Close(); err != nil {
			b.Fatal(err)
		}
		os.Remove(path)
	}
}

func BenchmarkWriteRaw(b *testing.B) {
	size, p, dir := benchSize(b), benchChunk(), b.TempDir()
	b.SetBytes(size)
	for b.Loop() {
		path := filepath.Join(dir, "w.raw")
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += mib {
			if _, err := f.WriteAt(p, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(path)
	}
}

func BenchmarkReadDynamic(b *testing.B) {
	size, p, dir := benchSize(b), benchChunk(), b.TempDir()
	path := filepath.Join(dir, "r.vhdx")
	img, err := Create(path, Options{Size: size})
	if err != nil {
		b.Fatal(err)
	}
	for off := int64(0); off < size; off += mib {
		img.WriteAt(p, off)
	}
	if err := img.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		img, err := Open(path, os.O_RDONLY)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += mib {
			if _, err := img.ReadAt(p, off); err != nil {
				b.Fatal(err)
			}
		}
		img.Close()
	}
}

func BenchmarkReadRaw(b *testing.B) {
	size, p, dir := benchSize(b), benchChunk(), b.TempDir()
	path := filepath.Join(dir, "r.raw")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	for off := int64(0); off < size; off += mib {
		f.WriteAt(p, off)
	}
	f.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += mib {
			if _, err := f.ReadAt(p, off); err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
	}
}
