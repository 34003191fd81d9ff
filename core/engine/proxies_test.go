package engine

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/traffic"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
	"github.com/ferry-dr/ferry/sdk/sdktest"
	"github.com/ferry-dr/ferry/sdk/sdktest/faultnet"
	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
)

// memPlugins serve a proxy the fixture's in-memory components through a
// plugin server in the test process, over gRPC as a plugin process would
// (the control plane's calls relayed by a proxy need that): both proxies
// of these tests run in the test process, and the "sites" share the
// memory (what each proxy opens is still its own handle).
type memPlugins struct{ client *sdk.Client }

// blindTarget is a target that cannot reach its storage from here.
type blindTarget struct {
	sdk.Target
	why string
}

func (b blindTarget) ProbeTransport(context.Context, string, int) (string, string, error) {
	return "", b.why, nil
}

// memPlugins serves the fixture's components; with blind set, the target
// says it cannot reach its storage, and why.
func (f *fixture) memPlugins(blind string) memPlugins {
	return f.memPluginsWith(nil, blind)
}

// memPluginsWith is memPlugins whose source is wrap's decorator of the
// fixture's (the fixture's when wrap is nil).
func (f *fixture) memPluginsWith(wrap func(sdk.Source) sdk.Source, blind string) memPlugins {
	c := f.comps
	p := &sdk.Plugin{Name: "mem", Version: "test",
		Sources: map[string]sdk.Component[sdk.Source]{"mem": {Schema: &schema.Block{}, Capabilities: c.src.Capabilities(),
			New: func(context.Context, cty.Value) (sdk.Source, error) {
				if wrap != nil {
					return wrap(c.src), nil
				}
				return c.src, nil
			}}},
		Targets: map[string]sdk.Component[sdk.Target]{"mem": {Schema: &schema.Block{}, Capabilities: c.tgt.Capabilities(),
			New: func(context.Context, cty.Value) (sdk.Target, error) {
				var tgt sdk.Target = c.tgt
				if c.target != nil {
					tgt = c.target
				}
				if blind != "" {
					return blindTarget{tgt, blind}, nil
				}
				return tgt, nil
			}}},
		Repositories: map[string]sdk.Component[sdk.Repository]{"mem": {Schema: &schema.Block{},
			New: func(context.Context, cty.Value) (sdk.Repository, error) { return c.repo, nil }}},
	}
	return memPlugins{client: sdktest.Connect(f.t, p)}
}

func (m memPlugins) Found() []pluginhost.Found { return []pluginhost.Found{{Name: "mem"}} }
func (m memPlugins) Info(ctx context.Context, _ string) (*sdk.Info, error) {
	return m.client.Info(ctx)
}

// caps are the capabilities the plugin declares for a component, as a
// plugin host gives them.
func (m memPlugins) caps(ctx context.Context, kind sdk.Kind, typ string) (sdk.Capabilities, error) {
	info, err := m.client.Info(ctx)
	if err != nil {
		return sdk.Capabilities{}, err
	}
	c, _ := info.Component(kind, typ)
	return c.Capabilities, nil
}
func (m memPlugins) Source(ctx context.Context, typ string, cfg cty.Value) (sdk.Source, sdk.Capabilities, error) {
	caps, err := m.caps(ctx, sdk.KindSource, typ)
	if err != nil {
		return nil, caps, err
	}
	src, _, err := m.client.Source(ctx, typ, &schema.Block{}, cfg)
	return src, caps, err
}
func (m memPlugins) Target(ctx context.Context, typ string, cfg cty.Value) (sdk.Target, sdk.Capabilities, error) {
	caps, err := m.caps(ctx, sdk.KindTarget, typ)
	if err != nil {
		return nil, caps, err
	}
	tgt, _, err := m.client.Target(ctx, typ, &schema.Block{}, cfg)
	return tgt, caps, err
}
func (m memPlugins) Repository(ctx context.Context, typ string, cfg cty.Value) (sdk.Repository, error) {
	repo, _, err := m.client.Repository(ctx, typ, &schema.Block{}, cfg)
	return repo, err
}

// twoSites gives the fixture a source proxy at site prod and a target
// proxy at site dr, serving TLS on loopback with certificates of a CA made
// for the test, and runs the job's disks on them.
type twoSites struct {
	ca      string
	pool    *proxy.Pool
	members []proxy.Member
	agents  []*proxy.Agent
	servers []*grpc.Server
}

func (f *fixture) twoSites(extra ...proxy.Member) *twoSites {
	f.t.Helper()
	dir := f.t.TempDir()
	ca := filepath.Join(dir, "ca")
	if err := pki.InitCA(ca, pki.CAOptions{}); err != nil {
		f.t.Fatal(err)
	}
	ts := &twoSites{ca: ca}
	for _, p := range []struct{ name, site string }{{"p-src", "prod"}, {"p-dst", "dr"}} {
		m, a, srv := f.startAgent(ca, p.name, p.site)
		ts.members, ts.agents, ts.servers = append(ts.members, m), append(ts.agents, a), append(ts.servers, srv)
	}
	control, err := pki.Load(filepath.Join(ca, "control"))
	if err != nil {
		f.t.Fatal(err)
	}
	ts.pool = proxy.NewPool(append(ts.members, extra...), control, "test", nil)
	f.t.Cleanup(func() { ts.pool.Close() })
	f.eng.Proxies = ts.pool
	f.job.Source.Site, f.job.Target.Site = "prod", "dr"
	return ts
}

func (f *fixture) startProxy(ca, name, site string) proxy.Member {
	f.t.Helper()
	m, _, _ := f.startAgent(ca, name, site)
	return m
}

func (f *fixture) startAgent(ca, name, site string) (proxy.Member, *proxy.Agent, *grpc.Server) {
	f.t.Helper()
	out := filepath.Join(f.t.TempDir(), name)
	if err := pki.Issue(ca, pki.Identity{Role: pki.RoleProxy, Name: name}, nil, 0, out); err != nil {
		f.t.Fatal(err)
	}
	creds, err := pki.Load(out)
	if err != nil {
		f.t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	dials := new(atomic.Int64)
	if f.dials == nil {
		f.dials = map[string]*atomic.Int64{}
	}
	f.dials[name] = dials
	a := &proxy.Agent{Name: name, Site: site, MaxTasks: 2, Plugins: f.memPlugins(""), Creds: creds,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}}
	srv := a.Server()
	go srv.Serve(lis)
	f.t.Cleanup(func() { srv.Stop(); a.Close() })
	return proxy.Member{Name: name, Address: lis.Addr().String(), Site: site, MaxTasks: 2}, a, srv
}

func proxiesOf(s *catalog.Session) string {
	var out []string
	for _, vm := range s.VMs {
		for _, d := range vm.Disks {
			out = append(out, d.SourceProxy+">"+d.TargetProxy)
		}
	}
	return strings.Join(out, ",")
}

func TestDisksMoveThroughProxies(t *testing.T) {
	f := newFixture(t, "web-01")
	f.twoSites()
	f.write("web-01", 0, 30)
	f.write("web-01", 1, 30)
	want1 := f.sourceImage("web-01")
	s1 := f.runOK("web-01")
	if modes(s1) != "full,full" || proxiesOf(s1) != "p-src>p-dst,p-src>p-dst" {
		t.Fatalf("first run: modes %s, proxies %s", modes(s1), proxiesOf(s1))
	}
	for _, d := range s1.VMs[0].Disks {
		if d.Busy == nil || d.Busy.Bottleneck == "" {
			t.Fatalf("disk %d: no bottleneck statistics: %v", d.Index, d.Busy)
		}
	}

	f.write("web-01", 0, 1)
	want2 := f.sourceImage("web-01")
	s2 := f.runOK("web-01")
	if modes(s2) != "change-tracking,change-tracking" {
		t.Fatalf("second run modes %s", modes(s2))
	}
	if sent, full := s2.Totals().BytesSent, s1.Totals().BytesSent; sent*10 > full {
		t.Fatalf("an incremental run sent %d bytes, the full one %d", sent, full)
	}
	// Four disk tasks, one connection between the proxies: it is kept.
	if n := f.dials["p-src"].Load(); n != 1 {
		t.Errorf("the source proxy connected to the target proxy %d times for four disk tasks, want once", n)
	}

	// Change tracking reset and the metadata lost: the source proxy
	// compares by digests and recomputes what it lost from the replica,
	// on the target proxy.
	f.write("web-01", 1, 1)
	f.comps.src.ResetChangeTracking("web-01", 1)
	ctx := context.Background()
	list, err := f.comps.repo.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list {
		if err := f.comps.repo.Delete(ctx, o.Key, o.Generation); err != nil {
			t.Fatal(err)
		}
	}
	want3 := f.sourceImage("web-01")
	s3 := f.runOK("web-01")
	if modes(s3) != "change-tracking,digest" {
		t.Fatalf("third run modes %s", modes(s3))
	}
	if d := s3.VMs[0].Disks[1]; d.BytesSent > diskSize/20 {
		t.Fatalf("after losing its metadata the run sent %d bytes of a %d-byte disk", d.BytesSent, diskSize/2)
	}
	ps := f.points("web-01")
	if len(ps) != 3 {
		t.Fatalf("%d restore points", len(ps))
	}
	same(t, "point 1", f.pointImage("web-01", ps[0].ID, 2), want1)
	same(t, "point 2", f.pointImage("web-01", ps[1].ID, 2), want2)
	same(t, "point 3", f.pointImage("web-01", ps[2].ID, 2), want3)
}

func TestUnreachableProxyIsSkipped(t *testing.T) {
	f := newFixture(t, "web-01")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := lis.Addr().String()
	lis.Close()
	f.twoSites(proxy.Member{Name: "p-gone", Address: gone, Site: "dr", MaxTasks: 4})
	f.write("web-01", 0, 10)
	want := f.sourceImage("web-01")
	s := f.run()
	if s.Result != catalog.ResultWarning || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "proxy p-gone is skipped") {
		t.Fatalf("session %s, warnings %q", s.Result, s.Warnings)
	}
	if proxiesOf(s) != "p-src>p-dst,p-src>p-dst" {
		t.Fatalf("proxies %s", proxiesOf(s))
	}
	f.newestIs("web-01", want)
}

func TestNoProxyLeftFailsTheSessionAndKeepsItsPoints(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	f.write("web-01", 0, 10)
	want := f.sourceImage("web-01")
	f.runOK("web-01")

	// The only proxy left is not there.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := lis.Addr().String()
	lis.Close()
	control, err := pki.Load(filepath.Join(ts.ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	pool := proxy.NewPool([]proxy.Member{{Name: "p-gone", Address: gone, MaxTasks: 4}}, control, "test", nil)
	defer pool.Close()
	f.eng.Proxies = pool
	f.write("web-01", 0, 1)
	// The source's own calls need a proxy first: the session fails there,
	// before any snapshot.
	s, err := f.eng.Run(context.Background(), f.job)
	if err == nil || s.Result != catalog.ResultFailed || !strings.Contains(s.Error, "no proxy can act for the source") || !strings.Contains(s.Error, "p-gone") {
		t.Fatalf("session %s: %v, %+v", s.Result, err, s.VMs)
	}
	if ps := f.points("web-01"); len(ps) != 1 {
		t.Fatalf("%d restore points", len(ps))
	}
	f.newestIs("web-01", want)
	if snaps, _ := f.comps.src.ListSnapshots(context.Background(), "web-01"); len(snaps) != 0 {
		t.Fatalf("snapshots left at the source: %+v", snaps)
	}
}

func TestProxyOfAnotherCAIsRefused(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	other := filepath.Join(t.TempDir(), "other-ca")
	if err := pki.InitCA(other, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	// An impostor named like the target proxy, with a certificate of
	// another CA, is the only target proxy.
	impostor := f.startProxy(other, "p-dst", "dr")
	control, err := pki.Load(filepath.Join(ts.ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	pool := proxy.NewPool([]proxy.Member{ts.members[0], impostor}, control, "test", nil)
	defer pool.Close()
	f.eng.Proxies = pool
	f.job.Proxies = nil
	f.write("web-01", 0, 10)
	s := f.run()
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "proxy p-dst is skipped") {
		t.Fatalf("warnings %q", s.Warnings)
	}
	// The source proxy alone takes both halves: the impostor never sees
	// the data.
	if proxiesOf(s) != "p-src>p-src,p-src>p-src" {
		t.Fatalf("proxies %s", proxiesOf(s))
	}
}

func TestBrokenDataLinkIsResumed(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	// The source proxy reaches the target proxy through a relay that
	// carries 4 MB/s and is cut once 1 MiB went through.
	relay, err := faultnet.Listen(ts.members[1].Address)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	relay.SetBandwidth(faultnet.Up, 4<<20)
	ts.agents[0].Dial = func(ctx context.Context, addr string) (net.Conn, error) {
		if addr == ts.members[1].Address {
			addr = relay.Addr()
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	f.write("web-01", 0, 30)
	f.write("web-01", 1, 30)
	want := f.sourceImage("web-01")
	cut := make(chan struct{})
	go func() {
		defer close(cut)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for range tick.C {
			if relay.Forwarded(faultnet.Up) > 1<<20 {
				break
			}
		}
		relay.Reset()
		if err := relay.SetRefuse(true); err != nil {
			t.Error(err)
		}
		time.Sleep(300 * time.Millisecond) // the link is down this long
		if err := relay.SetRefuse(false); err != nil {
			t.Error(err)
		}
	}()
	notices := f.collectNotices()
	s := f.runOK("web-01")
	<-cut
	if !strings.Contains(notices(), "broke and was resumed") {
		t.Fatalf("no resume reported:\n%s", notices())
	}
	if modes(s) != "full,full" {
		t.Fatalf("modes %s", modes(s))
	}
	f.newestIs("web-01", want)
}

// wanRule throttles the data from site prod to site dr.
func wanRule(rate int64) []*config.TrafficRule {
	return []*config.TrafficRule{{Name: "wan", From: []config.Endpoint{{Site: "prod"}}, To: []config.Endpoint{{Site: "dr"}}, Throttle: rate}}
}

func TestTrafficRulesThrottleTheLinkBetweenProxies(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	reg := traffic.NewRegistry()
	reg.Update(wanRule(64<<10), time.Now())
	ts.pool.Traffic = reg
	f.write("web-01", 0, 30)
	f.write("web-01", 1, 30)
	want := f.sourceImage("web-01")
	f.collectNotices()
	// At 64 KiB/s the random data (~3.6 MiB) would take about a minute; a
	// window closing lifts the throttle, and the proxies are told.
	seen := make(chan struct{})
	var once sync.Once
	collect := f.eng.Events
	f.eng.Events = func(e Event) {
		collect(e)
		if e.Kind == Notice && strings.Contains(e.Message, "traffic rules wan cover the link from proxy p-src to proxy p-dst") {
			once.Do(func() { close(seen) })
		}
	}
	liftedAt := make(chan time.Time, 1)
	go func() {
		<-seen
		time.Sleep(2 * time.Second) // some data crosses at the rule's rate
		liftedAt <- time.Now()
		reg.Update(wanRule(0), time.Now())
		ts.pool.PushRates()
	}()
	start := time.Now()
	s := f.runOK("web-01")
	took := time.Since(start)
	lifted := <-liftedAt
	// The link held at the rule's rate shows as a busy network, for most
	// of the two seconds it was held at least. Reading the source is not
	// throttled and, on a loaded machine, may be as busy: the network need
	// not be the bottleneck, only busy. (Bounds in time, not in percent:
	// a loaded machine stretches the rest of the run, not the throttle.)
	if d := s.VMs[0].Disks[0]; d.Busy == nil || time.Duration(d.Busy.Network)*d.Duration/100 < 1500*time.Millisecond {
		t.Fatalf("busy %v of %v: the network was throttled for two seconds of the run", d.Busy, d.Duration)
	}
	// Lifted, the rest goes at once: far sooner than the minute the rule
	// would have taken, even on a loaded machine.
	if took < 2*time.Second || took > 30*time.Second {
		t.Fatalf("the run took %v; the throttle was lifted at %v", took, lifted.Sub(start))
	}
	f.newestIs("web-01", want)
}

func TestTrafficRulesThrottleInProcess(t *testing.T) {
	f := newFixture(t, "web-01")
	f.job.Source.Site, f.job.Target.Site = "prod", "dr"
	reg := traffic.NewRegistry()
	reg.Update(wanRule(2<<20), time.Now())
	f.eng.Traffic = reg
	f.write("web-01", 0, 30)
	f.write("web-01", 1, 30)
	want := f.sourceImage("web-01")
	notices := f.collectNotices()
	start := time.Now()
	s := f.runOK("web-01")
	// No run moves data faster than the rule lets it: the lower bound
	// holds on any machine (the data is random: compression gains nothing).
	if sent, took := s.Totals().BytesSent, time.Since(start); time.Duration(sent)*time.Second/(2<<20) > took+100*time.Millisecond {
		t.Fatalf("%d bytes went in %v through a rule of 2 MiB/s", sent, took)
	}
	// The throttle is what holds the disk back: the network stage.
	if d := s.VMs[0].Disks[0]; d.Busy == nil || d.Busy.Bottleneck != "network" {
		t.Fatalf("busy %v", d.Busy)
	}
	if !strings.Contains(notices(), "traffic rules wan cover the data from site prod") {
		t.Fatalf("notices:\n%s", notices())
	}
	f.newestIs("web-01", want)
}

func TestTaskMovesWhenItsProxyDies(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	spare, _, _ := f.startAgent(ts.ca, "p-dst2", "dr")
	control, err := pki.Load(filepath.Join(ts.ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	pool := proxy.NewPool(append(ts.members, spare), control, "test", nil)
	defer pool.Close()
	// The link is slow enough for p-dst to die while it writes, even when
	// a loaded machine is slow to stop it.
	reg := traffic.NewRegistry()
	reg.Update(wanRule(256<<10), time.Now())
	pool.Traffic = reg
	f.eng.Proxies = pool
	ts.agents[0].ResumeFor = 300 * time.Millisecond
	f.write("web-01", 0, 10)
	f.write("web-01", 1, 10)
	want := f.sourceImage("web-01")
	var once sync.Once
	notices := f.collectNotices()
	collect := f.eng.Events
	f.eng.Events = func(e Event) {
		collect(e)
		if e.Kind == DiskProgress && e.Done > 0 {
			once.Do(func() { go ts.servers[1].Stop() }) // p-dst dies
		}
	}
	s := f.runOK("web-01")
	if !strings.Contains(notices(), "placing it again (unreachable now: proxy p-dst:") {
		t.Fatalf("no move reported:\n%s", notices())
	}
	for _, d := range s.VMs[0].Disks {
		if d.TargetProxy != "p-dst2" {
			t.Fatalf("disk %d was written by %s", d.Index, d.TargetProxy)
		}
	}
	f.newestIs("web-01", want)
}

func TestAProxyThatCannotReachTheTargetIsNotPlaced(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	// p-blind is at the target's site and less loaded than p-dst, but
	// its plugin cannot reach the target's storage.
	blind, a, _ := f.startAgent(ts.ca, "p-blind", "dr")
	a.Plugins = f.memPlugins("the datastore is not mounted here")
	control, err := pki.Load(filepath.Join(ts.ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	blind.MaxTasks = 4
	pool := proxy.NewPool(append(ts.members, blind), control, "test", nil)
	defer pool.Close()
	f.eng.Proxies = pool
	f.write("web-01", 0, 10)
	want := f.sourceImage("web-01")
	s := f.runOK("web-01")
	if proxiesOf(s) != "p-src>p-dst,p-src>p-dst" {
		t.Fatalf("proxies %s", proxiesOf(s))
	}
	f.newestIs("web-01", want)

	// With p-blind alone, no proxy reaches the target: the VM fails and
	// says why, without waiting for a slot.
	alone := proxy.NewPool([]proxy.Member{blind}, control, "test", nil)
	defer alone.Close()
	f.eng.Proxies = alone
	s = f.run()
	if s.Result != catalog.ResultFailed || !strings.Contains(s.VMs[0].Error, "no proxy reaches the target's disks (proxy p-blind: the datastore is not mounted here") {
		t.Fatalf("session %s: %+v", s.Result, s.VMs)
	}
}

// ownComponents fails every use of ferry's own plugin instances: a job on
// proxies makes its calls through them.
type ownComponents struct{ t *testing.T }

func (o ownComponents) Source(context.Context, *config.PluginBlock) (sdk.Source, sdk.Capabilities, error) {
	o.t.Error("the source was configured in the control plane")
	return nil, sdk.Capabilities{}, errors.New("not here")
}
func (o ownComponents) Target(context.Context, *config.PluginBlock) (sdk.Target, sdk.Capabilities, error) {
	o.t.Error("the target was configured in the control plane")
	return nil, sdk.Capabilities{}, errors.New("not here")
}
func (o ownComponents) Repository(context.Context, *config.PluginBlock) (sdk.Repository, error) {
	o.t.Error("the repository was configured in the control plane")
	return nil, errors.New("not here")
}

func TestControlCallsRunOnTheProxiesOfTheirSites(t *testing.T) {
	f := newFixture(t, "web-01")
	f.twoSites()
	f.eng.Components = ownComponents{t}
	notices := f.collectNotices()
	f.write("web-01", 0, 10)
	want := f.sourceImage("web-01")
	f.runOK("web-01")
	f.newestIs("web-01", want)
	for _, n := range []string{"the source's calls run on proxy p-src", "the target's calls run on proxy p-dst"} {
		if !strings.Contains(notices(), n) {
			t.Fatalf("no notice %q:\n%s", n, notices())
		}
	}

	// What `ferry failover` and `ferry points` use: the target through
	// its site's proxy, restore point data streamed back through it.
	ctx := context.Background()
	tgt, where, err := f.eng.Target(ctx, f.job)
	if err != nil || where != "p-dst" {
		t.Fatalf("target on %q: %v", where, err)
	}
	ps, err := tgt.ListRestorePoints(ctx, "web-01_replica")
	if err != nil || len(ps) != 1 {
		t.Fatalf("points through the proxy: %v, %v", ps, err)
	}
	r, err := tgt.OpenRestorePointDisk(ctx, "web-01_replica", ps[0].ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, r.Size())
	if _, err := r.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	r.Close()
	same(t, "point read through the proxy", [][]byte{got}, want[:1])
	// A plugin's error keeps its class through the relay.
	if _, err := tgt.GetReplica(ctx, "no-such-replica"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing replica through the proxy: %v", err)
	}
}

func TestControlCallsMoveWhenTheirProxyDies(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	spare, _, _ := f.startAgent(ts.ca, "p-dst2", "dr")
	control, err := pki.Load(filepath.Join(ts.ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	pool := proxy.NewPool(append(ts.members, spare), control, "test", nil)
	defer pool.Close()
	f.eng.Proxies = pool
	f.eng.Components = ownComponents{t}
	notices := f.collectNotices()
	// p-dst, first of site dr, makes the target's calls; it dies once the
	// disks are moved, and the session finds it gone, before the restore
	// point is made. (A call cut by the death itself is not made again:
	// it may have been made; see TestControlCallCutByADeathIsNotRepeated.)
	var once sync.Once
	f.eng.Hook = func(step Step, _ string) {
		if step == StepMoved {
			once.Do(func() {
				ts.servers[1].Stop()
				if bad := pool.Greet(context.Background(), []string{"p-dst"}); bad["p-dst"] == nil {
					t.Error("p-dst still answers")
				}
			})
		}
	}
	f.write("web-01", 0, 10)
	want := f.sourceImage("web-01")
	f.runOK("web-01")
	f.newestIs("web-01", want)
	if !strings.Contains(notices(), "the target's calls moved from proxy p-dst to proxy p-dst2") {
		t.Fatalf("notices:\n%s", notices())
	}
}

// cutTarget is a target whose proxy dies, once armed, right after it made
// a restore point and before its answer leaves.
type cutTarget struct {
	*sdktest.MemTarget
	armed atomic.Bool
	die   func()
}

func (c *cutTarget) CreateRestorePoint(ctx context.Context, replica string, labels map[string]string) (*sdk.RestorePoint, error) {
	p, err := c.MemTarget.CreateRestorePoint(ctx, replica, labels)
	if c.armed.CompareAndSwap(true, false) {
		c.die()
	}
	return p, err
}

func TestControlCallCutByADeathIsNotRepeated(t *testing.T) {
	f := newFixture(t, "web-01")
	cut := &cutTarget{MemTarget: f.comps.tgt}
	f.comps.target = cut
	ts := f.twoSites()
	cut.die = ts.servers[1].Stop
	spare, _, _ := f.startAgent(ts.ca, "p-dst2", "dr")
	control, err := pki.Load(filepath.Join(ts.ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	pool := proxy.NewPool(append(ts.members, spare), control, "test", nil)
	defer pool.Close()
	f.eng.Proxies = pool
	f.write("web-01", 0, 10)
	f.runOK("web-01")

	// p-dst dies after making the restore point, before answering: the
	// call is not made again on p-dst2 (that would make a second point);
	// the VM fails, and the next session's calls go to p-dst2.
	cut.armed.Store(true)
	f.write("web-01", 0, 1)
	s := f.run()
	if s.Result != catalog.ResultFailed || !strings.Contains(s.VMs[0].Error, "create restore point") {
		t.Fatalf("session %s: %+v", s.Result, s.VMs)
	}
	if ps := f.points("web-01"); len(ps) != 2 {
		t.Fatalf("%d points after the cut call, want the first and the one the cut call made", len(ps))
	}
	notices := f.collectNotices()
	want := f.sourceImage("web-01")
	f.runOK("web-01")
	f.newestIs("web-01", want)
	if !strings.Contains(notices(), "the target's calls run on proxy p-dst2") {
		t.Fatalf("notices:\n%s", notices())
	}
}
