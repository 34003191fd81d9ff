package engine

import (
	"context"
	"errors"

	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/retention"
	"github.com/ferry-dr/ferry/sdk"
)

// pointCommitter makes a restore point and applies retention on a target
// whose calls a proxy relays in one exchange with that proxy, instead of
// a round trip of the link between the sites for the point and another
// for the retention (core/proxy.Pool).
type pointCommitter interface {
	// CommitPoint makes the point and, once it exists, deletes the points
	// of drop in order and lists the replica's points. A proxy that does
	// not know the call answers proxy.ErrNoCommitPoint, having done
	// nothing.
	CommitPoint(ctx context.Context, tgt any, replica string, labels map[string]string, drop []string) (*proxy.Commit, error)
}

var _ pointCommitter = (*proxy.Pool)(nil)

// createPoint makes the VM's restore point. Behind a proxy that can, the
// points retention dropped are deleted and the replica's points listed
// in the same exchange, and done says how (applyRetention then makes no
// call); otherwise done is nil.
func (r *run) createPoint(ctx context.Context, replica string, labels map[string]string, drop []retention.Decision) (point *sdk.RestorePoint, done *proxy.Commit, err error) {
	if pc, ok := r.e.Proxies.(pointCommitter); ok && !r.oneByOne {
		ids := make([]string, 0, len(drop))
		for _, d := range drop {
			ids = append(ids, d.Point.ID)
		}
		done, err := pc.CommitPoint(ctx, r.tgt, replica, labels, ids)
		if err == nil {
			return done.Point, done, nil
		}
		if !errors.Is(err, proxy.ErrNoCommitPoint) {
			return nil, nil, err
		}
		r.e.log().Debug("the target's calls go one by one", "job", r.job.Name, "why", err.Error())
		r.oneByOne = true
	}
	point, err = r.tgt.CreateRestorePoint(ctx, replica, labels)
	return point, nil, err
}
