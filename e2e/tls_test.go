package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/pki"
)

// tlsClient is an HTTP client of a ferry server's TLS API that trusts the
// CA of caFile (the server's certificate names no host: its chain is what
// is checked) and presents the credentials of folder creds ("" for none),
// whoever issued them.
func tlsClient(t *testing.T, caFile, creds string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			return err
		},
	}
	if creds != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(creds, pki.CertFile), filepath.Join(creds, pki.KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		// Presented whatever CAs the server names, as curl does (Go's
		// client would rather send none than one of another CA).
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// TestTheAPIsTLSAndTokens: a `ferry server` serving TLS with the control
// plane's certificate answers a client with the control plane's
// certificate, and one with a token; it refuses a client with neither
// (401), a read token asking for a failover (403), and at the handshake a
// proxy's certificate and a certificate of another CA. The command line
// reaches it with FERRY_CACERT and FERRY_TOKEN, and not with another CA.
func TestTheAPIsTLSAndTokens(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"1MiB"}})
	l.writeConfig(queueJobs("a"))
	for _, args := range [][]string{{"ca", "init"}, {"ca", "issue", "p1"}} {
		if r := ferry(t, l.cfg, args...); r.code != 0 {
			t.Fatalf("ferry %s: %s", strings.Join(args, " "), r)
		}
	}
	other := t.TempDir()
	if r := ferry(t, other, "ca", "init"); r.code != 0 {
		t.Fatalf("another CA: %s", r)
	}
	reader := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "dash", "--role", "read").stdout)

	s := &serverProc{stderr: newLogWriter()}
	s.cmd = exec.Command(filepath.Join(bin, "ferry"), "-C", l.cfg, "server", "--listen", "127.0.0.1:0")
	s.cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "FERRY_PLUGIN_PATH=")
	s.cmd.Stderr = s.stderr
	orphanless(s.cmd)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kill)
	s.waitLog(t, "; stop with Ctrl-C", 0, 30*time.Second)
	_, rest, _ := strings.Cut(s.stderr.String(), "API on ")
	s.url, _, _ = strings.Cut(rest, ";")
	if !strings.HasPrefix(s.url, "https://127.0.0.1:") || strings.Contains(s.stderr.String(), "WITHOUT TLS") {
		t.Fatalf("the server's API: %q\n%s", s.url, s.stderr)
	}

	caFile := filepath.Join(pki.CADir(l.cfg), pki.CACertFile)
	ask := func(c *http.Client, token, method, path string) (int, error) {
		t.Helper()
		req, err := http.NewRequest(method, s.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	for _, tt := range []struct {
		name         string
		creds, token string
		method, path string
		want         int // 0: refused at the handshake
	}{
		{"the control plane's certificate", filepath.Join(pki.CADir(l.cfg), "control"), "", "GET", "/v1/jobs", http.StatusOK},
		{"no certificate, no token", "", "", "GET", "/v1/jobs", http.StatusUnauthorized},
		{"no certificate, a read token", "", reader, "GET", "/v1/jobs", http.StatusOK},
		{"a read token asking for a failover", "", reader, "POST", "/v1/jobs/a/vms/a-01/failover", http.StatusForbidden},
		{"a made-up token", "", "ferry_made_up", "GET", "/v1/jobs", http.StatusUnauthorized},
		{"a proxy's certificate", filepath.Join(pki.CADir(l.cfg), "issued", "p1"), reader, "GET", "/v1/jobs", 0},
		{"a certificate of another CA", filepath.Join(pki.CADir(other), "control"), reader, "GET", "/v1/jobs", 0},
	} {
		code, err := ask(tlsClient(t, caFile, tt.creds), tt.token, tt.method, tt.path)
		switch {
		case tt.want == 0 && err == nil:
			t.Errorf("%s: answered %d, want refused at the handshake", tt.name, code)
		case tt.want != 0 && (err != nil || code != tt.want):
			t.Errorf("%s: %d, %v; want %d", tt.name, code, err, tt.want)
		}
	}
	// A client trusting another CA does not trust the server.
	if _, err := ask(tlsClient(t, filepath.Join(pki.CADir(other), pki.CACertFile), ""), reader, "GET", "/v1/health"); err == nil {
		t.Error("a client of another CA trusted the server")
	}

	away := t.TempDir()
	cli := func(cacert string) result {
		t.Helper()
		return runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=", "FERRY_ADDR=" + s.url, "FERRY_TOKEN=" + reader, "FERRY_CACERT=" + cacert},
			"ferry", "-C", away, "status")
	}
	if r := cli(caFile); r.code != 0 || !strings.Contains(r.stdout, "job a:") {
		t.Fatalf("status through the TLS API with FERRY_CACERT and a token: %s", r)
	}
	if r := cli(filepath.Join(pki.CADir(other), pki.CACertFile)); r.code == 0 {
		t.Fatalf("status through the TLS API trusting another CA: %s", r)
	}
}
