package vhdx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"unicode/utf16"
)

// VHD, the format before VHDX (Virtual Hard Disk Image Format
// Specification, 2006): a 512-byte footer at the end of the file; for
// dynamic and differencing disks a copy of it at the start, a dynamic
// header, a BAT of 32-bit sector numbers, and blocks each preceded by a
// sector bitmap. Integers are big-endian. Read only.
const (
	vhdFooterSize  = 512
	vhdDynHdrSize  = 1024
	vhdFixed       = 2
	vhdDynamic     = 3
	vhdDiff        = 4
	vhdUnallocated = 0xFFFFFFFF
	vhdMaxSize     = 2040 << 30 // the format's limit is about 2 TiB
	vhdMaxBlock    = 256 * mib
)

type vhdFooter struct {
	dataOffset uint64
	size       uint64
	diskType   uint32
	uniqueID   GUID
}

// vhdChecksum is the one's complement of the byte sum of b without the
// four bytes at off.
func vhdChecksum(b []byte, off int) uint32 {
	var sum uint32
	for i, c := range b {
		if i < off || i >= off+4 {
			sum += uint32(c)
		}
	}
	return ^sum
}

func parseVHDFooter(b []byte) (vhdFooter, error) {
	var f vhdFooter
	if len(b) < vhdFooterSize {
		return f, corrupt("vhd footer", "%d bytes, want %d", len(b), vhdFooterSize)
	}
	b = b[:vhdFooterSize]
	if string(b[0:8]) != "conectix" {
		return f, corrupt("vhd footer cookie", "%q, want %q", b[0:8], "conectix")
	}
	if got, want := binary.BigEndian.Uint32(b[64:68]), vhdChecksum(b, 64); got != want {
		return f, corrupt("vhd footer checksum", "%#08x, computed %#08x", got, want)
	}
	if v := binary.BigEndian.Uint32(b[12:16]); v>>16 != 1 {
		return f, unsupported("vhd footer file format version", "%#08x, want 1.x", v)
	}
	f.dataOffset = binary.BigEndian.Uint64(b[16:24])
	f.size = binary.BigEndian.Uint64(b[48:56])
	f.diskType = binary.BigEndian.Uint32(b[60:64])
	copy(f.uniqueID[:], b[68:84])
	if f.diskType != vhdFixed && f.diskType != vhdDynamic && f.diskType != vhdDiff {
		return f, unsupported("vhd footer disk type", "%d, want 2 (fixed), 3 (dynamic) or 4 (differencing)", f.diskType)
	}
	if f.size == 0 || f.size%512 != 0 || f.size > vhdMaxSize {
		return f, corrupt("vhd footer current size", "%d is not a positive multiple of 512 up to 2040 GiB", f.size)
	}
	return f, nil
}

type vhdLocator struct {
	code   string
	length uint32
	offset uint64
}

type vhdDynHeader struct {
	tableOffset uint64
	maxEntries  uint32
	blockSize   uint32
	parentID    GUID
	parentName  string
	locators    []vhdLocator
}

func parseVHDDynamicHeader(b []byte) (vhdDynHeader, error) {
	var h vhdDynHeader
	if len(b) < vhdDynHdrSize {
		return h, corrupt("vhd dynamic header", "%d bytes, want %d", len(b), vhdDynHdrSize)
	}
	b = b[:vhdDynHdrSize]
	if string(b[0:8]) != "cxsparse" {
		return h, corrupt("vhd dynamic header cookie", "%q, want %q", b[0:8], "cxsparse")
	}
	if got, want := binary.BigEndian.Uint32(b[36:40]), vhdChecksum(b, 36); got != want {
		return h, corrupt("vhd dynamic header checksum", "%#08x, computed %#08x", got, want)
	}
	h.tableOffset = binary.BigEndian.Uint64(b[16:24])
	h.maxEntries = binary.BigEndian.Uint32(b[28:32])
	h.blockSize = binary.BigEndian.Uint32(b[32:36])
	copy(h.parentID[:], b[40:56])
	if h.blockSize < 512 || h.blockSize%512 != 0 || h.blockSize > vhdMaxBlock {
		return h, corrupt("vhd dynamic header block size", "%d is not a multiple of 512 up to 256 MiB", h.blockSize)
	}
	name := make([]uint16, 0, 256)
	for i := 64; i < 576; i += 2 {
		c := binary.BigEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		name = append(name, c)
	}
	h.parentName = string(utf16.Decode(name))
	for i := range 8 {
		e := b[576+24*i:]
		code := string(e[0:4])
		if binary.BigEndian.Uint32(e[0:4]) == 0 {
			continue
		}
		h.locators = append(h.locators, vhdLocator{code: code,
			length: binary.BigEndian.Uint32(e[8:12]), offset: binary.BigEndian.Uint64(e[16:24])})
	}
	return h, nil
}

// vhdFile is one open VHD file.
type vhdFile struct {
	f      file
	size   int64 // of the file
	foot   vhdFooter
	dyn    vhdDynHeader
	bat    []uint32
	bitmap int64 // bytes of sector bitmap before each block

	mu      sync.Mutex
	bitmaps map[int64][]byte // differencing: by block
}

func isVHD(f io.ReaderAt, size int64) bool {
	if size < vhdFooterSize {
		return false
	}
	var cookie [8]byte
	if _, err := f.ReadAt(cookie[:], size-vhdFooterSize); err != nil {
		return false
	}
	return string(cookie[:]) == "conectix"
}

func openVHD(f file, fileSize int64) (*vhdFile, error) {
	v := &vhdFile{f: f, size: fileSize, bitmaps: map[int64][]byte{}}
	buf := make([]byte, vhdDynHdrSize)
	if err := readFull(f, buf[:vhdFooterSize], fileSize-vhdFooterSize, "vhd footer"); err != nil {
		return nil, err
	}
	var err error
	if v.foot, err = parseVHDFooter(buf); err != nil {
		return nil, err
	}
	if v.foot.diskType == vhdFixed {
		if int64(v.foot.size) > fileSize-vhdFooterSize {
			return nil, corrupt("vhd footer current size", "%d is more than the file holds (%d bytes)", v.foot.size, fileSize-vhdFooterSize)
		}
		return v, nil
	}
	if v.foot.dataOffset > uint64(fileSize-vhdDynHdrSize) {
		return nil, corrupt("vhd footer data offset", "%d is past the end of the file (%d bytes)", v.foot.dataOffset, fileSize)
	}
	if err := readFull(f, buf, int64(v.foot.dataOffset), "vhd dynamic header"); err != nil {
		return nil, err
	}
	if v.dyn, err = parseVHDDynamicHeader(buf); err != nil {
		return nil, err
	}
	bs := int64(v.dyn.blockSize)
	blocks := (int64(v.foot.size) + bs - 1) / bs
	if int64(v.dyn.maxEntries) < blocks {
		return nil, corrupt("vhd dynamic header max table entries", "%d, the disk needs %d", v.dyn.maxEntries, blocks)
	}
	if v.dyn.tableOffset > uint64(fileSize) || blocks*4 > fileSize-int64(v.dyn.tableOffset) {
		return nil, corrupt("vhd dynamic header table offset", "a BAT of %d entries at %d is past the end of the file (%d bytes)", blocks, v.dyn.tableOffset, fileSize)
	}
	raw := make([]byte, blocks*4)
	if err := readFull(f, raw, int64(v.dyn.tableOffset), "vhd BAT"); err != nil {
		return nil, err
	}
	v.bitmap = roundUp((bs/512+7)/8, 512)
	v.bat = make([]uint32, blocks)
	var used []span
	var claimed int64
	for i := range v.bat {
		e := binary.BigEndian.Uint32(raw[4*i:])
		v.bat[i] = e
		if e == vhdUnallocated {
			continue
		}
		blockLen := min(bs, int64(v.foot.size)-int64(i)*bs)
		field := fmt.Sprintf("vhd BAT entry %d", i)
		if end := int64(e)*512 + v.bitmap + blockLen; end > fileSize {
			return nil, corrupt(field, "block at sector %d ends past the end of the file (%d bytes)", e, fileSize)
		}
		if claimed += v.bitmap + blockLen; claimed > fileSize {
			return nil, corrupt(field, "the BAT claims more blocks than the file (%d bytes) holds", fileSize)
		}
		used = append(used, span{int64(e) * 512, v.bitmap + blockLen, field})
	}
	if err := checkOverlaps(used); err != nil {
		return nil, err
	}
	return v, nil
}

func (v *vhdFile) differencing() bool { return v.foot.diskType == vhdDiff }

func (v *vhdFile) info() Info {
	i := Info{Format: FormatVHD, Size: int64(v.foot.size), LogicalSectorSize: 512, PhysicalSectorSize: 512,
		Fixed: v.foot.diskType == vhdFixed, Differencing: v.differencing(), DataWriteGUID: v.foot.uniqueID,
		VirtualDiskID: v.foot.uniqueID}
	if !i.Fixed {
		i.BlockSize = int64(v.dyn.blockSize)
	}
	return i
}

func (v *vhdFile) close() error { return v.f.Close() }

func (v *vhdFile) blockBitmap(blk int64) ([]byte, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if b, ok := v.bitmaps[blk]; ok {
		return b, nil
	}
	b := make([]byte, v.bitmap)
	if err := readFull(v.f, b, int64(v.bat[blk])*512, fmt.Sprintf("vhd sector bitmap of block %d", blk)); err != nil {
		return nil, err
	}
	v.bitmaps[blk] = b
	return b, nil
}

// vhdRun is sectorRun for VHD bitmaps, whose bits run from the most
// significant bit of each byte.
func vhdRun(bm []byte, first, limit int64) (bool, int64) {
	bit := func(i int64) bool { return bm[i>>3]&(0x80>>(i&7)) != 0 }
	set := bit(first)
	i := first + 1
	for i < first+limit && bit(i) == set {
		i++
	}
	return set, i - first
}

func (v *vhdFile) readAt(p []byte, off int64, below func([]byte, int64) error) error {
	if v.foot.diskType == vhdFixed {
		return readFull(v.f, p, off, "vhd data")
	}
	bs := int64(v.dyn.blockSize)
	for len(p) > 0 {
		blk := off / bs
		in := off % bs
		n := min(int64(len(p)), bs-in)
		e := v.bat[blk]
		var err error
		switch {
		case e == vhdUnallocated && v.differencing():
			err = below(p[:n], off)
		case e == vhdUnallocated:
			clear(p[:n])
		case !v.differencing():
			err = readFull(v.f, p[:n], int64(e)*512+v.bitmap+in, fmt.Sprintf("vhd block %d", blk))
		default:
			err = v.readDiff(p[:n], blk, in, below)
		}
		if err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

func (v *vhdFile) readDiff(p []byte, blk, in int64, below func([]byte, int64) error) error {
	bs := int64(v.dyn.blockSize)
	bm, err := v.blockBitmap(blk)
	if err != nil {
		return err
	}
	data := int64(v.bat[blk])*512 + v.bitmap
	for len(p) > 0 {
		s := in / 512
		set, run := vhdRun(bm, s, bs/512-s)
		n := min(int64(len(p)), (s+run)*512-in)
		if set {
			err = readFull(v.f, p[:n], data+in, fmt.Sprintf("vhd block %d", blk))
		} else {
			err = below(p[:n], blk*bs+in)
		}
		if err != nil {
			return err
		}
		p = p[n:]
		in += n
	}
	return nil
}

func (v *vhdFile) extents() ([]Extent, error) {
	size := int64(v.foot.size)
	if v.foot.diskType == vhdFixed {
		return []Extent{{0, size}}, nil
	}
	bs := int64(v.dyn.blockSize)
	var out []Extent
	add := func(off, n int64) {
		n = min(n, size-off)
		if n <= 0 {
			return
		}
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
			return
		}
		out = append(out, Extent{off, n})
	}
	for blk, e := range v.bat {
		start := int64(blk) * bs
		if e == vhdUnallocated {
			continue
		}
		if !v.differencing() {
			add(start, bs)
			continue
		}
		bm, err := v.blockBitmap(int64(blk))
		if err != nil {
			return nil, err
		}
		for s := int64(0); s < bs/512; {
			set, run := vhdRun(bm, s, bs/512-s)
			if set {
				add(start+s*512, run*512)
			}
			s += run
		}
	}
	return out, nil
}

const maxVHDLocator = 64 * kib

// vhdParentCandidates lists the parent paths the locators of a
// differencing VHD give, relative ones first.
func vhdParentCandidates(path string, v *vhdFile, fileSize int64) ([]string, error) {
	dir := filepath.Dir(path)
	var rel, abs []string
	for i, l := range v.dyn.locators {
		field := fmt.Sprintf("vhd parent locator %d", i)
		if l.length == 0 {
			continue
		}
		if l.length > maxVHDLocator || l.offset > uint64(fileSize) || uint64(l.length) > uint64(fileSize)-l.offset {
			return nil, corrupt(field, "[%d, +%d) is not inside the file (%d bytes) or over 64 KiB", l.offset, l.length, fileSize)
		}
		b := make([]byte, l.length)
		if err := readFull(v.f, b, int64(l.offset), field); err != nil {
			return nil, err
		}
		switch l.code {
		case "W2ru":
			rel = append(rel, filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(decodeUTF16LE(b[:len(b)&^1]), `\`, "/"))))
		case "W2ku":
			p := decodeUTF16LE(b[:len(b)&^1])
			if runtime.GOOS == "windows" {
				abs = append(abs, p)
			} else if i := strings.LastIndexAny(p, `\/`); i+1 < len(p) {
				abs = append(abs, filepath.Join(dir, p[i+1:]))
			}
		case "MacX":
			if u, err := url.Parse(string(b)); err == nil && u.Scheme == "file" {
				abs = append(abs, filepath.FromSlash(u.Path))
			}
		}
	}
	if v.dyn.parentName != "" {
		abs = append(abs, filepath.Join(dir, filepath.Base(filepath.FromSlash(strings.ReplaceAll(v.dyn.parentName, `\`, "/")))))
	}
	return append(rel, abs...), nil
}

// openVHDParent opens the parent of the differencing VHD v (at path) and
// checks its unique id against the one the child recorded.
func openVHDParent(path string, v *vhdFile, chain []os.FileInfo) (*Image, error) {
	candidates, err := vhdParentCandidates(path, v, v.size)
	if err != nil {
		return nil, inFile(path, err)
	}
	var tried []string
	for _, c := range candidates {
		parent, err := open(c, os.O_RDONLY, chain)
		if errors.Is(err, fs.ErrNotExist) {
			tried = append(tried, c)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open parent of %q: %w", path, err)
		}
		if info := parent.Info(); info.Format != FormatVHD || info.DataWriteGUID != v.dyn.parentID {
			parent.Close()
			return nil, fmt.Errorf("open parent of %q: %q is %s with unique id %s, the child names %s: %w",
				path, c, info.Format, info.DataWriteGUID, v.dyn.parentID, ErrParentMismatch)
		}
		return parent, nil
	}
	return nil, fmt.Errorf("open parent of %q: tried %q: %w", path, tried, ErrParentNotFound)
}
