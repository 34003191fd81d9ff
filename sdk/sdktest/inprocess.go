package sdktest

import (
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"

	"github.com/ferry-dr/ferry/sdk"
)

// Connect serves p in this process over a real gRPC connection on a Unix
// socket, with the same server the plugin binary would run (message limits,
// interceptors, instances), and returns the host-side client. Everything
// is torn down when the test ends.
//
// It is how a plugin author runs the conformance suites over the wire
// without building a binary: configure a component through the returned
// client and hand it to RunSource, RunTarget or RunRepository.
func Connect(t testing.TB, p *sdk.Plugin) *sdk.Client {
	t.Helper()
	return sdk.NewClient(Dial(t, Serve(t, p)), sdk.ClientOptions{Name: p.Name})
}

// Serve serves p in this process on a Unix socket until the test ends and
// returns the gRPC target to dial.
func Serve(t testing.TB, p *sdk.Plugin) string {
	t.Helper()
	out := &testWriter{t: t}
	t.Cleanup(out.stop) // registered first, so it runs after the server stopped
	srv, err := sdk.NewServer(p, hclog.New(&hclog.LoggerOptions{Name: "plugin-" + p.Name, Level: hclog.Warn, Output: out}))
	if err != nil {
		t.Fatalf("serve plugin: %v", err)
	}
	sock := filepath.Join(t.TempDir(), "plugin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	g := srv.GRPCServer()
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return "unix://" + sock
}

// Dial connects to a target from Serve with the SDK's message limits.
func Dial(t testing.TB, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes), grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes), grpc.ForceCodecV2(sdk.MessageCodec())),
		experimental.WithBufferPool(sdk.MessageBuffers()),
	)
	if err != nil {
		t.Fatalf("dial plugin: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// testWriter sends plugin logs to the test log while the test runs; a
// test's log may not be written once it has ended.
type testWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", p)
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
