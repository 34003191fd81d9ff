package proxy

import (
	"context"
	"encoding/hex"
	"net"
	"path/filepath"
	"testing"

	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
// test process, over gRPC as a plugin process does.
type servedPlugins struct{ c *sdk.Client }

func newServedPlugins(t *testing.T) servedPlugins {
	src, tgt := sdktest.NewMemSource(sdk.VM{Name: "web-01", Disks: []sdk.Disk{{Capacity: 1 << 20}}}), sdktest.NewMemTarget()
	p := &sdk.Plugin{Name: "mem", Version: "test",
		Sources: map[string]sdk.Component[sdk.Source]{"mem": {Schema: &schema.Block{},
			New: func(context.Context, cty.Value) (sdk.Source, error) { return src, nil }}},
		Targets: map[string]sdk.Component[sdk.Target]{"mem": {Schema: &schema.Block{},
			New: func(context.Context, cty.Value) (sdk.Target, error) { return tgt, nil }}},
	}
	return servedPlugins{sdktest.Connect(t, p)}
}

func (s servedPlugins) Found() []pluginhost.Found { return []pluginhost.Found{{Name: "mem"}} }
func (s servedPlugins) Info(ctx context.Context, _ string) (*sdk.Info, error) {
	return s.c.Info(ctx)
}
func (s servedPlugins) Source(ctx context.Context, typ string, cfg cty.Value) (sdk.Source, sdk.Capabilities, error) {
	src, _, err := s.c.Source(ctx, typ, &schema.Block{}, cfg)
	return src, sdk.Capabilities{}, err
}
func (s servedPlugins) Target(ctx context.Context, typ string, cfg cty.Value) (sdk.Target, sdk.Capabilities, error) {
	tgt, _, err := s.c.Target(ctx, typ, &schema.Block{}, cfg)
	return tgt, sdk.Capabilities{}, err
}
func (s servedPlugins) Repository(ctx context.Context, typ string, cfg cty.Value) (sdk.Repository, error) {
	repo, _, err := s.c.Repository(ctx, typ, &schema.Block{}, cfg)
	return repo, err
}

// relayLab is a proxy p1 serving the in-memory plugin, the control
// plane's credentials and another proxy's.
type relayLab struct {
	agent          *Agent
	addr           string
	control, proxy *pki.Credentials
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
	ca, creds := proxyCreds(t, "p1", "p2")
	l := &relayLab{proxy: creds["p2"]}
	l.agent = &Agent{Name: "p1", MaxTasks: 2, Plugins: newServedPlugins(t), Creds: creds["p1"]}
	var err error
	if l.control, err = pki.Load(filepath.Join(ca, "control")); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := l.agent.Server()
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
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
	c, _, where, err := pool.Control(ctx, nil, "", sdk.KindSource, memBlock, nil)
	if err != nil || where != "p1" {
		t.Fatalf("control on %q: %v", where, err)
	}
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
