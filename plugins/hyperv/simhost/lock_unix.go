//go:build unix

package simhost

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

func lockNB(f *os.File) error        { return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) }
func unlockNB(*os.File)              {}
func lockBusy(err error) bool        { return errors.Is(err, unix.EWOULDBLOCK) }
func lockInterrupted(err error) bool { return errors.Is(err, unix.EINTR) }
