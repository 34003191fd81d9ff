package local

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

// crashForTest makes the target behave as if its process died: every open
// file is closed without fsync, so the kernel drops the flocks, and nothing
// the writers would have done on Close happens. The instance must not be
// used again; open a new one on the same folder.
func (t *Target) crashForTest() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for dir, rw := range t.writers {
		for _, sd := range rw.disks {
			sd.gate.Lock()
			sd.f.Close()
			if sd.undo != nil {
				sd.undo.close()
			}
			sd.disabled = os.ErrClosed
			sd.gate.Unlock()
		}
		rw.wlock.Release()
		delete(t.writers, dir)
	}
}

// errCrash is what a crash hook panics with.
type errCrash string

// crashAt returns a crash hook that panics at the n-th (from 1) passage
// through step.
func crashAt(step string, n int) func(string) {
	seen := 0
	return func(s string) {
		if s == step {
			seen++
			if seen == n {
				panic(errCrash(s))
			}
		}
	}
}

// survive runs f and reports whether it crashed through a crash hook.
func survive(t *testing.T, f func()) (crashed bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(errCrash); !ok {
				panic(r)
			}
			crashed = true
		}
	}()
	f()
	return false
}

func testRand(t *testing.T) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(len(t.Name())), 0x5eed))
}

func randomData(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// readAllAt reads a whole disk reader.
func readAllAt(t *testing.T, r sdk.DiskReader) []byte {
	t.Helper()
	buf := make([]byte, r.Size())
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		t.Fatalf("read disk: %v", err)
	}
	if int64(n) != r.Size() {
		t.Fatalf("read disk: %d of %d bytes", n, r.Size())
	}
	return buf
}

// firstDiff returns the first offset where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func mustEqual(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: differs at byte %d (got %d bytes, want %d)", what, firstDiff(got, want), len(got), len(want))
	}
}

// newTestSite makes a site with one VM of the given disk sizes.
func newTestSite(t *testing.T, vm string, disks ...int64) *site {
	t.Helper()
	s := newSite(t.TempDir())
	if _, err := s.createVM(context.Background(), VMSpec{Name: vm, Disks: disks, CPUs: 2, MemoryMiB: 512,
		NICs: []sdk.NIC{{Network: "prod", Addresses: []string{"10.1.0.5/24"}}}}); err != nil {
		t.Fatal(err)
	}
	return s
}
