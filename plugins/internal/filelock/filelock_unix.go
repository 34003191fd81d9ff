//go:build unix

package filelock

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openLockFile opens (creating) a lock file.
func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

// lockNB takes an exclusive flock on f without waiting.
func lockNB(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}

// unlockNB does nothing: closing the last descriptor releases a flock.
func unlockNB(*os.File) {}

// lockBusy reports whether lockNB failed because another open file holds
// the lock.
func lockBusy(err error) bool { return errors.Is(err, unix.EWOULDBLOCK) }

// lockInterrupted reports whether lockNB was interrupted by a signal and
// may be tried again.
func lockInterrupted(err error) bool { return errors.Is(err, unix.EINTR) }
