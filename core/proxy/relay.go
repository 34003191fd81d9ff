package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/core/pki"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The control plane's own calls to a plugin (inventory, snapshots, changed
// areas, replicas, restore points, failover) run on a proxy when the job
// runs on proxies: the proxy is where the plugin reaches the storage (a
// datastore mounted there, the VM a HotAdd proxy runs in, the Hyper-V host
// itself). Attach configures the plugin block's instance on the proxy and
// names it by a key; the control plane then calls the plugin's own gRPC
// services on its connection to the proxy, with the key in the call's
// metadata, and the proxy relays each call, message by message and
// without decoding it, to that instance.

// attachmentKey is the metadata key naming the instance a relayed call is
// for.
const attachmentKey = "ferry-attachment"

// errNotAttached is what the proxy answers a relayed call whose instance
// it does not hold (it restarted, or dropped the instance after a failed
// task): the call went nowhere, and the control plane attaches again.
const errNotAttached = "the plugin instance is not attached on this proxy"

// pendingKey is the metadata key of a relayed call sent behind an Attach
// before its answer came: its value is that Attach's nonce.
const pendingKey = "ferry-attach-pending"

// errAttachFailed begins the message of a relayed call whose Attach
// failed: nothing of the call reached a plugin, and the control plane
// makes it again on another proxy.
const errAttachFailed = "the Attach this call followed failed"

// attachHold bounds how long a relayed call waits for the Attach it
// follows. That Attach went first on the same connection: it is late only
// when the connection broke, which ends the call anyway.
const attachHold = time.Minute

// attachWait is an Attach that relayed calls may wait for, by its nonce.
// Whichever of the Attach and a call sent behind it comes first makes it.
type attachWait struct {
	done    chan struct{} // closed when the Attach has ended
	once    sync.Once
	err     error // why it failed
	created time.Time
}

func (w *attachWait) end(err error) {
	w.once.Do(func() {
		w.err = err
		close(w.done)
	})
}

// attachWaitFor returns the wait of the Attach named nonce, made when
// there is none. Waits older than attachHold are dropped first: their
// calls have stopped waiting.
func (a *Agent) attachWaitFor(nonce string) *attachWait {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for n, w := range a.attachWaits {
		if now.Sub(w.created) > attachHold {
			delete(a.attachWaits, n)
		}
	}
	w := a.attachWaits[nonce]
	if w == nil {
		w = &attachWait{done: make(chan struct{}), created: now}
		if a.attachWaits == nil {
			a.attachWaits = map[string]*attachWait{}
		}
		a.attachWaits[nonce] = w
	}
	return w
}

// awaitAttach holds a relayed call until the Attach named nonce has
// ended, and fails it as that Attach failed. An Attach that does not come
// within attachHold leaves the call to find no instance.
func (a *Agent) awaitAttach(ctx context.Context, nonce string) error {
	w := a.attachWaitFor(nonce)
	t := time.NewTimer(attachHold)
	defer t.Stop()
	select {
	case <-w.done:
		if w.err != nil {
			return status.Errorf(codes.FailedPrecondition, "%s: %s", errAttachFailed, status.Convert(w.err).Message())
		}
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-t.C:
		return nil
	}
}

func (s *service) Attach(ctx context.Context, req *proxyv1.AttachRequest) (*proxyv1.AttachResponse, error) {
	if _, err := caller(ctx, pki.RoleControl); err != nil {
		return nil, err
	}
	resp, err := s.attach(ctx, req)
	if nonce := req.GetNonce(); nonce != "" {
		s.a.attachWaitFor(nonce).end(err)
	}
	return resp, err
}

func (s *service) attach(ctx context.Context, req *proxyv1.AttachRequest) (*proxyv1.AttachResponse, error) {
	kind := sdk.Kind(req.GetKind())
	switch kind {
	case sdk.KindSource, sdk.KindTarget, sdk.KindRepository:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "no component kind %q", req.GetKind())
	}
	c, err := s.a.component(ctx, kind, req.GetComponent())
	if err != nil {
		return nil, err
	}
	if _, ok := sdk.InstanceConn(c); !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "%s %q on proxy %s does not run in a plugin process: its calls cannot be relayed", kind, req.GetComponent().GetType(), s.a.Name)
	}
	key := componentKey(kind, req.GetComponent())
	s.a.mu.Lock()
	caps := s.a.caps[key]
	s.a.attaches++
	s.a.mu.Unlock()
	capsJSON, err := json.Marshal(caps)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%s %q: its capabilities: %v", kind, req.GetComponent().GetType(), err)
	}
	return &proxyv1.AttachResponse{Key: instanceKey(kind, req.GetComponent()), Capabilities: capsJSON}, nil
}

// instanceKey is the key Attach answers for an instance of block c of
// kind, which relayed calls name it by: a control plane that does not
// wait for the answer makes it the same way.
func instanceKey(kind sdk.Kind, c *proxyv1.Component) string {
	return hex.EncodeToString([]byte(componentKey(kind, c)))
}

// relayedServices are the services of the plugin protocol a relayed call
// may reach, by the kind of the instance it is for. Configure and Stop are
// the proxy's own business.
var relayedServices = map[sdk.Kind][]string{
	sdk.KindSource:     {"ferry.plugin.v1.Source", "ferry.plugin.v1.Disks"},
	sdk.KindTarget:     {"ferry.plugin.v1.Target", "ferry.plugin.v1.Disks"},
	sdk.KindRepository: {"ferry.plugin.v1.Repository"},
}

// kindOf is the kind of a configured component.
func kindOf(c any) sdk.Kind {
	switch c.(type) {
	case sdk.Source:
		return sdk.KindSource
	case sdk.Target:
		return sdk.KindTarget
	}
	return sdk.KindRepository
}

// relayable reports whether a relayed call of method may reach an
// instance of kind.
func relayable(method string, kind sdk.Kind) bool {
	if method == "/ferry.plugin.v1.Plugin/GetInfo" {
		return true
	}
	svc, _, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	return ok && slices.Contains(relayedServices[kind], svc)
}

// relayDesc serves every call as a stream both ways: a unary call is one
// message each way on the wire.
var relayDesc = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// attached returns the instance a call of the control plane names by
// key, its "ferry-attachment" metadata (md is the call's), after the
// Attach the call was sent behind, if any, has ended; errNotAttached
// when the agent holds none, and the control plane attaches it again.
func (a *Agent) attached(ctx context.Context, md metadata.MD, key string) (any, error) {
	raw, err := hex.DecodeString(key)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "bad %s metadata", attachmentKey)
	}
	a.mu.Lock()
	c := a.components[string(raw)]
	a.mu.Unlock()
	if nonces := md.Get(pendingKey); c == nil && len(nonces) == 1 {
		// Sent behind its Attach, before the answer: wait for it.
		if err := a.awaitAttach(ctx, nonces[0]); err != nil {
			return nil, err
		}
		a.mu.Lock()
		c = a.components[string(raw)]
		a.mu.Unlock()
	}
	if c == nil {
		return nil, status.Error(codes.NotFound, errNotAttached)
	}
	return c, nil
}

// relay is the agent's handler of every call it has no service for: a
// plugin call of the control plane, relayed to the instance it attached.
func (a *Agent) relay(_ any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	who, err := caller(ctx, pki.RoleControl)
	if err != nil {
		return err
	}
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ctx)
	keys := md.Get(attachmentKey)
	if len(keys) != 1 {
		return status.Errorf(codes.Unimplemented, "proxy %s serves no method %s", a.Name, method)
	}
	c, err := a.attached(ctx, md, keys[0])
	if err != nil {
		return err
	}
	if !relayable(method, kindOf(c)) {
		return status.Errorf(codes.PermissionDenied, "proxy %s does not relay %s to a %s", a.Name, method, kindOf(c))
	}
	if !readOnly(method) && !strings.HasPrefix(method, "/ferry.plugin.v1.Disks/") {
		// What changes something is kept in the proxy's log.
		a.log().Info("relayed call", "method", method, "control_plane", who.Name)
	}
	conn, _ := sdk.InstanceConn(c)
	// The call's deadline and cancellation go along; its metadata does
	// not (the instance's own connection addresses it).
	cctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, metadata.MD{}))
	defer cancel()
	cs, err := conn.NewStream(cctx, &relayDesc, method, grpc.ForceCodecV2(relayCodec{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var m rawMessage
			if err := ss.RecvMsg(&m); err != nil {
				if err == io.EOF {
					cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(&m); err != nil {
				return // the plugin's side broke: RecvMsg below says how
			}
		}
	}()
	for {
		var m rawMessage
		if err := cs.RecvMsg(&m); err != nil {
			if err == io.EOF {
				return nil
			}
			return err // the plugin's status, details and all
		}
		if err := ss.SendMsg(&m); err != nil {
			return err
		}
	}
}

// rawMessage is a message relayed as it came, undecoded.
type rawMessage struct{ data mem.BufferSlice }

// relayCodec passes rawMessages and encodedMessages through as they are,
// decodes a recvData in place (see datacodec.go) and encodes and decodes
// every other message with the SDK's codec. Proxies serve with it, and
// the source half's data stream uses it.
type relayCodec struct{}

var _ encoding.CodecV2 = relayCodec{}

func (relayCodec) Name() string { return "proto" }

func (relayCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *rawMessage:
		data := m.data
		m.data = nil
		return data, nil // gRPC frees it once sent
	case *encodedMessage:
		return m.data, nil // the reference the sender took for this send
	}
	return sdk.MessageCodec().Marshal(v)
}

func (relayCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *rawMessage:
		data.Ref() // gRPC frees data when this returns
		m.data = data
		return nil
	case *recvData:
		var buf mem.Buffer
		if len(data) == 1 {
			buf = data[0]
			buf.Ref() // gRPC frees data when this returns
		} else {
			buf = data.MaterializeToBuffer(sdk.MessageBuffers())
		}
		return m.retain(buf)
	}
	return sdk.MessageCodec().Unmarshal(data, v)
}

// Control returns an instance of plugin block b, of kind, whose calls run
// on a proxy: one of site first (when it has one), then the others the
// job may use (names, best first; any when empty), each only when its
// Hello says it has the plugin. When that proxy dies, the calls that come
// after go to another one, and moved is told why; a call cut by the death
// is repeated on the other proxy only when it changes nothing or never
// reached the proxy. Call Greet first. where names the proxy chosen.
func (p *Pool) Control(ctx context.Context, names []string, site string, kind sdk.Kind, b Block, moved func(msg string)) (component any, caps sdk.Capabilities, where string, err error) {
	comp, err := encodeComponent(b.Type, b.Config)
	if err != nil {
		return nil, caps, "", fmt.Errorf("%s %q: %w", kind, b.Type, err)
	}
	rc := &relayConn{p: p, kind: kind, comp: comp, names: names, site: site, moved: moved}
	if _, _, _, err := rc.current(ctx); err != nil {
		return nil, caps, "", err
	}
	where = rc.name
	c := sdk.NewClient(rc, sdk.ClientOptions{Name: fmt.Sprintf("%s %q on proxy %s", kind, b.Type, where), NoDirect: true})
	if len(rc.caps) > 0 {
		// The proxy configured the instance: its plugin serves the type.
		if err := json.Unmarshal(rc.caps, &caps); err != nil {
			return nil, caps, "", fmt.Errorf("proxy %s said the capabilities of %s %q in a form not understood: %w", where, kind, b.Type, err)
		}
	} else {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, caps, "", err
		}
		ci, ok := info.Component(kind, b.Type)
		if !ok {
			return nil, caps, "", fmt.Errorf("plugin %s on proxy %s serves no %s %q: %w", info.Name, where, kind, b.Type, errdefs.ErrNotFound)
		}
		caps = ci.Capabilities
	}
	switch kind {
	case sdk.KindSource:
		component = c.AttachSource("")
	case sdk.KindTarget:
		component = c.AttachTarget("")
	default:
		component = c.AttachRepository("")
	}
	return component, caps, where, nil
}

// relayConn is the control plane's connection to an attached instance,
// through whichever proxy relays it now.
type relayConn struct {
	p     *Pool
	kind  sdk.Kind
	comp  *proxyv1.Component
	names []string
	site  string
	moved func(string)

	mu   sync.Mutex
	m    *member // nil: choose again
	name string  // of the proxy chosen last
	key  string
	caps []byte // the instance's capabilities, as its proxy said them
	// pending is the Attach under way on m whose answer calls do not
	// wait for; nil once it answered.
	pending *pendingAttach
	// refused are the proxies whose Attach of the block failed, with
	// why: they are not chosen again by this connection.
	refused map[string]error
}

// attachment is what a proxy's Attach answered for a plugin block.
type attachment struct {
	key  string
	caps []byte
}

// pendingAttach is an Attach under way whose answer the relayed calls
// sent behind it do not wait for (see proxy.proto's Attach).
type pendingAttach struct {
	nonce string
	done  chan struct{} // closed when it answered
	err   error         // why it failed
}

// failed reports, once pa answered, whether it failed; it waits for the
// answer at most as long as ctx lets it.
func (pa *pendingAttach) failed(ctx context.Context) error {
	select {
	case <-pa.done:
		return pa.err
	case <-ctx.Done():
		return nil
	}
}

// attach starts an Attach of rc's block on m that no call waits for, or
// returns the one under way; its answer goes to p.attached.
func (p *Pool) attach(m *member, rc *relayConn) *pendingAttach {
	k := rc.attachKey(m)
	p.mu.Lock()
	defer p.mu.Unlock()
	if pa := p.attaching[k]; pa != nil {
		return pa
	}
	pa := &pendingAttach{nonce: rand.Text(), done: make(chan struct{})}
	if p.attaching == nil {
		p.attaching = map[string]*pendingAttach{}
	}
	p.attaching[k] = pa
	conn, req := m.conn, &proxyv1.AttachRequest{Kind: string(rc.kind), Component: rc.comp, Nonce: pa.nonce}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), helloTimeout)
		resp, err := proxyv1.NewProxyClient(conn).Attach(ctx, req)
		cancel()
		p.mu.Lock()
		delete(p.attaching, k)
		if err == nil {
			p.remember(k, resp)
		} else {
			pa.err = explained(err)
		}
		p.mu.Unlock()
		close(pa.done)
	}()
	return pa
}

// remember keeps what an Attach answered for the instance named k (see
// relayConn.attachKey) and returns it. Callers hold p.mu.
func (p *Pool) remember(k string, resp *proxyv1.AttachResponse) attachment {
	if p.attached == nil {
		p.attached = map[string]attachment{}
	}
	a := attachment{key: resp.GetKey(), caps: resp.GetCapabilities()}
	p.attached[k] = a
	return a
}

// helloCaps are the capabilities m's Hello gave for the block's type; ok
// is false when it gave none (a proxy older than Attach's nonce).
func (rc *relayConn) helloCaps(m *member) (caps []byte, ok bool) {
	for _, pi := range m.hello.GetPlugins() {
		if c, ok := pi.GetCapabilities()[capsKey(rc.kind, rc.comp.GetType())]; ok {
			return c, true
		}
	}
	return nil, false
}

// attachKey names the instance on proxy m in Pool.attached. The pool
// keeps what each Attach answered: a control plane's later sessions (in
// ferry server) use the instance the proxy keeps without asking, a round
// trip of the link each; a proxy that lost it (it restarted) answers the
// first call with errNotAttached, and the instance is attached again.
func (rc *relayConn) attachKey(m *member) string {
	return m.Name + "\x00" + componentKey(rc.kind, rc.comp)
}

// serves reports whether a proxy's Hello lists a plugin serving the
// instance's type. Callers hold p.mu.
func (rc *relayConn) serves(m *member) bool {
	for _, pi := range m.hello.GetPlugins() {
		var types []string
		switch rc.kind {
		case sdk.KindSource:
			types = pi.GetSources()
		case sdk.KindTarget:
			types = pi.GetTargets()
		default:
			types = pi.GetRepositories()
		}
		if slices.Contains(types, rc.comp.GetType()) {
			return true
		}
	}
	return false
}

// choices are the proxies that may relay, best first.
func (rc *relayConn) choices() (ok []*member, why []string) {
	p := rc.p
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		switch {
		case !allowed(rc.names, m.Name):
		case m.err != nil:
			why = append(why, fmt.Sprintf("proxy %s: %v", m.Name, m.err))
		case m.hello == nil:
			why = append(why, fmt.Sprintf("proxy %s: not reached", m.Name))
		case !rc.serves(m):
			why = append(why, fmt.Sprintf("proxy %s: has no plugin serving %s %q", m.Name, rc.kind, rc.comp.GetType()))
		case rc.refused[m.Name] != nil:
			why = append(why, fmt.Sprintf("proxy %s: %v", m.Name, rc.refused[m.Name]))
		default:
			ok = append(ok, m)
		}
	}
	rank := func(m *member) (int, int) {
		site := 1
		if rc.site != "" && m.Site == rc.site {
			site = 0
		}
		order := slices.Index(rc.names, m.Name)
		if order < 0 {
			order = len(rc.names)
		}
		return site, order
	}
	slices.SortFunc(ok, func(a, b *member) int {
		as, ao := rank(a)
		bs, bo := rank(b)
		if as != bs {
			return as - bs
		}
		if ao != bo {
			return ao - bo
		}
		return strings.Compare(a.Name, b.Name)
	})
	slices.Sort(why)
	return ok, why
}

// current returns the connection of the proxy relaying now, the key of
// the instance there and the Attach under way that calls follow (nil
// when it answered), attaching the instance on the best proxy when there
// is none. An Attach on a proxy whose Hello gave the type's capabilities
// is not waited for: the calls go right behind it, and the proxy holds
// them until it has ended.
func (rc *relayConn) current(ctx context.Context) (*grpc.ClientConn, string, *pendingAttach, error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.m != nil {
		rc.p.mu.Lock()
		conn, err := rc.m.conn, rc.m.err
		rc.p.mu.Unlock()
		if err == nil && conn != nil && !rc.refusedPending() {
			return conn, rc.key, rc.pending, nil
		}
		rc.m, rc.pending = nil, nil // the pool found it down, or it refused the Attach
	}
	ok, why := rc.choices()
	for _, m := range ok {
		rc.p.mu.Lock()
		conn := m.conn
		a, known := rc.p.attached[rc.attachKey(m)]
		rc.p.mu.Unlock()
		var pa *pendingAttach
		switch caps, said := rc.helloCaps(m); {
		case known:
		case said:
			pa = rc.p.attach(m, rc)
			a = attachment{key: instanceKey(rc.kind, rc.comp), caps: caps}
		default:
			actx, cancel := context.WithTimeout(ctx, helloTimeout)
			resp, err := proxyv1.NewProxyClient(conn).Attach(actx, &proxyv1.AttachRequest{Kind: string(rc.kind), Component: rc.comp})
			cancel()
			if err != nil {
				why = append(why, fmt.Sprintf("proxy %s: %v", m.Name, explained(err)))
				continue
			}
			rc.p.mu.Lock()
			a = rc.p.remember(rc.attachKey(m), resp)
			rc.p.mu.Unlock()
		}
		if rc.name != "" && rc.name != m.Name && rc.moved != nil {
			rc.moved(fmt.Sprintf("the %s's calls moved from proxy %s to proxy %s", rc.kind, rc.name, m.Name))
		}
		rc.m, rc.name, rc.key, rc.caps, rc.pending = m, m.Name, a.key, a.caps, pa
		return conn, rc.key, pa, nil
	}
	if len(why) == 0 {
		why = []string{"the configuration declares none the job may use"}
	}
	return nil, "", nil, fmt.Errorf("no proxy can act for the %s %q (%s): %w", rc.kind, rc.comp.GetType(), strings.Join(why, "; "), errdefs.ErrUnavailable)
}

// again decides, after a call failed with err on the proxy relaying now,
// whether to make it again (on another proxy, or after attaching again),
// and prepares that.
//
// A call sent behind an Attach (pa) that failed reached no plugin: the
// proxy that refused the Attach is not chosen again, and the call is made
// on the next one (refused says so).
func (rc *relayConn) again(ctx context.Context, method string, pa *pendingAttach, err error) (retry, refused bool) {
	st, _ := status.FromError(err)
	rc.mu.Lock()
	m := rc.m
	rc.mu.Unlock()
	var why error
	if pa != nil {
		why = pa.failed(ctx)
	}
	switch {
	case m == nil:
		return false, false
	case why != nil:
		rc.mu.Lock()
		if rc.m == m {
			rc.m, rc.pending = nil, nil
		}
		rc.refuse(m.Name, why)
		rc.mu.Unlock()
		return true, true
	case isNotAttached(err):
		rc.p.mu.Lock()
		delete(rc.p.attached, rc.attachKey(m))
		rc.p.mu.Unlock()
		rc.mu.Lock()
		rc.m = nil // the call went nowhere: attach again
		rc.mu.Unlock()
		return true, false
	case st.Code() != codes.Unavailable:
		return false, false
	}
	if bad := rc.p.Greet(ctx, []string{m.Name}); bad[m.Name] == nil {
		return false, false // the proxy is there: the plugin behind it failed
	}
	rc.mu.Lock()
	rc.m = nil // later calls go to another proxy
	rc.mu.Unlock()
	return readOnly(method) || neverSent(st), false
}

// readOnly reports whether a plugin method changes nothing, so that a
// call of it cut short can be made again.
func readOnly(method string) bool {
	_, name, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	for _, p := range []string{"Get", "List", "Describe", "ChangedAreas", "ProbeTransport"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// neverSent reports whether a call failed because no connection to the
// proxy could be made: gRPC then sent nothing. gRPC says so only in its
// message.
func neverSent(st *status.Status) bool {
	return strings.Contains(st.Message(), "Error while dialing")
}

// refusedPending reports whether the Attach the calls on rc.m follow has
// answered with a refusal, which it then keeps (refuse); an Attach that
// answered is no longer pending. Callers hold rc.mu.
func (rc *relayConn) refusedPending() bool {
	pa := rc.pending
	if pa == nil {
		return false
	}
	select {
	case <-pa.done:
	default:
		return false
	}
	rc.pending = nil
	if pa.err == nil {
		return false
	}
	rc.refuse(rc.m.Name, pa.err)
	return true
}

// refuse keeps why proxy name refused the Attach of rc's block. Callers
// hold rc.mu.
func (rc *relayConn) refuse(name string, why error) {
	if rc.refused == nil {
		rc.refused = map[string]error{}
	}
	rc.refused[name] = why
}

// relayed is ctx with the metadata of a call relayed to instance key,
// sent behind pa when it is under way.
func relayed(ctx context.Context, key string, pa *pendingAttach) context.Context {
	if pa != nil {
		return metadata.AppendToOutgoingContext(ctx, attachmentKey, key, pendingKey, pa.nonce)
	}
	return metadata.AppendToOutgoingContext(ctx, attachmentKey, key)
}

// Invoke makes a call again once when it went nowhere (see again), and
// once more on each proxy that refused its Attach.
func (rc *relayConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	for tries := 0; ; {
		conn, key, pa, err := rc.current(ctx)
		if err != nil {
			return err
		}
		err = conn.Invoke(relayed(ctx, key, pa), method, args, reply, opts...)
		if err == nil || tries > 0 {
			return err
		}
		retry, refused := rc.again(ctx, method, pa, err)
		if !retry {
			return err
		}
		if !refused {
			tries++
		}
	}
}

func (rc *relayConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	for try := 0; ; try++ {
		conn, key, pa, err := rc.current(ctx)
		if err != nil {
			return nil, err
		}
		cs, err := conn.NewStream(relayed(ctx, key, pa), desc, method, opts...)
		if err == nil {
			return &relayStream{ClientStream: cs, rc: rc, method: method, pa: pa}, nil
		}
		if try > 0 {
			return nil, err
		}
		if retry, _ := rc.again(ctx, method, pa, err); !retry {
			return nil, err
		}
	}
}

// relayStream is a relayed stream: an error that shows the instance gone
// from its proxy, or the proxy gone, or its Attach refused, sends the
// calls that come after elsewhere (the stream itself is not made again:
// part of it went).
type relayStream struct {
	grpc.ClientStream
	rc     *relayConn
	method string
	pa     *pendingAttach
}

func (s *relayStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil && err != io.EOF {
		s.rc.again(s.ClientStream.Context(), s.method, s.pa, err)
	}
	return err
}

// isNotAttached reports whether err is the proxy's answer to a call for
// an instance it does not hold.
func isNotAttached(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.NotFound && st.Message() == errNotAttached
}
