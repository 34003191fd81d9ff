// Package filelock is the plugins' exclusive lock on a lock file: flock(2)
// on Unix, LockFileEx on Windows. The lock belongs to the open file, so two
// opens conflict even inside one process: the same lock guards goroutines
// and processes alike, and the system drops it when its holder dies.
package filelock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Lock is a held lock.
type Lock struct {
	f *os.File
}

// ErrLocked is returned by Try when someone else holds the lock.
var ErrLocked = errors.New("locked")

// Acquire takes an exclusive lock on path, creating the file, and waits
// for it as long as ctx allows.
func Acquire(ctx context.Context, path string) (*Lock, error) {
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
			return &Lock{f: f}, nil
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

// Try takes an exclusive lock on path without waiting; ErrLocked when it
// is held.
func Try(path string) (*Lock, error) {
	f, err := openLockFile(path)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := lockNB(f); err != nil {
		f.Close()
		if lockBusy(err) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Release releases the lock. It is safe to call on a nil lock.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		unlockNB(l.f)
		l.f.Close() // closing the last handle releases the lock too
		l.f = nil
	}
}
