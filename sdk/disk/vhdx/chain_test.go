package vhdx

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// buildChain makes a base disk and depth differencing disks on it, each
// with random writes, and returns the paths (top first) and the model of
// each layer (top first).
func buildChain(t *testing.T, dir string, o Options, depth int, seed uint64) ([]string, []*model) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 3))
	var paths []string
	var models []*model
	base := filepath.Join(dir, "base.vhdx")
	img, err := Create(base, o)
	if err != nil {
		t.Fatal(err)
	}
	info := img.Info()
	m := newModel(make([]byte, o.Size), info.BlockSize, info.LogicalSectorSize, false)
	for layer := 0; ; layer++ {
		for range 25 {
			p, off := randomWrite(r, o.Size, info.BlockSize)
			if _, err := img.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			m.write(p, off)
		}
		checkImage(t, img, m)
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		paths = append([]string{img.Path()}, paths...)
		models = append([]*model{m}, models...)
		if layer == depth {
			return paths, models
		}
		child := filepath.Join(dir, fmt.Sprintf("child%d.avhdx", layer+1))
		if img, err = CreateDifferencing(child, img.Path()); err != nil {
			t.Fatal(err)
		}
		m = newModel(m.data, info.BlockSize, info.LogicalSectorSize, true)
		checkImage(t, img, m) // a new child reads as its parent and holds nothing
	}
}

func TestDifferencingChains(t *testing.T) {
	cases := []struct {
		name  string
		depth int
		opts  Options
	}{
		{"depth 1", 1, Options{Size: 6*mib + 1024, BlockSize: mib}},
		{"depth 3", 3, Options{Size: 5 * mib, BlockSize: 2 * mib}},
		{"depth 3, 4K sectors", 3, Options{Size: 4*mib + 8192, BlockSize: mib, LogicalSectorSize: 4096}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths, models := buildChain(t, dir, tc.opts, tc.depth, uint64(i+10))
			for li, p := range paths {
				img, err := Open(p, os.O_RDONLY)
				if err != nil {
					t.Fatal(err)
				}
				checkImage(t, img, models[li])
				// The chain's extents cover every byte that is not zero.
				ext, err := img.ChainExtents()
				if err != nil {
					t.Fatal(err)
				}
				data := models[li].data
				pos := int64(0)
				for _, e := range append(ext, Extent{int64(len(data)), 0}) {
					if !allZero(data[pos:e.Offset]) {
						t.Fatalf("%s: chain extents %v leave out data in [%d, %d)", p, ext, pos, e.Offset)
					}
					pos = e.End()
				}
				img.Close()
				if got, want := sdktest.LibvhdiDigest(t, paths[li:]...), sha(data); got != want {
					t.Fatalf("libvhdi reads %s as %s, want %s", p, got, want)
				}
			}
		})
	}
}

func TestParentWrittenAfterChildBreaksChain(t *testing.T) {
	dir := t.TempDir()
	paths, _ := buildChain(t, dir, Options{Size: 2 * mib, BlockSize: mib}, 1, 5)
	parent, err := Open(paths[1], os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parent.WriteAt([]byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	if err := parent.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(paths[0], os.O_RDONLY)
	if !errors.Is(err, ErrParentMismatch) {
		t.Fatalf("open child of a changed parent: %v, want ErrParentMismatch", err)
	}
	t.Log(err)
}

func TestParentResolution(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "base"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "top"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base", "b.vhdx")
	img, err := Create(base, Options{Size: mib, BlockSize: mib})
	if err != nil {
		t.Fatal(err)
	}
	img.WriteAt([]byte("from the base"), 0)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "top", "c.avhdx")
	img, err = CreateDifferencing(child, base)
	if err != nil {
		t.Fatal(err)
	}
	img.Close()

	// Found through relative_path ("..\base\b.vhdx"), whatever the
	// working directory.
	img, err = Open(child, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 13)
	img.ReadAt(b, 0)
	if string(b) != "from the base" {
		t.Fatalf("child reads %q", b)
	}
	if img.Parent() == nil || img.Parent().Path() != base {
		t.Fatalf("parent: %v", img.Parent())
	}
	img.Close()

	// Gone: a clear error.
	if err := os.Rename(base, base+".moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(child, os.O_RDONLY); !errors.Is(err, ErrParentNotFound) {
		t.Fatalf("open with the parent gone: %v, want ErrParentNotFound", err)
	}

	// A child that is its own parent: the loop is refused.
	if err := os.Rename(child, base); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(base, os.O_RDONLY); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open a disk that is its own parent: %v, want ErrCorrupt", err)
	}
}

func TestCreateDifferencingNeedsVHDXParent(t *testing.T) {
	q := needQemuImg(t)
	dir := t.TempDir()
	vhd := filepath.Join(dir, "p.vhd")
	run(t, q, "create", "-f", "vpc", vhd, "4M")
	if _, err := CreateDifferencing(filepath.Join(dir, "c.avhdx"), vhd); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("VHDX child of a VHD: %v, want ErrInvalidOptions", err)
	}
}
