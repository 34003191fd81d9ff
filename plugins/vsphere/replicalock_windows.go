//go:build windows

package vsphere

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// lockOffset is the byte locked: far past the note the file holds, which
// other processes read.
const lockOffset = 0x7fffffff

// lockFile takes an exclusive LockFileEx lock on f without waiting;
// errHeld when another handle holds it.
func lockFile(f *os.File) error {
	ol := windows.Overlapped{OffsetHigh: lockOffset}
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return errHeld
	}
	return err
}

func unlockFile(f *os.File) {
	ol := windows.Overlapped{OffsetHigh: lockOffset}
	windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}
