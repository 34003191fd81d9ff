package sdktest

import (
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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

	conn, err := grpc.NewClient("unix://"+sock,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes), grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes)),
	)
	if err != nil {
		t.Fatalf("dial plugin: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return sdk.NewClient(conn, sdk.ClientOptions{Name: p.Name})
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
