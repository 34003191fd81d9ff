package catalog

import (
	"fmt"
	"time"
)

// GoneReplica is a replica the catalog recorded and the target no longer
// has as it was: deleted, or replaced by another VM of its name. Its
// record and restore points are kept apart from the job's live ones, so
// that a new replica never inherits them and an operator can still see
// what was lost.
type GoneReplica struct {
	Replica Replica        `json:"replica"`
	Points  []RestorePoint `json:"points,omitempty"`
	Gone    time.Time      `json:"gone"`
	Why     string         `json:"why"`
}

// RetireReplica moves the replica of vm in job, with its restore points,
// to the gone replicas, saying why. See Catalog.RetireReplica.
func (t *Tx) RetireReplica(job, vm, why string) (*GoneReplica, error) {
	fail := func(err error) (*GoneReplica, error) {
		return nil, fmt.Errorf("retire replica %q of job %q: %w", vm, job, err)
	}
	rec, err := t.Replica(job, vm)
	if err != nil {
		return nil, err
	}
	points, err := t.RestorePoints(job, vm)
	if err != nil {
		return fail(err)
	}
	g := &GoneReplica{Replica: *rec, Points: points, Gone: t.c.now(), Why: why}
	if err := putJSON(t.bucket(bucketGone), key(job, vm, rec.ReplicaID), g); err != nil {
		return fail(err)
	}
	if err := t.DeleteReplica(job, vm); err != nil {
		return fail(err)
	}
	return g, nil
}

// GoneReplicas lists the gone replicas of job (every job for ""), by VM
// and replica id.
func (t *Tx) GoneReplicas(job string) ([]GoneReplica, error) {
	var p []byte
	if job != "" {
		if err := checkName("job", job); err != nil {
			return nil, fmt.Errorf("list gone replicas: %w", err)
		}
		p = prefix(job)
	}
	b := t.bucket(bucketGone)
	var out []GoneReplica
	for _, k := range keysWithPrefix(b, p) {
		var g GoneReplica
		if _, err := getJSON(b, k, &g); err != nil {
			return nil, fmt.Errorf("list gone replicas: %w", err)
		}
		out = append(out, g)
	}
	return out, nil
}

// RetireReplica moves the replica of vm in job and its restore points out
// of the job's live records into the gone replicas, with why and the time,
// in one transaction; it returns what it moved. The engine calls it when
// the target no longer has the replica the catalog names. Errors:
// ErrNotFound when no replica is recorded; ErrInvalidArgument for an empty
// job or VM. Safe for concurrent use.
func (c *Catalog) RetireReplica(job, vm, why string) (*GoneReplica, error) {
	var g *GoneReplica
	err := c.Update(func(tx *Tx) error {
		var err error
		g, err = tx.RetireReplica(job, vm, why)
		return err
	})
	return g, err
}

// GoneReplicas lists the replicas of job (every job for "") that the
// target no longer had, with the restore points the catalog knew of them.
// Safe for concurrent use.
func (c *Catalog) GoneReplicas(job string) ([]GoneReplica, error) {
	var out []GoneReplica
	err := c.View(func(tx *Tx) error {
		var err error
		out, err = tx.GoneReplicas(job)
		return err
	})
	return out, err
}
