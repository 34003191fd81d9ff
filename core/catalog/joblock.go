package catalog

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// A running session holds a lock on a small file of its job, in the folder
// <catalog>.running beside the catalog, from BeginSession until it is saved
// with its result or its Catalog is closed. The operating system drops the
// lock when the process dies, however it dies, so the lock tells another
// process whether a session still "running" in the catalog has a process
// behind it: a second session of the job is refused while it does, and
// MarkAbandoned fails the session once it does not. The files stay; only
// their locks come and go.

// jobLock is a held lock of a job.
type jobLock struct {
	job string
	f   *os.File
}

// lockDir is the folder of the job locks of the catalog at path.
func lockDir(path string) string { return path + ".running" }

// lockFile names the lock file of job: the job's name when it is safe as a
// file name everywhere, else a digest of it.
func lockFile(path, job string) string {
	safe := len(job) <= 64
	for _, r := range job {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			safe = false
			break
		}
	}
	name := "job-" + job + ".lock"
	if !safe {
		sum := sha256.Sum256([]byte(job))
		name = "digest-" + hex.EncodeToString(sum[:16]) + ".lock"
	}
	return filepath.Join(lockDir(path), name)
}

// tryLockJob takes the lock of job without waiting. It returns nil and no
// error when another process (or another Catalog value of this one) holds
// it.
func tryLockJob(path, job string) (*jobLock, error) {
	if err := os.MkdirAll(lockDir(path), 0o750); err != nil {
		return nil, fmt.Errorf("lock job %q: %w", job, err)
	}
	name := lockFile(path, job)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock job %q: %w", job, err)
	}
	ok, err := tryLock(f)
	if err != nil || !ok {
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("lock job %q: %s: %w", job, name, err)
		}
		return nil, nil
	}
	return &jobLock{job: job, f: f}, nil
}

// release drops the lock. Calling it on nil does nothing.
func (l *jobLock) release() {
	if l == nil {
		return
	}
	unlock(l.f)
	_ = l.f.Close()
}

// jobRunning tells whether a process holds the lock of job.
func jobRunning(path, job string) (bool, error) {
	l, err := tryLockJob(path, job)
	if err != nil {
		return false, err
	}
	l.release()
	return l == nil, nil
}
