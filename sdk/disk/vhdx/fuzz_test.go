package vhdx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// memFile is a read-only file in memory, for the fuzz targets: its size,
// and the 4 KiB pages that are not all zero.
type memFile struct {
	size  int64
	pages map[int64][]byte
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= m.size {
		return 0, io.EOF
	}
	want := len(p)
	p = p[:min(int64(len(p)), m.size-off)]
	for done := 0; done < len(p); {
		pos := off + int64(done)
		page, in := pos/fuzzPage, pos%fuzzPage
		n := min(len(p)-done, int(fuzzPage-in))
		if b, ok := m.pages[page]; ok {
			copy(p[done:done+n], b[in:])
		} else {
			clear(p[done : done+n])
		}
		done += n
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

var errMemReadOnly = errors.New("memFile is read-only")

func (*memFile) WriteAt([]byte, int64) (int, error) { return 0, errMemReadOnly }
func (*memFile) Truncate(int64) error               { return errMemReadOnly }
func (*memFile) Sync() error                        { return nil }
func (*memFile) Close() error                       { return nil }

// Images are megabytes of mostly zeros, too big for the fuzzer to mutate
// well, so the fuzz targets take them packed: the file size (8 bytes),
// then each 512-byte page that is not all zero as a 4-byte page number and
// the page. Packed seeds are a few pages long.
const (
	fuzzPage    = 512
	maxFuzzFile = 16 * mib // keeps what a hostile file justifies small
)

func pack(b []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(b)))
	for off := 0; off < len(b); off += fuzzPage {
		page := b[off:min(off+fuzzPage, len(b))]
		if allZero(page) {
			continue
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(off/fuzzPage))
		out = append(out, page...)
		out = append(out, make([]byte, fuzzPage-len(page))...)
	}
	return out
}

// unpack rebuilds the file; a malformed tail is ignored.
func unpack(p []byte) *memFile {
	m := &memFile{pages: map[int64][]byte{}}
	if len(p) < 8 {
		return m
	}
	m.size = int64(binary.LittleEndian.Uint64(p) % (maxFuzzFile + 1))
	for p = p[8:]; len(p) >= 4+fuzzPage; p = p[4+fuzzPage:] {
		page := int64(binary.LittleEndian.Uint32(p))
		if page*fuzzPage < m.size {
			m.pages[page] = p[4 : 4+fuzzPage]
		}
	}
	return m
}

// seedImages returns the bytes of small images made here: dynamic, fixed,
// differencing, 4 KiB sectors, and one with a pending log.
func seedImages(f *testing.F) [][]byte {
	f.Helper()
	dir := f.TempDir()
	var out [][]byte
	add := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	for i, o := range []Options{
		{Size: 3*mib + 512, BlockSize: mib},
		{Size: 2 * mib, BlockSize: mib, LogicalSectorSize: 4096},
		{Size: 2 * mib, BlockSize: mib, Fixed: true},
	} {
		path := filepath.Join(dir, string(rune('a'+i))+".vhdx")
		img, err := Create(path, o)
		if err != nil {
			f.Fatal(err)
		}
		img.WriteAt(pattern(8*kib, uint64(i)), o.Size/4)
		if err := img.Close(); err != nil {
			f.Fatal(err)
		}
		add(path)
		child := path + ".avhdx"
		img, err = CreateDifferencing(child, path)
		if err != nil {
			f.Fatal(err)
		}
		img.WriteAt([]byte("child data"), 1000)
		img.WriteAt(pattern(8*kib, 9), mib+100)
		if err := img.Close(); err != nil {
			f.Fatal(err)
		}
		add(child)
	}
	dirty, _ := dirtyLogImage(f, dir)
	add(dirty)
	return out
}

// exercise reads what a hostile image claims to hold; it must neither
// panic nor hang, whatever the image says.
func exercise(l layer) {
	size := l.info().Size
	below := func(p []byte, off int64) error { clear(p); return nil }
	buf := make([]byte, 256*kib)
	for _, off := range []int64{0, size / 2, max(0, size-int64(len(buf)))} {
		n := min(int64(len(buf)), size-off)
		if n > 0 {
			l.readAt(buf[:n], off, below)
		}
	}
	l.extents()
}

func FuzzOpenVHDX(f *testing.F) {
	for _, b := range seedImages(f) {
		f.Add(pack(b))
	}
	f.Fuzz(func(t *testing.T, packed []byte) {
		b := unpack(packed)
		v, err := openVHDX(b, func() (int64, error) { return b.size, nil }, false)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error of no class: %v", err)
			}
			return
		}
		exercise(v)
	})
}

func FuzzOpenVHD(f *testing.F) {
	if q, err := exec.LookPath("qemu-img"); err == nil {
		dir := f.TempDir()
		raw := filepath.Join(dir, "raw")
		data := make([]byte, 3*mib)
		copy(data[mib+512:], bytes.Repeat([]byte("vhd seed"), kib))
		if err := os.WriteFile(raw, data, 0o644); err != nil {
			f.Fatal(err)
		}
		for i, opts := range []string{"subformat=dynamic,force_size=on", "subformat=fixed,force_size=on"} {
			p := filepath.Join(dir, string(rune('a'+i))+".vhd")
			if out, err := exec.Command(q, "convert", "-f", "raw", "-O", "vpc", "-o", opts, raw, p).CombinedOutput(); err != nil {
				f.Fatalf("qemu-img: %v: %s", err, out)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(pack(b))
		}
	}
	f.Add(pack(make([]byte, vhdFooterSize)))
	f.Fuzz(func(t *testing.T, packed []byte) {
		b := unpack(packed)
		if !isVHD(b, b.size) {
			return
		}
		v, err := openVHD(b, b.size)
		if err != nil {
			return
		}
		if v.differencing() {
			vhdParentCandidates("child.vhd", v, b.size)
		}
		exercise(v)
	})
}

// The byte-slice parsers, each on its own, with small inputs.

func FuzzParseHeader(f *testing.F) {
	h := header{seq: 3, fileWrite: newGUID(), dataWrite: newGUID(), version: 1, logLength: mib, logOffset: mib}
	b := make([]byte, headerSize)
	h.marshal(b)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseHeader(b, "header")
		if err != nil {
			return
		}
		// What parses must survive a round trip.
		out := make([]byte, headerSize)
		got.marshal(out)
		if again, err := parseHeader(out, "header"); err != nil || again != got {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, got)
		}
	})
}

func FuzzParseRegionTable(f *testing.F) {
	b := make([]byte, regionSize)
	marshalRegionTable(b, regions{bat: region{3 * mib, mib}, meta: region{2 * mib, mib}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		parseRegionTable(b, "region table")
	})
}

func FuzzParseMetadata(f *testing.F) {
	f.Add(newMetadata(Options{Size: 8 * mib, BlockSize: mib, LogicalSectorSize: 512, PhysicalSectorSize: 4096}, nil), uint32(mib))
	loc := marshalParentLocator([]string{"parent_linkage", "relative_path"}, []string{"{" + newGUID().String() + "}", `.\p.vhdx`})
	f.Add(newMetadata(Options{Size: 8 * mib, BlockSize: mib, LogicalSectorSize: 512, PhysicalSectorSize: 512}, loc), uint32(mib))
	f.Fuzz(func(t *testing.T, b []byte, regionLen uint32) {
		items, err := parseMetadataTable(b, regionLen)
		if err != nil {
			return
		}
		for id, m := range items {
			if int64(m.offset)+int64(m.length) > int64(len(b)) {
				continue
			}
			item := b[m.offset : m.offset+m.length]
			var p params
			switch id {
			case metaFileParams:
				parseFileParams(item, &p)
			case metaLogicalSect, metaPhysicalSect:
				parseSectorSize(item, "sector size")
			case metaParentLoc:
				parseParentLocator(item)
			}
		}
	})
}

func FuzzParseParentLocator(f *testing.F) {
	f.Add(marshalParentLocator([]string{"parent_linkage", "relative_path", "absolute_win32_path"},
		[]string{"{" + newGUID().String() + "}", `..\base\p.vhdx`, `C:\vms\p.vhdx`}))
	f.Fuzz(func(t *testing.T, b []byte) {
		kv, err := parseParentLocator(b)
		if err != nil {
			return
		}
		parentCandidates(filepath.Join("dir", "child.avhdx"), kv)
	})
}

func FuzzParseLog(f *testing.F) {
	id := newGUID()
	log := make([]byte, 64*kib)
	sector := make([]byte, logSector)
	copy(log, logEntryBytes(id, 5, mib, 2*mib, []int64{3 * mib, 4 * mib}, [][]byte{sector, sector}))
	f.Add(log)
	f.Fuzz(func(t *testing.T, b []byte) {
		b = b[:len(b)/logSector*logSector]
		if len(b) == 0 {
			return
		}
		r, err := parseLog(b, id)
		if err != nil {
			return
		}
		// The overlay must answer reads of any range.
		o := newOverlay(&memFile{}, 0, r)
		buf := make([]byte, 64*kib)
		o.ReadAt(buf, 3*mib)
		o.ReadAt(buf, 0)
	})
}

func FuzzParseVHDFooter(f *testing.F) {
	b := make([]byte, vhdFooterSize)
	copy(b, "conectix")
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		parseVHDFooter(b)
		parseVHDDynamicHeader(b)
	})
}
