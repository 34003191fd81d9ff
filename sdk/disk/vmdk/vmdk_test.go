package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk/disk/vmdk/vmdktest"
)

func randomBytes(seed uint64, n int64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// grains is a vmdktest.Layer with data grains gs (of size bytes each) and zero
// grains zs.
func grains(seed uint64, size int64, gs, zs []int64) vmdktest.Layer {
	l := vmdktest.Layer{Grains: map[int64][]byte{}}
	for i, g := range gs {
		l.Grains[g] = randomBytes(seed*1000+uint64(i), size)
	}
	for _, g := range zs {
		l.Grains[g] = nil
	}
	return l
}

// readAll reads the whole disk through ReadAt in uneven pieces, so reads
// cross grains, tables and runs.
func readAll(t *testing.T, d *Disk) []byte {
	t.Helper()
	out := make([]byte, d.Size())
	for off, step := int64(0), int64(4096+512*3); off < d.Size(); off += step {
		n, err := d.ReadAt(out[off:min(off+step, d.Size())], off)
		if err != nil && err != io.EOF {
			t.Fatalf("read at %d: %v", off, err)
		}
		if n != int(min(step, d.Size()-off)) {
			t.Fatalf("read at %d: %d bytes", off, n)
		}
	}
	return out
}

// judge checks that the reader, qemu-img and the intended bytes agree.
func judge(t *testing.T, path string, want []byte) *Disk {
	t.Helper()
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", d.Size(), len(want))
	}
	got := readAll(t, d)
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("reader and intended bytes differ at %d", i)
	}
	q := vmdktest.QemuRead(t, path)
	if i := firstDiff(q, want); i >= 0 {
		t.Fatalf("qemu-img and intended bytes differ at %d (qemu %d bytes)", i, len(q))
	}
	return d
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// extentsOf lists the grains as coalesced extents, clipped to size.
func extentsOf(size, grain int64, ls ...vmdktest.Layer) []Extent {
	set := map[int64]bool{}
	for _, l := range ls {
		for g := range l.Grains {
			set[g] = true
		}
		for _, g := range l.Unmapped {
			set[g] = true
		}
	}
	var out []Extent
	for g := int64(0); g*grain < size; g++ {
		if !set[g] {
			continue
		}
		x := Extent{g * grain, min(grain, size-g*grain)}
		if n := len(out); n > 0 && out[n-1].End() == x.Offset {
			out[n-1].Length += x.Length
			continue
		}
		out = append(out, x)
	}
	return out
}

func checkAllocated(t *testing.T, d *Disk, depth int, want []Extent) {
	t.Helper()
	got, err := d.Allocated(depth)
	if err != nil {
		t.Fatal(err)
	}
	if !slicesEqual(got, want) {
		t.Fatalf("Allocated(%d) = %v, want %v", depth, got, want)
	}
}

func slicesEqual(a, b []Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A flat base under two COWD deltas (512-byte and 4 KiB grains): data
// grains scattered over several grain tables, a disk whose last table is
// partly used.
func TestCOWDChain(t *testing.T) {
	dir := t.TempDir()
	const size = 21<<20 + 7*512
	base := randomBytes(1, size)
	must(t)(vmdktest.WriteFlat(dir, "vm", base, 0x1111))
	// 512-byte grains: a table covers 2 MiB.
	l1 := grains(2, 512, []int64{0, 1, 2, 5, 4095, 4096, 4097, 9000, size/512 - 1}, nil)
	must(t)(vmdktest.WriteCOWD(dir, "vm-000001", "vm.vmdk", 0x1111, 0x2222, size, 1, l1))
	// 4 KiB grains: a table covers 16 MiB.
	l2 := grains(3, 4096, []int64{1, 2, 3, 700, 4096, size/4096 - 1}, nil)
	top := must(t)(vmdktest.WriteCOWD(dir, "vm-000002", "vm-000001.vmdk", 0x2222, 0x3333, size, 8, l2))

	want := bytes.Clone(base)
	l1.Apply(want, 512)
	l2.Apply(want, 4096)
	d := judge(t, top, want)
	checkAllocated(t, d, 1, extentsOf(size, 4096, l2))
	checkAllocated(t, d, 2, merge(extentsOf(size, 4096, l2), extentsOf(size, 512, l1)))
	checkAllocated(t, d, 0, []Extent{{0, size}})
	if n := len(d.Links()); n != 3 {
		t.Fatalf("%d links, want 3", n)
	}
}

func merge(a, b []Extent) []Extent {
	all := append(append([]Extent(nil), a...), b...)
	slicesSortExtents(all)
	var out []Extent
	for _, x := range all {
		if n := len(out); n > 0 && x.Offset <= out[n-1].End() {
			out[n-1].Length = max(out[n-1].End(), x.End()) - out[n-1].Offset
			continue
		}
		out = append(out, x)
	}
	return out
}

func slicesSortExtents(e []Extent) {
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j].Offset < e[j-1].Offset; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
}

// A flat base under two seSparse deltas with data, zero and unmapped
// grains; the lower delta's data grains are numbered past 4095, so both
// parts of an entry's grain number count.
func TestSESparseChain(t *testing.T) {
	dir := t.TempDir()
	const size = 20<<20 + 4096*3
	base := randomBytes(4, size)
	must(t)(vmdktest.WriteFlat(dir, "vm", base, 0xaaaa0001))
	l1 := grains(5, 4096, []int64{0, 3, 4, 5, 4095, 4096, size/4096 - 1}, []int64{10, 11, 4100})
	l1.Unmapped = []int64{20, 4200}
	must(t)(vmdktest.WriteSESparse(dir, "vm-000001", "vm.vmdk", 0xaaaa0001, 0xbbbb0002, size, l1, 4096+7))
	l2 := grains(6, 4096, []int64{4, 6, 10, 21}, []int64{0, 4096})
	top := must(t)(vmdktest.WriteSESparse(dir, "vm-000002", "vm-000001.vmdk", 0xbbbb0002, 0xcccc0003, size, l2, 0))

	want := bytes.Clone(base)
	l1.Apply(want, 4096)
	l2.Apply(want, 4096)
	d := judge(t, top, want)
	checkAllocated(t, d, 1, extentsOf(size, 4096, l2))
	checkAllocated(t, d, 2, extentsOf(size, 4096, l1, l2))
}

// A delta over a smaller parent (the disk grew after the snapshot) reads
// zeros past the parent's end, and a flat file shorter than its extent
// reads zeros past its end.
func TestGrownDisk(t *testing.T) {
	dir := t.TempDir()
	base := randomBytes(7, 1<<20)
	must(t)(vmdktest.WriteFlat(dir, "vm", base, 1))
	const size = 3 << 20
	l := grains(8, 4096, []int64{1, 300, 700}, nil)
	top := must(t)(vmdktest.WriteCOWD(dir, "vm-000001", "vm.vmdk", 1, 2, size, 8, l))
	want := make([]byte, size)
	copy(want, base)
	l.Apply(want, 4096)
	judge(t, top, want)
}

// qemuTools skips the test without qemu-img and qemu-io; it returns a
// folder and a function that runs a command there, failing the test on
// an error.
func qemuTools(t *testing.T) (string, func(args ...string)) {
	t.Helper()
	for _, tool := range []string{"qemu-img", "qemu-io"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (Debian: qemu-utils)", tool)
		}
	}
	dir := t.TempDir()
	return dir, func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
}

// qemu-img's own monolithicSparse chains (hosted "KDMV" files with their
// descriptors inside), written with qemu-io, including zero grains.
func TestQemuSparseChain(t *testing.T) {
	dir, run := qemuTools(t)
	run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", "base.vmdk", "10M")
	run("qemu-io", "-f", "vmdk", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 5M 200k", "base.vmdk")
	run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse,zeroed_grain=on", "-b", "base.vmdk", "-F", "vmdk", "child.vmdk")
	run("qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 64k 8k", "-c", "write -z 128k 64k", "-c", "write -P 0x33 9M 1M", "child.vmdk")
	run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", "-b", "child.vmdk", "-F", "vmdk", "top.vmdk")
	run("qemu-io", "-f", "vmdk", "-c", "write -P 0x77 1000k 100k", "top.vmdk")

	want := make([]byte, 10<<20)
	fill := func(off, n int, v byte) {
		for i := range n {
			want[off+i] = v
		}
	}
	fill(0, 1<<20, 0x11)
	fill(5<<20, 200<<10, 0x22)
	fill(64<<10, 8<<10, 0x5a)
	fill(128<<10, 64<<10, 0)
	fill(9<<20, 1<<20, 0x33)
	fill(1000<<10, 100<<10, 0x77)
	d := judge(t, filepath.Join(dir, "top.vmdk"), want)
	// qemu's grains are 64 KiB: top holds [960k, 1152k).
	checkAllocated(t, d, 1, []Extent{{960 << 10, 192 << 10}})
	checkAllocated(t, d, 2, []Extent{{64 << 10, 128 << 10}, {960 << 10, 192 << 10}, {9 << 20, 1 << 20}})
}

func TestParentCIDMismatch(t *testing.T) {
	dir := t.TempDir()
	must(t)(vmdktest.WriteFlat(dir, "vm", make([]byte, 1<<20), 0x1234))
	top := must(t)(vmdktest.WriteCOWD(dir, "vm-000001", "vm.vmdk", 0x9999, 2, 1<<20, 1, vmdktest.Layer{}))
	_, err := Open(top)
	if !errors.Is(err, ErrParentMismatch) || !strings.Contains(err.Error(), "vm-000001.vmdk") || !strings.Contains(err.Error(), filepath.Join(dir, "vm.vmdk")) {
		t.Fatalf("Open = %v, want ErrParentMismatch naming both files", err)
	}
}

func TestBrokenChain(t *testing.T) {
	dir := t.TempDir()
	top := must(t)(vmdktest.WriteCOWD(dir, "vm-000001", "gone.vmdk", 1, 2, 1<<20, 1, vmdktest.Layer{}))
	_, err := Open(top)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "gone.vmdk") {
		t.Fatalf("Open = %v, want ErrNotFound naming gone.vmdk", err)
	}
	// An extent file that is gone.
	must(t)(vmdktest.WriteFlat(dir, "vm", make([]byte, 1<<20), 1))
	top = must(t)(vmdktest.WriteCOWD(dir, "vm-000002", "vm.vmdk", 1, 2, 1<<20, 1, vmdktest.Layer{}))
	os.Remove(filepath.Join(dir, "vm-000002-delta.vmdk"))
	_, err = Open(top)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "vm-000002-delta.vmdk") {
		t.Fatalf("Open = %v, want ErrNotFound naming the delta file", err)
	}
}

func TestChainLoops(t *testing.T) {
	dir := t.TempDir()
	must(t)(vmdktest.WriteCOWD(dir, "a", "b.vmdk", 1, 1, 1<<20, 1, vmdktest.Layer{}))
	top := must(t)(vmdktest.WriteCOWD(dir, "b", "a.vmdk", 1, 1, 1<<20, 1, vmdktest.Layer{}))
	_, err := Open(top)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("Open = %v, want a loop refused", err)
	}
}

func TestSESparseDirty(t *testing.T) {
	dir := t.TempDir()
	must(t)(vmdktest.WriteFlat(dir, "vm", make([]byte, 1<<20), 1))
	top := must(t)(vmdktest.WriteSESparse(dir, "vm-000001", "vm.vmdk", 1, 2, 1<<20, vmdktest.Layer{}, 0))
	writeFile(t, filepath.Join(dir, "vm-000001-sesparse.vmdk"), vmdktest.SESparse(1<<20, vmdktest.Layer{}, 0, true))
	_, err := Open(top)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "journal") {
		t.Fatalf("Open = %v, want a journal to replay refused", err)
	}
}

// Hostile files: every one is an error, never a panic or a huge
// allocation.
func TestHostile(t *testing.T) {
	dir := t.TempDir()
	must(t)(vmdktest.WriteFlat(dir, "vm", make([]byte, 1<<20), 1))
	l := grains(9, 512, []int64{3}, nil)
	good := vmdktest.COWD(1<<20, 1, l, "vm.vmdk")
	cases := map[string]func(b []byte) []byte{
		"grain directory past the end": func(b []byte) []byte { putU32(b, 20, 1<<30); return b },
		"huge grain directory":         func(b []byte) []byte { putU32(b, 24, 0xffffffff); return b },
		"grain table past the end":     func(b []byte) []byte { putU32(b, 4*512, 1<<30); return b },
		"grain past the end":           func(b []byte) []byte { putU32(b, 5*512+3*4, 1<<30); return b },
		"zero grain size":              func(b []byte) []byte { putU32(b, 16, 0); return b },
		"truncated":                    func(b []byte) []byte { return b[:600] },
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			top := must(t)(vmdktest.WriteCOWD(dir, "x", "vm.vmdk", 1, 2, 1<<20, 1, l))
			writeFile(t, filepath.Join(dir, "x-delta.vmdk"), mod(bytes.Clone(good)))
			d, err := Open(top)
			if err == nil {
				_, err = d.ReadAt(make([]byte, 1<<20), 0)
				d.Close()
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
		})
	}
	absurd := filepath.Join(dir, "absurd.vmdk")
	writeFile(t, absurd, vmdktest.Descriptor(1, NoParent, "vmfs", "", `RW 99999999999999999 VMFS "vm-flat.vmdk"`))
	if _, err := Open(absurd); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("absurd size: %v, want ErrCorrupt", err)
	}
	outside := filepath.Join(dir, "outside.vmdk")
	writeFile(t, outside, vmdktest.Descriptor(1, NoParent, "vmfs", "", `RW 2048 VMFS "../../etc/passwd"`))
	if _, err := Open(outside); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("extent outside the folder: %v, want ErrUnsupported", err)
	}
}

// must fails the test on a writer's error and returns the path it wrote.
func must(t *testing.T) func(string, error) string {
	return func(p string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func putU32(b []byte, off int, v uint32) {
	b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// qemu-img's monolithicFlat base (a FLAT extent with an offset) under a
// monolithicSparse child.
func TestQemuFlatBase(t *testing.T) {
	dir, run := qemuTools(t)
	run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "base.vmdk", "3M")
	run("qemu-io", "-f", "vmdk", "-c", "write -P 0x44 4k 1M", "base.vmdk")
	run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", "-b", "base.vmdk", "-F", "vmdk", "top.vmdk")
	run("qemu-io", "-f", "vmdk", "-c", "write -P 0x55 512k 4k", "top.vmdk")
	want := make([]byte, 3<<20)
	for i := 4 << 10; i < 4<<10+1<<20; i++ {
		want[i] = 0x44
	}
	for i := 512 << 10; i < 516<<10; i++ {
		want[i] = 0x55
	}
	judge(t, filepath.Join(dir, "top.vmdk"), want)
}

// Concurrent reads of one chain agree with a single reader's (run with
// -race).
func TestConcurrentReads(t *testing.T) {
	dir := t.TempDir()
	const size = 4 << 20
	base := randomBytes(21, size)
	must(t)(vmdktest.WriteFlat(dir, "vm", base, 1))
	l := grains(22, 512, []int64{1, 2, 3, 100, 4096, 5000, 8000}, nil)
	top := must(t)(vmdktest.WriteCOWD(dir, "vm-000001", "vm.vmdk", 1, 2, size, 1, l))
	want := bytes.Clone(base)
	l.Apply(want, 512)
	d, err := Open(top)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			buf := make([]byte, 64<<10+512*w)
			for off := int64(w * 512); off < size; off += int64(len(buf)) {
				n, err := d.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					errs <- fmt.Errorf("reader %d: wrong bytes at %d", w, off)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
