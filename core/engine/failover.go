package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// FailoverAction is what Failover does.
type FailoverAction string

const (
	FailoverStart  FailoverAction = "start"  // start the replica from a restore point
	FailoverUndo   FailoverAction = "undo"   // return it to replication
	FailoverCommit FailoverAction = "commit" // make the failover permanent
)

// PointError is a restore point argument that names no point, or more
// than one.
type PointError struct{ msg string }

func (e *PointError) Error() string        { return e.msg }
func (e *PointError) Is(target error) bool { return target == errdefs.ErrInvalidArgument }

// Failover starts, undoes or commits the failover of vm of job on the
// job's target (reached as the job's sessions reach it: see Target), and
// records the replica's new state in the catalog. point, for a start, is
// a restore point's id or an unambiguous start of one; "" is the newest.
// When the target's call fails, the catalog follows what the target says
// of the replica then (an interrupted change it finished on the way).
func (e *Engine) Failover(ctx context.Context, job *config.Job, vm string, action FailoverAction, point string) (*sdk.Replica, error) {
	switch action {
	case FailoverStart:
	case FailoverUndo, FailoverCommit:
		if point != "" {
			return nil, &PointError{"a restore point applies only when starting a failover"}
		}
	default:
		return nil, fmt.Errorf("no failover action %q: %w", action, errdefs.ErrInvalidArgument)
	}
	rec, err := e.Catalog.Replica(job.Name, vm)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("job %q vm %q has no replica yet; run the job first: %w", job.Name, vm, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if fc, ok := e.Catalog.(FailbackCatalog); ok && action != FailoverStart {
		// Undoing or committing the failover under a failback would leave
		// production half written, with its undo data, and the failback
		// without its replica.
		if fb, err := fc.Failback(job.Name, vm); err == nil {
			return nil, fmt.Errorf("job %q vm %q: failover %s: failback %s of the vm is %s (production vm %s): end it first with 'ferry failback commit %s %s' or 'ferry failback undo %s %s': %w",
				job.Name, vm, action, fb.ID, fb.State, fb.Production, job.Name, vm, job.Name, vm, errdefs.ErrFailedPrecondition)
		} else if !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
	}
	if point != "" {
		points, err := e.Catalog.RestorePoints(job.Name, vm)
		if err != nil {
			return nil, err
		}
		if point, err = MatchPoint(points, point); err != nil {
			return nil, &PointError{fmt.Sprintf("job %q vm %q: %v", job.Name, vm, err)}
		}
	}
	tgt, _, err := e.Target(ctx, job)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", job.Target.Address(), err)
	}
	var r *sdk.Replica
	switch action {
	case FailoverStart:
		r, err = tgt.Failover(ctx, sdk.FailoverRequest{Replica: rec.ReplicaID, Point: point, Network: NetworkConfig(job)})
	case FailoverUndo:
		r, err = tgt.UndoFailover(ctx, rec.ReplicaID)
	case FailoverCommit:
		r, err = tgt.CommitFailover(ctx, rec.ReplicaID)
	}
	if err != nil {
		err = fmt.Errorf("job %q vm %q: failover %s: %w", job.Name, vm, action, err)
		if cur, gerr := tgt.GetReplica(ctx, rec.ReplicaID); gerr == nil && (cur.State != rec.State || cur.FailoverPoint != rec.FailoverPoint) {
			was := rec.State
			rec.State, rec.FailoverPoint, rec.Updated = cur.State, cur.FailoverPoint, e.now().UTC()
			if perr := e.Catalog.PutReplica(rec); perr == nil {
				err = fmt.Errorf("%w; the target has the replica %s (the catalog said %s), and the catalog now says so too", err, cur.State, was)
			}
		}
		return nil, err
	}
	rec.State, rec.FailoverPoint, rec.Updated = r.State, r.FailoverPoint, e.now().UTC()
	if err := e.Catalog.PutReplica(rec); err != nil {
		return r, fmt.Errorf("record the replica's state: %w", err)
	}
	return r, nil
}

// MatchPoint finds the restore point an argument names: its id, or the
// start of exactly one id. The error lists the ids there are, or those the
// start fits.
func MatchPoint(points []catalog.RestorePoint, arg string) (string, error) {
	var fits []string
	for _, p := range points {
		if p.ID == arg {
			return p.ID, nil
		}
		if strings.HasPrefix(p.ID, arg) {
			fits = append(fits, p.ID)
		}
	}
	switch {
	case len(fits) == 1:
		return fits[0], nil
	case len(fits) > 1:
		return "", fmt.Errorf("restore point %q is ambiguous: it starts %s", arg, strings.Join(fits, ", "))
	case len(points) == 0:
		return "", fmt.Errorf("no restore point %q: there are no restore points", arg)
	}
	ids := make([]string, len(points))
	for i, p := range points {
		ids[i] = fmt.Sprintf("%s (%s)", p.ID, p.Created.Local().Format(time.DateTime))
	}
	return "", fmt.Errorf("no restore point %q; the points are, oldest first: %s", arg, strings.Join(ids, ", "))
}
