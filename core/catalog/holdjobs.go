package catalog

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A command that changes a job's VMs outside a session (a failback writes
// a production VM, removes snapshots of it and returns its replica to
// replication) must not run beside a session of the job, nor beside
// another such command: it holds the lock a session holds (see
// BeginSession) for as long as it runs. A file beside the lock says who
// holds it, so that a session refused, or a second command, can name it;
// it is removed on release (one a dead process left is told apart by its
// time, see Tx.refuse).

// HoldJobs takes the locks of jobs for h until release is called: while
// it holds them, no session of them begins (in this process or another)
// and a second HoldJobs of one of them fails. It fails with an error
// matching errdefs.ErrFailedPrecondition, holding none, when a session of
// one runs (the error names it), when another holds one (it names h's
// What, PID and host), or when a ferry server holds the catalog's jobs and
// c is not its Catalog (ErrControlled too).
func (c *Catalog) HoldJobs(jobs []string, h Holder) (release func(), err error) {
	jobs = slices.Clone(jobs)
	slices.Sort(jobs)
	jobs = slices.Compact(jobs)
	var held []*jobLock
	releaseAll := func() {
		for _, l := range held {
			_ = os.Remove(holderFile(c.path, l.job))
			l.release()
		}
	}
	for _, job := range jobs {
		if err := checkName("job", job); err != nil {
			releaseAll()
			return nil, fmt.Errorf("hold jobs: %w", err)
		}
		if err := c.controlled(job); err != nil {
			releaseAll()
			return nil, err
		}
		l, err := tryLockJob(c.path, job)
		if err != nil {
			releaseAll()
			return nil, err
		}
		if l == nil {
			releaseAll()
			return nil, c.busy(job)
		}
		held = append(held, l)
		if err := writeHolder(holderFile(c.path, job), h); err != nil {
			releaseAll()
			return nil, fmt.Errorf("hold job %q: say who holds it: %w", job, err)
		}
	}
	return releaseAll, nil
}

// Holder is who holds a lock: a test of a plan or a VM (LockTest,
// LockTestVM), or a command holding jobs (HoldJobs).
type Holder = TestHolder

// holderFile names the file that says who holds job's lock besides a
// session.
func holderFile(path, job string) string { return lockFile(path, job) + ".holder.json" }

func writeHolder(name string, h Holder) error {
	b, _ := json.Marshal(h)
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// readHolder returns who the file says holds job's lock, nil when none
// does.
func readHolder(path, job string) *Holder {
	b, err := os.ReadFile(holderFile(path, job))
	if err != nil || len(b) > 4096 {
		return nil
	}
	var h Holder
	if json.Unmarshal(b, &h) != nil {
		return nil
	}
	return &h
}

// busy is the error of HoldJobs for a job whose lock another holds: it
// names the session that runs or the command that holds it.
func (c *Catalog) busy(job string) error {
	var why string
	_ = c.View(func(tx *Tx) error {
		s := tx.runningSession(job)
		h := readHolder(c.path, job)
		switch {
		case h != nil && (s == nil || h.Since.After(s.Started)):
			why = h.String() + " holds it"
		case s != nil:
			why = fmt.Sprintf("session %s of the job runs since %s%s", s.ID, s.Started.UTC().Format(time.RFC3339), s.Owner.by())
		default:
			why = "another ferry is starting a session of it"
		}
		return nil
	})
	return fmt.Errorf("job %q is busy: %s; try again when it ends: %w", job, why, errdefs.ErrFailedPrecondition)
}

// runningSession is the newest session of job recorded as running, nil
// when there is none.
func (t *Tx) runningSession(job string) *Session {
	var other *Session
	_ = t.bucket(bucketRunning).ForEach(func(k, _ []byte) error {
		s, err := t.Session(string(k))
		if err == nil && s.Job == job && (other == nil || s.Started.After(other.Started)) {
			other = s
		}
		return nil
	})
	return other
}

// by is " by process PID on HOST", "" for no owner.
func (o *Owner) by() string {
	if o == nil {
		return ""
	}
	by := fmt.Sprintf(" by process %d", o.PID)
	if o.Host != "" {
		by += " on " + o.Host
	}
	return by
}
