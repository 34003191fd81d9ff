package client

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// installation is a CA with the control plane's credentials, a proxy's,
// and a token of each role.
type installation struct {
	control, proxy   *pki.Credentials
	tokens           string
	reader, operator string
}

func newInstallation(t *testing.T) *installation {
	t.Helper()
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
	in := &installation{control: control, proxy: proxy, tokens: filepath.Join(dir, "tokens")}
	if in.reader, err = server.CreateToken(in.tokens, "dash", server.RoleRead); err != nil {
		t.Fatal(err)
	}
	if in.operator, err = server.CreateToken(in.tokens, "ops", server.RoleOperator); err != nil {
		t.Fatal(err)
	}
	return in
}

func (in *installation) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(in.control.CA())
	return p
}

// api answers as a server would: the health, and a job "web" that a POST
// runs.
func api() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"status":"ok","version":"test"}`))
	})
	mux.HandleFunc("GET /v1/jobs/web", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"name":"web","running":false}`))
	})
	mux.HandleFunc("POST /v1/jobs/web/run", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"started":true,"queued":false}`))
	})
	return mux
}

// TestTheClientVerifiesTheServer: the server must show a control plane's
// certificate of the installation's CA, whatever address it is reached
// at; the client presents the control plane's certificate, or a token.
func TestTheClientVerifiesTheServer(t *testing.T) {
	in := newInstallation(t)
	other := newInstallation(t)
	serve := func(creds *pki.Credentials) *httptest.Server {
		tokens, err := server.LoadTokens(in.tokens)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(server.Authorize(api(), tokens))
		srv.TLS = server.TLSConfig(creds)
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	good := serve(in.control)
	impostor := serve(other.control) // a control plane of another CA
	proxy := serve(in.proxy)         // this CA's, but a proxy's
	for _, c := range []struct {
		name  string
		srv   *httptest.Server
		opts  Options
		error error // nil: the call works
	}{
		{"the control plane's credentials", good, Options{Credentials: in.control}, nil},
		{"the CA and an operator token", good, Options{CA: in.roots(), Token: in.operator}, nil},
		{"the CA without a token", good, Options{CA: in.roots()}, ErrUnauthenticated},
		{"the CA and a read token", good, Options{CA: in.roots(), Token: in.reader}, errdefs.ErrPermissionDenied},
		{"a server of another CA", impostor, Options{CA: in.roots(), Token: in.operator}, errdefs.ErrPermissionDenied},
		{"a server of another CA, with credentials", impostor, Options{Credentials: in.control}, errdefs.ErrPermissionDenied},
		{"a proxy posing as the server", proxy, Options{CA: in.roots(), Token: in.operator}, errdefs.ErrPermissionDenied},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Address = c.srv.URL
			cl, err := New(c.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cl.Run(context.Background(), "web")
			if c.error == nil && err != nil || c.error != nil && !errors.Is(err, c.error) {
				t.Fatalf("run: %v, want %v", err, c.error)
			}
		})
	}
	// The health needs no credentials, but the server is verified all the
	// same.
	cl, err := New(Options{Address: good.URL, CA: in.roots()})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := cl.Health(context.Background()); err != nil || h.Version != "test" {
		t.Fatalf("health: %+v %v", h, err)
	}
	cl, err = New(Options{Address: impostor.URL, CA: in.roots()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Health(context.Background()); !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("health of an impostor: %v", err)
	}
}

func TestAddresses(t *testing.T) {
	in := newInstallation(t)
	for _, c := range []struct {
		addr string
		opts Options
		ok   bool
	}{
		{addr: "http://127.0.0.1:7444", ok: true},
		{addr: "http://[::1]:7444", ok: true},
		{addr: "http://localhost:7444", ok: true},
		{addr: "http://10.0.0.5:7444"},
		{addr: "http://dr-ctl.example.com:7444"},
		{addr: "https://dr-ctl.example.com:7444", opts: Options{CA: in.roots()}, ok: true},
		{addr: "https://dr-ctl.example.com:7444"}, // nothing to verify it with
		{addr: "dr-ctl:7444"},
		{addr: "ftp://127.0.0.1:7444"},
		{addr: "https://127.0.0.1:7444/v1", opts: Options{CA: in.roots()}},
	} {
		c.opts.Address = c.addr
		_, err := New(c.opts)
		if c.ok != (err == nil) {
			t.Errorf("%s: %v", c.addr, err)
		}
		want := errdefs.ErrInvalidArgument
		if c.addr == "https://dr-ctl.example.com:7444" {
			want = errdefs.ErrFailedPrecondition // the address is right; a CA is missing
		}
		if err != nil && !errors.Is(err, want) {
			t.Errorf("%s: %v is not %v", c.addr, err, want)
		}
	}
}

// TestErrorsKeepTheirClass: the API's error classes come back as the
// errdefs classes; an answer that is not the API's gets the class of its
// status; a server that does not answer is unavailable.
func TestErrorsKeepTheirClass(t *testing.T) {
	answers := map[string]struct {
		code int
		body string
	}{
		"web":   {404, `{"error":"no job \"web\"","class":"not_found"}`},
		"point": {400, `{"error":"no restore point \"x\"","class":"invalid_argument"}`},
		"busy":  {409, `{"error":"a session of the job runs","class":"failed_precondition"}`},
		"who":   {401, `{"error":"unknown or revoked token","class":"unauthenticated"}`},
		"read":  {403, `{"error":"token dash may only read","class":"permission_denied"}`},
		"down":  {503, `{"error":"the server is stopping","class":"unavailable"}`},
		"proxy": {502, `<html>bad gateway</html>`},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := answers[strings.TrimPrefix(r.URL.Path, "/v1/jobs/")]
		w.WriteHeader(a.code)
		w.Write([]byte(a.body))
	}))
	defer srv.Close()
	cl, err := New(Options{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]error{
		"web": errdefs.ErrNotFound, "point": errdefs.ErrInvalidArgument, "busy": errdefs.ErrFailedPrecondition,
		"who": ErrUnauthenticated, "read": errdefs.ErrPermissionDenied, "down": errdefs.ErrUnavailable, "proxy": errdefs.ErrUnavailable,
	} {
		_, err := cl.Job(context.Background(), name)
		var ae *Error
		if !errors.Is(err, want) || !errors.As(err, &ae) || ae.Status != answers[name].code {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
		for _, other := range []error{errdefs.ErrNotFound, errdefs.ErrInvalidArgument, ErrUnauthenticated, errdefs.ErrPermissionDenied} {
			if other != want && errors.Is(err, other) {
				t.Errorf("%s: %v is also %v", name, err, other)
			}
		}
	}
	srv.Close()
	if _, err := cl.Job(context.Background(), "web"); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "reach ferry server at "+srv.URL) {
		t.Fatalf("a server that is gone: %v", err)
	}
	// A server that does not answer in time is unavailable, and says so.
	stuck := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-stuck }))
	defer slow.Close()
	defer close(stuck)
	cl, err = New(Options{Address: slow.URL, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Jobs(context.Background()); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "did not answer within 50ms") {
		t.Fatalf("a server that does not answer: %v", err)
	}
}
