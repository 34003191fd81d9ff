package catalog

import (
	"bytes"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// RestorePoint records one complete state of a replica, as its target
// reported it.
type RestorePoint struct {
	Job     string      `json:"job"`
	VM      string      `json:"vm"` // source VM name
	ID      string      `json:"id"` // the target's id of the point
	Created time.Time   `json:"created"`
	Size    int64       `json:"size"`              // bytes of storage the point holds on its own
	Session string      `json:"session,omitempty"` // the session that created it
	Disks   []PointDisk `json:"disks,omitempty"`
	// Consistency is ConsistencyApplication when the guest was quiesced
	// for the point's snapshot, ConsistencyCrash when it was not; empty
	// for points recorded before ferry said.
	Consistency string `json:"consistency,omitempty"`
}

// The consistencies of a restore point.
const (
	ConsistencyApplication = "application"
	ConsistencyCrash       = "crash"
)

// PointDisk is the state of one disk in a restore point.
type PointDisk struct {
	Index    int   `json:"index"`
	Capacity int64 `json:"capacity_bytes"`
	// ChangeID is the source's change-tracking id of the disk state the
	// point holds: the next run asks for the changes since it.
	ChangeID string `json:"change_id,omitempty"`
}

func (p *RestorePoint) check() error {
	if err := checkName("job", p.Job); err != nil {
		return err
	}
	if err := checkName("vm", p.VM); err != nil {
		return err
	}
	if err := checkName("restore point id", p.ID); err != nil {
		return err
	}
	if err := checkTime("creation time", p.Created); err != nil {
		return err
	}
	if p.Size < 0 {
		return fmt.Errorf("negative size %d: %w", p.Size, errdefs.ErrInvalidArgument)
	}
	seen := make(map[int]bool, len(p.Disks))
	for _, d := range p.Disks {
		if d.Index < 0 || d.Capacity < 0 || seen[d.Index] {
			return fmt.Errorf("disk %d (capacity %d) is negative or listed twice: %w", d.Index, d.Capacity, errdefs.ErrInvalidArgument)
		}
		seen[d.Index] = true
	}
	return nil
}

// pointKey orders points by job, VM, creation time and id.
func pointKey(p *RestorePoint) []byte {
	return key(p.Job, p.VM, formatTime(p.Created), p.ID)
}

// findPoint returns the key of point id of vm in job, or nil.
func (t *Tx) findPoint(job, vm, id string) []byte {
	p := prefix(job, vm)
	cur := t.bucket(bucketPoints).Cursor()
	for k, _ := cur.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = cur.Next() {
		// After the prefix: the fixed-width time, the separator, the id.
		if rest := k[len(p):]; len(rest) > len(timeKey)+1 && string(rest[len(timeKey)+1:]) == id {
			return bytes.Clone(k)
		}
	}
	return nil
}

func (t *Tx) deletePoints(job, vm string) error {
	b := t.bucket(bucketPoints)
	for _, k := range keysWithPrefix(b, prefix(job, vm)) {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// putPoint stores p, replacing a point of the same id.
func (t *Tx) putPoint(p *RestorePoint) error {
	b := t.bucket(bucketPoints)
	if old := t.findPoint(p.Job, p.VM, p.ID); old != nil {
		if err := b.Delete(old); err != nil {
			return err
		}
	}
	return putJSON(b, pointKey(p), p)
}

// AddRestorePoint records p. See Catalog.AddRestorePoint.
func (t *Tx) AddRestorePoint(p *RestorePoint) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("add restore point %q of vm %q in job %q: %w", p.ID, p.VM, p.Job, err)
	}
	if err := t.putPoint(p); err != nil {
		return fmt.Errorf("add restore point %q of vm %q in job %q: %w", p.ID, p.VM, p.Job, err)
	}
	return nil
}

// RestorePoints lists restore points. See Catalog.RestorePoints.
func (t *Tx) RestorePoints(job, vm string) ([]RestorePoint, error) {
	var p []byte
	switch {
	case job == "" && vm != "":
		return nil, fmt.Errorf("list restore points of vm %q: no job given: %w", vm, errdefs.ErrInvalidArgument)
	case job == "":
	case vm == "":
		if err := checkName("job", job); err != nil {
			return nil, fmt.Errorf("list restore points: %w", err)
		}
		p = prefix(job)
	default:
		if err := checkNames("job", job, "vm", vm); err != nil {
			return nil, fmt.Errorf("list restore points: %w", err)
		}
		p = prefix(job, vm)
	}
	b := t.bucket(bucketPoints)
	var out []RestorePoint
	for _, k := range keysWithPrefix(b, p) {
		var rp RestorePoint
		if _, err := getJSON(b, k, &rp); err != nil {
			return nil, fmt.Errorf("list restore points: %w", err)
		}
		out = append(out, rp)
	}
	return out, nil
}

// DeleteRestorePoint removes point id of vm in job. See
// Catalog.DeleteRestorePoint.
func (t *Tx) DeleteRestorePoint(job, vm, id string) error {
	if err := checkNames("job", job, "vm", vm, "restore point id", id); err != nil {
		return fmt.Errorf("delete restore point: %w", err)
	}
	k := t.findPoint(job, vm, id)
	if k == nil {
		return fmt.Errorf("delete restore point %q of vm %q in job %q: %w", id, vm, job, errdefs.ErrNotFound)
	}
	if err := t.bucket(bucketPoints).Delete(k); err != nil {
		return fmt.Errorf("delete restore point %q of vm %q in job %q: %w", id, vm, job, err)
	}
	return nil
}

// ReplaceRestorePoints makes points the whole list of vm's points in job.
// See Catalog.ReplaceRestorePoints.
func (t *Tx) ReplaceRestorePoints(job, vm string, points []RestorePoint) error {
	fail := func(err error) error {
		return fmt.Errorf("replace restore points of vm %q in job %q: %w", vm, job, err)
	}
	if err := checkNames("job", job, "vm", vm); err != nil {
		return fail(err)
	}
	seen := make(map[string]bool, len(points))
	for i := range points {
		p := points[i]
		if p.Job == "" {
			p.Job = job
		}
		if p.VM == "" {
			p.VM = vm
		}
		if p.Job != job || p.VM != vm {
			return fail(fmt.Errorf("point %q belongs to vm %q in job %q: %w", p.ID, p.VM, p.Job, errdefs.ErrInvalidArgument))
		}
		if err := p.check(); err != nil {
			return fail(fmt.Errorf("point %q: %w", p.ID, err))
		}
		if seen[p.ID] {
			return fail(fmt.Errorf("point %q listed twice: %w", p.ID, errdefs.ErrInvalidArgument))
		}
		seen[p.ID] = true
	}
	if err := t.deletePoints(job, vm); err != nil {
		return fail(err)
	}
	for i := range points {
		p := points[i]
		p.Job, p.VM = job, vm
		if err := putJSON(t.bucket(bucketPoints), pointKey(&p), &p); err != nil {
			return fail(err)
		}
	}
	return nil
}

// AddRestorePoint records p, replacing a recorded point of the same job,
// VM and id (so adding it again, even with another creation time, keeps
// one). The replica need not be recorded first. Safe for concurrent use.
// Errors: ErrInvalidArgument for an empty job, VM or id, a zero creation
// time, a negative size, or a negative or repeated disk.
func (c *Catalog) AddRestorePoint(p *RestorePoint) error {
	return c.Update(func(tx *Tx) error { return tx.AddRestorePoint(p) })
}

// RestorePoints lists the restore points of vm in job, oldest first. With
// vm "" it lists those of every VM of job, ordered by VM name and then
// oldest first; with job "" too, those of every job. An unknown job or VM
// has none, which is not an error. Safe for concurrent use.
func (c *Catalog) RestorePoints(job, vm string) ([]RestorePoint, error) {
	var out []RestorePoint
	err := c.View(func(tx *Tx) error {
		var err error
		out, err = tx.RestorePoints(job, vm)
		return err
	})
	return out, err
}

// DeleteRestorePoint removes point id of vm in job. Deleting a missing
// point returns an error matching ErrNotFound, so a retry after success
// can tell it is done; an empty job, VM or id is ErrInvalidArgument. Safe
// for concurrent use.
func (c *Catalog) DeleteRestorePoint(job, vm, id string) error {
	return c.Update(func(tx *Tx) error { return tx.DeleteRestorePoint(job, vm, id) })
}

// ReplaceRestorePoints makes points the complete list of vm's restore
// points in job, in one transaction: the engine calls it to reconcile the
// catalog with what the target really has. Points with an empty Job or VM
// get job and vm; the caller's slice is not changed. An empty list removes
// all of them. Idempotent. Safe for concurrent use. Errors:
// ErrInvalidArgument for an empty job or VM, a point of another job or VM,
// a malformed point, or an id listed twice; then nothing changes.
func (c *Catalog) ReplaceRestorePoints(job, vm string, points []RestorePoint) error {
	return c.Update(func(tx *Tx) error { return tx.ReplaceRestorePoints(job, vm, points) })
}

// CommitPoint records a replica and a new restore point of it in one
// transaction: either both are recorded or neither is. It is how the
// engine commits a VM's run.
func (c *Catalog) CommitPoint(r *Replica, p *RestorePoint) error {
	return c.Update(func(tx *Tx) error {
		if err := tx.PutReplica(r); err != nil {
			return err
		}
		return tx.AddRestorePoint(p)
	})
}
