package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// fileLock is an exclusive lock on a lock file: flock(2) on Unix
// (lock_unix.go), LockFileEx on Windows (lock_windows.go). Both locks
// belong to the open file, so two opens conflict even inside one process:
// the same lock guards goroutines and processes alike, and the system
// drops it when the holder dies.
type fileLock struct {
	f *os.File
}

// errLocked is returned by tryLock when someone else holds the lock.
var errLocked = errors.New("locked")

// lockFile takes an exclusive lock on path, creating the file, and waits
// for it as long as ctx allows.
func lockFile(ctx context.Context, path string) (*fileLock, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock %s: %w: %w", path, errdefs.ErrCanceled, err)
	}
	f, err := openLockFile(path)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	wait := time.Millisecond
	for {
		err := lockNB(f)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !lockBusy(err) && !lockInterrupted(err) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w: %w", path, errdefs.ErrCanceled, ctx.Err())
		case <-time.After(wait):
		}
		if wait < 20*time.Millisecond {
			wait *= 2
		}
	}
}

// tryLock takes an exclusive lock on path without waiting; errLocked when
// it is held.
func tryLock(path string) (*fileLock, error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := lockNB(f); err != nil {
		f.Close()
		if lockBusy(err) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &fileLock{f: f}, nil
}

// unlock releases the lock. It is safe to call on a nil lock.
func (l *fileLock) unlock() {
	if l != nil && l.f != nil {
		unlockNB(l.f)
		l.f.Close() // closing the last handle releases the lock too
		l.f = nil
	}
}
