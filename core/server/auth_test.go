package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestTheAPIAnswersOnlyWhoMayAsk(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	if err := pki.InitCA(ca, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	control, err := pki.Load(filepath.Join(ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(ca, pki.Identity{Role: pki.RoleProxy, Name: "p1"}, nil, 0, filepath.Join(dir, "p1")); err != nil {
		t.Fatal(err)
	}
	proxy, err := pki.Load(filepath.Join(dir, "p1"))
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other")
	if err := pki.InitCA(other, pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens")
	reader, err := CreateToken(tokens, "grafana", RoleRead)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := CreateToken(tokens, "ci", RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := CreateToken(tokens, "old", RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	if err := RevokeToken(tokens, "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateToken(tokens, "ci", RoleRead); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("a second token of a name: %v", err)
	}
	if list, _ := Tokens(tokens); len(list) != 2 || list[0].Name != "ci" || strings.Contains(list[0].SHA256, "ferry_") {
		t.Fatalf("tokens %+v", list)
	}

	cache, err := LoadTokens(tokens)
	if err != nil {
		t.Fatal(err)
	}
	api := Authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }), cache)
	srv := httptest.NewUnstartedServer(api)
	srv.TLS = TLSConfig(control)
	srv.StartTLS()
	defer srv.Close()

	roots := x509.NewCertPool()
	roots.AddCert(control.CA())
	client := func(creds *pki.Credentials) *http.Client {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "ferry"}
		if creds != nil {
			cfg = creds.ClientConfig(control.Identity())
		} else {
			// No certificate: verify the server as ferry does, by name.
			cfg.InsecureSkipVerify = true
			cfg.VerifyConnection = control.ClientConfig(control.Identity()).VerifyConnection
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	// presenting trusts the server as ferry does and presents cert
	// whoever issued it, as curl does: a client of ClientConfig trusts
	// only its own CA (an impostor's would refuse this server before the
	// server could refuse it), and Go's client sends no certificate of a
	// CA the server does not name.
	presenting := func(cert tls.Certificate) *http.Client {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
			VerifyConnection:     control.ClientConfig(control.Identity()).VerifyConnection,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	impostorCert, err := tls.LoadX509KeyPair(filepath.Join(other, "control", pki.CertFile), filepath.Join(other, "control", pki.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		client *http.Client
		token  string
		method string
		path   string
		want   int // 0: the handshake fails
	}{
		{"control plane reads", client(control), "", "GET", "/v1/jobs", http.StatusTeapot},
		{"control plane acts", client(control), "", "POST", "/v1/jobs/web/run", http.StatusTeapot},
		{"read token reads", client(nil), reader, "GET", "/v1/jobs", http.StatusTeapot},
		{"read token acts", client(nil), reader, "POST", "/v1/jobs/web/run", http.StatusForbidden},
		{"operator token acts", client(nil), operator, "POST", "/v1/jobs/web/run", http.StatusTeapot},
		{"revoked token", client(nil), revoked, "GET", "/v1/jobs", http.StatusUnauthorized},
		{"made-up token", client(nil), "ferry_nothing", "GET", "/v1/jobs", http.StatusUnauthorized},
		{"no credentials", client(nil), "", "GET", "/metrics", http.StatusUnauthorized},
		{"health needs none", client(nil), "", "GET", "/v1/health", http.StatusTeapot},
		{"proxy certificate", client(proxy), "", "GET", "/v1/jobs", 0},
		{"certificate of another CA", presenting(impostorCert), operator, "GET", "/v1/jobs", 0},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.client.Do(req)
		if c.want == 0 {
			if err == nil {
				resp.Body.Close()
				t.Errorf("%s: answered %d, want a refused handshake", c.name, resp.StatusCode)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}
	// Plaintext: tokens alone.
	plain := httptest.NewServer(api)
	defer plain.Close()
	req, _ := http.NewRequest("GET", plain.URL+"/v1/jobs", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("plaintext without a token: %v %v", resp, err)
	}
}

// TestTokensAreReadOnceAndReloadedOnChange: a request reads no file (a
// token made or revoked is not seen until a reload); Refresh reloads when
// the folder changed, and then a revoked token stops working.
func TestTokensAreReadOnceAndReloadedOnChange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tokens")
	cache, err := LoadTokens(dir) // no folder yet: no tokens
	if err != nil || cache.Len() != 0 {
		t.Fatalf("tokens of a folder that does not exist: %d, %v", cache.Len(), err)
	}
	api := httptest.NewServer(Authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }), cache))
	defer api.Close()
	status := func(secret string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", api.URL+"/v1/jobs", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	refresh := func(want bool) {
		t.Helper()
		if got, err := cache.Refresh(); got != want || err != nil {
			t.Fatalf("Refresh reloaded: %v (%v), want %v", got, err, want)
		}
	}
	old, err := CreateToken(dir, "old", RoleRead)
	if err != nil {
		t.Fatal(err)
	}
	if got := status(old); got != http.StatusUnauthorized {
		t.Fatalf("a token made after the last reload: %d, want 401 until a reload", got)
	}
	refresh(true)
	refresh(false) // nothing changed
	if got := status(old); got != http.StatusTeapot {
		t.Fatalf("a token after the reload: %d", got)
	}
	newer, err := CreateToken(dir, "newer", RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	if err := RevokeToken(dir, "old"); err != nil {
		t.Fatal(err)
	}
	// Still the cache's until the next reload: requests read no file.
	if got := status(old); got != http.StatusTeapot {
		t.Fatalf("a revoked token before the reload: %d", got)
	}
	refresh(true)
	if got := status(old); got != http.StatusUnauthorized {
		t.Fatalf("a revoked token after the reload: %d, want 401", got)
	}
	if got := status(newer); got != http.StatusTeapot {
		t.Fatalf("the other token after the reload: %d", got)
	}
	// Reload (SIGHUP) reads the folder whatever its times say.
	if err := RevokeToken(dir, "newer"); err != nil {
		t.Fatal(err)
	}
	if err := cache.Reload(); err != nil || cache.Len() != 0 {
		t.Fatalf("Reload: %d tokens, %v", cache.Len(), err)
	}
	if got := status(newer); got != http.StatusUnauthorized {
		t.Fatalf("a revoked token after Reload: %d", got)
	}
}
