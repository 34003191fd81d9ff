package local

import (
	"fmt"
	"os"
	"time"

	"github.com/ferry-dr/ferry/sdk"
)

// The system-specific halves of this file are sparse_unix.go (SEEK_DATA,
// SEEK_HOLE and stat(2)) and sparse_windows.go (FSCTL_QUERY_ALLOCATED_RANGES,
// FSCTL_SET_SPARSE, GetCompressedFileSizeW and the file index). Each
// provides:
//
//	allocatedExtents(f, size)  the data regions of a sparse file below size
//	markSparse(f)              let a new, empty file keep holes
//	statFingerprint(path)      see fingerprint
//	allocatedBytes(path)       the space a file takes on disk

// fingerprint identifies the content of a disk image cheaply: it changes
// when anything writes the file, as long as mtime moves (see restamp).
// Inode is the inode number on Unix and the NTFS file index on Windows.
type fingerprint struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
}

// restamp sets the mtime of a file this package just wrote to one second
// in the past and returns the new fingerprint. The kernel stamps a write
// with its coarse clock, so a write by someone else in the same clock tick
// as ours would leave size, mtime and inode as they were; after restamp,
// any later write moves mtime forward, past the recorded value.
func restamp(path string, now time.Time) (fingerprint, error) {
	t := now.Add(-time.Second)
	if err := os.Chtimes(path, t, t); err != nil {
		return fingerprint{}, fmt.Errorf("stamp %s: %w", path, err)
	}
	return statFingerprint(path)
}

// allocRange is one allocated range of a file, laid out as Windows'
// FILE_ALLOCATED_RANGE_BUFFER (two little-endian int64s).
type allocRange struct {
	Offset int64
	Length int64
}

// queryRanges asks the file system for the allocated ranges that start in
// [off, off+length), filling buf. more reports that ranges beyond the
// last one filled were left out for lack of room (ERROR_MORE_DATA).
type queryRanges func(off, length int64, buf []allocRange) (n int, more bool, err error)

// collectAllocated lists the allocated regions of a file below size by
// asking query for as many windows as it takes: each window starts where
// the last range of the previous answer ended. It is the system-neutral
// half of the Windows allocatedExtents, kept here so that it is tested on
// every system.
func collectAllocated(size int64, buf []allocRange, query queryRanges) ([]sdk.Extent, error) {
	var out []sdk.Extent
	for off := int64(0); off < size; {
		n, more, err := query(off, size-off, buf)
		if err != nil {
			return nil, err
		}
		if n < 0 || n > len(buf) {
			return nil, fmt.Errorf("query allocated ranges at %d: %d ranges for room for %d", off, n, len(buf))
		}
		next := off
		for _, r := range buf[:n] {
			start, end := max(r.Offset, off), min(r.Offset+r.Length, size)
			if r.Length < 0 || r.Offset < 0 || start < next {
				return nil, fmt.Errorf("query allocated ranges at %d: range %d+%d out of order", off, r.Offset, r.Length)
			}
			if end > start {
				out = append(out, sdk.Extent{Offset: start, Length: end - start})
			}
			next = max(next, r.Offset+r.Length)
		}
		if !more {
			break
		}
		if next <= off {
			return nil, fmt.Errorf("query allocated ranges at %d: no progress", off)
		}
		off = next
	}
	return sdk.MergeExtents(out), nil
}
