//go:build unix

package local

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ferry-dr/ferry/sdk"
)

const (
	seekData = unix.SEEK_DATA
	seekHole = unix.SEEK_HOLE
)

func isENXIO(err error) bool { return errors.Is(err, unix.ENXIO) }

// allocatedExtents lists the data regions of a sparse file below size with
// SEEK_DATA and SEEK_HOLE.
func allocatedExtents(f *os.File, size int64) ([]sdk.Extent, error) {
	var out []sdk.Extent
	var off int64
	for off < size {
		data, err := f.Seek(off, seekData)
		if err != nil {
			if isENXIO(err) {
				break
			}
			return nil, fmt.Errorf("seek data in %s: %w", f.Name(), err)
		}
		if data >= size {
			break
		}
		hole, err := f.Seek(data, seekHole)
		if err != nil {
			if !isENXIO(err) {
				return nil, fmt.Errorf("seek hole in %s: %w", f.Name(), err)
			}
			hole = size
		}
		hole = min(hole, size)
		out = append(out, sdk.Extent{Offset: data, Length: hole - data})
		off = hole
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seek %s: %w", f.Name(), err)
	}
	return out, nil
}

// markSparse does nothing: on Unix a file that is extended without being
// written has holes already.
func markSparse(*os.File) {}

func statFingerprint(path string) (fingerprint, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fingerprint{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return fingerprint{Size: st.Size, MtimeNs: st.Mtim.Nano(), Inode: st.Ino}, nil
}

// allocatedBytes is the space a file takes on disk.
func allocatedBytes(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Blocks * 512, nil
}
