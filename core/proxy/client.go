package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/pki"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/core/replicameta"
	"github.com/ferry-dr/ferry/core/traffic"
	"github.com/ferry-dr/ferry/sdk"
)

// Member is a proxy the control plane may use.
type Member struct {
	Name     string
	Address  string
	Site     string
	MaxTasks int
}

// Pool is the control plane's side of its proxies: it greets them, places
// disk tasks on their free slots and runs the tasks. It is safe for
// concurrent use by every session of the control plane, whose tasks share
// the slots.
type Pool struct {
	creds   *pki.Credentials
	version string
	log     hclog.Logger
	// Dial opens connections; nil dials TCP. Set before first use.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Traffic holds the traffic rules and their rates now; nil when there
	// are none. Set before first use; call PushRates when rates change.
	Traffic *traffic.Registry

	mu      sync.Mutex
	closed  bool
	freed   chan struct{} // closed and replaced when a slot is freed
	members map[string]*member
	waiting int // tasks waiting in place for free slots
	// writing is the proxy that writes each replica now (by writingKey),
	// with the number of the pool's tasks writing it there: the disks of
	// a replica are written by one proxy at a time, as a target plugin
	// may let one process write a replica (the local plugin keeps one
	// undo log per replica, and refuses a second writer).
	writing map[string]*replicaWriter
	// attached is what the proxies' Attach answered, by proxy and block
	// (see relayConn.attachKey).
	attached map[string]attachment
	// attaching are the Attach calls under way that no call waits for,
	// by the same key.
	attaching map[string]*pendingAttach
}

// replicaWriter is the proxy writing a replica, and how many tasks.
type replicaWriter struct {
	proxy string
	tasks int
}

func writingKey(t Task) string { return t.Job + "\x00" + t.Replica }

type member struct {
	Member
	conn   *grpc.ClientConn
	client proxyv1.ProxyClient
	hello  *proxyv1.HelloResponse
	err    error // why the proxy cannot be used; nil when it can
	ours   int   // task slots our tasks hold
	// reach is how the proxy reaches the disks of a job's VM (by
	// reachKey), asked once per pool; probing holds the probes under way,
	// closed when they end.
	reach   map[string][2]Reach
	probing map[string]chan struct{}
	// end is the proxy as an end of a traffic rule's link, its address
	// resolved when it was greeted.
	end traffic.End
	// greeting is closed when the hello under way ends; nil when none is.
	greeting chan struct{}
	// greeted is when the last hello that answered did.
	greeted time.Time
}

func reachKey(t Task) string { return t.Job + "\x00" + t.VM }

// Probe asks the proxies t may use how they reach the disks of t's VM
// (and the target's storage), unless they were asked already, as placing
// t's disks does first. A session calls it as it starts on a VM, so that
// the answers (a round trip of the link to each proxy) come while it
// does the rest; placing a disk then waits for the probe under way.
func (p *Pool) Probe(ctx context.Context, t Task) { p.probe(ctx, t) }

// probe asks the proxies t may use, that were not asked yet, how they
// reach t's source disks and target storage, and waits for the probes
// of them under way.
func (p *Pool) probe(ctx context.Context, t Task) {
	key := reachKey(t)
	p.mu.Lock()
	type asking struct {
		m      *member
		client proxyv1.ProxyClient
	}
	var todo []asking
	var wait []chan struct{}
	for _, m := range p.members {
		if !m.usableFor(t) {
			continue
		}
		if ch, under := m.probing[key]; under {
			wait = append(wait, ch)
		} else if _, asked := m.reach[key]; !asked {
			todo = append(todo, asking{m, m.client})
		}
	}
	done := make(chan struct{})
	for _, a := range todo {
		if a.m.probing == nil {
			a.m.probing = map[string]chan struct{}{}
		}
		a.m.probing[key] = done
	}
	p.mu.Unlock()
	defer func() {
		for _, ch := range wait {
			select {
			case <-ch:
			case <-ctx.Done():
			}
		}
	}()
	if len(todo) == 0 {
		return
	}
	defer func() {
		p.mu.Lock()
		for _, a := range todo {
			delete(a.m.probing, key)
		}
		p.mu.Unlock()
		close(done)
	}()
	sc, err1 := encodeComponent(t.Source.Type, t.Source.Config)
	tc, err2 := encodeComponent(t.Target.Type, t.Target.Config)
	if err1 != nil || err2 != nil {
		return // Run reports the configuration's error
	}
	var wg sync.WaitGroup
	for _, a := range todo {
		m := a.m
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, helloTimeout)
			defer cancel()
			resp, err := a.client.Probe(pctx, &proxyv1.ProbeRequest{Source: sc, Target: tc, Vm: t.VM})
			var r [2]Reach // unknown when the proxy cannot say
			if err == nil {
				for i, x := range []*proxyv1.Reach{resp.GetSource(), resp.GetTarget()} {
					r[i] = Reach{Known: x.GetKnown(), Mode: x.GetMode(), Why: x.GetWhy()}
				}
			} else {
				p.log.Warn("probe a proxy's transports", "proxy", m.Name, "error", err)
			}
			p.mu.Lock()
			if m.reach == nil {
				m.reach = map[string][2]Reach{}
			}
			m.reach[key] = r
			p.mu.Unlock()
		})
	}
	wg.Wait()
}

// NewPool returns a pool of proxies reached with creds.
func NewPool(members []Member, creds *pki.Credentials, version string, log hclog.Logger) *Pool {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	p := &Pool{creds: creds, version: version, log: log, freed: make(chan struct{}), members: map[string]*member{}}
	for _, m := range members {
		p.members[m.Name] = &member{Member: m}
	}
	return p
}

// Close closes the connections to the proxies.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, m := range p.members {
		if m.conn != nil {
			m.conn.Close()
			m.conn = nil
		}
	}
	return nil
}

// helloTimeout bounds the greeting of one proxy.
const helloTimeout = 10 * time.Second

// Greet says hello to every proxy of names (every proxy when names is
// empty) and returns why each one that cannot be used cannot, by name.
func (p *Pool) Greet(ctx context.Context, names []string) map[string]error {
	return p.GreetSince(ctx, names, 0)
}

// GreetSince is Greet, but a proxy whose last hello answered within
// fresh is not asked again: a session's start takes the answers of the
// greetings `ferry run` began as it started (Warm), moments before,
// instead of a round trip of the link to each proxy. A proxy whose last
// hello failed is asked again.
func (p *Pool) GreetSince(ctx context.Context, names []string, fresh time.Duration) map[string]error {
	p.mu.Lock()
	var todo, ask []*member
	now := time.Now()
	for _, m := range p.members {
		if !allowed(names, m.Name) {
			continue
		}
		todo = append(todo, m)
		if m.greeting != nil || m.err != nil || m.hello == nil || now.Sub(m.greeted) >= fresh {
			ask = append(ask, m)
		}
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range ask {
		wg.Go(func() { p.greet(ctx, m) })
	}
	wg.Wait()
	bad := map[string]error{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range todo {
		if m.err != nil {
			bad[m.Name] = m.err
		}
	}
	return bad
}

// greet says hello to m, or waits for the hello under way (another
// Greet's, or Warm's, which began moments ago).
func (p *Pool) greet(ctx context.Context, m *member) {
	p.mu.Lock()
	if ch := m.greeting; ch != nil {
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		return
	}
	ch := make(chan struct{})
	m.greeting = ch
	p.mu.Unlock()
	hello, conn, err := p.hello(ctx, m)
	end := endOf(m.Member)
	p.mu.Lock()
	defer p.mu.Unlock()
	m.greeting = nil
	close(ch)
	if p.closed {
		if conn != nil && conn != m.conn {
			conn.Close()
		}
		return
	}
	m.end = end
	if m.conn != conn {
		// A new connection (hello reuses the one there is): the tasks
		// running hold the client of the old one, if any.
		if m.conn != nil {
			m.conn.Close()
		}
		m.conn = conn
		if conn != nil {
			m.client = proxyv1.NewProxyClient(conn)
		}
	}
	m.hello, m.err = hello, err
	if err == nil {
		m.greeted = time.Now()
	}
}

// Warm greets every proxy in the background, so that the handshakes of
// the connections and the Hellos run while the caller does its own work:
// a run that starts at once greets its proxies then, and its Greet waits
// for these rather than asking again. Over a WAN, that is three round
// trips of the link to each proxy a one-shot run need not wait for.
func (p *Pool) Warm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		go p.greet(context.Background(), m)
	}
}

// allowed reports whether a task limited to names (none: any) may use
// proxy name.
func allowed(names []string, name string) bool {
	return len(names) == 0 || slices.Contains(names, name)
}

// usableFor reports whether t may run on m now. Callers hold p.mu.
func (m *member) usableFor(t Task) bool {
	return m.err == nil && m.hello != nil && allowed(t.Proxies, m.Name)
}

func (p *Pool) hello(ctx context.Context, m *member) (*proxyv1.HelloResponse, *grpc.ClientConn, error) {
	p.mu.Lock()
	conn := m.conn
	p.mu.Unlock()
	if conn == nil {
		var err error
		conn, err = dial(m.Address, p.creds, pki.Identity{Role: pki.RoleProxy, Name: m.Name}, p.Dial)
		if err != nil {
			return nil, nil, fmt.Errorf("proxy %s at %s: %w", m.Name, m.Address, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	h, err := proxyv1.NewProxyClient(conn).Hello(ctx, &proxyv1.HelloRequest{Version: p.version}, grpc.WaitForReady(false))
	if err != nil {
		return nil, conn, fmt.Errorf("proxy %s at %s: %w", m.Name, m.Address, explained(err))
	}
	if h.GetSite() != "" && m.Site != "" && h.GetSite() != m.Site {
		return nil, conn, fmt.Errorf("proxy %s at %s says its site is %q, the configuration says %q", m.Name, m.Address, h.GetSite(), m.Site)
	}
	return h, conn, nil
}

// Task is one disk's data path, to run on a source and a target proxy.
type Task struct {
	Job     string
	VM      string
	Disk    int
	Proxies []string // the proxies the job may use, best first; empty: any
	// SourceSite and TargetSite are where the source's and the target's
	// storage is; "" when unknown.
	SourceSite, TargetSite string

	Source, Target, Repository Block
	Snapshot                   string
	Capacity                   int64
	Replica                    string
	// Changed and Allocated are as in datamover.Request.
	Changed, Allocated []sdk.Extent
	TargetZero         bool
	Fresh              bool
	BlockSize          int
	// Compression is the job's setting (none, s2, zstd or auto): auto is
	// none when one proxy runs both halves, s2 between proxies of one
	// site and zstd between sites.
	Compression string
	Throttle    int64
	MetaPrefix  string
	Session     string
	Binding     replicameta.Binding

	// Ready is called once the source half has opened the disk and the
	// metadata; Progress with the bytes handled so far; Moved when the
	// task failed on proxies that could not be reached and is placed
	// again (with the proxies that cannot be used now, and why).
	Ready    func(Ready)
	Progress func(done int64)
	Moved    func(err error, down map[string]error)
}

// Block is a plugin block: its type and its configuration.
type Block struct {
	Type   string
	Config cty.Value
}

// Ready is what the source half says before it moves data.
type Ready struct {
	SourceProxy, TargetProxy string
	SourceWhy, TargetWhy     string // why each proxy was chosen
	Codec                    datamover.Codec
	Link                     datamover.Link
	// Rules are the traffic rules covering the link between the proxies.
	Rules                   []string
	Lane                    string
	Transport, TransportWhy string
	Distrusted              string
}

// Result is what a task did.
type Result struct {
	SourceProxy, TargetProxy string
	Stats                    datamover.Stats
	BytesWritten             int64
	SegmentsRecomputed       int
	BytesRecomputed          int64
	// Reconnects is how many times the data stream between the proxies
	// broke and was resumed.
	Reconnects int
	// Attempts is how many placements the task took.
	Attempts int
	// WriteBusy is how long the target proxy was busy writing.
	WriteBusy time.Duration
}

// ErrNoProxy is returned when no proxy can take a task.
var ErrNoProxy = errors.New("no proxy can take the task")

// candidates are the proxies t may be placed on now. Callers hold p.mu.
func (p *Pool) candidates(t Task) []Candidate {
	var out []Candidate
	for _, m := range p.members {
		if !m.usableFor(t) {
			continue
		}
		slots := int(m.hello.GetMaxTasks())
		if m.MaxTasks > 0 {
			slots = min(slots, m.MaxTasks)
		}
		r := m.reach[reachKey(t)]
		out = append(out, Candidate{Name: m.Name, Site: m.Site, MaxTasks: slots, Running: max(int(m.hello.GetRunning()), m.ours), Source: r[0], Target: r[1]})
	}
	return out
}

// Preview says where t would go now (after Greet), without taking slots,
// and the codec its link would get: for `ferry plan`. It decides by the
// rule Run places by (see choose), as if no task ran: a plan shows the
// choice, not the queue.
func (p *Pool) Preview(ctx context.Context, t Task) (Placement, datamover.Codec, error) {
	p.probe(ctx, t)
	p.mu.Lock()
	defer p.mu.Unlock()
	cands := p.candidates(t)
	for i := range cands {
		cands[i].Running = 0
	}
	pl, busy, err := p.choose(t, cands)
	switch {
	case err != nil:
		return Placement{}, 0, err
	case busy:
		return Placement{}, 0, fmt.Errorf("%w: no proxy has two free task slots", ErrNoProxy)
	}
	codec, err := datamover.ParseCodec(t.Compression, linkBetween(p.members[pl.Source], p.members[pl.Target]))
	return pl, codec, err
}

// choose places t on cands: where its halves go, or that every proxy
// able to take them is busy now (busy), or why none can take them at all
// (ErrNoProxy). Preview and place both decide by it. Callers hold p.mu.
//
// A task whose replica a proxy writes for another task has its target
// half on that proxy too, and waits for its slots: the other proxies are
// taken as unable to reach the replica while the proxy is a candidate.
func (p *Pool) choose(t Task, cands []Candidate) (pl Placement, busy bool, err error) {
	if len(cands) == 0 {
		return Placement{}, false, p.noProxy(t)
	}
	if w := p.writing[writingKey(t)]; w != nil && t.Replica != "" && slices.ContainsFunc(cands, func(c Candidate) bool { return c.Name == w.proxy }) {
		for i := range cands {
			if cands[i].Name != w.proxy {
				cands[i].Target = Reach{Known: true, Why: fmt.Sprintf("replica %s is written by proxy %s", t.Replica, w.proxy)}
			}
		}
	}
	if why := Unable(cands); why != "" {
		return Placement{}, false, fmt.Errorf("%w: %s", ErrNoProxy, why)
	}
	if pl, ok := Choose(cands, t.Proxies, t.SourceSite, t.TargetSite, t.VM); ok {
		return pl, false, nil
	}
	return Placement{}, true, nil
}

// place picks a source and a target proxy for t with free slots, and
// takes the slots; it waits while every eligible proxy is busy.
func (p *Pool) place(ctx context.Context, t Task) (src, dst *member, pl Placement, err error) {
	for {
		p.probe(ctx, t)
		p.mu.Lock()
		pl, busy, err := p.choose(t, p.candidates(t))
		if err != nil {
			p.mu.Unlock()
			return nil, nil, Placement{}, err
		}
		if !busy {
			src, dst = p.members[pl.Source], p.members[pl.Target]
			src.ours++
			dst.ours++
			if t.Replica != "" {
				// A writer that cannot be reached any more was not a
				// candidate: the replica is written here from now on.
				w := p.writer(t)
				w.proxy = dst.Name
				w.tasks++
			}
			p.mu.Unlock()
			return src, dst, pl, nil
		}
		freed := p.freed
		p.waiting++
		p.mu.Unlock()
		select {
		case <-freed:
		case <-time.After(time.Second):
			// Another control plane's tasks may have ended.
			p.Greet(ctx, t.Proxies)
		case <-ctx.Done():
			err = ctx.Err()
		}
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
		if err != nil {
			return nil, nil, Placement{}, err
		}
	}
}

func (p *Pool) noProxy(t Task) error {
	var why []string
	for _, m := range p.members {
		if !allowed(t.Proxies, m.Name) {
			continue
		}
		switch {
		case m.err != nil:
			why = append(why, m.err.Error())
		case m.hello == nil:
			why = append(why, fmt.Sprintf("proxy %s was not reached yet", m.Name))
		}
	}
	sort.Strings(why)
	if len(why) == 0 {
		return fmt.Errorf("%w: the job names no proxy that is configured", ErrNoProxy)
	}
	return fmt.Errorf("%w: %s", ErrNoProxy, strings.Join(why, "; "))
}

func (p *Pool) release(t Task, ms ...*member) {
	p.mu.Lock()
	for _, m := range ms {
		m.ours--
	}
	p.unwrite(t)
	p.mu.Unlock()
}

// unwrite ends one task's (or hold's) share in writing t's replica, and
// wakes the tasks waiting in place. Callers hold p.mu.
func (p *Pool) unwrite(t Task) {
	if w := p.writing[writingKey(t)]; w != nil && t.Replica != "" {
		if w.tasks--; w.tasks == 0 {
			delete(p.writing, writingKey(t))
		}
	}
	close(p.freed)
	p.freed = make(chan struct{})
}

// hold keeps proxy the writer of t's replica, as a task placed there
// would, until unhold.
func (p *Pool) hold(t Task, proxy string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.writer(t)
	if w.tasks == 0 {
		w.proxy = proxy
	}
	w.tasks++
}

// writer returns the entry of t's replica in p.writing, made when there
// is none. Callers hold p.mu.
func (p *Pool) writer(t Task) *replicaWriter {
	if p.writing == nil {
		p.writing = map[string]*replicaWriter{}
	}
	w := p.writing[writingKey(t)]
	if w == nil {
		w = &replicaWriter{}
		p.writing[writingKey(t)] = w
	}
	return w
}

func (p *Pool) unhold(t Task) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unwrite(t)
}

func extentsTo(es []sdk.Extent) []*proxyv1.Extent {
	out := make([]*proxyv1.Extent, len(es))
	for i, e := range es {
		out[i] = &proxyv1.Extent{Offset: e.Offset, Length: e.Length}
	}
	return out
}

func taskID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// endOf is a proxy as one end of a traffic rule's link.
func endOf(m Member) traffic.End {
	e := traffic.End{Site: m.Site}
	if host, _, err := net.SplitHostPort(m.Address); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			e.Addr = a
		} else if ips, err := net.LookupIP(host); err == nil && len(ips) > 0 {
			e.Addr, _ = netip.AddrFromSlice(ips[0])
			e.Addr = e.Addr.Unmap()
		}
	}
	return e
}

// PushRates gives every proxy running tasks of this pool the traffic
// rules' rates now (after a window opened or closed).
func (p *Pool) PushRates() {
	if p.Traffic == nil {
		return
	}
	var req proxyv1.SetRatesRequest
	for name, rate := range p.Traffic.Rates() {
		req.Rules = append(req.Rules, &proxyv1.RuleRate{Name: "rule/" + name, Rate: rate})
	}
	p.mu.Lock()
	var clients []proxyv1.ProxyClient
	for _, m := range p.members {
		if m.ours > 0 && m.client != nil {
			clients = append(clients, m.client)
		}
	}
	p.mu.Unlock()
	for _, c := range clients {
		ctx, cancel := context.WithTimeout(context.Background(), helloTimeout)
		if _, err := c.SetRates(ctx, &req); err != nil {
			p.log.Warn("give a proxy the traffic rules' rates", "error", err)
		}
		cancel()
	}
}

// targetHalf follows a target half's events: Ready, then its end (nil
// when it ended with Done).
func targetHalf(stream proxyv1.Proxy_TargetClient) error {
	ev, err := stream.Recv()
	if err != nil {
		return explained(err)
	}
	if ev.GetReady() == nil {
		return fmt.Errorf("it answered with %T before it was ready", ev.GetEvent())
	}
	if _, err := stream.Recv(); err != nil {
		return explained(err)
	}
	return nil
}

// sourceFailed is the error of a task whose source half failed: the
// target half's when it ended first (the target proxy is gone).
func (p *Pool) sourceFailed(src *member, err error, targetEnd chan error) error {
	select {
	case terr := <-targetEnd:
		if terr != nil {
			return terr
		}
	default:
	}
	return fmt.Errorf("source proxy %s: %w", src.Name, explained(err))
}

// linkBetween says what lies between two proxies: nothing when they are
// one, a LAN when they share a site, a WAN otherwise.
func linkBetween(src, dst *member) datamover.Link {
	switch {
	case src == dst:
		return datamover.LinkLocal
	case src.Site != "" && src.Site == dst.Site:
		return datamover.LinkLAN
	}
	return datamover.LinkWAN
}

// MaxAttempts is how many times a task is placed on proxies when a proxy
// it ran on could not be reached.
const MaxAttempts = 3

// Run runs one disk task on a source and a target proxy. When a proxy of
// the task dies or cannot be reached, the task moves to proxies that can
// (at most MaxAttempts placements): the new source half finds in the
// repository what the old one made durable, and goes on from there.
func (p *Pool) Run(ctx context.Context, t Task) (Result, error) {
	held := false
	defer func() {
		if held {
			p.unhold(t)
		}
	}()
	for attempt := 1; ; attempt++ {
		res, err := p.run(ctx, t)
		if err == nil || attempt >= MaxAttempts || ctx.Err() != nil || status.Code(err) != codes.Unavailable {
			res.Attempts = attempt
			return res, err
		}
		// The target proxy of the failed attempt may keep the replica's
		// disk open until it hears the task was abandoned: while it can
		// be reached, the next attempt writes there too, where another
		// proxy would find the disk "written by another process".
		if !held && t.Replica != "" && res.TargetProxy != "" {
			p.hold(t, res.TargetProxy)
			held = true
		}
		// Greet again: a proxy that is gone is no longer placed.
		bad := p.Greet(ctx, t.Proxies)
		if t.Moved != nil {
			t.Moved(err, bad)
		}
	}
}

func (p *Pool) run(ctx context.Context, t Task) (Result, error) {
	src, dst, pl, err := p.place(ctx, t)
	if err != nil {
		return Result{}, err
	}
	defer p.release(t, src, dst)
	p.mu.Lock()
	srcClient, dstClient := src.client, dst.client
	route := traffic.Link{From: src.end, To: dst.end}
	p.mu.Unlock()
	res := Result{SourceProxy: src.Name, TargetProxy: dst.Name}
	link := linkBetween(src, dst)
	codec, err := datamover.ParseCodec(t.Compression, link)
	if err != nil {
		return res, err
	}
	tc, err := encodeComponent(t.Target.Type, t.Target.Config)
	if err != nil {
		return res, fmt.Errorf("the target's configuration: %w", err)
	}
	sc, err := encodeComponent(t.Source.Type, t.Source.Config)
	if err != nil {
		return res, fmt.Errorf("the source's configuration: %w", err)
	}
	rc, err := encodeComponent(t.Repository.Type, t.Repository.Config)
	if err != nil {
		return res, fmt.Errorf("the repository's configuration: %w", err)
	}
	id := taskID()
	var limits traffic.Limits
	var rules []*proxyv1.RuleRate
	if p.Traffic != nil {
		var lims []*datamover.Limiter
		limits, lims = p.Traffic.Link(route, time.Now())
		for i, name := range limits.Rules {
			rules = append(rules, &proxyv1.RuleRate{Name: "rule/" + name, Rate: lims[i].Rate()})
		}
	}
	if t.Throttle > 0 {
		// The job's throttle is shared by its tasks, as in one process.
		rules = append(rules, &proxyv1.RuleRate{Name: "job/" + t.Job, Rate: t.Throttle})
	}

	// The two halves start at once: the source half's data stream waits
	// on the target proxy for the target half, where asking the target
	// proxy first would cost a round trip of the link between the sites
	// before the source half starts.
	tctx, cancelTarget := context.WithCancel(ctx)
	defer cancelTarget()
	tstream, err := dstClient.Target(tctx, &proxyv1.TargetTask{Task: id, Target: tc, Replica: t.Replica, Disk: int32(t.Disk), Capacity: t.Capacity})
	if err != nil {
		return res, fmt.Errorf("target proxy %s: %w", dst.Name, explained(err))
	}

	b := t.Binding
	req := &proxyv1.SourceTask{
		Task: id, Source: sc, Repository: rc, Vm: t.VM, Snapshot: t.Snapshot, Disk: int32(t.Disk), Capacity: t.Capacity,
		HasChanged: t.Changed != nil, Changed: extentsTo(t.Changed),
		HasAllocated: t.Allocated != nil, Allocated: extentsTo(t.Allocated),
		TargetZero: t.TargetZero, BlockSize: int32(t.BlockSize), Codec: int32(codec),
		MetaPrefix: t.MetaPrefix, Session: t.Session, Fresh: t.Fresh,
		Binding:       &proxyv1.Binding{Replica: b.Replica, Incarnation: b.Incarnation, Point: b.Point, PointSession: b.PointSession, Capacity: b.Capacity},
		TargetAddress: dst.Address, TargetName: dst.Name, Rules: rules,
	}
	// The target half's start and end come while the source half runs:
	// when the target half cannot start, or its proxy dies, the source
	// half is stopped at once (and the task placed again) instead of
	// waiting for it, or trying to reach it for minutes.
	sctx, cancelSource := context.WithCancel(ctx)
	defer cancelSource()
	targetEnd := make(chan error, 1)
	go func() {
		err := targetHalf(tstream)
		if err != nil {
			err = fmt.Errorf("target proxy %s: %w", dst.Name, err)
		}
		targetEnd <- err // before the source half ends: sourceFailed looks
		if err != nil {
			cancelSource()
		}
	}()
	sstream, err := srcClient.Source(sctx, req)
	if err != nil {
		return res, p.sourceFailed(src, err, targetEnd)
	}
	for {
		ev, err := sstream.Recv()
		if err != nil {
			return res, p.sourceFailed(src, err, targetEnd)
		}
		switch e := ev.GetEvent().(type) {
		case *proxyv1.TaskEvent_Ready:
			if t.Ready != nil {
				r := e.Ready
				t.Ready(Ready{SourceProxy: src.Name, TargetProxy: dst.Name, SourceWhy: pl.SourceWhy, TargetWhy: pl.TargetWhy, Codec: codec, Link: link, Rules: limits.Rules, Lane: r.GetLane(), Transport: r.GetTransport(), TransportWhy: r.GetTransportWhy(), Distrusted: r.GetDistrusted()})
			}
		case *proxyv1.TaskEvent_Progress:
			if t.Progress != nil {
				t.Progress(e.Progress.GetDone())
			}
		case *proxyv1.TaskEvent_Done:
			d := e.Done
			res.Stats = datamover.Stats{BytesRead: d.GetBytesRead(), BytesSent: d.GetBytesSent(), BytesChanged: d.GetBytesChanged(), BlocksChanged: d.GetBlocksChanged(), BlocksTotal: d.GetBlocksTotal(),
				Elapsed: time.Duration(d.GetElapsedNs()), ReadBusy: time.Duration(d.GetReadBusyNs()), CPUBusy: time.Duration(d.GetCpuBusyNs()), SendBusy: time.Duration(d.GetSendBusyNs())}
			res.WriteBusy = time.Duration(d.GetWriteBusyNs())
			res.BytesWritten = d.GetBytesWritten()
			res.SegmentsRecomputed, res.BytesRecomputed = int(d.GetSegmentsRecomputed()), d.GetBytesRecomputed()
			res.Reconnects = int(d.GetReconnects())
			// The target half ends once the data stream closed the disk.
			return res, <-targetEnd
		}
	}
}
