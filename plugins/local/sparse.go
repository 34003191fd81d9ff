package local

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

const (
	seekData = unix.SEEK_DATA
	seekHole = unix.SEEK_HOLE
)

func isENXIO(err error) bool { return errors.Is(err, unix.ENXIO) }

// fingerprint identifies the content of a disk image cheaply: it changes
// when anything writes the file, as long as mtime moves (see restamp).
type fingerprint struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
}

func statFingerprint(path string) (fingerprint, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fingerprint{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return fingerprint{Size: st.Size, MtimeNs: st.Mtim.Nano(), Inode: st.Ino}, nil
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

// allocatedBytes is the space a file takes on disk.
func allocatedBytes(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st.Blocks * 512, nil
}
