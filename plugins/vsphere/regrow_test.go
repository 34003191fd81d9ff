package vsphere

import (
	"errors"
	"os"
	"testing"
)

// TestGrowDiskWithRestorePoints: vSphere (and the simulator's double)
// refuses to extend a disk that has snapshots; the target takes the
// points' snapshots away, extends the disk and takes them again, so every
// point keeps its id, labels, time, size and data. A growth cut short
// (here vCenter refuses the extension) is finished by the next operation
// on the replica, by another process.
func TestGrowDiskWithRestorePoints(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	r := oneDiskReplica(t, tgt, "grow")
	write := func(size, off int64, data string) { t.Helper(); writeReplica(t, tgt, r.ID, size, off, data) }
	write(0, 100, "first")
	p1, err := tgt.CreateRestorePoint(t.Context(), r.ID, map[string]string{"n": "1"})
	if err != nil {
		t.Fatal(err)
	}
	write(0, 100, "second")
	p2, err := tgt.CreateRestorePoint(t.Context(), r.ID, map[string]string{"n": "2"})
	if err != nil {
		t.Fatal(err)
	}
	before, err := tgt.ListRestorePoints(t.Context(), r.ID)
	if err != nil || len(before) != 2 {
		t.Fatalf("points before: %+v, %v", before, err)
	}

	// The disk grows from 2 to 4 MiB, then to 6 MiB with the extension
	// refused once (the target gives up with the snapshots removed).
	write(4<<20, 3<<20, "grown")
	s.ContendProxy(t, "grow", 1)
	if _, err := tgt.OpenReplicaDisk(t.Context(), r.ID, 0, 6<<20); err == nil {
		t.Fatal("growing succeeded although vCenter refused the extension")
	}
	if j, err := readRegrow(tgt.cached(r.ID).dir); err != nil || j == nil || len(j.Points) != 2 {
		t.Fatalf("the growth cut short left no journal: %+v, %v", j, err)
	}
	// Another process (a new target) finishes it before listing.
	other := newTestTarget(t, s, nil)
	after, err := other.ListRestorePoints(t.Context(), r.ID)
	if err != nil || len(after) != 2 {
		t.Fatalf("points after the growth: %+v, %v", after, err)
	}
	if _, err := os.Stat(regrowPath(tgt.cached(r.ID).dir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the journal outlived the growth: %v", err)
	}
	for i := range before {
		b, a := before[i], after[i]
		if a.ID != b.ID || !a.Created.Equal(b.Created) || a.Labels["n"] != b.Labels["n"] || a.Disks[0].Capacity != 2<<20 {
			t.Fatalf("point %d changed: %+v, was %+v", i, a, b)
		}
	}
	if got := s.VM(t, "grow"); virtualDisks(got.Config.Hardware.Device)[0].CapacityInBytes != 6<<20 {
		t.Fatalf("the replica disk holds %d bytes, want 6 MiB", virtualDisks(got.Config.Hardware.Device)[0].CapacityInBytes)
	}

	// Every point reads as it was, at its size; the working state has
	// the new data and the grown size.
	read := func(point string, off int64, n int) string {
		t.Helper()
		rd, err := other.OpenRestorePointDisk(t.Context(), r.ID, point, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		if point == p1.ID && rd.Size() != 2<<20 {
			t.Fatalf("point 1 reads %d bytes, want its 2 MiB", rd.Size())
		}
		buf := make([]byte, n)
		if _, err := rd.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		return string(buf)
	}
	if got := read(p1.ID, 100, 5); got != "first" {
		t.Fatalf("point 1 reads %q", got)
	}
	if got := read(p2.ID, 100, 6); got != "second" {
		t.Fatalf("point 2 reads %q", got)
	}
	if got := read("", 3<<20, 5); got != "grown" {
		t.Fatalf("the working state reads %q at 3 MiB", got)
	}
	// New points go on as before, and the disk writes past the old end.
	w, err := other.OpenReplicaDisk(t.Context(), r.ID, 0, 6<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("third"), 5<<20); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := other.CreateRestorePoint(t.Context(), r.ID, nil); err != nil {
		t.Fatal(err)
	}
}
