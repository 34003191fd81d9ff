package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/pluginhost"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Plugins starts and configures the plugins a proxy runs; a
// *pluginhost.Host is one.
type Plugins interface {
	Found() []pluginhost.Found
	Info(ctx context.Context, name string) (*sdk.Info, error)
	Source(ctx context.Context, typ string, cfg cty.Value) (sdk.Source, sdk.Capabilities, error)
	Target(ctx context.Context, typ string, cfg cty.Value) (sdk.Target, sdk.Capabilities, error)
	Repository(ctx context.Context, typ string, cfg cty.Value) (sdk.Repository, error)
}

// Agent is a proxy: it runs the halves of disk tasks the control plane
// gives it, with its own plugin instances, and takes data streams from
// other proxies. It is what `ferry proxy` serves.
type Agent struct {
	Name     string // as its certificate names it
	Site     string
	MaxTasks int
	Version  string
	Plugins  Plugins
	Creds    *pki.Credentials
	Log      hclog.Logger
	// Dial opens connections to other proxies; nil dials TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// ResumeFor is how long a source half tries to reopen a broken data
	// stream; ResumeFor (the constant) when 0.
	ResumeFor time.Duration

	mu         sync.Mutex
	running    int
	targets    map[string]*targetTask
	components map[string]any                // configured plugin instances, by kind, type and configuration
	caps       map[string]sdk.Capabilities   // the capabilities of each, by the same key
	rules      map[string]*datamover.Limiter // the traffic rules' rates, shared by the tasks they cover
	// arrived is closed and replaced when a target half is registered:
	// a data stream may open before its target half (see Data); awaiting
	// counts the streams waiting so.
	arrived  chan struct{}
	awaiting int
	attaches int // Attach calls answered, for tests
	// attachWaits are the Attach calls relayed calls may wait for, by
	// nonce (see awaitAttach).
	attachWaits map[string]*attachWait
	// peers are the connections to target proxies, by name and address,
	// kept for the tasks that come after (see peer).
	peers  map[string]*grpc.ClientConn
	closed bool
}

// peer returns the connection to the target proxy name at addr: the
// one an earlier task dialled, or a new one, kept for the next tasks. A
// connection costs a TCP and a TLS handshake and gRPC's exchange of
// settings, three round trips of the link between the sites before the
// first frame. gRPC reconnects a kept connection that broke (see
// tryNow), and lets one idle for 30 minutes go until it is used again.
func (a *Agent) peer(addr, name string) (*grpc.ClientConn, error) {
	key := name + "\x00" + addr
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, status.Error(codes.Unavailable, "the proxy is stopping")
	}
	if conn := a.peers[key]; conn != nil {
		return conn, nil
	}
	conn, err := dial(addr, a.Creds, pki.Identity{Role: pki.RoleProxy, Name: name}, a.Dial)
	if err != nil {
		return nil, err
	}
	// Dial now: the handshakes run while the task opens its disks.
	conn.Connect()
	if a.peers == nil {
		a.peers = map[string]*grpc.ClientConn{}
	}
	a.peers[key] = conn
	return conn, nil
}

// Close closes the connections the agent opened to other proxies. Call it
// once its server stopped.
func (a *Agent) Close() error {
	a.mu.Lock()
	peers := a.peers
	a.peers, a.closed = nil, true
	a.mu.Unlock()
	var errs []error
	for _, conn := range peers {
		errs = append(errs, conn.Close())
	}
	return errors.Join(errs...)
}

// ruleLimiters returns the limiters of the traffic rules a task's link
// crosses, at the rates the control plane gave.
func (a *Agent) ruleLimiters(rules []*proxyv1.RuleRate) []*datamover.Limiter {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rules == nil {
		a.rules = map[string]*datamover.Limiter{}
	}
	out := make([]*datamover.Limiter, 0, len(rules))
	for _, r := range rules {
		lim := a.rules[r.GetName()]
		if lim == nil {
			lim = datamover.NewLimiter(r.GetRate())
			a.rules[r.GetName()] = lim
		} else if lim.Rate() != r.GetRate() {
			lim.SetRate(r.GetRate())
		}
		out = append(out, lim)
	}
	return out
}

func (s *service) SetRates(ctx context.Context, req *proxyv1.SetRatesRequest) (*proxyv1.SetRatesResponse, error) {
	if _, err := caller(ctx, pki.RoleControl); err != nil {
		return nil, err
	}
	s.a.mu.Lock()
	for _, r := range req.GetRules() {
		if lim := s.a.rules[r.GetName()]; lim != nil && lim.Rate() != r.GetRate() {
			lim.SetRate(r.GetRate())
		}
	}
	s.a.mu.Unlock()
	return &proxyv1.SetRatesResponse{}, nil
}

func (a *Agent) resumeFor() time.Duration {
	if a.ResumeFor > 0 {
		return a.ResumeFor
	}
	return ResumeFor
}

// errBusy is returned when every task slot is taken.
var errBusy = status.Error(codes.ResourceExhausted, "every task slot of the proxy is taken")

// Server returns the gRPC server of the agent, for Serve on a listener.
func (a *Agent) Server() *grpc.Server { return a.server(&proxyv1.Proxy_ServiceDesc) }

// server is Server serving the methods of desc, a description of the
// Proxy service, with more options: tests serve what an older proxy
// served, and count the calls.
func (a *Agent) server(desc *grpc.ServiceDesc, more ...grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append([]grpc.ServerOption{
		grpc.Creds(batchedTLS{credentials.NewTLS(a.Creds.ServerConfig(pki.RoleControl, pki.RoleProxy))}), grpc.WriteBufferSize(writeBuffer),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage),
		// The SDK's codec and pool do not clear every message buffer, as
		// gRPC's defaults do (a copy of each frame's worth of memory).
		// (relayCodec is that codec, and passes relayed plugin calls
		// through undecoded.)
		grpc.ForceServerCodecV2(relayCodec{}), experimental.BufferPool(sdk.MessageBuffers()),
		// Frames flow without waiting for window updates: a stream may
		// have streamWindow bytes in flight (what the target proxy holds
		// at most per data stream), the connection connWindow.
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		// The control plane's calls to plugins it attached here.
		grpc.UnknownServiceHandler(a.relay),
	}, more...)...)
	s.RegisterService(desc, &service{a: a})
	return s
}

// maxMessage bounds one message: a frame of the largest read, with room.
const maxMessage = 16 << 20

// The HTTP/2 flow-control windows of a proxy's connections. gRPC's
// default (64 KiB, grown by its estimate of the bandwidth-delay product,
// which stays small on a fast link with a tiny round trip) made the
// source proxy wait for window updates most of a full copy.
const (
	streamWindow = 8 << 20
	connWindow   = 16 << 20
)

func (a *Agent) log() hclog.Logger {
	if a.Log == nil {
		return hclog.NewNullLogger()
	}
	return a.Log
}

// acquire takes a task slot.
func (a *Agent) acquire() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running >= max(a.MaxTasks, 1) {
		return errBusy
	}
	a.running++
	return nil
}

func (a *Agent) release() {
	a.mu.Lock()
	a.running--
	a.mu.Unlock()
}

// component returns the configured instance of a plugin block, configuring
// it on first use: a proxy serving many sessions of one job keeps one
// instance per block.
func (a *Agent) component(ctx context.Context, kind sdk.Kind, c *proxyv1.Component) (any, error) {
	if c == nil || c.GetType() == "" {
		return nil, status.Errorf(codes.InvalidArgument, "no %s block", kind)
	}
	key := componentKey(kind, c)
	a.mu.Lock()
	got, ok := a.components[key]
	a.mu.Unlock()
	if ok {
		return got, nil
	}
	cfg, err := decodeComponent(c)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s %q: %v", kind, c.GetType(), err)
	}
	var caps sdk.Capabilities
	switch kind {
	case sdk.KindSource:
		got, caps, err = a.Plugins.Source(ctx, c.GetType(), cfg)
	case sdk.KindTarget:
		got, caps, err = a.Plugins.Target(ctx, c.GetType(), cfg)
	default:
		got, err = a.Plugins.Repository(ctx, c.GetType(), cfg)
	}
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%s %q on proxy %s: %v", kind, c.GetType(), a.Name, err)
	}
	a.mu.Lock()
	if a.components == nil {
		a.components = map[string]any{}
	}
	if old, ok := a.components[key]; ok {
		got = old
	} else {
		a.components[key] = got
		if a.caps == nil {
			a.caps = map[string]sdk.Capabilities{}
		}
		a.caps[key] = caps
	}
	a.mu.Unlock()
	return got, nil
}

// componentKey names a plugin block's instance in the cache.
func componentKey(kind sdk.Kind, c *proxyv1.Component) string {
	return pluginhost.BlockKey(kind, c.GetType(), c.GetConfigType(), c.GetConfig())
}

// forget drops the cached instances of plugin blocks after a task half
// that used them failed: the plugin may have died (its host starts it
// again, without the instances it had), so the next task asks the host
// for them anew. The host gives back the instance a healthy plugin still
// has, and configures one in a restarted plugin.
func (a *Agent) forget(kind sdk.Kind, cs ...*proxyv1.Component) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range cs {
		delete(a.components, componentKey(kind, c))
		delete(a.caps, componentKey(kind, c))
	}
}

// encodeComponent is the wire form of a plugin block's configuration.
func encodeComponent(typ string, cfg cty.Value) (*proxyv1.Component, error) {
	t, err := ctyjson.MarshalType(cfg.Type())
	if err != nil {
		return nil, err
	}
	v, err := ctyjson.Marshal(cfg, cfg.Type())
	if err != nil {
		return nil, err
	}
	return &proxyv1.Component{Type: typ, Config: v, ConfigType: t}, nil
}

func decodeComponent(c *proxyv1.Component) (cty.Value, error) {
	t, err := ctyjson.UnmarshalType(c.GetConfigType())
	if err != nil {
		return cty.NilVal, fmt.Errorf("the configuration's type: %w", err)
	}
	v, err := ctyjson.Unmarshal(c.GetConfig(), t)
	if err != nil {
		return cty.NilVal, fmt.Errorf("the configuration: %w", err)
	}
	return v, nil
}

// service is the gRPC face of an Agent.
type service struct {
	proxyv1.UnimplementedProxyServer
	a *Agent
}

// caller checks that the peer of a call holds a certificate of one of the
// roles and returns who it is.
func caller(ctx context.Context, roles ...pki.Role) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Identity{}, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	id, err := pki.PeerIdentity(info.State)
	if err != nil {
		return pki.Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	for _, r := range roles {
		if id.Role == r {
			return id, nil
		}
	}
	return id, status.Errorf(codes.PermissionDenied, "a %s certificate (%s) may not make this call", id.Role, id.Name)
}

func (s *service) Hello(ctx context.Context, req *proxyv1.HelloRequest) (*proxyv1.HelloResponse, error) {
	if _, err := caller(ctx, pki.RoleControl); err != nil {
		return nil, err
	}
	a := s.a
	a.mu.Lock()
	running := a.running
	a.mu.Unlock()
	resp := &proxyv1.HelloResponse{Version: a.Version, Name: a.Name, Site: a.Site, MaxTasks: int32(max(a.MaxTasks, 1)), Running: int32(running)}
	for _, f := range a.Plugins.Found() {
		if f.Shadowed {
			continue
		}
		pi := &proxyv1.PluginInfo{Name: f.Name}
		if info, err := a.Plugins.Info(ctx, f.Name); err == nil {
			for _, c := range info.Components {
				if caps, err := json.Marshal(c.Capabilities); err == nil {
					if pi.Capabilities == nil {
						pi.Capabilities = map[string][]byte{}
					}
					pi.Capabilities[capsKey(c.Kind, c.Type)] = caps
				}
				switch c.Kind {
				case sdk.KindSource:
					pi.Sources = append(pi.Sources, c.Type)
				case sdk.KindTarget:
					pi.Targets = append(pi.Targets, c.Type)
				case sdk.KindRepository:
					pi.Repositories = append(pi.Repositories, c.Type)
				}
			}
		}
		resp.Plugins = append(resp.Plugins, pi)
	}
	return resp, nil
}

// capsKey names a component type in PluginInfo.capabilities.
func capsKey(kind sdk.Kind, typ string) string { return string(kind) + "/" + typ }

// targetTask is the target half of a disk task: an open replica disk
// waiting for its data stream.
type targetTask struct {
	id      string
	tgt     sdk.Target
	replica string
	disk    int
	// opened is closed once the disk is open (w and recv are set) or
	// could not be (openErr says why).
	opened   chan struct{}
	openErr  error
	w        sdk.DiskWriter
	recv     *datamover.Receiver
	mu       sync.Mutex // held while a data stream uses the disk
	gen      int        // the generation of the newest data stream
	applied  int64      // the last message applied
	closed   bool
	closeErr error
	finished chan struct{} // closed when the data stream closed the disk
	once     sync.Once
	rp       sdk.DiskReader // the replica's working state, for digests
}

// begin checks that a task half comes from a control plane and takes a
// slot for it; the caller releases the slot when the half ends.
func (s *service) begin(ctx context.Context) error {
	if _, err := caller(ctx, pki.RoleControl); err != nil {
		return err
	}
	return s.a.acquire()
}

func (s *service) Target(req *proxyv1.TargetTask, stream proxyv1.Proxy_TargetServer) error {
	ctx := stream.Context()
	if err := s.begin(ctx); err != nil {
		return err
	}
	a := s.a
	defer a.release()
	c, err := a.component(ctx, sdk.KindTarget, req.GetTarget())
	if err != nil {
		return err
	}
	failed := true
	defer func() {
		if failed {
			a.forget(sdk.KindTarget, req.GetTarget())
		}
	}()
	tgt := c.(sdk.Target)
	// The task is known before its disk is open: its data stream, which
	// the control plane started at the same time, waits for the disk.
	t := &targetTask{id: req.GetTask(), tgt: tgt, replica: req.GetReplica(), disk: int(req.GetDisk()), opened: make(chan struct{}), finished: make(chan struct{})}
	a.mu.Lock()
	if a.targets == nil {
		a.targets = map[string]*targetTask{}
	}
	if _, dup := a.targets[t.id]; dup || t.id == "" {
		a.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "task %q exists", t.id)
	}
	a.targets[t.id] = t
	if a.arrived != nil {
		close(a.arrived)
	}
	a.arrived = make(chan struct{})
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.targets, t.id)
		a.mu.Unlock()
		t.abandon()
	}()
	w, err := tgt.OpenReplicaDisk(ctx, req.GetReplica(), int(req.GetDisk()), req.GetCapacity())
	t.mu.Lock()
	if err != nil {
		t.openErr = status.Errorf(codes.Unavailable, "open disk %d of replica %s: %v", req.GetDisk(), req.GetReplica(), err)
	} else {
		t.w, t.recv = w, datamover.NewReceiver(w, req.GetCapacity())
	}
	t.mu.Unlock()
	close(t.opened)
	if err != nil {
		return t.openErr
	}
	log := a.log().With("task", t.id, "replica", t.replica, "disk", t.disk)
	log.Info("target half: replica disk open")
	if err := stream.Send(&proxyv1.TaskEvent{Event: &proxyv1.TaskEvent_Ready{Ready: &proxyv1.Ready{}}}); err != nil {
		log.Warn("target half: abandoned by the control plane", "error", err)
		return err
	}
	select {
	case <-t.finished:
	case <-ctx.Done():
		log.Warn("target half: abandoned by the control plane", "error", ctx.Err())
		return status.FromContextError(ctx.Err()).Err()
	}
	t.mu.Lock()
	err = t.closeErr
	t.mu.Unlock()
	log.Info("target half: done", "written", t.recv.Written(), "error", err)
	failed = err != nil
	if err != nil {
		return status.Errorf(codes.Unavailable, "flush disk %d of replica %s: %v", t.disk, t.replica, err)
	}
	return stream.Send(&proxyv1.TaskEvent{Event: &proxyv1.TaskEvent_Done{Done: &proxyv1.Done{BytesWritten: t.recv.Written()}}})
}

// finish tells the task's Target call that the data stream closed the
// disk.
func (t *targetTask) finish() { t.once.Do(func() { close(t.finished) }) }

// abandon closes the disk when no data stream did.
func (t *targetTask) abandon() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rp != nil {
		t.rp.Close()
		t.rp = nil
	}
	if !t.closed && t.w != nil {
		t.closed = true
		t.closeErr = t.w.Close()
	}
}

// ackEvery is how many bytes of frames the target applies between two
// acknowledgements (and ackMessages how many messages): well under
// Window, so the source's window never fills for want of one.
const (
	ackEvery    = 1 << 20
	ackMessages = 16
)

func (s *service) Data(stream proxyv1.Proxy_DataServer) error {
	ctx := stream.Context()
	if _, err := caller(ctx, pki.RoleProxy); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return status.Error(codes.InvalidArgument, "a data stream starts with Open")
	}
	a := s.a
	t, err := a.awaitTarget(ctx, open.GetTask(), open.GetAwait())
	if err != nil {
		return err
	}
	// A new stream takes over from the one before it (which may be a
	// broken connection the server has not noticed yet).
	t.mu.Lock()
	if t.closed && t.closeErr != nil {
		t.mu.Unlock()
		return status.Errorf(codes.Aborted, "task %q was abandoned", open.GetTask())
	}
	t.gen++
	gen, applied := t.gen, t.applied
	t.mu.Unlock()
	if err := stream.Send(&proxyv1.DataReply{Reply: &proxyv1.DataReply_Opened{Opened: &proxyv1.DataOpened{Applied: applied}}}); err != nil {
		return err
	}
	var bytes, msgs int
	// Frames stay in the buffer they were received in until applied.
	var recv recvData
	defer recv.release()
	for {
		recv.release()
		err := stream.RecvMsg(&recv)
		if errors.Is(err, io.EOF) {
			return status.Error(codes.Aborted, "the data stream ended before the disk was closed")
		}
		if err != nil {
			return err
		}
		m := &recv.DataMessage
		r, done, err := t.handle(ctx, gen, m)
		if done {
			t.finish()
		}
		if err != nil {
			return err
		}
		if r == nil {
			bytes += len(m.GetFrames())
			msgs++
			if bytes < ackEvery && msgs < ackMessages {
				continue
			}
			bytes, msgs = 0, 0
			r = &proxyv1.DataReply{Reply: &proxyv1.DataReply_Applied{Applied: m.GetSeq()}}
		}
		if err := stream.Send(r); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// targetWait bounds how long a task's first data stream waits for its
// target half to start. The control plane starts both halves at once and
// ends the source half when the target half fails to start, so this
// only bounds a stream whose control plane vanished.
const targetWait = time.Minute

// awaitTarget returns the target half of task id once its disk is open.
// With wait, a task not started yet is waited for (see targetWait).
func (a *Agent) awaitTarget(ctx context.Context, id string, wait bool) (*targetTask, error) {
	timer := time.NewTimer(targetWait)
	defer timer.Stop()
	for {
		a.mu.Lock()
		t := a.targets[id]
		if a.arrived == nil {
			a.arrived = make(chan struct{})
		}
		arrived := a.arrived
		a.mu.Unlock()
		if t != nil {
			select {
			case <-t.opened:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			if t.openErr != nil {
				return nil, t.openErr
			}
			return t, nil
		}
		if !wait {
			return nil, status.Errorf(codes.NotFound, "no task %q waits on proxy %s", id, a.Name)
		}
		if err := a.awaitArrival(ctx, arrived, timer.C); err != nil {
			return nil, status.Errorf(status.Code(err), "task %q did not start on proxy %s: %v", id, a.Name, err)
		}
	}
}

// awaitArrival waits for the next target half to be registered.
func (a *Agent) awaitArrival(ctx context.Context, arrived chan struct{}, timeout <-chan time.Time) error {
	a.mu.Lock()
	a.awaiting++
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.awaiting--
		a.mu.Unlock()
	}()
	select {
	case <-arrived:
		return nil
	case <-timeout:
		return status.Errorf(codes.NotFound, "not within %s", targetWait)
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// handle applies one message of stream generation gen and returns its
// reply, if it has one, and whether the task is done.
func (t *targetTask) handle(ctx context.Context, gen int, m *proxyv1.DataMessage) (*proxyv1.DataReply, bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if gen != t.gen {
		return nil, false, status.Error(codes.Aborted, "a newer data stream took over the task")
	}
	if t.closed && t.closeErr != nil {
		return nil, false, status.Error(codes.Aborted, "the task was abandoned")
	}
	seq := m.GetSeq()
	switch msg := m.GetMsg().(type) {
	case *proxyv1.DataMessage_Frames:
		if t.closed {
			return nil, false, status.Error(codes.FailedPrecondition, "frames after the disk was closed")
		}
		if seq > t.applied {
			if err := t.recv.Send(ctx, msg.Frames); err != nil {
				if errors.Is(err, datamover.ErrCorrupt) {
					return nil, false, status.Errorf(codes.DataLoss, "disk %d of replica %s: %v", t.disk, t.replica, err)
				}
				return nil, false, status.Errorf(codes.FailedPrecondition, "disk %d of replica %s: %v", t.disk, t.replica, err)
			}
		}
		t.applied = max(t.applied, seq)
		return nil, false, nil
	case *proxyv1.DataMessage_Sync:
		if !t.closed {
			t.recv.Busy().Start()
			err := t.w.Sync()
			t.recv.Busy().Stop()
			if err != nil {
				return nil, false, status.Errorf(codes.FailedPrecondition, "sync disk %d of replica %s: %v", t.disk, t.replica, err)
			}
		}
		t.applied = max(t.applied, seq)
		return &proxyv1.DataReply{Reply: &proxyv1.DataReply_Synced{Synced: &proxyv1.DataSynced{}}}, false, nil
	case *proxyv1.DataMessage_Digests:
		d := msg.Digests
		bs := int(d.GetBlockSize())
		if bs < 512 || bs&(bs-1) != 0 || d.GetFrom() < 0 || d.GetTo() < d.GetFrom() || (d.GetTo()-d.GetFrom())/int64(bs) > 1<<20 {
			return nil, false, status.Errorf(codes.InvalidArgument, "digests of [%d, %d) in blocks of %d: out of bounds", d.GetFrom(), d.GetTo(), bs)
		}
		if t.rp == nil {
			rp, err := t.tgt.OpenRestorePointDisk(ctx, t.replica, "", t.disk)
			if err != nil {
				return nil, false, status.Errorf(codes.FailedPrecondition, "open disk %d of replica %s to digest it: %v", t.disk, t.replica, err)
			}
			t.rp = rp
		}
		ds, err := datamover.DigestRange(t.rp, d.GetFrom(), d.GetTo(), bs)
		if err != nil {
			return nil, false, status.Errorf(codes.FailedPrecondition, "digest disk %d of replica %s: %v", t.disk, t.replica, err)
		}
		t.applied = max(t.applied, seq)
		return &proxyv1.DataReply{Reply: &proxyv1.DataReply_Digests{Digests: packDigests(ds)}}, false, nil
	case *proxyv1.DataMessage_Close:
		if !t.closed { // a close sent again after a broken stream is answered again
			if t.rp != nil {
				t.rp.Close()
				t.rp = nil
			}
			t.closed = true
			t.recv.Busy().Start()
			t.closeErr = t.w.Close()
			t.recv.Busy().Stop()
			if t.closeErr != nil {
				return nil, true, status.Errorf(codes.FailedPrecondition, "flush disk %d of replica %s: %v", t.disk, t.replica, t.closeErr)
			}
		}
		t.applied = max(t.applied, seq)
		return &proxyv1.DataReply{Reply: &proxyv1.DataReply_Closed{Closed: &proxyv1.DataClosed{BytesWritten: t.recv.Written(), WriteBusyNs: int64(t.recv.Busy().Total())}}}, true, nil
	}
	return nil, false, status.Errorf(codes.InvalidArgument, "unexpected %T on a data stream", m.GetMsg())
}

// progressEvery is how often a source half reports progress.
const progressEvery = 250 * time.Millisecond

func (s *service) Probe(ctx context.Context, req *proxyv1.ProbeRequest) (*proxyv1.ProbeResponse, error) {
	if _, err := caller(ctx, pki.RoleControl); err != nil {
		return nil, err
	}
	resp := &proxyv1.ProbeResponse{}
	var err error
	if req.GetSource() != nil {
		if resp.Source, err = s.a.reach(ctx, sdk.KindSource, req.GetSource(), req.GetVm()); err != nil {
			return nil, err
		}
	}
	if req.GetTarget() != nil {
		if resp.Target, err = s.a.reach(ctx, sdk.KindTarget, req.GetTarget(), ""); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// reach asks a plugin block's instance how it reaches vm's disks from
// here. A block the proxy cannot configure (no such plugin here, a
// configuration it refuses) cannot reach anything from here.
func (a *Agent) reach(ctx context.Context, kind sdk.Kind, c *proxyv1.Component, vm string) (*proxyv1.Reach, error) {
	comp, err := a.component(ctx, kind, c)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return &proxyv1.Reach{Known: true, Why: status.Convert(err).Message()}, nil
	}
	p, ok := comp.(sdk.TransportProber)
	if !ok {
		return &proxyv1.Reach{}, nil
	}
	mode, why, err := p.ProbeTransport(ctx, vm, -1)
	switch {
	case errors.Is(err, errdefs.ErrUnimplemented):
		return &proxyv1.Reach{}, nil
	case err != nil:
		return &proxyv1.Reach{Known: true, Why: err.Error()}, nil
	}
	return &proxyv1.Reach{Known: true, Mode: mode, Why: why}, nil
}
