package simhost

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// fileLock is an exclusive lock on a lock file (flock on Unix, LockFileEx
// on Windows). The lock belongs to the open file, so it guards goroutines
// of one process and processes alike, and the system drops it when its
// holder dies: a host killed in the middle of a merge leaves no lock.
type fileLock struct{ f *os.File }

func lockFile(ctx context.Context, path string) (*fileLock, error) {
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
		wait = min(2*wait, 20*time.Millisecond)
	}
}

func (l *fileLock) unlock() {
	unlockNB(l.f)
	l.f.Close()
}
