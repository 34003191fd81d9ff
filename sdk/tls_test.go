package sdk

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// envValue returns the value of key in a KEY=value list.
func envValue(t *testing.T, env []string, key string) string {
	t.Helper()
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s is not in %d variables", key, len(env))
	return ""
}

// pluginSide reads the plugin's end of a start out of its environment.
func pluginSide(t *testing.T, h HostTLS) *tls.Config {
	t.Helper()
	cfg, err := pluginTLSConfig(envValue(t, h.Env, tlsEnv))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// handshake connects client to server over loopback TCP and returns the
// client's view of the connection and each side's error: the client's is
// the server's verdict on it too (in TLS 1.3 the client finishes first and
// learns of a refusal at its next read).
func handshake(t *testing.T, client, server *tls.Config) (state tls.ConnectionState, clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		s := tls.Server(conn, server)
		err = s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		served <- err
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(c, make([]byte, 1))
	}
	state = c.ConnectionState()
	raw.Close()
	return state, clientErr, <-served
}

func TestHostTLS(t *testing.T) {
	t.Parallel()
	start, err := NewHostTLS()
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewHostTLS()
	if err != nil {
		t.Fatal(err)
	}
	host, plugin := start.Config, pluginSide(t, start)
	otherHost, otherPlugin := other.Config, pluginSide(t, other)

	// A stranger trusts anything and shows another start's certificate.
	stranger := &tls.Config{InsecureSkipVerify: true, Certificates: otherHost.Certificates}
	noCert := &tls.Config{InsecureSkipVerify: true}
	tls12 := host.Clone()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	// A server that offers TLS 1.2 alone is refused: the host speaks 1.3.
	oldPlugin := plugin.Clone()
	oldPlugin.MinVersion, oldPlugin.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	for _, tc := range []struct {
		name           string
		client, server *tls.Config
		ok             bool
	}{
		{"ferry and its plugin", host, plugin, true},
		{"a client with another start's certificate", stranger, plugin, false},
		{"a client without a certificate", noCert, plugin, false},
		{"ferry and another start's plugin", host, otherPlugin, false},
		{"another start's ferry and the plugin", otherHost, plugin, false},
		{"a client of TLS 1.2", tls12, plugin, false},
		{"a server of TLS 1.2 alone", host, oldPlugin, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, clientErr, serverErr := handshake(t, tc.client, tc.server)
			if !tc.ok {
				if clientErr == nil || serverErr == nil {
					t.Fatalf("connected: client %v, server %v", clientErr, serverErr)
				}
				return
			}
			if clientErr != nil || serverErr != nil {
				t.Fatalf("client %v, server %v", clientErr, serverErr)
			}
			if state.Version != tls.VersionTLS13 {
				t.Errorf("TLS version %x, want 1.3", state.Version)
			}
			k, ok := state.PeerCertificates[0].PublicKey.(*ecdsa.PublicKey)
			if !ok || k.Curve != elliptic.P256() {
				t.Errorf("the plugin's key is %T, want ECDSA P-256", state.PeerCertificates[0].PublicKey)
			}
		})
	}
}

// TestHostTLSForOldPlugins checks what a plugin of an older sdk gets: the
// host's certificate in PLUGIN_CLIENT_CERT, which go-plugin's automatic
// mutual TLS trusts as its client's.
func TestHostTLSForOldPlugins(t *testing.T) {
	t.Parallel()
	start, err := NewHostTLS()
	if err != nil {
		t.Fatal(err)
	}
	b, rest := pem.Decode([]byte(envValue(t, start.Env, autoMTLSEnv)))
	if b == nil || b.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("PLUGIN_CLIENT_CERT is not one PEM certificate")
	}
	if string(b.Bytes) != string(start.Config.Certificates[0].Certificate[0]) {
		t.Fatal("PLUGIN_CLIENT_CERT is not the host's certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if c.IsCA {
		t.Error("the host's certificate is a CA: whoever holds its key could vouch for other certificates")
	}
}

func TestPluginTLSConfigRefusesDamage(t *testing.T) {
	t.Parallel()
	start, err := NewHostTLS()
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewHostTLS()
	if err != nil {
		t.Fatal(err)
	}
	blocks := func(v string) []string {
		var out []string
		for rest := []byte(v); ; {
			b, r := pem.Decode(rest)
			if b == nil {
				return out
			}
			out, rest = append(out, string(pem.EncodeToMemory(b))), r
		}
	}
	good := blocks(envValue(t, start.Env, tlsEnv))
	foreign := blocks(envValue(t, other.Env, tlsEnv))
	if len(good) != 3 {
		t.Fatalf("%s holds %d PEM blocks, want 3", tlsEnv, len(good))
	}
	for _, tc := range []struct {
		name, value string
	}{
		{"empty", ""},
		{"not PEM", "hello"},
		{"no host certificate", good[0] + good[1]},
		{"key first", good[1] + good[0] + good[2]},
		{"a fourth block", good[0] + good[1] + good[2] + good[2]},
		{"text after the blocks", good[0] + good[1] + good[2] + "extra"},
		{"another start's key", good[0] + foreign[1] + good[2]},
		{"a damaged host certificate", good[0] + good[1] + strings.Replace(good[2], "MII", "MIJ", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := pluginTLSConfig(tc.value); err == nil || !strings.Contains(err.Error(), tlsEnv) {
				t.Errorf("pluginTLSConfig = %v, want an error naming %s", err, tlsEnv)
			}
		})
	}
	if _, err := pluginTLSConfig(strings.Join(good, "")); err != nil {
		t.Errorf("the undamaged value: %v", err)
	}
}

func FuzzPluginTLSConfig(f *testing.F) {
	start, err := NewHostTLS()
	if err != nil {
		f.Fatal(err)
	}
	for _, kv := range start.Env {
		_, v, _ := strings.Cut(kv, "=")
		f.Add(v)
	}
	f.Add("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
	f.Fuzz(func(t *testing.T, v string) {
		cfg, err := pluginTLSConfig(v)
		if err == nil && (len(cfg.Certificates) != 1 || cfg.ClientCAs == nil || cfg.ClientAuth != tls.RequireAndVerifyClientCert) {
			t.Fatalf("accepted %q into an incomplete configuration", v)
		}
	})
}

func TestTakeEnv(t *testing.T) {
	t.Setenv("FERRY_TEST_TAKE_ENV", "secret")
	if v := takeEnv("FERRY_TEST_TAKE_ENV"); v != "secret" {
		t.Fatalf("takeEnv = %q", v)
	}
	if v, ok := os.LookupEnv("FERRY_TEST_TAKE_ENV"); ok {
		t.Fatalf("the variable is still set, to %q", v)
	}
	if v := takeEnv("FERRY_TEST_TAKE_ENV"); v != "" {
		t.Fatalf("takeEnv of an unset variable = %q", v)
	}
}

// BenchmarkNewHostTLS measures the credentials of one plugin start (both
// key pairs and certificates), made on the host.
func BenchmarkNewHostTLS(b *testing.B) {
	for b.Loop() {
		if _, err := NewHostTLS(); err != nil {
			b.Fatal(err)
		}
	}
}
