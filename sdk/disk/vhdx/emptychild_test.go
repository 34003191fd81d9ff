package vhdx

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// TestAnEmptyChildReadsAsItsParent: a differencing disk nothing was
// written to reads as its parent, to us and to libvhdi (which reads a
// chunk without a sector bitmap block as zeros: CreateDifferencing gives
// every chunk an empty one), at one chunk and at several; its chain's
// extents are its parent's.
func TestAnEmptyChildReadsAsItsParent(t *testing.T) {
	for _, o := range []Options{
		{Size: 6 * mib, BlockSize: mib},
		// 4096 blocks of 1 MiB per chunk with 512-byte sectors: three chunks.
		{Size: 8<<30 + 3*mib, BlockSize: mib},
	} {
		dir := t.TempDir()
		base := filepath.Join(dir, "base.vhdx")
		img, err := Create(base, o)
		if err != nil {
			t.Fatal(err)
		}
		data := pattern(6*mib, 3)
		for _, off := range []int64{0, o.Size - 6*mib} {
			if _, err := img.WriteAt(data, off); err != nil {
				t.Fatal(err)
			}
		}
		want, err := img.ChainExtents()
		if err != nil {
			t.Fatal(err)
		}
		img.Close()
		child, err := CreateDifferencing(filepath.Join(dir, "c.avhdx"), base)
		if err != nil {
			t.Fatal(err)
		}
		child.Close()
		if o.Size < 1<<30 { // libvhdi reads every byte: small disks only
			if got, want := sdktest.LibvhdiDigest(t, child.Path(), base), sdktest.LibvhdiDigest(t, base); got != want {
				t.Fatalf("size %d: libvhdi reads the empty child as %s, its parent as %s", o.Size, got, want)
			}
		}
		c, err := Open(child.Path(), os.O_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		tail := make([]byte, len(data))
		if _, err := c.ReadAt(tail, o.Size-6*mib); err != nil || sha(tail) != sha(data) {
			t.Fatalf("size %d: the empty child's last chunk does not read as its parent's (%v)", o.Size, err)
		}
		got, err := c.ChainExtents()
		c.Close()
		if err != nil || len(got) != len(want) {
			t.Fatalf("size %d: the empty child's chain extents %v, its parent's %v (%v)", o.Size, got, want, err)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("size %d: the empty child's chain extents %v, its parent's %v", o.Size, got, want)
			}
		}
	}
}
