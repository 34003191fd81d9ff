package proxy

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
	"github.com/ferry-dr/ferry/sdk/sdktest/faultnet"
)

// waitUntil returns once cond holds, failing the test when ctx ends
// first.
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("never: %s", what)
		}
		runtime.Gosched()
	}
}

// A relayed call may be sent right behind its Attach, before the answer:
// the proxy holds it until that Attach has ended, whichever of the two it
// reads first, and fails it as the Attach failed.
func TestACallSentBehindItsAttachWaitsForIt(t *testing.T) {
	l := newRelayLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	control := l.conn(t, l.control)
	comp := mustComponent(t)
	key := hex.EncodeToString([]byte(componentKey(sdk.KindTarget, comp)))
	call := func(nonce string) error {
		cctx := metadata.AppendToOutgoingContext(ctx, attachmentKey, key, pendingKey, nonce)
		return control.Invoke(cctx, "/ferry.plugin.v1.Target/ListReplicas", &pb.Empty{}, &pb.ListReplicasResponse{})
	}
	waiting := func(nonce string) func() bool {
		return func() bool {
			l.agent.mu.Lock()
			defer l.agent.mu.Unlock()
			return l.agent.attachWaits[nonce] != nil
		}
	}

	// The call is read first: it waits, and goes through once the
	// Attach it names has attached the instance.
	done := make(chan error, 1)
	go func() { done <- call("n1") }()
	waitUntil(t, ctx, "the call waits for its Attach", waiting("n1"))
	resp, err := proxyv1.NewProxyClient(control).Attach(ctx, &proxyv1.AttachRequest{Kind: "target", Component: comp, Nonce: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetKey() != key {
		t.Fatalf("the proxy named the instance %q; the control plane made %q", resp.GetKey(), key)
	}
	if err := <-done; err != nil {
		t.Fatalf("a call sent behind its Attach: %v", err)
	}
	// One sent after: the instance is there.
	if err := call("n1"); err != nil {
		t.Fatalf("a call after its Attach ended: %v", err)
	}

	// An Attach that fails fails the calls sent behind it, before they
	// reach a plugin: here, one read before it and one after.
	bad := &proxyv1.Component{Type: "none", Config: comp.GetConfig(), ConfigType: comp.GetConfigType()}
	key = hex.EncodeToString([]byte(componentKey(sdk.KindTarget, bad)))
	go func() { done <- call("n2") }()
	waitUntil(t, ctx, "the call waits for its failing Attach", waiting("n2"))
	if _, err := proxyv1.NewProxyClient(control).Attach(ctx, &proxyv1.AttachRequest{Kind: "target", Component: bad, Nonce: "n2"}); err == nil {
		t.Fatal("a target of no type attached")
	}
	for _, err := range []error{<-done, call("n2")} {
		if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), errAttachFailed) || !strings.Contains(st.Message(), `"none"`) {
			t.Errorf("a call behind a failed Attach: %v; want FailedPrecondition, %q and the Attach's reason", err, errAttachFailed)
		}
	}

	// A control plane's nonce is not another proxy's to end.
	if _, err := proxyv1.NewProxyClient(l.conn(t, l.proxy)).Attach(ctx, &proxyv1.AttachRequest{Kind: "target", Component: bad, Nonce: "n3"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another proxy's Attach: %v", err)
	}
	if waiting("n3")() {
		t.Error("another proxy's refused Attach made a wait that control-plane calls would find")
	}
}

// The first calls of an instance a proxy attaches do not wait for the
// Attach's answer: with the answers from the proxy stalled, the first
// call reaches the plugin.
func TestTheFirstCallsGoBehindTheAttach(t *testing.T) {
	l := newRelayLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	relay, err := faultnet.Listen(l.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	pool := NewPool([]Member{{Name: "p1", Address: relay.Addr()}}, l.control, "test", nil)
	defer pool.Close()
	if bad := pool.Greet(ctx, nil); len(bad) > 0 {
		t.Fatal(bad)
	}
	relay.Stall(faultnet.Down)
	c, caps, where, err := pool.Control(ctx, nil, "", sdk.KindTarget, memBlock, nil)
	if err != nil || where != "p1" || caps != memTargetCaps {
		t.Fatalf("control on %q: %+v, %v; want p1 and %+v (from its Hello)", where, caps, err, memTargetCaps)
	}
	listed := make(chan error, 1)
	go func() {
		_, err := c.(sdk.Target).ListReplicas(ctx)
		listed <- err
	}()
	waitUntil(t, ctx, "the first call reaches the plugin while the Attach's answer is held", func() bool {
		return l.plugins.count("/ferry.plugin.v1.Target/ListReplicas") == 1
	})
	relay.Resume(faultnet.Down)
	if err := <-listed; err != nil {
		t.Fatalf("the first call: %v", err)
	}
	l.agent.mu.Lock()
	attaches := l.agent.attaches
	l.agent.mu.Unlock()
	if _, err := c.(sdk.Target).ListReplicas(ctx); err != nil || attaches != 1 {
		t.Fatalf("the second call: %v, after %d Attach calls; want 1", err, attaches)
	}
	// The answer is kept: a later session's control makes no Attach.
	if _, _, _, err := pool.Control(ctx, nil, "", sdk.KindTarget, memBlock, nil); err != nil {
		t.Fatal(err)
	}
	l.agent.mu.Lock()
	defer l.agent.mu.Unlock()
	if l.agent.attaches != 1 {
		t.Errorf("the second control attached again: %d Attach calls", l.agent.attaches)
	}
}

// refusingPlugins are the in-memory plugin on a proxy whose target
// instances cannot be configured (its storage is not mounted there),
// although its Hello lists the type.
type refusingPlugins struct{ servedPlugins }

func (refusingPlugins) Target(context.Context, string, cty.Value) (sdk.Target, sdk.Capabilities, error) {
	return nil, sdk.Capabilities{}, errors.New("the replicas' folder is not mounted here")
}

// A proxy that refuses the Attach the first calls went behind: the calls
// go to the next proxy, and so does every later one.
func TestCallsMoveOnFromAProxyThatRefusesTheAttach(t *testing.T) {
	l := newRelayLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// p0 comes first by name, and refuses.
	refusing := &Agent{Name: "p0", MaxTasks: 2, Plugins: refusingPlugins{l.plugins}, Creds: l.creds["p0"]}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := refusing.Server()
	go srv.Serve(lis)
	defer srv.Stop()

	pool := NewPool([]Member{{Name: "p0", Address: lis.Addr().String()}, {Name: "p1", Address: l.addr}}, l.control, "test", nil)
	defer pool.Close()
	if bad := pool.Greet(ctx, nil); len(bad) > 0 {
		t.Fatal(bad)
	}
	var mu sync.Mutex
	var moves []string
	c, _, where, err := pool.Control(ctx, nil, "", sdk.KindTarget, memBlock, func(msg string) {
		mu.Lock()
		moves = append(moves, msg)
		mu.Unlock()
	})
	if err != nil || where != "p0" {
		t.Fatalf("control on %q: %v; want p0, the first", where, err)
	}
	tgt := c.(sdk.Target)
	if _, err := tgt.ListReplicas(ctx); err != nil {
		t.Fatalf("a unary call behind the refused Attach: %v; want it made again on p1", err)
	}
	rep, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01-replica", VM: sdk.VM{Name: "web-01", Disks: []sdk.Disk{{Capacity: 1 << 20}}}})
	if err != nil {
		t.Fatal(err)
	}
	if points, err := tgt.ListRestorePoints(ctx, rep.ID); err != nil || len(points) != 0 {
		t.Fatalf("a stream after the move: %v, %v", points, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(moves) != 1 || !strings.Contains(moves[0], "from proxy p0 to proxy p1") {
		t.Errorf("moves %q; want one, from p0 to p1", moves)
	}

	// A refusal that answered before any call was made: the first call
	// goes to the next proxy at once.
	moves = nil
	c, _, where, err = pool.Control(ctx, nil, "", sdk.KindTarget, memBlock, func(msg string) { moves = append(moves, msg) })
	if err != nil || where != "p0" {
		t.Fatalf("control again on %q: %v; want p0", where, err)
	}
	waitUntil(t, ctx, "the Attach on p0 answers", func() bool {
		pool.mu.Lock()
		defer pool.mu.Unlock()
		return len(pool.attaching) == 0
	})
	if _, err := c.(sdk.Target).ListReplicas(ctx); err != nil {
		t.Fatalf("a call after the refusal answered: %v; want it made on p1", err)
	}
	if len(moves) != 1 || !strings.Contains(moves[0], "from proxy p0 to proxy p1") {
		t.Errorf("moves %q after the refusal answered; want one, from p0 to p1", moves)
	}

	// With no other proxy, the error names the refusal.
	alone := NewPool([]Member{{Name: "p0", Address: lis.Addr().String()}}, l.control, "test", nil)
	defer alone.Close()
	if bad := alone.Greet(ctx, nil); len(bad) > 0 {
		t.Fatal(bad)
	}
	c, _, _, err = alone.Control(ctx, nil, "", sdk.KindTarget, memBlock, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.(sdk.Target).ListReplicas(ctx)
	if err == nil || !strings.Contains(err.Error(), "proxy p0") || !strings.Contains(err.Error(), "not mounted here") {
		t.Fatalf("the call with only the refusing proxy: %v; want the refusal, naming the proxy", err)
	}
}

// A session's start takes the answer of a hello made moments before (as
// `ferry run` greets its proxies while its plugins start) instead of a
// round trip of the link; asked to, it greets again.
func TestAGreetingMomentsAgoIsTaken(t *testing.T) {
	l := newRelayLab(t)
	ctx := context.Background()
	pool := NewPool([]Member{{Name: "p1", Address: l.addr}}, l.control, "test", nil)
	defer pool.Close()
	hellos := func() int64 { return l.plugins.count("/ferry.plugin.v1.Plugin/GetInfo") } // a Hello asks the plugin's info
	if bad := pool.Greet(ctx, nil); len(bad) > 0 {
		t.Fatal(bad)
	}
	n := hellos()
	if n == 0 {
		t.Fatal("a hello did not ask the plugin's info: the count below proves nothing")
	}
	if bad := pool.GreetSince(ctx, nil, time.Minute); len(bad) > 0 || hellos() != n {
		t.Fatalf("a greeting within a minute of the last: %v, %d hellos, want the last one's answer (%d)", bad, hellos(), n)
	}
	if bad := pool.GreetSince(ctx, nil, 0); len(bad) > 0 || hellos() != 2*n {
		t.Fatalf("a greeting that takes no earlier answer: %v, %d hellos, want %d", bad, hellos(), 2*n)
	}
	if bad := pool.Greet(ctx, nil); len(bad) > 0 || hellos() != 3*n {
		t.Fatalf("Greet: %v, %d hellos, want %d: it always asks", bad, hellos(), 3*n)
	}
}
