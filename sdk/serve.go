package sdk

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// Handshake is shared by ferry and its plugins. The cookie only keeps a
// person from starting a plugin by hand by mistake; it is no security. It
// never changes.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolMajor,
	MagicCookieKey:   "FERRY_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "c3f6a1e0-ferry-plugin-v1-7b2d94e5",
}

// pluginName is the name a plugin set registers under.
const pluginName = "ferry"

// grpcPlugin adapts protocol v1 to go-plugin.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	srv  *Server
	opts ClientOptions
}

// GRPCServer is a no-op: the server from Server.GRPCServer has the
// services registered already.
func (p *grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

// GRPCClient returns a *Client. ctx is cancelled when the plugin process
// exits, which is how calls cut by a crash are told apart.
func (p *grpcPlugin) GRPCClient(ctx context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	opts := p.opts
	exited := opts.Exited
	opts.Exited = func() bool {
		if ctx.Err() != nil {
			return true
		}
		return exited != nil && exited()
	}
	return NewClient(conn, opts), nil
}

// ClientPlugins is the host's go-plugin plugin set: dispensing "ferry" from
// it yields a *Client.
func ClientPlugins(opts ClientOptions) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{ProtocolMajor: {pluginName: &grpcPlugin{opts: opts}}}
}

// DispenseName is the name to Dispense from a go-plugin client.
const DispenseName = pluginName

// Serve serves p to the ferry host that started this process and returns
// when the host ends it. It must be called from main before anything is
// written to stdout: stdout carries the handshake. Logs go to stderr as
// JSON through hclog, and the host files them under the plugin's name.
//
// The connection is mutual TLS with the key pair the host made for this
// start (see NewHostTLS); started by a ferry that predates them, the
// plugin falls back to go-plugin's automatic mutual TLS.
func Serve(p *Plugin) {
	log := hclog.New(&hclog.LoggerOptions{
		Name:       "ferry-plugin-" + p.Name,
		Level:      hclog.Trace,
		Output:     os.Stderr,
		JSONFormat: true,
	})
	hclog.SetDefault(log)
	srv, err := NewServer(p, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg := &plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolMajor: {pluginName: &grpcPlugin{srv: srv}}},
		GRPCServer:       func(opts []grpc.ServerOption) *grpc.Server { return srv.GRPCServer(opts...) },
		Logger:           log,
	}
	if handedTLS != "" {
		tlsConfig, err := pluginTLSConfig(handedTLS)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// With a TLSProvider, go-plugin makes no certificate of its own
		// and sends none in the handshake.
		cfg.TLSProvider = func() (*tls.Config, error) { return tlsConfig, nil }
	}
	stop, err := StartCPUProfile("ferry-plugin-" + p.Name)
	if err != nil {
		log.Warn("no CPU profile", "error", err)
	}
	stopProfile = stop
	go watchParent(os.Getppid(), time.Second, log)
	endGroupOnTerm(log)
	plugin.Serve(cfg)
	stopProfile()
}

// Logger returns the logger of a served plugin: JSON on the stderr the
// host reads, filed under the plugin's name. Components log through it (or
// hclog.Default()); a logger made after Serve started would write to the
// stderr go-plugin has replaced.
func Logger() hclog.Logger { return hclog.Default() }

// watchParent ends the process (and its process group, see exitGroup) when
// its parent is gone, so a plugin never outlives a ferry that was killed:
// an orphan is adopted by another process and its parent id changes.
func watchParent(parent int, every time.Duration, log hclog.Logger) {
	if parent <= 1 {
		return
	}
	for range time.Tick(every) {
		if os.Getppid() != parent {
			exitGroup(3, log, "the ferry process that started this plugin is gone; exiting", "parent", parent)
		}
	}
}
