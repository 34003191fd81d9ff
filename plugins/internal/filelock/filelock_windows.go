package filelock

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// openLockFile opens (creating) a lock file. Unlike os.OpenFile it shares
// delete access, so that a folder holding a lock file that is held can
// still be renamed or removed, as on Unix (DeleteReplica renames the
// replica's folder while it holds the replica's lock).
func openLockFile(path string) (*os.File, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	h, err := windows.CreateFile(p,
		windows.GENERIC_READ|windows.GENERIC_WRITE,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE,
		nil, windows.OPEN_ALWAYS, windows.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(h), path), nil
}

// The whole file's range is locked: LockFileEx locks bytes, and a range
// past the end of the file is allowed. Nothing reads or writes a lock
// file, so its mandatory byte locks bother no one.
const lockLow, lockHigh = ^uint32(0), ^uint32(0)

// lockNB takes an exclusive LockFileEx lock on f without waiting. The
// handle is synchronous, so LOCKFILE_FAIL_IMMEDIATELY returns at once and
// the Overlapped only carries the offset (zero).
func lockNB(f *os.File) error {
	return windows.LockFileEx(windows.Handle(f.Fd()),
		windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY,
		0, lockLow, lockHigh, new(windows.Overlapped))
}

// unlockNB releases the lock before the handle closes: Windows releases
// the locks of a closed handle too, but only eventually, and a waiting
// lockFile would see the lock held a while longer.
func unlockNB(f *os.File) {
	windows.UnlockFileEx(windows.Handle(f.Fd()), 0, lockLow, lockHigh, new(windows.Overlapped))
}

// lockBusy reports whether lockNB failed because another handle holds the
// lock.
func lockBusy(err error) bool {
	return errors.Is(err, windows.ERROR_LOCK_VIOLATION) || errors.Is(err, windows.ERROR_IO_PENDING)
}

// lockInterrupted is always false: LockFileEx is not interrupted by
// signals as flock(2) is.
func lockInterrupted(error) bool { return false }
