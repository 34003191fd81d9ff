package sdktest

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/ferry-dr/ferry/sdk"
)

// checkExtents reports the first extent that breaks the ChangedAreas
// contract: empty, outside [0, size), out of order or overlapping the one
// before.
func checkExtents(exts []sdk.Extent, size int64) error {
	for i, e := range exts {
		switch {
		case e.Length <= 0:
			return fmt.Errorf("extent %d [%d, +%d) is empty", i, e.Offset, e.Length)
		case e.Offset < 0 || e.End() > size:
			return fmt.Errorf("extent %d [%d, %d) is outside the disk [0, %d)", i, e.Offset, e.End(), size)
		case i > 0 && e.Offset < exts[i-1].End():
			return fmt.Errorf("extent %d [%d, %d) is out of order or overlaps extent %d [%d, %d)",
				i, e.Offset, e.End(), i-1, exts[i-1].Offset, exts[i-1].End())
		}
	}
	return nil
}

// firstUncovered returns the first byte of want that no extent of exts
// covers; exts must be sorted and non-overlapping.
func firstUncovered(exts []sdk.Extent, want sdk.Extent) (int64, bool) {
	pos := want.Offset
	i := sort.Search(len(exts), func(i int) bool { return exts[i].End() > pos })
	for pos < want.End() {
		if i == len(exts) || exts[i].Offset > pos {
			return pos, true
		}
		pos = exts[i].End()
		i++
	}
	return 0, false
}

// firstUncoveredNonZero returns the offset of the first non-zero byte of
// data that no extent of exts covers; exts must be sorted and
// non-overlapping.
func firstUncoveredNonZero(data []byte, exts []sdk.Extent) (int64, bool) {
	size := int64(len(data))
	gap := int64(0)
	for _, e := range exts {
		if i := firstNonZero(data[gap:min(max(e.Offset, gap), size)]); i >= 0 {
			return gap + int64(i), true
		}
		gap = max(gap, min(e.End(), size))
	}
	if i := firstNonZero(data[gap:]); i >= 0 {
		return gap + int64(i), true
	}
	return 0, false
}

var zeros = make([]byte, 4096)

// firstNonZero returns the index of the first non-zero byte of b, or -1.
func firstNonZero(b []byte) int {
	for off := 0; off < len(b); off += len(zeros) {
		chunk := b[off:min(off+len(zeros), len(b))]
		if bytes.Equal(chunk, zeros[:len(chunk)]) {
			continue
		}
		for i, v := range chunk {
			if v != 0 {
				return off + i
			}
		}
	}
	return -1
}
