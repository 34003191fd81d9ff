package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/core/pki"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The end of a VM's run on the target is a restore point, then the
// deletes of the points retention dropped and a list of what is left.
// Relayed one by one, the point is a round trip of the link between the
// sites and the retention another; CommitPoint makes them one exchange
// with the proxy that relays the target, which makes the plugin calls
// next to the plugin. The point is made first, and nothing is deleted
// unless it exists: a crash at any moment leaves the replica with its
// newest point.

// Commit is what CommitPoint did on the target.
type Commit struct {
	Point *sdk.RestorePoint
	// Deleted answers drop, one error for each point in its order: nil
	// when the point was deleted, of class errdefs.ErrNotFound (or nil)
	// when it was not there, else why it could not be deleted.
	Deleted []error
	// Points are the replica's restore points after the deletes, oldest
	// first; ListErr says why they could not be listed.
	Points  []sdk.RestorePoint
	ListErr error
}

// ErrNoCommitPoint is CommitPoint's error when the proxy relaying the
// target does not know the call (it is older than the control plane):
// nothing was done, and the calls are to be made one by one.
var ErrNoCommitPoint = errors.New("the proxy does not know CommitPoint")

// CommitPoint makes a restore point of replica, with labels, on target
// tgt (a component Control returned) and, once it exists, deletes the
// points of drop in order and lists the replica's points, in one exchange
// with the proxy relaying tgt. The error is creating the point's (with
// its class: errdefs.ErrNotFound for a replica not there), or the
// exchange's; a proxy that does not know the call answers
// ErrNoCommitPoint. A call cut short is not made again on another proxy:
// the point may exist.
func (p *Pool) CommitPoint(ctx context.Context, tgt any, replica string, labels map[string]string, drop []string) (*Commit, error) {
	conn, ok := sdk.InstanceConn(tgt)
	if !ok {
		return nil, fmt.Errorf("the target's calls are not relayed by a proxy: %w", ErrNoCommitPoint)
	}
	// conn adds the key of the attached instance (relayConn.Invoke), and
	// attaches it again when the proxy lost it.
	resp := new(proxyv1.CommitPointResponse)
	req := &proxyv1.CommitPointRequest{Replica: replica, Labels: labels, Drop: drop}
	if err := conn.Invoke(ctx, proxyv1.Proxy_CommitPoint_FullMethodName, req, resp); err != nil {
		if unknownToProxy(err) {
			return nil, fmt.Errorf("%s: %w", status.Convert(err).Message(), ErrNoCommitPoint)
		}
		return nil, callError(err)
	}
	if f := resp.GetCreateError(); f != nil {
		return nil, failureError(f)
	}
	if resp.GetPoint() == nil {
		return nil, fmt.Errorf("the proxy answered CommitPoint for replica %q without the point", replica)
	}
	point := pointFromWire(resp.GetPoint())
	c := &Commit{Point: &point, Deleted: make([]error, len(drop)), ListErr: failureError(resp.GetListError())}
	deletes := resp.GetDeletes()
	for i, id := range drop {
		if i >= len(deletes) || deletes[i].GetPoint() != id {
			c.Deleted[i] = fmt.Errorf("the proxy did not say whether restore point %s was deleted", id)
			continue
		}
		c.Deleted[i] = failureError(deletes[i].GetError())
	}
	if c.ListErr == nil {
		for _, pt := range resp.GetPoints() {
			c.Points = append(c.Points, pointFromWire(pt))
		}
	}
	return c, nil
}

// unknownToProxy reports whether err is how a proxy that does not know
// CommitPoint refuses it: gRPC's Unimplemented, or, from a proxy that
// relays the control plane's plugin calls, its relay's refusal to pass a
// call of the proxy protocol on to a plugin. Either did nothing.
func unknownToProxy(err error) bool {
	st, ok := status.FromError(err)
	switch {
	case !ok:
		return false
	case st.Code() == codes.Unimplemented:
		return true
	}
	return st.Code() == codes.PermissionDenied && strings.Contains(st.Message(), " does not relay "+proxyv1.Proxy_CommitPoint_FullMethodName+" ")
}

// callError is the error of a call to a proxy, with the class its status
// code names, so that errors.Is tells a proxy gone from a refusal.
func callError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err // the relay's own, classed already
	}
	var class error
	switch st.Code() {
	case codes.Unavailable:
		class = errdefs.ErrUnavailable
	case codes.NotFound:
		class = errdefs.ErrNotFound
	case codes.PermissionDenied, codes.Unauthenticated:
		class = errdefs.ErrPermissionDenied
	case codes.InvalidArgument:
		class = errdefs.ErrInvalidArgument
	case codes.FailedPrecondition:
		class = errdefs.ErrFailedPrecondition
	case codes.Canceled:
		class = context.Canceled
	case codes.DeadlineExceeded:
		class = context.DeadlineExceeded
	}
	return errdefs.WithClass(st.Message(), class)
}

// CommitPoint is the agent's side of Pool.CommitPoint.
func (s *service) CommitPoint(ctx context.Context, req *proxyv1.CommitPointRequest) (*proxyv1.CommitPointResponse, error) {
	who, err := caller(ctx, pki.RoleControl)
	if err != nil {
		return nil, err
	}
	tgt, err := s.a.attachedTarget(ctx)
	if err != nil {
		return nil, err
	}
	a := s.a
	point, err := tgt.CreateRestorePoint(ctx, req.GetReplica(), req.GetLabels())
	if err != nil {
		return &proxyv1.CommitPointResponse{CreateError: failure(err)}, nil
	}
	a.log().Info("restore point made", "replica", req.GetReplica(), "point", point.ID, "control_plane", who.Name)
	resp := &proxyv1.CommitPointResponse{Point: pointToWire(point)}
	for _, id := range req.GetDrop() {
		err := tgt.DeleteRestorePoint(ctx, req.GetReplica(), id)
		if err == nil {
			a.log().Info("restore point deleted", "replica", req.GetReplica(), "point", id, "control_plane", who.Name)
		}
		resp.Deletes = append(resp.Deletes, &proxyv1.DeleteOutcome{Point: id, Error: failure(err)})
	}
	// Listed after the deletes, the points are what the replica holds once
	// retention is done, which the control plane's catalog follows. Beside
	// them the list would save only the time of a call to the plugin on
	// this host, and show points on their way out.
	points, err := tgt.ListRestorePoints(ctx, req.GetReplica())
	if err != nil {
		resp.ListError = failure(err)
		return resp, nil
	}
	for i := range points {
		resp.Points = append(resp.Points, pointToWire(&points[i]))
	}
	return resp, nil
}

// attachedTarget returns the target instance a call names by its
// "ferry-attachment" metadata, as relay finds the instance of a relayed
// call (attached).
func (a *Agent) attachedTarget(ctx context.Context) (sdk.Target, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	keys := md.Get(attachmentKey)
	if len(keys) != 1 {
		return nil, status.Errorf(codes.InvalidArgument, "no %s metadata naming the target instance", attachmentKey)
	}
	c, err := a.attached(ctx, md, keys[0])
	if err != nil {
		return nil, err
	}
	tgt, ok := c.(sdk.Target)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "the instance attached on proxy %s is a %s, not a target", a.Name, kindOf(c))
	}
	return tgt, nil
}

// failure is a plugin's error on the wire, with its class; nil for none.
func failure(err error) *proxyv1.Failure {
	if err == nil {
		return nil
	}
	return &proxyv1.Failure{Message: err.Error(), Class: errdefs.Class(err)}
}

// failureError rebuilds the error failure encoded: errors.Is matches its
// class (none when this side does not know the class's name).
func failureError(f *proxyv1.Failure) error {
	if f == nil {
		return nil
	}
	return errdefs.WithClass(f.GetMessage(), errdefs.FromClass(f.GetClass()))
}

func pointToWire(p *sdk.RestorePoint) *proxyv1.RestorePoint {
	w := &proxyv1.RestorePoint{Id: p.ID, Replica: p.Replica, Size: p.Size, Labels: p.Labels}
	if !p.Created.IsZero() {
		w.CreatedUnixNano = p.Created.UnixNano()
	}
	for _, d := range p.Disks {
		w.Disks = append(w.Disks, &proxyv1.PointDisk{Index: int32(d.Index), Capacity: d.Capacity, ChangeId: d.ChangeID})
	}
	return w
}

func pointFromWire(w *proxyv1.RestorePoint) sdk.RestorePoint {
	p := sdk.RestorePoint{ID: w.GetId(), Replica: w.GetReplica(), Size: w.GetSize(), Labels: w.GetLabels()}
	if n := w.GetCreatedUnixNano(); n != 0 {
		p.Created = time.Unix(0, n).UTC()
	}
	for _, d := range w.GetDisks() {
		p.Disks = append(p.Disks, sdk.SnapshotDisk{Index: int(d.GetIndex()), Capacity: d.GetCapacity(), ChangeID: d.GetChangeId()})
	}
	return p
}
