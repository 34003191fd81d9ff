package vmdk

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/sdk/disk/vmdk/vmdktest"
)

// The hand-made hosted file the fuzz seeds use is one qemu-img reads as
// meant.
func TestHostedWriter(t *testing.T) {
	const capacity = 2048 + 24
	l := grains(11, 4096, []int64{0, 2, 258}, []int64{1})
	b := vmdktest.Hosted(capacity, l)
	p := filepath.Join(t.TempDir(), "self.vmdk")
	writeFile(t, p, b[:len(b):len(b)])
	want := make([]byte, capacity*sectorSize)
	l.Apply(want, 4096)
	d := judge(t, p, want)
	checkAllocated(t, d, 1, extentsOf(capacity*sectorSize, 4096, l))
}

// exercise reads what an extent says of itself: a spread of spans and the
// ranges it holds. Errors are fine; panics, hangs and huge allocations
// are not.
func exercise(m mapper, size int64) {
	if m == nil || size <= 0 {
		return
	}
	for i := int64(0); i < 64; i++ {
		off := size / 64 * i
		k, at, n, err := m.span(off)
		if err == nil && (n < 1 || off+n > size || (k == kindData && at < 0)) {
			panic(fmt.Sprintf("span(%d) = %d, %d, %d", off, k, at, n))
		}
	}
	m.defined(func(off, n int64) {
		if off < 0 || n < 1 || off+n > size {
			panic(fmt.Sprintf("defined %d+%d outside %d", off, n, size))
		}
	})
}

// fuzzSectors is the extent size a fuzzed header asks for, kept small
// enough that walking it stays quick.
func fuzzSectors(capacity int64) int64 { return min(capacity, 1<<22) }

func FuzzDescriptor(f *testing.F) {
	f.Add(vmdktest.Descriptor(1, NoParent, "vmfs", "", `RW 2048 VMFS "vm-flat.vmdk"`))
	f.Add(vmdktest.Descriptor(2, 1, "seSparse", "vm.vmdk", `RW 2048 SESPARSE "vm-000001-sesparse.vmdk"`))
	f.Add([]byte("version=1\r\nCID=fffffffe\r\ncreateType=\"twoGbMaxExtentFlat\"\r\nRW 100 FLAT \"a\" 7\r\nRDONLY 5 FLAT \"b\" 0\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDescriptor(b)
		if err != nil {
			return
		}
		for _, e := range d.Extents {
			if e.Sectors < 1 || e.Sectors > maxSectors || e.Offset < 0 || e.File == "" {
				t.Fatalf("extent %+v", e)
			}
		}
	})
}

func FuzzCOWD(f *testing.F) {
	f.Add(vmdktest.COWD(1<<20, 1, grains(1, 512, []int64{0, 7, 2047}, nil), "vm.vmdk"))
	f.Add(vmdktest.COWD(3<<20, 8, grains(2, 4096, []int64{1, 600}, nil), ""))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseCOWDHeader(b)
		if err != nil || h.sectors == 0 {
			return
		}
		n := fuzzSectors(h.sectors)
		g, err := openCOWD(bytes.NewReader(b), int64(len(b)), n)
		if err == nil {
			exercise(g, n*sectorSize)
		}
	})
}

func FuzzSESparse(f *testing.F) {
	l := grains(3, 4096, []int64{0, 5, 255}, []int64{3})
	l.Unmapped = []int64{4}
	f.Add(vmdktest.SESparse(1<<20, l, 0, false))
	f.Add(vmdktest.SESparse(1<<20, vmdktest.Layer{}, 0, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseSEHeader(b)
		if err != nil || h.capacity == 0 {
			return
		}
		n := fuzzSectors(h.capacity)
		g, err := openSESparse(bytes.NewReader(b), int64(len(b)), n)
		if err == nil {
			exercise(g, n*sectorSize)
		}
	})
}

func FuzzHosted(f *testing.F) {
	f.Add(vmdktest.Hosted(2048+24, grains(4, 4096, []int64{0, 2, 258}, []int64{1})))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		readDescriptor(r, int64(len(b)))
		h, err := parseHostedHeader(b)
		if err != nil || h.capacity == 0 {
			return
		}
		n := fuzzSectors(h.capacity)
		g, err := openHosted(r, int64(len(b)), n)
		if err == nil {
			exercise(g, n*sectorSize)
		}
	})
}
