//go:build linux

package pluginhost

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// socketOf returns the address a running plugin of h listens on.
func socketOf(t *testing.T, h *Host, name string) net.Addr {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.running[name]
	if p == nil {
		t.Fatalf("plugin %s is not running", name)
	}
	return p.client.ReattachConfig().Addr
}

// probe connects to a plugin's socket as another process of the user
// could: with cert (none when nil), TLS versions up to maxVersion, and
// trust in whatever the plugin presents. It returns the plugin's
// certificate (nil if it presented none) and the plugin's verdict: nil
// when it let the connection through to gRPC (whose first frame arrived),
// else the error that ended it.
func probe(t *testing.T, addr net.Addr, cert *tls.Certificate, maxVersion uint16) (*x509.Certificate, error) {
	t.Helper()
	var presented *x509.Certificate
	cfg := &tls.Config{
		InsecureSkipVerify: true,
		MaxVersion:         maxVersion,
		NextProtos:         []string{"h2"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				presented = cs.PeerCertificates[0]
			}
			return nil
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	raw, err := net.Dial(addr.Network(), addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A safety net only: the plugin answers at once either way.
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		return presented, err
	}
	// In TLS 1.3 the client is done before the server has judged its
	// certificate: the verdict is what comes next.
	_, err = conn.Read(make([]byte, 1))
	return presented, err
}

// curveOf names the curve of a certificate's ECDSA key.
func curveOf(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return k.Curve.Params().Name
	}
	return fmt.Sprintf("%T", c.PublicKey)
}

// describe names a certificate in a failure message.
func describe(c *x509.Certificate) string {
	if c == nil {
		return "no certificate"
	}
	return fmt.Sprintf("%s (%s)", c.Subject, curveOf(c))
}

// TestPluginRefusesOtherClients connects to a running plugin's socket as
// another process would: whatever certificate it brings, the plugin lets
// only ferry's through. A plugin of an older sdk (go-plugin's automatic
// mutual TLS) holds to it as well, with ferry's certificate from
// PLUGIN_CLIENT_CERT.
func TestPluginRefusesOtherClients(t *testing.T) {
	t.Parallel()
	other, err := sdk.NewHostTLS()
	if err != nil {
		t.Fatal(err)
	}
	stranger := &other.Config.Certificates[0]
	for _, tc := range []struct {
		plugin string
		// curve is that of the certificate the plugin presents: P-256
		// for the one ferry made, P-521 for go-plugin's own.
		curve string
	}{
		{"good", "P-256"},
		{"oldsdk", "P-521"},
	} {
		t.Run(tc.plugin, func(t *testing.T) {
			t.Parallel()
			h := newHost(t)
			if _, err := h.Info(context.Background(), tc.plugin); err != nil {
				t.Fatal(err)
			}
			addr := socketOf(t, h, tc.plugin)
			for _, c := range []struct {
				name string
				cert *tls.Certificate
			}{
				{"no certificate", nil},
				{"the certificate of another ferry start", stranger},
			} {
				presented, err := probe(t, addr, c.cert, tls.VersionTLS13)
				if err == nil || !strings.Contains(err.Error(), "remote error: tls:") {
					t.Errorf("%s: the plugin let the connection through (%v), want a TLS alert", c.name, err)
				}
				if curveOf(presented) != tc.curve {
					t.Errorf("%s: the plugin presented %s, want an ECDSA %s certificate", c.name, describe(presented), tc.curve)
				}
			}
			if tc.plugin == "good" {
				if _, err := probe(t, addr, stranger, tls.VersionTLS12); err == nil || !strings.Contains(err.Error(), "protocol version") {
					t.Errorf("TLS 1.2: %v, want a refused protocol version", err)
				}
			}
		})
	}
}

// TestHostRefusesImpostor starts a plugin that serves with a key of its
// own instead of the one ferry handed it, as a process posing as the
// plugin would: ferry must not talk to it.
func TestHostRefusesImpostor(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	_, err := h.Info(context.Background(), "impostor")
	if err == nil {
		t.Fatal("ferry talked to a plugin that presented a certificate ferry did not make")
	}
	if !strings.Contains(err.Error(), "plugin impostor") || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("error %q does not name the plugin and its certificate", err)
	}
	// The class of a plugin that cannot be reached, which a retry
	// policy can tell from a permanent failure.
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("err = %v, want errdefs.ErrUnavailable", err)
	}
}

// TestOldSDKPlugin runs a plugin as an sdk that predates FERRY_PLUGIN_TLS
// served it: go-plugin's automatic mutual TLS from the plugin's side, with
// ferry's certificate from PLUGIN_CLIENT_CERT.
func TestOldSDKPlugin(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	ctx := context.Background()
	repo, err := h.Repository(ctx, "oldsdk", labelCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Put(ctx, "k", []byte("v"), sdk.IfAny); err != nil {
		t.Fatal(err)
	}
	if data, _, err := repo.Get(ctx, "k"); err != nil || string(data) != "v" {
		t.Fatalf("Get = %q, %v", data, err)
	}
}

// TestPluginStartedByOldHost starts the plugin as a ferry that predates
// FERRY_PLUGIN_TLS did, with go-plugin's automatic mutual TLS: the
// plugin must serve it that way.
func TestPluginStartedByOldHost(t *testing.T) {
	t.Parallel()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.ClientPlugins(sdk.ClientOptions{Name: "good"}),
		Cmd:              exec.Command(filepath.Join(pluginDir, Prefix+"good")),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           hclog.NewNullLogger(),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := rpc.Dispense(sdk.DispenseName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := raw.(*sdk.Client).Info(context.Background())
	if err != nil || info.Name != "good" {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	presented, err := probe(t, client.ReattachConfig().Addr, nil, tls.VersionTLS13)
	if err == nil {
		t.Error("the plugin let a client without a certificate through")
	}
	if curveOf(presented) != elliptic.P521().Params().Name {
		t.Errorf("the plugin presented %s, want go-plugin's P-521 certificate", describe(presented))
	}
}

// TestPluginChildrenDoNotInheritKey looks at the environment of processes
// a plugin starts, before Serve (forker's sleep) and while serving (a Get
// of "child-env"): the plugin's key is not in it. Not parallel: the
// other test of forker runs in parallel.
func TestPluginChildrenDoNotInheritKey(t *testing.T) {
	check := func(t *testing.T, who string, environ []string) {
		t.Helper()
		cookie := false
		for _, kv := range environ {
			if strings.HasPrefix(kv, "FERRY_PLUGIN_TLS=") {
				t.Errorf("%s inherited FERRY_PLUGIN_TLS", who)
			}
			cookie = cookie || strings.HasPrefix(kv, sdk.Handshake.MagicCookieKey+"=")
		}
		if !cookie {
			t.Errorf("%s has no %s either: its environment was not read (%d variables)", who, sdk.Handshake.MagicCookieKey, len(environ))
		}
	}

	h := newHost(t)
	ctx := context.Background()
	repo, err := h.Repository(ctx, "forker", labelCfg)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := repo.Get(ctx, "child-env")
	if err != nil {
		t.Fatal(err)
	}
	check(t, "a child started while serving", strings.Split(string(out), "\n"))

	pid := ownPlugin(t, filepath.Join(pluginDir, Prefix+"forker"))
	children := childrenOf(t, pid)
	if len(children) != 1 {
		t.Fatalf("plugin %d has children %v, want its sleep", pid, children)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", children[0]))
	if err != nil {
		t.Fatal(err)
	}
	check(t, "a child started before Serve", strings.Split(string(b), "\x00"))
}
