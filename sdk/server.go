package sdk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// instanceKey is the gRPC metadata key that addresses a configured instance.
const instanceKey = "ferry-instance"

// MaxMessageBytes is the largest gRPC message either side accepts. gRPC's
// default of 4 MiB would reject a 4 MiB chunk plus its framing; the data
// lane sends 1 MiB chunks, so 64 MiB leaves ample room while a broken peer
// still gets a clear error rather than exhausting memory.
const MaxMessageBytes = 64 << 20

// Server is the plugin side of protocol v1 for one Plugin: it keeps the
// configured instances and the open disks, drains calls at Stop and turns
// panics into errors. Serve uses it; the sdktest harness uses it to serve a
// plugin in-process over a real gRPC connection.
type Server struct {
	p   *Plugin
	log hclog.Logger

	// ctx is cancelled when a drain at Stop runs out of time; every call's
	// context is cancelled with it.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	instances map[string]*instance
	disks     map[string]*openDisk
	stopping  bool
	active    sync.WaitGroup
}

type instance struct {
	kind Kind
	typ  string
	src  Source
	tgt  Target
	repo Repository
}

func (in *instance) component() any {
	switch in.kind {
	case KindSource:
		return in.src
	case KindTarget:
		return in.tgt
	}
	return in.repo
}

// NewServer checks the plugin and prepares to serve it.
func NewServer(p *Plugin, log hclog.Logger) (*Server, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{p: p, log: log, ctx: ctx, cancel: cancel, instances: map[string]*instance{}, disks: map[string]*openDisk{}}, nil
}

// GRPCServer returns a gRPC server with the SDK's message limits and
// interceptors, and the protocol v1 services registered.
func (s *Server) GRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append(opts,
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		experimental.BufferPool(messageBuffers),
		grpc.ForceServerCodecV2(messageCodec{}),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	)
	g := grpc.NewServer(opts...)
	s.Register(g)
	return g
}

// Register adds the protocol v1 services to g. g must use the interceptors
// GRPCServer installs; prefer GRPCServer.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterPluginServer(g, &pluginService{s: s})
	pb.RegisterSourceServer(g, &sourceService{s: s})
	pb.RegisterTargetServer(g, &targetService{s: s})
	pb.RegisterRepositoryServer(g, &repositoryService{s: s})
	pb.RegisterDisksServer(g, &diskService{s: s})
}

// begin admits a call unless the server is stopping.
func (s *Server) begin(method string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping && method != pb.Plugin_Stop_FullMethodName && method != pb.Plugin_GetInfo_FullMethodName {
		return status.Error(codes.Unavailable, "plugin is stopping")
	}
	s.active.Add(1)
	return nil
}

// callContext cancels a call's context when the server's drain runs out.
func (s *Server) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

func (s *Server) recoverPanic(method string, err *error) {
	if r := recover(); r != nil {
		s.log.Error("panic in call", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "panic in %s: %v", method, r)
	}
}

// ours tells protocol v1 calls from go-plugin's own services (health,
// stdio, controller) that share the gRPC server and are not drained.
func ours(method string) bool { return strings.HasPrefix(method, "/ferry.plugin.v1.") }

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	if !ours(info.FullMethod) {
		return handler(ctx, req)
	}
	if err := s.begin(info.FullMethod); err != nil {
		return nil, err
	}
	stopCall := info.FullMethod == pb.Plugin_Stop_FullMethodName
	if !stopCall {
		defer s.active.Done()
	}
	ctx, cancel := s.callContext(ctx)
	defer cancel()
	defer s.recoverPanic(info.FullMethod, &err)
	if stopCall {
		// Stop waits for the other calls; it must not wait for itself.
		s.active.Done()
	}
	resp, err = handler(ctx, req)
	return resp, toStatus(err)
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	if !ours(info.FullMethod) {
		return handler(srv, ss)
	}
	if err := s.begin(info.FullMethod); err != nil {
		return err
	}
	defer s.active.Done()
	ctx, cancel := s.callContext(ss.Context())
	defer cancel()
	defer s.recoverPanic(info.FullMethod, &err)
	return toStatus(handler(srv, &ctxStream{ServerStream: ss, ctx: ctx}))
}

// lookup finds the instance a call is addressed to.
func (s *Server) lookup(ctx context.Context, kind Kind) (*instance, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	ids := md.Get(instanceKey)
	if len(ids) != 1 {
		return nil, fmt.Errorf("call carries no %s metadata: %w", instanceKey, errdefs.ErrInvalidArgument)
	}
	s.mu.Lock()
	in := s.instances[ids[0]]
	s.mu.Unlock()
	if in == nil {
		return nil, fmt.Errorf("instance %q is not configured: %w", ids[0], errdefs.ErrFailedPrecondition)
	}
	if in.kind != kind {
		return nil, fmt.Errorf("instance %q is a %s, not a %s: %w", ids[0], in.kind, kind, errdefs.ErrInvalidArgument)
	}
	return in, nil
}

// stop drains calls for at most drain, cancels what is left, closes open
// disks and stops every instance.
func (s *Server) stop(ctx context.Context, drain time.Duration) {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		s.log.Warn("calls still running at the end of the drain; cancelling them", "drain", drain)
		s.cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			s.log.Error("calls did not end after cancellation")
		}
	}

	s.mu.Lock()
	disks := s.disks
	s.disks = map[string]*openDisk{}
	instances := s.instances
	s.instances = map[string]*instance{}
	s.mu.Unlock()
	for h, d := range disks {
		if err := d.close(); err != nil {
			s.log.Warn("close disk at stop", "handle", h, "error", err)
		}
	}
	for id, in := range instances {
		if st, ok := in.component().(Stopper); ok {
			if err := st.Stop(ctx); err != nil {
				s.log.Warn("stop instance", "instance", id, "error", err)
			}
		}
	}
	s.cancel()
}

func newID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("read random bytes: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// pluginService serves the Plugin service.
type pluginService struct {
	pb.UnimplementedPluginServer
	s *Server
}

// componentSpec is what the server needs of a component of any kind.
type componentSpec struct {
	kind     Kind
	typ      string
	schema   *schema.Block
	caps     Capabilities
	limits   Limits
	hardware *HardwareSupport
	validate func(cty.Value) schema.Diagnostics
	create   func(ctx context.Context, cfg cty.Value) (*instance, error)
}

func (s *Server) components() []componentSpec {
	var out []componentSpec
	for typ, c := range s.p.Sources {
		c := c
		out = append(out, componentSpec{KindSource, typ, c.Schema, c.Capabilities, c.Limits, c.Hardware, c.Validate, func(ctx context.Context, cfg cty.Value) (*instance, error) {
			v, err := c.New(ctx, cfg)
			return &instance{kind: KindSource, typ: typ, src: v}, err
		}})
	}
	for typ, c := range s.p.Targets {
		c := c
		out = append(out, componentSpec{KindTarget, typ, c.Schema, c.Capabilities, c.Limits, c.Hardware, c.Validate, func(ctx context.Context, cfg cty.Value) (*instance, error) {
			v, err := c.New(ctx, cfg)
			return &instance{kind: KindTarget, typ: typ, tgt: v}, err
		}})
	}
	for typ, c := range s.p.Repositories {
		c := c
		out = append(out, componentSpec{KindRepository, typ, c.Schema, c.Capabilities, c.Limits, c.Hardware, c.Validate, func(ctx context.Context, cfg cty.Value) (*instance, error) {
			v, err := c.New(ctx, cfg)
			return &instance{kind: KindRepository, typ: typ, repo: v}, err
		}})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].kind != out[j].kind {
			return out[i].kind < out[j].kind
		}
		return out[i].typ < out[j].typ
	})
	return out
}

func (s *Server) component(kind Kind, typ string) (componentSpec, error) {
	for _, c := range s.components() {
		if c.kind == kind && c.typ == typ {
			return c, nil
		}
	}
	return componentSpec{}, fmt.Errorf("plugin %s serves no %s %q: %w", s.p.Name, kind, typ, errdefs.ErrNotFound)
}

func (ps *pluginService) GetInfo(ctx context.Context, _ *pb.Empty) (*pb.GetInfoResponse, error) {
	resp := &pb.GetInfoResponse{Name: ps.s.p.Name, Version: ps.s.p.Version, ProtocolMajor: ProtocolMajor, ProtocolMinor: ProtocolMinor}
	for _, c := range ps.s.components() {
		block, err := blockToProto(c.schema)
		if err != nil {
			return nil, fmt.Errorf("%s %q schema: %w", c.kind, c.typ, err)
		}
		resp.Components = append(resp.Components, &pb.Component{Kind: kindToProto(c.kind), Type: c.typ, Capabilities: capsToProto(c.caps),
			Limits: limitsToProto(c.limits), Schema: &pb.Schema{Block: block}, Hardware: hardwareSupportToProto(c.hardware)})
	}
	return resp, nil
}

// decodeAndValidate decodes a configuration and runs the component's own
// validation.
func (c componentSpec) decodeAndValidate(dv *pb.DynamicValue) (cty.Value, schema.Diagnostics, error) {
	cfg, err := valueFromProto(dv, c.schema.ImpliedType())
	if err != nil {
		return cty.NilVal, nil, fmt.Errorf("%s %q: %w: %w", c.kind, c.typ, err, errdefs.ErrInvalidArgument)
	}
	var diags schema.Diagnostics
	if c.validate != nil {
		diags = c.validate(cfg)
	}
	return cfg, diags, nil
}

func (ps *pluginService) Validate(ctx context.Context, req *pb.ValidateRequest) (*pb.ValidateResponse, error) {
	c, err := ps.s.component(kindFromProto(req.GetKind()), req.GetType())
	if err != nil {
		return nil, err
	}
	_, diags, err := c.decodeAndValidate(req.GetConfig())
	if err != nil {
		return nil, err
	}
	return &pb.ValidateResponse{Diagnostics: diagsToProto(diags)}, nil
}

func (ps *pluginService) Configure(ctx context.Context, req *pb.ConfigureRequest) (*pb.ConfigureResponse, error) {
	if req.GetInstance() == "" {
		return nil, fmt.Errorf("configure: no instance id: %w", errdefs.ErrInvalidArgument)
	}
	c, err := ps.s.component(kindFromProto(req.GetKind()), req.GetType())
	if err != nil {
		return nil, err
	}
	cfg, diags, err := c.decodeAndValidate(req.GetConfig())
	if err != nil {
		return nil, err
	}
	if diags.HasErrors() {
		return &pb.ConfigureResponse{Diagnostics: diagsToProto(diags)}, nil
	}
	in, err := c.create(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("configure %s %q: %w", c.kind, c.typ, err)
	}
	ps.s.mu.Lock()
	old := ps.s.instances[req.GetInstance()]
	ps.s.instances[req.GetInstance()] = in
	ps.s.mu.Unlock()
	if old != nil {
		if st, ok := old.component().(Stopper); ok {
			if err := st.Stop(ctx); err != nil {
				ps.s.log.Warn("stop replaced instance", "instance", req.GetInstance(), "error", err)
			}
		}
	}
	return &pb.ConfigureResponse{Diagnostics: diagsToProto(diags)}, nil
}

func (ps *pluginService) Stop(ctx context.Context, req *pb.StopRequest) (*pb.Empty, error) {
	drain := time.Duration(req.GetDrainMillis()) * time.Millisecond
	ps.s.stop(ctx, drain)
	return &pb.Empty{}, nil
}
