package filelock

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestFileLock checks the lock's contract on this system (flock or
// LockFileEx): two opens in one process conflict, a waiter gets the lock
// once it is released, and a canceled wait says so.
func TestFileLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	held, err := Try(path)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := Try(path); !errors.Is(err, ErrLocked) {
		l.Release()
		t.Fatalf("second tryLock: %v, want ErrLocked", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if l, err := Acquire(ctx, path); !errors.Is(err, errdefs.ErrCanceled) {
		l.Release()
		t.Fatalf("lockFile of a held lock past its deadline: %v, want canceled", err)
	}

	got := make(chan error, 1)
	go func() {
		l, err := Acquire(context.Background(), path)
		l.Release()
		got <- err
	}()
	held.Release()
	if err := <-got; err != nil {
		t.Fatalf("lockFile after unlock: %v", err)
	}
	held.Release() // a second unlock does nothing
	again, err := Try(path)
	if err != nil {
		t.Fatalf("tryLock after every holder unlocked: %v", err)
	}
	again.Release()
}
