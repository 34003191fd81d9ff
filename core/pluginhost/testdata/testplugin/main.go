// Command testplugin is a plugin for the plugin host's tests. It serves an
// in-memory repository and misbehaves according to the name it is started
// under:
//
//	ferry-plugin-good    behaves
//	ferry-plugin-noisy   prints to stdout before the handshake
//	ferry-plugin-crashy  exits in the middle of a Get of the key "crash"
//	ferry-plugin-hang    never returns from Stop
//	ferry-plugin-liar    claims another name
//	ferry-plugin-forker  starts a child that holds its stdout and stderr
//	                     open for a day
//	ferry-plugin-shouter writes a 200 KiB line on stdout and on stderr
//	                     (the process's and go-plugin's redirected ones)
//	                     at a Get of the key "shout"
//	ferry-plugin-oldsdk  serves as a plugin of an sdk without
//	                     FERRY_PLUGIN_TLS did: go-plugin's automatic
//	                     mutual TLS, with a P-521 key of its own
//	ferry-plugin-impostor serves with a key and certificate of its own
//	                     instead of those ferry handed it (it trusts
//	                     ferry's certificate)
//
// Every one of them answers a Get of the key "child-env" with the
// environment of a child process it starts there.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// processStdout and processStderr are the process's own stdout and
// stderr, kept before go-plugin replaces os.Stdout and os.Stderr.
var processStdout, processStderr = os.Stdout, os.Stderr

func main() {
	name := strings.TrimPrefix(filepath.Base(os.Args[0]), "ferry-plugin-")
	if name == "noisy" {
		fmt.Println("hello from a careless init")
	}
	if name == "forker" {
		child := exec.Command("sleep", "86400")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	pluginName := name
	if name == "liar" {
		pluginName = "somebody-else"
	}
	p := &sdk.Plugin{
		Name:    pluginName,
		Version: "1.2.3",
		Repositories: map[string]sdk.Component[sdk.Repository]{
			name: {
				Schema: &schema.Block{Attributes: map[string]*schema.Attribute{
					"label": {Type: cty.String, Required: true},
				}},
				Validate: func(cfg cty.Value) schema.Diagnostics {
					var ds schema.Diagnostics
					if cfg.GetAttr("label").AsString() == "bad" {
						ds.Errorf(cty.GetAttrPath("label"), "Bad label", "the label %q is not allowed", "bad")
					}
					return ds
				},
				New: func(ctx context.Context, cfg cty.Value) (sdk.Repository, error) {
					return &memRepo{behaviour: name, objects: map[string]object{}}, nil
				},
			},
		},
	}
	switch name {
	case "oldsdk":
		serveWith(p, nil)
	case "impostor":
		serveWith(p, impostorTLS)
	default:
		sdk.Serve(p)
	}
}

// serveWith serves p through go-plugin as sdk.Serve does, but with the
// given TLS setup: nil is go-plugin's automatic mutual TLS alone, the way
// sdk.Serve served before ferry handed plugins their keys.
func serveWith(p *sdk.Plugin, tlsProvider func() (*tls.Config, error)) {
	log := hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true})
	srv, err := sdk.NewServer(p, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{sdk.ProtocolMajor: {sdk.DispenseName: servedPlugin{}}},
		GRPCServer:       func(opts []grpc.ServerOption) *grpc.Server { return srv.GRPCServer(opts...) },
		TLSProvider:      tlsProvider,
		Logger:           log,
	})
}

// servedPlugin is the plugin side of go-plugin's plugin set: the server
// from sdk.NewServer has every service registered already.
type servedPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (servedPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (servedPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("the test plugin is no host")
}

// impostorTLS serves with a fresh key and certificate, as a process would
// that poses as the plugin, and accepts ferry's certificate.
func impostorTLS() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		NotBefore:   time.Now().Add(-time.Minute),
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	ferry := x509.NewCertPool()
	if !ferry.AppendCertsFromPEM([]byte(os.Getenv("PLUGIN_CLIENT_CERT"))) {
		return nil, fmt.Errorf("no certificate of ferry in PLUGIN_CLIENT_CERT")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ferry,
	}, nil
}

type object struct {
	data []byte
	gen  int64
}

type memRepo struct {
	behaviour string
	mu        sync.Mutex
	objects   map[string]object
}

func (m *memRepo) Put(ctx context.Context, key string, data []byte, ifGen int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.objects[key]
	if ifGen != sdk.IfAny && ifGen != cur.gen {
		return 0, fmt.Errorf("put %q: generation %d, want %d: %w", key, cur.gen, ifGen, errdefs.ErrFailedPrecondition)
	}
	m.objects[key] = object{data: append([]byte(nil), data...), gen: cur.gen + 1}
	return cur.gen + 1, nil
}

func (m *memRepo) Get(ctx context.Context, key string) ([]byte, sdk.ObjectInfo, error) {
	if key == "crash" && m.behaviour == "crashy" {
		os.Exit(7)
	}
	if key == "child-env" {
		out, err := exec.CommandContext(ctx, "env").Output()
		return out, sdk.ObjectInfo{Key: key}, err
	}
	if key == "shout" && m.behaviour == "shouter" {
		// Straight to the process's stdout and stderr, and to
		// os.Stdout and os.Stderr, which go-plugin has redirected to
		// its gRPC stdio stream.
		line := append(bytes.Repeat([]byte("x"), 200<<10), '\n')
		for _, f := range []*os.File{processStdout, processStderr, os.Stdout, os.Stderr} {
			if _, err := f.Write(line); err != nil {
				return nil, sdk.ObjectInfo{}, err
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[key]
	if !ok {
		return nil, sdk.ObjectInfo{}, fmt.Errorf("object %q: %w", key, errdefs.ErrNotFound)
	}
	return o.data, sdk.ObjectInfo{Key: key, Generation: o.gen, Size: int64(len(o.data))}, nil
}

func (m *memRepo) List(ctx context.Context, prefix string) ([]sdk.ObjectInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []sdk.ObjectInfo
	for k, o := range m.objects {
		if strings.HasPrefix(k, prefix) {
			out = append(out, sdk.ObjectInfo{Key: k, Generation: o.gen, Size: int64(len(o.data))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *memRepo) Delete(ctx context.Context, key string, ifGen int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.objects[key]
	if ifGen != sdk.IfAny && (!ok || cur.gen != ifGen) {
		return fmt.Errorf("delete %q: %w", key, errdefs.ErrFailedPrecondition)
	}
	delete(m.objects, key)
	return nil
}

// Stop never returns for the "hang" plugin.
func (m *memRepo) Stop(ctx context.Context) error {
	if m.behaviour == "hang" {
		select {}
	}
	return nil
}
