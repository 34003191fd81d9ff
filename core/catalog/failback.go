package catalog

import (
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Failback is the state of the failback of one failed-over VM of a job:
// what `ferry failback` has done so far, so that the next command (or the
// same one again after a kill) knows where to go on. It exists from the
// failback's first step until its commit or undo ends it.
type Failback struct {
	Job string `json:"job"`
	VM  string `json:"vm"` // the job's VM, whose replica is failed over
	// ID names the failback at the source (its undo store) and in
	// snapshot names.
	ID string `json:"id"`
	// Production is the production VM written: the job's VM, or the one
	// --to named.
	Production string `json:"production"`
	// Create is set when the production VM did not exist: the source
	// creates it (and undo removes it).
	Create bool `json:"create,omitempty"`
	// Elsewhere is set when Production is not the job's VM (--to named
	// another): once committed, it is in no job.
	Elsewhere bool `json:"elsewhere,omitempty"`
	// State is the step reached (core/failback's states).
	State string `json:"state"`
	// Point is the restore point the replica was failed over from.
	Point string             `json:"point,omitempty"`
	Disks []FailbackDiskSync `json:"disks,omitempty"`
	// Syncs counts the syncs completed; Sent the bytes they sent.
	Syncs int   `json:"syncs"`
	Sent  int64 `json:"sent_bytes"`
	// LastSync says what the last completed sync did.
	LastSync *FailbackSync `json:"last_sync,omitempty"`
	Started  time.Time     `json:"started"`
	Updated  time.Time     `json:"updated"`
}

// FailbackDiskSync is what the completed syncs of one disk reached.
type FailbackDiskSync struct {
	Index int `json:"index"`
	// Mark is the target's mark of the replica's writes the last completed
	// sync sent (sdk.FailbackReader); "" until one completed, or when the
	// target cannot tell (every sync compares digests then).
	Mark string `json:"mark,omitempty"`
	// Synced: a sync of the disk completed; production's disk holds the
	// replica's data as of it.
	Synced bool `json:"synced,omitempty"`
}

// FailbackSync is what one sync did.
type FailbackSync struct {
	At      time.Time          `json:"at"`
	Seconds float64            `json:"seconds"`
	Disks   []FailbackDiskStat `json:"disks"`
}

// FailbackDiskStat is one disk's part of a sync.
type FailbackDiskStat struct {
	Index   int    `json:"index"`
	Mode    string `json:"mode"` // change-tracking or digest
	Why     string `json:"why,omitempty"`
	Size    int64  `json:"size_bytes"`
	Read    int64  `json:"read_bytes"`
	Sent    int64  `json:"sent_bytes"`
	Changed int64  `json:"changed_bytes"`
}

// Disk returns the sync state of disk index, added when missing.
func (f *Failback) Disk(index int) *FailbackDiskSync {
	for i := range f.Disks {
		if f.Disks[i].Index == index {
			return &f.Disks[i]
		}
	}
	f.Disks = append(f.Disks, FailbackDiskSync{Index: index})
	return &f.Disks[len(f.Disks)-1]
}

func (f *Failback) check() error {
	if err := checkNames("job", f.Job, "vm", f.VM); err != nil {
		return err
	}
	if f.ID == "" || f.State == "" || f.Production == "" {
		return fmt.Errorf("failback of vm %q of job %q needs an id, a state and a production vm: %w", f.VM, f.Job, errdefs.ErrInvalidArgument)
	}
	return nil
}

// PutFailback inserts or replaces the failback of f.Job and f.VM. See
// Catalog.PutFailback.
func (t *Tx) PutFailback(f *Failback) error {
	if err := f.check(); err != nil {
		return fmt.Errorf("put failback: %w", err)
	}
	now := t.c.now()
	if f.Started.IsZero() {
		f.Started = now
	}
	f.Updated = now
	if err := putJSON(t.bucket(bucketFailbacks), key(f.Job, f.VM), f); err != nil {
		return fmt.Errorf("put failback of vm %q of job %q: %w", f.VM, f.Job, err)
	}
	return nil
}

// Failback returns the failback of vm in job. See Catalog.Failback.
func (t *Tx) Failback(job, vm string) (*Failback, error) {
	if err := checkNames("job", job, "vm", vm); err != nil {
		return nil, fmt.Errorf("get failback: %w", err)
	}
	var f Failback
	found, err := getJSON(t.bucket(bucketFailbacks), key(job, vm), &f)
	if err != nil {
		return nil, fmt.Errorf("get failback of vm %q of job %q: %w", vm, job, err)
	}
	if !found {
		return nil, fmt.Errorf("vm %q of job %q is in no failback: %w", vm, job, errdefs.ErrNotFound)
	}
	return &f, nil
}

// Failbacks lists the failbacks of job, or of every job when job is "".
func (t *Tx) Failbacks(job string) ([]Failback, error) {
	var p []byte
	if job != "" {
		if err := checkName("job", job); err != nil {
			return nil, fmt.Errorf("list failbacks: %w", err)
		}
		p = prefix(job)
	}
	b := t.bucket(bucketFailbacks)
	var out []Failback
	for _, k := range keysWithPrefix(b, p) {
		var f Failback
		if _, err := getJSON(b, k, &f); err != nil {
			return nil, fmt.Errorf("list failbacks: %w", err)
		}
		out = append(out, f)
	}
	return out, nil
}

// EndFailback removes the failback of vm in job and, when r is not nil,
// records the replica r in the same transaction. Ending a failback that is
// gone succeeds.
func (t *Tx) EndFailback(job, vm string, r *Replica) error {
	if err := checkNames("job", job, "vm", vm); err != nil {
		return fmt.Errorf("end failback: %w", err)
	}
	if r != nil {
		if err := t.PutReplica(r); err != nil {
			return err
		}
	}
	if err := t.bucket(bucketFailbacks).Delete(key(job, vm)); err != nil {
		return fmt.Errorf("end failback of vm %q of job %q: %w", vm, job, err)
	}
	return nil
}

// PutFailback inserts or replaces a failback's state, setting f.Updated
// (and f.Started when zero). Safe for concurrent use. ErrInvalidArgument
// for an empty job, VM, id, state or production VM.
func (c *Catalog) PutFailback(f *Failback) error {
	return c.Update(func(tx *Tx) error { return tx.PutFailback(f) })
}

// Failback returns the failback of vm in job, or an error matching
// ErrNotFound when it is in none. Safe for concurrent use.
func (c *Catalog) Failback(job, vm string) (*Failback, error) {
	var f *Failback
	err := c.View(func(tx *Tx) error {
		var err error
		f, err = tx.Failback(job, vm)
		return err
	})
	return f, err
}

// Failbacks lists the failbacks under way of job (every job when "").
func (c *Catalog) Failbacks(job string) ([]Failback, error) {
	var out []Failback
	err := c.View(func(tx *Tx) error {
		var err error
		out, err = tx.Failbacks(job)
		return err
	})
	return out, err
}

// EndFailback ends the failback of vm in job, recording r (when not nil)
// in the same transaction: a commit's or an undo's last step.
func (c *Catalog) EndFailback(job, vm string, r *Replica) error {
	return c.Update(func(tx *Tx) error { return tx.EndFailback(job, vm, r) })
}
