package vsphere

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vmdk/vmdktest"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func grainsOf(seed byte, size int64, data, zero []int64) vmdktest.Layer {
	l := vmdktest.Layer{Grains: map[int64][]byte{}}
	for i, g := range data {
		b := make([]byte, size)
		for j := range b {
			b[j] = seed + byte(i) + byte(j*7)
		}
		l.Grains[g] = b
	}
	for _, g := range zero {
		l.Grains[g] = nil
	}
	return l
}

// deltaReplica fails a replica over and puts its disk on a chain of two
// deltas of kind (writeChain); it returns the replica, the site, the top
// descriptor's local path and the chain's bytes as meant.
func deltaReplica(t *testing.T, kind string) (*Target, *sdk.Replica, *vcsimtest.Site, string, []byte) {
	t.Helper()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	r := pointedReplica(t, tgt, "fbd-"+strings.ToLower(kind))
	fo, err := tgt.Failover(t.Context(), sdk.FailoverRequest{Replica: r.ID})
	if err != nil {
		t.Fatal(err)
	}
	top, want := writeChain(t, s, fo.VM.Name, kind)
	return tgt, r, s, top, want
}

// writeChain puts disk 0 of VM vm on a chain of two deltas of kind
// ("vmfsSparse" or "seSparse") over its base, written beside it on the
// datastore as ESXi would; it returns the top descriptor's local path and
// the chain's bytes as meant.
func writeChain(t *testing.T, s *vcsimtest.Site, vm, kind string) (string, []byte) {
	t.Helper()
	return s.ChainAbove(t, vm, kind, func(grains [2]int64, size int64) [2]vmdktest.Layer {
		if kind == "vmfsSparse" {
			return [2]vmdktest.Layer{grainsOf(1, grains[0], []int64{0, 7, 4095}, nil), grainsOf(2, grains[1], []int64{1, 300, 511}, nil)}
		}
		l1 := grainsOf(3, grains[0], []int64{2, 5, 40}, []int64{0})
		l1.Unmapped = []int64{9}
		return [2]vmdktest.Layer{l1, grainsOf(4, grains[1], []int64{3, 511}, []int64{5})}
	})
}

func readFailedOver(t *testing.T, rd sdk.DiskReader) []byte {
	t.Helper()
	got := make([]byte, rd.Size())
	for off := int64(0); off < rd.Size(); off += 192 << 10 {
		if _, err := rd.ReadAt(got[off:min(off+192<<10, rd.Size())], off); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	return got
}

// TestFailbackReadsDeltaChain: a failed-over replica running on a chain of
// two vmfsSparse or seSparse deltas over its base reads, through
// OpenFailedOverDisk, exactly what qemu-img reads of the chain and what
// the chain was written to hold. It reads the chain of a read snapshot,
// which nothing writes any more (the VM goes on in a new delta above it,
// which the reader does not open); Close removes the snapshot and the VM
// is back on its chain.
func TestFailbackReadsDeltaChain(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"vmfsSparse", "seSparse"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tgt, r, s, top, want := deltaReplica(t, kind)
			if q := vmdktest.QemuRead(t, top); !bytes.Equal(q, want) {
				t.Fatal("qemu-img does not read the chain as written")
			}
			rd, err := tgt.OpenFailedOverDisk(t.Context(), r.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			cr, ok := rd.(*chainReader)
			if !ok {
				t.Fatalf("reader %T, want a chain reader", rd)
			}
			vm := s.VM(t, r.VM.Name)
			if findSnapshotByName(&vm, failbackRead) == nil {
				t.Fatal("no read snapshot while the reader is open")
			}
			live := virtualDisks(vm.Config.Hardware.Device)[0].Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName
			if !strings.Contains(live, "-ferrysim-") || cr.path != top {
				t.Fatalf("the VM runs on %s, the reader reads %s: want a new delta for the VM and the snapshot's chain (%s) for the reader", live, cr.path, top)
			}
			if got := readFailedOver(t, rd); !bytes.Equal(got, want) {
				t.Fatalf("the failed-over disk differs from the chain (first at %d)", firstDifference(got, want))
			}
			if err := rd.Close(); err != nil {
				t.Fatal(err)
			}
			vm = s.VM(t, r.VM.Name)
			if findSnapshotByName(&vm, failbackRead) != nil {
				t.Fatal("the read snapshot survived the reader's Close")
			}
			if f := virtualDisks(vm.Config.Hardware.Device)[0].Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName; !strings.HasSuffix(f, "-000002.vmdk") {
				t.Fatalf("after the read the VM runs on %s, want its chain's top", f)
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFailbackReadsSeSparseBacking: vSphere describes a disk on seSparse
// deltas with VirtualDiskSeSparseBackingInfo links, not flat ones; the
// failed-over replica's chain is read the same, and the read snapshot
// goes with the reader.
func TestFailbackReadsSeSparseBacking(t *testing.T) {
	t.Parallel()
	tgt, r, s, _, want := deltaReplica(t, "seSparse")
	var chain []string
	for b := virtualDisks(s.VM(t, r.VM.Name).Config.Hardware.Device)[0].Backing.(*types.VirtualDiskFlatVer2BackingInfo); b != nil; b = b.Parent {
		chain = append(chain, b.FileName)
	}
	s.SetSeSparseChain(t, r.VM.Name, 0, chain)
	if _, ok := virtualDisks(s.VM(t, r.VM.Name).Config.Hardware.Device)[0].Backing.(*types.VirtualDiskSeSparseBackingInfo); !ok {
		t.Fatal("the disk's backing is not seSparse")
	}
	rd, err := tgt.OpenFailedOverDisk(t.Context(), r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rd.(*chainReader); !ok {
		t.Fatalf("reader %T, want a chain reader", rd)
	}
	if got := readFailedOver(t, rd); !bytes.Equal(got, want) {
		t.Fatalf("the failed-over disk differs from the chain (first at %d)", firstDifference(got, want))
	}
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	vm := s.VM(t, r.VM.Name)
	if findSnapshotByName(&vm, failbackRead) != nil {
		t.Fatal("the read snapshot survived the reader's Close")
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

func firstDifference(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestFailbackBrokenDeltaChain: a chain with a file gone, or whose parent
// changed after its delta was made, fails naming the file; nothing is
// left behind (no read snapshot).
func TestFailbackBrokenDeltaChain(t *testing.T) {
	t.Parallel()
	tgt, r, s, top, _ := deltaReplica(t, "vmfsSparse")
	dir := filepath.Dir(top)
	middle := filepath.Join(dir, strings.Replace(filepath.Base(top), "-000002", "-000001", 1))
	// The middle delta's CID changes: its child no longer matches it.
	text, err := os.ReadFile(middle)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(middle, bytes.Replace(text, []byte("CID=00000100"), []byte("CID=00000999"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = tgt.OpenFailedOverDisk(t.Context(), r.ID, 0)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), filepath.Base(middle)) || !strings.Contains(err.Error(), "parentCID") {
		t.Fatalf("a parent changed: %v, want ErrFailedPrecondition naming %s", err, filepath.Base(middle))
	}
	os.WriteFile(middle, text, 0o644)
	gone := strings.TrimSuffix(middle, ".vmdk") + "-delta.vmdk"
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	_, err = tgt.OpenFailedOverDisk(t.Context(), r.ID, 0)
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), filepath.Base(gone)) {
		t.Fatalf("a delta file gone: %v, want ErrNotFound naming %s", err, filepath.Base(gone))
	}
	vm := s.VM(t, r.VM.Name)
	if findSnapshotByName(&vm, failbackRead) != nil {
		t.Fatal("a failed open left its read snapshot")
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestFailbackKilledReaderSwept: a process dies with a delta chain's
// reader open (its read snapshot held); the next process's failback call
// removes the snapshot, the VM is back on its chain, and a new reader
// reads it whole.
func TestFailbackKilledReaderSwept(t *testing.T) {
	t.Parallel()
	tgt, r, s, _, want := deltaReplica(t, "seSparse")
	if _, err := tgt.OpenFailedOverDisk(t.Context(), r.ID, 0); err != nil {
		t.Fatal(err)
	}
	tgt.crashed() // the reader is never closed
	again := newTestTarget(t, s, nil)
	if _, err := again.FailedOverChanges(t.Context(), sdk.FailedOverChangesRequest{Replica: r.ID}, func([]sdk.Extent) error { return nil }); err != nil {
		t.Fatal(err)
	}
	vm := s.VM(t, r.VM.Name)
	if findSnapshotByName(&vm, failbackRead) != nil || findSnapshotByName(&vm, failbackMark) != nil {
		t.Fatal("a read or mark snapshot survived the next failback call")
	}
	if f := virtualDisks(vm.Config.Hardware.Device)[0].Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName; !strings.HasSuffix(f, "-000002.vmdk") {
		t.Fatalf("the VM runs on %s, want its chain's top", f)
	}
	rd, err := again.OpenFailedOverDisk(t.Context(), r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFailedOver(t, rd); !bytes.Equal(got, want) {
		t.Fatal("the disk read after the sweep differs from the chain")
	}
	if err := rd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := again.UndoFailover(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestSourceReadsDeltaChain: a source VM running on a chain of deltas (it
// has snapshots of its own) is read from ferry's snapshot through the
// datastore mount, with transport "direct" and with "auto" when HotAdd
// cannot be used: exactly what qemu-img reads of the chain. The snapshot's
// removal puts the VM back on its chain.
func TestSourceReadsDeltaChain(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "app", Disks: []int64{2 << 20}, PoweredOn: true})
	s.Write(t, "app", 0, 0, bytes.Repeat([]byte("base "), 1000))
	top, want := writeChain(t, s, "app", "vmfsSparse")
	if q := vmdktest.QemuRead(t, top); !bytes.Equal(q, want) {
		t.Fatal("qemu-img does not read the chain as written")
	}
	for _, transport := range []string{TransportDirect, TransportAuto} {
		src := newTestSource(t, s, true, map[string]cty.Value{"transport": cty.StringVal(transport)})
		snap := snapshot(t, src, "app", "ferry-"+transport)
		rd, err := src.OpenSnapshotDisk(t.Context(), "app", snap.ID, 0)
		if err != nil {
			t.Fatalf("%s: %v", transport, err)
		}
		if _, ok := rd.(*chainReader); !ok {
			t.Fatalf("%s: reader %T, want the chain read through the mount", transport, rd)
		}
		if mode, why := rd.(sdk.TransportReporter).Transport(); mode != TransportDirect || !strings.Contains(why, "through the datastore mount") {
			t.Errorf("%s: transport %q (%s)", transport, mode, why)
		}
		if got := readFailedOver(t, rd); !bytes.Equal(got, want) {
			t.Fatalf("%s: the snapshot's disk differs from the chain (first at %d)", transport, firstDifference(got, want))
		}
		rd.Close()
		if err := src.RemoveSnapshot(t.Context(), "app", snap.ID); err != nil {
			t.Fatal(err)
		}
		if f := virtualDisks(s.VM(t, "app").Config.Hardware.Device)[0].Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName; !strings.HasSuffix(f, "-000002.vmdk") {
			t.Fatalf("after the snapshot's removal the VM runs on %s, want its chain's top", f)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}
