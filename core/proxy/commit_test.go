package proxy

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// callCounter lists the calls a proxy received, relayed ones included.
type callCounter struct {
	mu    sync.Mutex
	calls []string
}

func (c *callCounter) add(method string) {
	c.mu.Lock()
	c.calls = append(c.calls, method)
	c.mu.Unlock()
}

// take returns the calls received since the last take.
func (c *callCounter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls := c.calls
	c.calls = nil
	return calls
}

func (c *callCounter) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			c.add(info.FullMethod)
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			c.add(info.FullMethod)
			return handler(srv, ss)
		}),
	}
}

// commitLab is a relay lab whose proxy serves desc, with a replica of two
// restore points on its target and the target attached by a pool.
type commitLab struct {
	*relayLab
	calls   *callCounter
	pool    *Pool
	tgt     sdk.Target // through the proxy
	replica string
	points  []sdk.RestorePoint // the replica's, oldest first
}

func newCommitLab(t *testing.T, desc *grpc.ServiceDesc) *commitLab {
	t.Helper()
	calls := &callCounter{}
	l := &commitLab{relayLab: newRelayLabServing(t, desc, calls.options()...), calls: calls}
	ctx := context.Background()
	mem := l.plugins.tgt
	// Points are made at a time with nanoseconds, in a zone not UTC.
	mem.Clock = func() time.Time { return time.Date(2026, 12, 7, 4, 5, 6, 123456789, time.FixedZone("CET", 3600)) }
	rep, err := mem.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01-replica", VM: sdk.VM{Name: "web-01", Disks: []sdk.Disk{{Capacity: 1 << 20}}}})
	if err != nil {
		t.Fatal(err)
	}
	l.replica = rep.ID
	for range 2 {
		p, err := mem.CreateRestorePoint(ctx, rep.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		l.points = append(l.points, *p)
	}
	l.pool = NewPool([]Member{{Name: "p1", Address: l.addr}}, l.control, "test", nil)
	t.Cleanup(func() { l.pool.Close() })
	if bad := l.pool.Greet(ctx, nil); len(bad) > 0 {
		t.Fatal(bad)
	}
	c, _, _, err := l.pool.Control(ctx, nil, "", sdk.KindTarget, memBlock, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.tgt = c.(sdk.Target)
	// A session's first calls to the target attach it, long before its
	// first point.
	if _, err := l.tgt.GetReplica(ctx, rep.ID); err != nil {
		t.Fatal(err)
	}
	calls.take()
	return l
}

// held lists the ids of the replica's points as the plugin holds them.
func (l *commitLab) held(t *testing.T) []string {
	t.Helper()
	ps, err := l.plugins.tgt.ListRestorePoints(context.Background(), l.replica)
	if err != nil {
		t.Fatal(err)
	}
	return pointIDs(ps)
}

func pointIDs(ps []sdk.RestorePoint) []string {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	return ids
}

func TestCommitPointMakesThePointThenDeletesAndLists(t *testing.T) {
	l := newCommitLab(t, &proxyv1.Proxy_ServiceDesc)
	ctx := context.Background()
	oldest, older := l.points[0], l.points[1]
	labels := map[string]string{"ferry.session": "s-1"}
	c, err := l.pool.CommitPoint(ctx, l.tgt, l.replica, labels, []string{oldest.ID, "point-deleted-meanwhile"})
	if err != nil {
		t.Fatal(err)
	}
	// The point and the retention after it are one exchange with the
	// proxy: relayed one by one they were three calls (two round trips).
	if calls := l.calls.take(); !slices.Equal(calls, []string{proxyv1.Proxy_CommitPoint_FullMethodName}) {
		t.Errorf("the proxy received %q, want the one CommitPoint", calls)
	}
	if !reflect.DeepEqual(c.Point.Labels, labels) || c.Point.Replica != l.replica {
		t.Errorf("the new point %+v, want replica %s labelled %v", c.Point, l.replica, labels)
	}
	if c.Deleted[0] != nil {
		t.Errorf("deleting the oldest point: %v", c.Deleted[0])
	}
	if err := c.Deleted[1]; err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("deleting a point not there: %v, want nil or not found", err)
	}
	if c.ListErr != nil {
		t.Fatal(c.ListErr)
	}
	want := []string{older.ID, c.Point.ID}
	if got := pointIDs(c.Points); !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	if held := l.held(t); !slices.Equal(held, want) {
		t.Errorf("the target holds %v, want %v", held, want)
	}
	// The points say what a relayed list says, times to the nanosecond,
	// in UTC.
	relayed, err := l.tgt.ListRestorePoints(ctx, l.replica)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Points, relayed) {
		t.Errorf("CommitPoint listed\n%+v\nthe relayed list says\n%+v", c.Points, relayed)
	}
	direct, err := l.plugins.tgt.ListRestorePoints(ctx, l.replica)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []time.Time{c.Point.Created, c.Points[1].Created} {
		if got.Location() != time.UTC || !got.Equal(direct[1].Created) || got.Nanosecond() != 123456789 {
			t.Errorf("the new point's time came as %v, the plugin says %v", got, direct[1].Created)
		}
	}
}

func TestCommitPointDeletesNothingWhenNoPointIsMade(t *testing.T) {
	l := newCommitLab(t, &proxyv1.Proxy_ServiceDesc)
	ctx := context.Background()
	before := l.held(t)

	// A replica not there: the error keeps its class.
	_, err := l.pool.CommitPoint(ctx, l.tgt, "no-such-replica", nil, []string{l.points[0].ID})
	if !errors.Is(err, errdefs.ErrNotFound) || errors.Is(err, ErrNoCommitPoint) || isNotAttached(err) {
		t.Errorf("a point of a replica not there: %v, want the plugin's not found", err)
	}

	// A replica running from a point refuses another: the point it was
	// asked to drop stays.
	if _, err := l.plugins.tgt.Failover(ctx, sdk.FailoverRequest{Replica: l.replica, Point: l.points[1].ID}); err != nil {
		t.Fatal(err)
	}
	_, err = l.pool.CommitPoint(ctx, l.tgt, l.replica, nil, []string{l.points[0].ID})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("a point of a failed-over replica: %v, want failed precondition", err)
	}
	if held := l.held(t); !slices.Equal(held, before) {
		t.Errorf("the target holds %v after the point failed, want %v", held, before)
	}
}

func TestCommitPointAttachesTheTargetAgain(t *testing.T) {
	l := newCommitLab(t, &proxyv1.Proxy_ServiceDesc)
	l.agent.mu.Lock()
	attaches := l.agent.attaches
	l.agent.mu.Unlock()
	// The proxy dropped the instance (a task on it failed).
	l.agent.forget(sdk.KindTarget, mustComponent(t))
	c, err := l.pool.CommitPoint(context.Background(), l.tgt, l.replica, nil, []string{l.points[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{l.points[1].ID, c.Point.ID}; !slices.Equal(pointIDs(c.Points), want) {
		t.Errorf("listed %v, want %v", pointIDs(c.Points), want)
	}
	l.agent.mu.Lock()
	defer l.agent.mu.Unlock()
	if l.agent.attaches != attaches+1 {
		t.Errorf("%d Attach calls, want %d", l.agent.attaches, attaches+1)
	}
}

// A proxy older than CommitPoint knows the Proxy service but not the
// method: gRPC hands the call to its relay, which refuses to pass a call
// of the proxy's own protocol to a plugin.
func TestCommitPointOnAnOlderProxyDoesNothing(t *testing.T) {
	older := proxyv1.Proxy_ServiceDesc
	older.Methods = slices.DeleteFunc(slices.Clone(older.Methods), func(m grpc.MethodDesc) bool { return m.MethodName == "CommitPoint" })
	l := newCommitLab(t, &older)
	before := l.held(t)
	_, err := l.pool.CommitPoint(context.Background(), l.tgt, l.replica, nil, []string{l.points[0].ID})
	if !errors.Is(err, ErrNoCommitPoint) {
		t.Fatalf("CommitPoint on an older proxy: %v, want ErrNoCommitPoint", err)
	}
	if held := l.held(t); !slices.Equal(held, before) {
		t.Errorf("the target holds %v, want %v as before", held, before)
	}
	if !unknownToProxy(status.Error(codes.Unimplemented, "unknown method CommitPoint for service ferry.proxy.v1.Proxy")) {
		t.Error("Unimplemented is not taken for a proxy that does not know the call")
	}
}

func TestCommitPointRefusesWhatIsNotTheControlPlanesToAsk(t *testing.T) {
	l := newCommitLab(t, &proxyv1.Proxy_ServiceDesc)
	ctx := context.Background()
	control := l.conn(t, l.control)
	src, err := proxyv1.NewProxyClient(control).Attach(ctx, &proxyv1.AttachRequest{Kind: "source", Component: mustComponent(t)})
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := proxyv1.NewProxyClient(control).Attach(ctx, &proxyv1.AttachRequest{Kind: "target", Component: mustComponent(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		conn *grpc.ClientConn
		key  string
		code codes.Code
	}{
		{"another proxy", l.conn(t, l.proxy), tgt.GetKey(), codes.PermissionDenied},
		{"a source", control, src.GetKey(), codes.PermissionDenied},
		{"an instance not attached", control, "6e6f7468696e67", codes.NotFound},
	} {
		cctx := metadata.AppendToOutgoingContext(ctx, attachmentKey, c.key)
		_, err := proxyv1.NewProxyClient(c.conn).CommitPoint(cctx, &proxyv1.CommitPointRequest{Replica: l.replica, Drop: []string{l.points[0].ID}})
		if status.Code(err) != c.code || c.code == codes.NotFound && !isNotAttached(err) {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
		}
	}
	if held := l.held(t); !slices.Equal(held, pointIDs(l.points)) {
		t.Errorf("the target holds %v, want %v", held, pointIDs(l.points))
	}
}
