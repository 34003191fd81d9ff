package vmdk

import (
	"encoding/binary"
	"io"
	"sync"
)

// What a range of an extent reads as.
type kind uint8

const (
	kindParent kind = iota // not in this file: the parent's bytes (zeros at the base)
	kindZero               // zeros, hiding the parent
	kindData               // bytes of this file
)

// A mapper says where the bytes of one extent are. Offsets are relative
// to the extent's start, in bytes.
type mapper interface {
	// span describes the bytes at off (inside the extent): their kind,
	// for kindData the file offset of off, and how many bytes from off on
	// are alike (at least 1, up to the grain's end).
	span(off int64) (k kind, fileOff, n int64, err error)
	// defined calls fn with the ranges this extent holds (data or zeros),
	// in order.
	defined(fn func(off, n int64)) error
}

// grid is an extent made of grains found through a grain directory and
// grain tables, the shape shared by hosted sparse, COWD and seSparse
// files. The format gives the tables' places and how an entry decodes.
type grid struct {
	r        io.ReaderAt
	fileSize int64
	size     int64 // bytes of the extent
	grain    int64 // bytes of a grain
	perGT    int64 // entries in a grain table
	width    int   // bytes of a grain table entry: 4 or 8
	gts      []int64
	decode   func(e uint64) (k kind, fileOff int64, err error)

	mu    sync.Mutex
	cache map[int64][]uint64
}

// maxCachedTables bounds the grain tables kept in memory (8 MiB for
// seSparse's 32 KiB tables).
const maxCachedTables = 256

// checkGrid checks the shape a format's header gave before anything is
// read or allocated for it.
func (g *grid) checkTables(field string) error {
	if g.grain <= 0 || g.perGT <= 0 {
		return corrupt(field, "grain of %d bytes, %d entries a table", g.grain, g.perGT)
	}
	cover := g.grain * g.perGT
	need := (g.size + cover - 1) / cover
	if int64(len(g.gts)) < need {
		return corrupt(field, "%d grain directory entries cover %d bytes; the extent has %d", len(g.gts), int64(len(g.gts))*cover, g.size)
	}
	g.gts = g.gts[:need]
	tbl := g.perGT * int64(g.width)
	// Tables are never shared: a file whose directory names one table
	// twice would make Allocated walk far more entries than it holds.
	seen := map[int64]int{}
	for i, off := range g.gts {
		if off == 0 {
			continue
		}
		if off < 0 || off > g.fileSize-tbl {
			return corrupt(field, "grain table %d at byte %d: [%d, +%d) is outside the file (%d bytes)", i, off, off, tbl, g.fileSize)
		}
		if j, ok := seen[off]; ok {
			return corrupt(field, "grain tables %d and %d are both at byte %d", j, i, off)
		}
		seen[off] = i
	}
	g.cache = map[int64][]uint64{}
	return nil
}

// readDirectory reads n entries of width bytes at off, checked against the
// file's size first.
func readDirectory(r io.ReaderAt, fileSize, off, n int64, width int, field string) ([]uint64, error) {
	if n < 0 || off < 0 || n > fileSize/int64(width) || off > fileSize-n*int64(width) {
		return nil, corrupt(field, "%d entries at byte %d are outside the file (%d bytes)", n, off, fileSize)
	}
	b := make([]byte, n*int64(width))
	if err := readFull(r, b, off, field); err != nil {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		if width == 4 {
			out[i] = uint64(binary.LittleEndian.Uint32(b[i*4:]))
		} else {
			out[i] = binary.LittleEndian.Uint64(b[i*8:])
		}
	}
	return out, nil
}

func (g *grid) table(i int64) ([]uint64, error) {
	off := g.gts[i]
	g.mu.Lock()
	t, ok := g.cache[off]
	g.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := readDirectory(g.r, g.fileSize, off, g.perGT, g.width, "grain table")
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	if len(g.cache) >= maxCachedTables {
		clear(g.cache)
	}
	g.cache[off] = t
	g.mu.Unlock()
	return t, nil
}

func (g *grid) span(off int64) (kind, int64, int64, error) {
	gi := off / g.grain
	ti := gi / g.perGT
	if g.gts[ti] == 0 {
		// A whole table's reach is absent: one span to its end.
		end := min((ti+1)*g.perGT*g.grain, g.size)
		return kindParent, 0, end - off, nil
	}
	t, err := g.table(ti)
	if err != nil {
		return 0, 0, 0, err
	}
	in := off % g.grain
	n := min(g.grain-in, g.size-off)
	k, at, err := g.decode(t[gi%g.perGT])
	if err != nil || k != kindData {
		return k, 0, n, err
	}
	if at < 0 || at > g.fileSize-in-n {
		return 0, 0, 0, corrupt("grain table entry", "grain %d at byte %d is outside the file (%d bytes)", gi, at, g.fileSize)
	}
	return kindData, at + in, n, nil
}

func (g *grid) defined(fn func(off, n int64)) error {
	for ti, off := range g.gts {
		if off == 0 {
			continue
		}
		t, err := g.table(int64(ti))
		if err != nil {
			return err
		}
		for j, e := range t {
			at := (int64(ti)*g.perGT + int64(j)) * g.grain
			if at >= g.size {
				break
			}
			k, _, err := g.decode(e)
			if err != nil {
				return err
			}
			if k != kindParent {
				fn(at, min(g.grain, g.size-at))
			}
		}
	}
	return nil
}

// flat is an extent whose bytes lie in order in a file from start on. A
// file shorter than the extent reads as zeros past its end.
type flat struct {
	fileSize, start, size int64
}

func (f *flat) span(off int64) (kind, int64, int64, error) {
	at := f.start + off
	if at < f.fileSize {
		return kindData, at, min(f.size-off, f.fileSize-at), nil
	}
	return kindZero, 0, f.size - off, nil
}

func (f *flat) defined(fn func(off, n int64)) error {
	fn(0, f.size)
	return nil
}

// readFull reads len(p) bytes at off; a short file is corruption, since
// every offset was checked against the file's size when it was opened.
func readFull(r io.ReaderAt, p []byte, off int64, field string) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF || err == nil {
		return corrupt(field, "[%d, +%d) is past the end of the file", off, len(p))
	}
	return err
}
