package sdktest

import (
	"fmt"
	"io"
	"sort"
	"sync/atomic"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// memBlockSize is the unit in which in-memory disks store data and track
// changes.
const memBlockSize = 64 << 10

// memDisk is the data of an in-memory disk, in blocks; a block never written
// is absent and reads as zeros. A stored block is never modified: a write
// replaces it with a new one. That is what lets a snapshot or restore point
// be a copy of the map that shares every block (copy-on-write), and lets
// readers of such a copy go without locks.
type memDisk struct {
	size   int64
	blocks map[int64][]byte
}

func newMemDisk(size int64) *memDisk {
	return &memDisk{size: size, blocks: make(map[int64][]byte)}
}

// clone returns a copy that shares the blocks.
func (d *memDisk) clone() *memDisk {
	c := &memDisk{size: d.size, blocks: make(map[int64][]byte, len(d.blocks))}
	for i, b := range d.blocks {
		c.blocks[i] = b
	}
	return c
}

// writeAt writes p at off, which the caller has checked lies inside the
// disk, and returns the indexes of the first and last block it touched
// (none when p is empty: last < first).
func (d *memDisk) writeAt(p []byte, off int64) (first, last int64) {
	if len(p) == 0 {
		return 0, -1
	}
	first, last = off/memBlockSize, (off+int64(len(p))-1)/memBlockSize
	for i := first; i <= last; i++ {
		nb := make([]byte, memBlockSize)
		if old, ok := d.blocks[i]; ok {
			copy(nb, old)
		}
		start := i * memBlockSize
		from := max(off, start)
		to := min(off+int64(len(p)), start+memBlockSize)
		copy(nb[from-start:to-start], p[from-off:to-off])
		d.blocks[i] = nb
	}
	return first, last
}

// readAt reads as io.ReaderAt does.
func (d *memDisk) readAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, errdefs.ErrInvalidArgument)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), d.size-off))
	for done := 0; done < n; {
		pos := off + int64(done)
		i, in := pos/memBlockSize, pos%memBlockSize
		chunk := min(n-done, int(memBlockSize-in))
		if b, ok := d.blocks[i]; ok {
			copy(p[done:done+chunk], b[in:])
		} else {
			clear(p[done : done+chunk])
		}
		done += chunk
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// blockExtents returns the sorted extents covered by the given blocks,
// joined where they touch and cut at the end of the disk.
func blockExtents(blocks []int64, size int64) []sdk.Extent {
	sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
	var exts []sdk.Extent
	for _, b := range blocks {
		off := b * memBlockSize
		length := min(int64(memBlockSize), size-off)
		if length <= 0 {
			continue
		}
		if n := len(exts); n > 0 && exts[n-1].End() == off {
			exts[n-1].Length += length
			continue
		}
		exts = append(exts, sdk.Extent{Offset: off, Length: length})
	}
	return exts
}

// allocated returns the extents of the blocks that were ever written.
func (d *memDisk) allocated() []sdk.Extent {
	blocks := make([]int64, 0, len(d.blocks))
	for i := range d.blocks {
		blocks = append(blocks, i)
	}
	return blockExtents(blocks, d.size)
}

// memReader reads a frozen memDisk: the disk of a snapshot or restore point.
type memReader struct {
	disk   *memDisk
	closed atomic.Bool
}

var _ sdk.DiskReader = (*memReader)(nil)

func (r *memReader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, fmt.Errorf("read a closed disk: %w", errdefs.ErrFailedPrecondition)
	}
	return r.disk.readAt(p, off)
}

func (r *memReader) Size() int64 { return r.disk.size }

// Close ends the read. A frozen disk cannot change under its reader, so
// there is never anything to report.
func (r *memReader) Close() error {
	r.closed.Store(true)
	return nil
}

// checkRange reports a write that does not lie inside a disk of size bytes.
func checkRange(off int64, n int, size int64) error {
	if off < 0 || off+int64(n) > size {
		return fmt.Errorf("write [%d, %d) outside the disk [0, %d): %w", off, off+int64(n), size, errdefs.ErrInvalidArgument)
	}
	return nil
}
