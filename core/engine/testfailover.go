package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Tests returns the job's target as a test failover, reached as Target
// reaches it; a target whose plugin does not declare the TestFailover
// capability is errdefs.ErrUnimplemented, named.
func (e *Engine) Tests(ctx context.Context, job *config.Job) (sdk.TestFailoverer, error) {
	if e.Proxies != nil {
		e.Proxies.Greet(ctx, proxyNames(job))
	}
	tgt, caps, _, err := e.target(ctx, job, nil)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", job.Target.Address(), err)
	}
	tf, ok := tgt.(sdk.TestFailoverer)
	if !caps.TestFailover || !ok {
		return nil, fmt.Errorf("target %s cannot run test failovers: its plugin does not declare the TestFailover capability: %w", job.Target.Address(), errdefs.ErrUnimplemented)
	}
	return tf, nil
}

// StartTest starts test VM id of vm of job on the job's target: a clone
// of a restore point (point: an id or an unambiguous start of one; ""
// for the newest) in an isolated network, with the job's re-IP rules, as
// the failover it rehearses would have them. testMap (a plan's
// test_network_map) maps networks to test networks; NICs it does not map
// go on the target's isolated network. The replica, its points and the
// catalog are left as they are: a test claims nothing, and sessions of
// the job run meanwhile.
func (e *Engine) StartTest(ctx context.Context, job *config.Job, vm, id, point string, testMap []config.NetworkMapping, labels map[string]string) (*sdk.TestVM, error) {
	rec, err := e.Catalog.Replica(job.Name, vm)
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("job %q vm %q has no replica yet; run the job first: %w", job.Name, vm, errdefs.ErrNotFound)
		}
		return nil, err
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
	tf, err := e.Tests(ctx, job)
	if err != nil {
		return nil, err
	}
	net := NetworkConfig(job)
	net.NetworkMap = TestNetworkMap(job, testMap)
	v, err := tf.StartTest(ctx, sdk.TestRequest{ID: id, Replica: rec.ReplicaID, Point: point, Network: net, Labels: labels})
	if err != nil {
		return nil, fmt.Errorf("job %q vm %q: start test: %w", job.Name, vm, err)
	}
	return v, nil
}

// TestNetworkMap is the network map of a test: each mapping of the
// plan's test_network_map, and the same again from the DR network a job
// maps its From to, since a replica's NICs are on the DR networks already.
func TestNetworkMap(job *config.Job, testMap []config.NetworkMapping) []sdk.NetworkMapping {
	var out []sdk.NetworkMapping
	for _, m := range testMap {
		out = append(out, sdk.NetworkMapping{From: m.From, To: m.To})
	}
	for _, m := range testMap {
		for _, jm := range job.NetworkMap {
			if jm.From == m.From && !slices.ContainsFunc(out, func(x sdk.NetworkMapping) bool { return x.From == jm.To }) {
				out = append(out, sdk.NetworkMapping{From: jm.To, To: m.To})
			}
		}
	}
	return out
}

// ListTests lists the test VMs of the job's target, of every job.
func (e *Engine) ListTests(ctx context.Context, job *config.Job) ([]sdk.TestVM, error) {
	tf, err := e.Tests(ctx, job)
	if err != nil {
		return nil, err
	}
	return tf.ListTests(ctx)
}

// StopTest removes a test VM of the job's target.
func (e *Engine) StopTest(ctx context.Context, job *config.Job, id string) error {
	tf, err := e.Tests(ctx, job)
	if err != nil {
		return err
	}
	return tf.StopTest(ctx, id)
}
