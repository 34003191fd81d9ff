package proxy

import (
	"context"
	"encoding/hex"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/pluginhost"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
	"github.com/ferry-dr/ferry/sdk/schema"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// servedPlugins serve in-memory components through a plugin server in the
// test process, over gRPC as a plugin process does. infos counts the
// plugin's GetInfo calls.
type servedPlugins struct {
	c     *sdk.Client
	p     *sdk.Plugin
	tgt   *sdktest.MemTarget
	infos *atomic.Int64
	calls *callCounts
}

// callCounts count a plugin's calls by method.
type callCounts struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *callCounts) add(method string) {
	c.mu.Lock()
	c.n[method]++
	c.mu.Unlock()
}

// count is how many calls of method the plugin was made.
func (s servedPlugins) count(method string) int64 {
	s.calls.mu.Lock()
	defer s.calls.mu.Unlock()
	return s.calls.n[method]
}

// The capabilities the in-memory plugin declares.
var (
	memSourceCaps = sdk.Capabilities{ChangeTracking: true, Tags: true}
	memTargetCaps = sdk.Capabilities{ReIP: true, TestFailover: true}
)

func newServedPlugins(t *testing.T) servedPlugins {
	src, tgt := sdktest.NewMemSource(sdk.VM{Name: "web-01", Disks: []sdk.Disk{{Capacity: 1 << 20}}}), sdktest.NewMemTarget()
	p := &sdk.Plugin{Name: "mem", Version: "test",
		Sources: map[string]sdk.Component[sdk.Source]{"mem": {Schema: &schema.Block{}, Capabilities: memSourceCaps,
			New: func(context.Context, cty.Value) (sdk.Source, error) { return src, nil }}},
		Targets: map[string]sdk.Component[sdk.Target]{"mem": {Schema: &schema.Block{}, Capabilities: memTargetCaps,
			New: func(context.Context, cty.Value) (sdk.Target, error) { return tgt, nil }}},
	}
	infos, calls := new(atomic.Int64), &callCounts{n: map[string]int64{}}
	count := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method == "/ferry.plugin.v1.Plugin/GetInfo" {
			infos.Add(1)
		}
		calls.add(method)
		return streamer(ctx, desc, cc, method, opts...)
	}
	conn, err := grpc.NewClient(sdktest.Serve(t, p), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(sdk.MessageCodec())), grpc.WithStreamInterceptor(count),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method == "/ferry.plugin.v1.Plugin/GetInfo" {
				infos.Add(1)
			}
			calls.add(method)
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return servedPlugins{c: sdk.NewClient(conn, sdk.ClientOptions{Name: p.Name}), p: p, tgt: tgt, infos: infos, calls: calls}
}

func (s servedPlugins) Found() []pluginhost.Found { return []pluginhost.Found{{Name: "mem"}} }
func (s servedPlugins) Info(ctx context.Context, _ string) (*sdk.Info, error) {
	return s.c.Info(ctx)
}

// Source and Target give the capabilities the plugin declares, as a
// plugin host does (from what it learnt when it started the plugin).
func (s servedPlugins) Source(ctx context.Context, typ string, cfg cty.Value) (sdk.Source, sdk.Capabilities, error) {
	src, _, err := s.c.Source(ctx, typ, &schema.Block{}, cfg)
	return src, s.p.Sources[typ].Capabilities, err
}
func (s servedPlugins) Target(ctx context.Context, typ string, cfg cty.Value) (sdk.Target, sdk.Capabilities, error) {
	tgt, _, err := s.c.Target(ctx, typ, &schema.Block{}, cfg)
	return tgt, s.p.Targets[typ].Capabilities, err
}
func (s servedPlugins) Repository(ctx context.Context, typ string, cfg cty.Value) (sdk.Repository, error) {
	repo, _, err := s.c.Repository(ctx, typ, &schema.Block{}, cfg)
	return repo, err
}

// relayLab is a proxy p1 serving the in-memory plugin, the control
// plane's credentials and another proxy's.
type relayLab struct {
	agent          *Agent
	plugins        servedPlugins
	addr           string
	control, proxy *pki.Credentials
	creds          map[string]*pki.Credentials // of proxies p0, p1 and p2
}

// proxyCreds makes a CA in a new folder and issues a proxy certificate
// for each name; ca is the CA's folder.
func proxyCreds(t *testing.T, names ...string) (ca string, creds map[string]*pki.Credentials) {
	t.Helper()
	dir := t.TempDir()
	ca = filepath.Join(dir, "ca")
	if err := pki.InitCA(ca, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	creds = map[string]*pki.Credentials{}
	for _, name := range names {
		out := filepath.Join(dir, name)
		if err := pki.Issue(ca, pki.Identity{Role: pki.RoleProxy, Name: name}, nil, 0, out); err != nil {
			t.Fatal(err)
		}
		c, err := pki.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		creds[name] = c
	}
	return ca, creds
}

func newRelayLab(t *testing.T) *relayLab {
	t.Helper()
	return newRelayLabServing(t, &proxyv1.Proxy_ServiceDesc)
}

// newRelayLabServing is newRelayLab whose proxy serves the methods of
// desc, with more server options.
func newRelayLabServing(t *testing.T, desc *grpc.ServiceDesc, more ...grpc.ServerOption) *relayLab {
	t.Helper()
	ca, creds := proxyCreds(t, "p0", "p1", "p2")
	l := &relayLab{proxy: creds["p2"], plugins: newServedPlugins(t), creds: creds}
	l.agent = &Agent{Name: "p1", MaxTasks: 2, Plugins: l.plugins, Creds: creds["p1"]}
	var err error
	if l.control, err = pki.Load(filepath.Join(ca, "control")); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := l.agent.server(desc, more...)
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Stop(); l.agent.Close() })
	l.addr = lis.Addr().String()
	return l
}

// conn dials p1 with creds.
func (l *relayLab) conn(t *testing.T, creds *pki.Credentials) *grpc.ClientConn {
	t.Helper()
	conn, err := dial(l.addr, creds, pki.Identity{Role: pki.RoleProxy, Name: "p1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

var memBlock = Block{Type: "mem", Config: cty.EmptyObjectVal}

func TestControlCallsAreRelayedToTheAttachedInstance(t *testing.T) {
	l := newRelayLab(t)
	ctx := context.Background()
	pool := NewPool([]Member{{Name: "p1", Address: l.addr}}, l.control, "test", nil)
	defer pool.Close()
	if bad := pool.Greet(ctx, nil); len(bad) > 0 {
		t.Fatal(bad)
	}
	infos := l.plugins.infos.Load()
	c, caps, where, err := pool.Control(ctx, nil, "", sdk.KindSource, memBlock, nil)
	if err != nil || where != "p1" {
		t.Fatalf("control on %q: %v", where, err)
	}
	// Attach says what the instance can do: the control plane need not
	// ask the plugin across the link.
	if caps != memSourceCaps {
		t.Errorf("capabilities %+v, want what the plugin declares, %+v", caps, memSourceCaps)
	}
	if _, tcaps, _, err := pool.Control(ctx, nil, "", sdk.KindTarget, memBlock, nil); err != nil || tcaps != memTargetCaps {
		t.Errorf("the target's capabilities %+v (%v), want %+v", tcaps, err, memTargetCaps)
	}
	if n := l.plugins.infos.Load() - infos; n != 0 {
		t.Errorf("attaching the source and the target asked the plugin's info %d times, want none", n)
	}
	// A later session of the control plane uses the instance the proxy
	// keeps without attaching it again.
	l.agent.mu.Lock()
	attaches := l.agent.attaches
	l.agent.mu.Unlock()
	if _, again, _, err := pool.Control(ctx, nil, "", sdk.KindSource, memBlock, nil); err != nil || again != memSourceCaps {
		t.Fatalf("the source's control again: %+v, %v", again, err)
	}
	l.agent.mu.Lock()
	if l.agent.attaches != attaches {
		t.Errorf("the second control of the source attached it again (%d Attach calls, %d before)", l.agent.attaches, attaches)
	}
	l.agent.mu.Unlock()
	src := c.(sdk.Source)
	vms, err := src.ListVMs(ctx)
	if err != nil || len(vms) != 1 || vms[0].Name != "web-01" {
		t.Fatalf("VMs through the relay: %+v, %v", vms, err)
	}
	// The proxy dropped the instance (a task on it failed): the next call
	// attaches it again and goes through.
	comp, _ := encodeComponent(memBlock.Type, memBlock.Config)
	l.agent.forget(sdk.KindSource, comp)
	if vms, err := src.ListVMs(ctx); err != nil || len(vms) != 1 {
		t.Fatalf("VMs after the instance was dropped: %+v, %v", vms, err)
	}
	// Server streams go through too.
	snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: "web-01", Name: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: "web-01", Snapshot: snap.ID}, func([]sdk.Extent) error { return nil }); err != nil {
		t.Fatalf("changed areas through the relay: %v", err)
	}
}

func TestRelayRefusesWhatIsNotTheControlPlanesToAsk(t *testing.T) {
	l := newRelayLab(t)
	ctx := context.Background()
	control := l.conn(t, l.control)
	resp, err := proxyv1.NewProxyClient(control).Attach(ctx, &proxyv1.AttachRequest{Kind: "target", Component: mustComponent(t)})
	if err != nil {
		t.Fatal(err)
	}
	call := func(conn *grpc.ClientConn, key, method string, req, reply any) error {
		cctx := context.Background()
		if key != "" {
			cctx = metadata.AppendToOutgoingContext(cctx, attachmentKey, key)
		}
		return conn.Invoke(cctx, method, req, reply)
	}
	for _, c := range []struct {
		name          string
		conn          *grpc.ClientConn
		key, method   string
		req, reply    any
		code          codes.Code
		messageEquals string
	}{
		{"a target's own call", control, resp.GetKey(), "/ferry.plugin.v1.Target/ListReplicas", &pb.Empty{}, &pb.ListReplicasResponse{}, codes.OK, ""},
		{"configure an instance", control, resp.GetKey(), "/ferry.plugin.v1.Plugin/Configure", &pb.ConfigureRequest{}, &pb.ConfigureResponse{}, codes.PermissionDenied, ""},
		{"stop the plugin", control, resp.GetKey(), "/ferry.plugin.v1.Plugin/Stop", &pb.StopRequest{}, &pb.Empty{}, codes.PermissionDenied, ""},
		{"a source's call to a target", control, resp.GetKey(), "/ferry.plugin.v1.Source/ListVMs", &pb.Empty{}, &pb.ListVMsResponse{}, codes.PermissionDenied, ""},
		{"an instance not attached", control, hex.EncodeToString([]byte("nothing")), "/ferry.plugin.v1.Target/ListReplicas", &pb.Empty{}, &pb.ListReplicasResponse{}, codes.NotFound, errNotAttached},
		{"no instance named", control, "", "/ferry.plugin.v1.Target/ListReplicas", &pb.Empty{}, &pb.ListReplicasResponse{}, codes.Unimplemented, ""},
		{"another proxy", l.conn(t, l.proxy), resp.GetKey(), "/ferry.plugin.v1.Target/ListReplicas", &pb.Empty{}, &pb.ListReplicasResponse{}, codes.PermissionDenied, ""},
	} {
		err := call(c.conn, c.key, c.method, c.req, c.reply)
		st, _ := status.FromError(err)
		if st.Code() != c.code || c.messageEquals != "" && st.Message() != c.messageEquals {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
		}
	}
	if _, err := proxyv1.NewProxyClient(l.conn(t, l.proxy)).Attach(ctx, &proxyv1.AttachRequest{Kind: "target", Component: mustComponent(t)}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("another proxy attached an instance: %v", err)
	}
	if _, err := proxyv1.NewProxyClient(control).Attach(ctx, &proxyv1.AttachRequest{Kind: "hypervisor", Component: mustComponent(t)}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("attach of no kind: %v", err)
	}
}

func mustComponent(t *testing.T) *proxyv1.Component {
	t.Helper()
	c, err := encodeComponent(memBlock.Type, memBlock.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A task's first data stream may reach the target proxy before the
// control plane's Target call: the control plane starts both halves at
// once. The stream waits for its target half, and gets the target half's
// error when the disk cannot be opened; a stream that does not ask to
// wait (a resumed one) finds no task at once.
func TestADataStreamWaitsForItsTargetHalf(t *testing.T) {
	l := newRelayLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := l.plugins.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01-replica", VM: sdk.VM{Name: "web-01", Disks: []sdk.Disk{{Capacity: 1 << 20}}}})
	if err != nil {
		t.Fatal(err)
	}
	data := proxyv1.NewProxyClient(l.conn(t, l.proxy))
	control := proxyv1.NewProxyClient(l.conn(t, l.control))
	comp := mustComponent(t)
	// waitForStream returns once a data stream waits on the agent for
	// its target half.
	waitForStream := func(task string) {
		t.Helper()
		for {
			l.agent.mu.Lock()
			n := l.agent.awaiting
			l.agent.mu.Unlock()
			if n > 0 {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("the stream of task %s never waited for its target half", task)
			}
			runtime.Gosched()
		}
	}
	openData := func(task string, await bool) proxyv1.Proxy_DataClient {
		t.Helper()
		stream, err := data.Data(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Open{Open: &proxyv1.DataOpen{Task: task, Await: await}}}); err != nil {
			t.Fatal(err)
		}
		return stream
	}

	// Not waiting: no such task.
	if _, err := openData("t0", false).Recv(); status.Code(err) != codes.NotFound {
		t.Fatalf("a stream for a task that never started, not waiting: %v, want NotFound", err)
	}

	// Waiting: the stream opens before the Target call, sends its Close
	// at once, and is answered once the target half started.
	stream := openData("t1", true)
	if err := stream.Send(&proxyv1.DataMessage{Seq: 1, Msg: &proxyv1.DataMessage_Close{Close: &proxyv1.DataClose{}}}); err != nil {
		t.Fatal(err)
	}
	waitForStream("t1")
	target, err := control.Target(ctx, &proxyv1.TargetTask{Task: "t1", Target: comp, Replica: rep.ID, Disk: 0, Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := target.Recv(); err != nil || ev.GetReady() == nil {
		t.Fatalf("the target half: %v, %v; want Ready", ev, err)
	}
	if r, err := stream.Recv(); err != nil || r.GetOpened() == nil || r.GetOpened().GetApplied() != 0 {
		t.Fatalf("the waiting stream's first answer: %v, %v; want Opened with nothing applied", r, err)
	}
	if r, err := stream.Recv(); err != nil || r.GetClosed() == nil {
		t.Fatalf("the waiting stream's Close: %v, %v; want Closed", r, err)
	}
	if ev, err := target.Recv(); err != nil || ev.GetDone() == nil {
		t.Fatalf("the target half's end: %v, %v; want Done", ev, err)
	}

	// Waiting for a target half whose disk cannot be opened: its error.
	stream = openData("t2", true)
	waitForStream("t2")
	target, err = control.Target(ctx, &proxyv1.TargetTask{Task: "t2", Target: comp, Replica: "no-such-replica", Disk: 0, Capacity: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	_, terr := target.Recv()
	_, derr := stream.Recv()
	if status.Code(terr) != codes.Unavailable || status.Code(derr) != codes.Unavailable || !strings.Contains(derr.Error(), "no-such-replica") {
		t.Fatalf("a target half that cannot open its disk: the Target call %v, the data stream %v; want both Unavailable, naming the replica", terr, derr)
	}
}

// A kept connection to a proxy that was down fails every call at once
// until gRPC's backoff (a second, growing to two minutes) runs out;
// tryNow makes it try the proxy now, as a new connection would, so that
// the task after a restart of the target proxy reaches it.
func TestTryNowReachesAProxyThatCameBack(t *testing.T) {
	l := newRelayLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// An address where nothing listens yet.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	conn, err := dial(addr, l.proxy, pki.Identity{Role: pki.RoleProxy, Name: "p1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Connect()
	for st := conn.GetState(); st != connectivity.TransientFailure; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			t.Fatalf("the connection to %s never failed (%s)", addr, st)
		}
	}
	// The proxy comes up there.
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port of %s was taken meanwhile: %v", addr, err)
	}
	srv := l.agent.Server()
	go srv.Serve(lis)
	defer srv.Stop()
	tryNow(ctx, conn)
	stream, err := proxyv1.NewProxyClient(conn).Data(ctx)
	if err == nil {
		err = stream.Send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Open{Open: &proxyv1.DataOpen{Task: "none"}}})
	}
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.NotFound {
		t.Fatalf("a stream right after the proxy came back: %v; want the proxy's answer (no such task)", err)
	}
}
