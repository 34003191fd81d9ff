package vsphere

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Work on a replica is serialized within a process by replica.mu and the
// gate; across processes (two ferry installations configured with the same
// replica, a plugin of a run still finishing) by a lock on the file "lock"
// in the replica's ferry folder: taken when the process starts using the
// replica (a call, an open writer or reader) and released when it stops,
// so only one process works on a replica at a time. The lock is the
// operating system's (flock on Unix, LockFileEx on Windows): it dies with
// its process, and on an NFS datastore the client forwards it to the
// server. The file holds who took it, for the error another process gets.

// lockName is the lock file in a replica's ferry folder.
const lockName = "lock"

// defaultLockWait is how long a lock held by another process is tried,
// lockRetry apart, before the call fails: time for a run that is ending to
// let go.
const (
	defaultLockWait = 2 * time.Second
	lockRetry       = 100 * time.Millisecond
)

// errHeld is a lock held by someone else.
var errHeld = errors.New("held")

// use registers one user of r in this process, taking the replica's lock
// for the first; the returned function ends the use. The caller holds r.mu
// (and so does the caller of the returned function).
func (r *replica) use() (func(), error) {
	if r.users == 0 {
		if err := r.lock(); err != nil {
			return nil, err
		}
	}
	r.users++
	done := false
	return func() {
		if done {
			return
		}
		done = true
		if r.users--; r.users == 0 {
			r.unlock()
		}
	}, nil
}

// lock takes the replica's lock; the caller holds r.mu.
func (r *replica) lock() error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return fmt.Errorf("replica %q: %w", r.vm.Name, err)
	}
	path := filepath.Join(r.dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("replica %q: open its lock: %w", r.vm.Name, err)
	}
	deadline := time.Now().Add(r.lockWait)
	for {
		err = lockFile(f)
		if err == nil {
			break
		}
		if !errors.Is(err, errHeld) || time.Now().After(deadline) {
			holder, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, errHeld) {
				return fmt.Errorf("replica %q is in use by another process (%s); ferry works on a replica from one process at a time: %w",
					r.vm.Name, strings.TrimSpace(string(holder)), errdefs.ErrUnavailable)
			}
			return fmt.Errorf("replica %q: lock %s: %w", r.vm.Name, path, err)
		}
		time.Sleep(lockRetry)
	}
	host, _ := os.Hostname()
	note := fmt.Sprintf("pid %d on %s since %s", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(note+"\n"), 0)
	}
	r.lockF = f
	return nil
}

// unlock releases the replica's lock; the caller holds r.mu.
func (r *replica) unlock() {
	if r.lockF != nil {
		unlockFile(r.lockF)
		r.lockF.Close()
		r.lockF = nil
	}
}
