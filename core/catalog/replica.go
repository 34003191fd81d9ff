package catalog

import (
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Replica records the copy of one source VM of a job on a target.
type Replica struct {
	Job         string           `json:"job"`
	VM          string           `json:"vm"`                  // source VM name
	SourceID    string           `json:"source_id,omitempty"` // the VM's id at the source
	ReplicaID   string           `json:"replica_id"`          // the replica's id at the target
	ReplicaName string           `json:"replica_name,omitempty"`
	Target      string           `json:"target"` // "type.name" of the target block
	State       sdk.ReplicaState `json:"state"`
	// FailoverPoint is the restore point the replica runs from while
	// failed over.
	FailoverPoint string        `json:"failover_point,omitempty"`
	Disks         []ReplicaDisk `json:"disks,omitempty"`
	Created       time.Time     `json:"created"`
	Updated       time.Time     `json:"updated"`
	LastSession   string        `json:"last_session,omitempty"` // the last session that wrote to it
	// FailedBack is the failback committed since the replica's newest
	// restore point: the failback wrote production, mostly with the
	// replica's own data, so the next run compares every block change
	// tracking names with the replica's digests before it sends it. A
	// run's new record drops it.
	FailedBack string `json:"failed_back,omitempty"`
}

// ReplicaDisk is one disk of a replica.
type ReplicaDisk struct {
	Index    int   `json:"index"`
	Capacity int64 `json:"capacity_bytes"`
}

func (r *Replica) check() error {
	if err := checkName("job", r.Job); err != nil {
		return err
	}
	if err := checkName("vm", r.VM); err != nil {
		return err
	}
	if r.ReplicaID == "" {
		return fmt.Errorf("empty replica id: %w", errdefs.ErrInvalidArgument)
	}
	switch r.State {
	case sdk.ReplicaReady, sdk.ReplicaFailedOver, sdk.ReplicaCommitted:
	default:
		return fmt.Errorf("unknown replica state %q: %w", r.State, errdefs.ErrInvalidArgument)
	}
	seen := make(map[int]bool, len(r.Disks))
	for _, d := range r.Disks {
		if d.Index < 0 || d.Capacity < 0 || seen[d.Index] {
			return fmt.Errorf("disk %d (capacity %d) is negative or listed twice: %w", d.Index, d.Capacity, errdefs.ErrInvalidArgument)
		}
		seen[d.Index] = true
	}
	return nil
}

// PutReplica inserts or replaces the replica of r.Job and r.VM. See
// Catalog.PutReplica.
func (t *Tx) PutReplica(r *Replica) error {
	if err := r.check(); err != nil {
		return fmt.Errorf("put replica %q of job %q: %w", r.VM, r.Job, err)
	}
	b := t.bucket(bucketReplicas)
	k := key(r.Job, r.VM)
	var old Replica
	found, err := getJSON(b, k, &old)
	if err != nil {
		return fmt.Errorf("put replica %q of job %q: %w", r.VM, r.Job, err)
	}
	now := t.c.now()
	if r.Created.IsZero() {
		r.Created = now
		if found {
			r.Created = old.Created
		}
	}
	r.Updated = now
	if err := putJSON(b, k, r); err != nil {
		return fmt.Errorf("put replica %q of job %q: %w", r.VM, r.Job, err)
	}
	return nil
}

// Replica returns the replica of vm in job. See Catalog.Replica.
func (t *Tx) Replica(job, vm string) (*Replica, error) {
	if err := checkNames("job", job, "vm", vm); err != nil {
		return nil, fmt.Errorf("get replica: %w", err)
	}
	var r Replica
	found, err := getJSON(t.bucket(bucketReplicas), key(job, vm), &r)
	if err != nil {
		return nil, fmt.Errorf("get replica %q of job %q: %w", vm, job, err)
	}
	if !found {
		return nil, fmt.Errorf("get replica %q of job %q: %w", vm, job, errdefs.ErrNotFound)
	}
	return &r, nil
}

// Replicas lists the replicas of job, or of every job. See
// Catalog.Replicas.
func (t *Tx) Replicas(job string) ([]Replica, error) {
	var p []byte
	if job != "" {
		if err := checkName("job", job); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		p = prefix(job)
	}
	b := t.bucket(bucketReplicas)
	var out []Replica
	for _, k := range keysWithPrefix(b, p) {
		var r Replica
		if _, err := getJSON(b, k, &r); err != nil {
			return nil, fmt.Errorf("list replicas: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// DeleteReplica removes the replica of vm in job and its restore points.
// See Catalog.DeleteReplica.
func (t *Tx) DeleteReplica(job, vm string) error {
	if err := checkNames("job", job, "vm", vm); err != nil {
		return fmt.Errorf("delete replica: %w", err)
	}
	b := t.bucket(bucketReplicas)
	k := key(job, vm)
	if b.Get(k) == nil {
		return fmt.Errorf("delete replica %q of job %q: %w", vm, job, errdefs.ErrNotFound)
	}
	if err := b.Delete(k); err != nil {
		return fmt.Errorf("delete replica %q of job %q: %w", vm, job, err)
	}
	if err := t.deletePoints(job, vm); err != nil {
		return fmt.Errorf("delete replica %q of job %q: %w", vm, job, err)
	}
	return nil
}

// PutReplica inserts or replaces the replica of r.Job and r.VM. It sets
// r.Updated to now and, when r.Created is zero, r.Created to the stored
// replica's (or now for a new one), in r itself. Idempotent. Safe for
// concurrent use. Errors: ErrInvalidArgument for an empty job, VM or
// replica id, an unknown state, or a negative or repeated disk.
func (c *Catalog) PutReplica(r *Replica) error {
	return c.Update(func(tx *Tx) error { return tx.PutReplica(r) })
}

// Replica returns the replica of vm in job, or an error matching
// ErrNotFound (ErrInvalidArgument for an empty job or VM). Safe for
// concurrent use.
func (c *Catalog) Replica(job, vm string) (*Replica, error) {
	var r *Replica
	err := c.View(func(tx *Tx) error {
		var err error
		r, err = tx.Replica(job, vm)
		return err
	})
	return r, err
}

// Replicas lists the replicas of job, or of every job when job is "",
// ordered by job and VM name. An unknown job has none, which is not an
// error. Safe for concurrent use.
func (c *Catalog) Replicas(job string) ([]Replica, error) {
	var out []Replica
	err := c.View(func(tx *Tx) error {
		var err error
		out, err = tx.Replicas(job)
		return err
	})
	return out, err
}

// DeleteReplica removes the replica of vm in job together with every
// restore point recorded for it, in one transaction: points live on the
// replica and cannot outlive it. Deleting a missing replica returns an
// error matching ErrNotFound, so a retry after success can tell it is done;
// an empty job or VM is ErrInvalidArgument. Safe for concurrent use.
func (c *Catalog) DeleteReplica(job, vm string) error {
	return c.Update(func(tx *Tx) error { return tx.DeleteReplica(job, vm) })
}
