package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A ferry server claims the jobs of its catalog: while it runs, it alone
// begins their sessions, so a person's `ferry run` cannot race the server's
// schedule. The claim is a lock on the file control.lock in the folder of
// the job locks, held by the server's Catalog until Close; the operating
// system drops it when the server dies. control.json beside it says who
// holds it (a file of its own: Windows refuses reads of a locked range).

// Controller is the process that claimed a catalog's jobs.
type Controller struct {
	PID  int    `json:"pid"`
	Host string `json:"host,omitempty"`
	// Address is where the server answers its API, "" when it does not.
	Address string    `json:"address,omitempty"`
	Since   time.Time `json:"since"`
}

func (c Controller) String() string {
	if c.PID == 0 {
		return "a ferry server"
	}
	s := fmt.Sprintf("ferry server (process %d", c.PID)
	if c.Host != "" {
		s += " on " + c.Host
	}
	if c.Address != "" {
		s += ", at " + c.Address
	}
	return s + ", since " + c.Since.UTC().Format(time.RFC3339) + ")"
}

// ErrControlled is matched by the error of BeginSession when a ferry
// server holds the catalog's jobs.
var ErrControlled = errors.New("a ferry server runs the jobs of this catalog")

func controlFile(path string) string { return filepath.Join(lockDir(path), "control.lock") }
func controlInfo(path string) string { return filepath.Join(lockDir(path), "control.json") }

// claimTries bounds the attempts to take the claim while a process that
// only looks (Controller) holds the lock for a moment.
const claimTries = 50

// ClaimControl makes c the one control plane of the catalog's jobs until
// c is closed: BeginSession of any other Catalog, in this process or
// another, fails with ErrControlled while c holds the claim. It fails,
// naming the holder, when another holds it.
func (c *Catalog) ClaimControl(ctl Controller) error {
	name := controlFile(c.path)
	if err := os.MkdirAll(filepath.Dir(name), 0o750); err != nil {
		return fmt.Errorf("claim the jobs of %s: %w", c.path, err)
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("claim the jobs of %s: %w", c.path, err)
	}
	for try := 1; ; try++ {
		ok, err := tryLock(f)
		if err != nil {
			f.Close()
			return fmt.Errorf("claim the jobs of %s: %s: %w", c.path, name, err)
		}
		if ok {
			break
		}
		if holder, _ := c.Controller(); holder != nil || try == claimTries {
			f.Close()
			if holder == nil {
				holder = &Controller{}
			}
			return fmt.Errorf("claim the jobs of %s: %s holds them: %w", c.path, holder, errdefs.ErrFailedPrecondition)
		}
		time.Sleep(20 * time.Millisecond) // someone looked at the lock: it is theirs for a moment
	}
	b, _ := json.Marshal(ctl)
	tmp := controlInfo(c.path) + ".tmp"
	err = os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, controlInfo(c.path))
	}
	if err != nil {
		unlock(f)
		f.Close()
		return fmt.Errorf("claim the jobs of %s: %w", c.path, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		unlock(f)
		f.Close()
		return fmt.Errorf("claim the jobs of %s: the catalog is closed: %w", c.path, errdefs.ErrFailedPrecondition)
	}
	c.control = &jobLock{job: "control", f: f}
	return nil
}

// Controller returns who holds the claim on the catalog's jobs when
// another Catalog (of this process or another) does, nil when none does or
// c does.
func (c *Catalog) Controller() (*Controller, error) {
	c.mu.Lock()
	mine := c.control != nil
	c.mu.Unlock()
	if mine {
		return nil, nil
	}
	name := controlFile(c.path)
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("who runs the jobs of %s: %w", c.path, err)
	}
	defer f.Close()
	if ok, err := tryLock(f); err != nil {
		return nil, fmt.Errorf("who runs the jobs of %s: %s: %w", c.path, name, err)
	} else if ok {
		unlock(f)
		return nil, nil // nobody holds it: a server that stopped
	}
	var ctl Controller
	b, err := os.ReadFile(controlInfo(c.path))
	if err == nil && len(b) <= 4096 {
		err = json.Unmarshal(b, &ctl)
	}
	if err != nil || len(b) > 4096 {
		return &Controller{}, nil // held, by a server still writing who it is
	}
	return &ctl, nil
}

// controlled is the error of a session begun while a server holds the
// catalog's jobs, nil when none does (or c does).
func (c *Catalog) controlled(job string) error {
	ctl, err := c.Controller()
	if err != nil || ctl == nil {
		return err
	}
	return &controlledError{job: job, by: *ctl}
}

// controlledError is a session refused because a server holds the jobs.
type controlledError struct {
	job string
	by  Controller
}

func (e *controlledError) Error() string {
	how := "stop it first"
	if e.by.Address != "" {
		how = fmt.Sprintf("ask it (POST %s/v1/jobs/%s/run) or stop it first", e.by.Address, e.job)
	}
	return fmt.Sprintf("begin session of job %q: %s runs the jobs of this configuration; %s", e.job, e.by, how)
}

func (e *controlledError) Is(target error) bool {
	return target == ErrControlled || target == errdefs.ErrFailedPrecondition
}
