package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// past is a clock two years back: what it issues for a year has expired.
func past() time.Time { return time.Now().Add(-2 * DefaultValidity) }

// newInstall makes a configuration folder with a CA in it.
func newInstall(t *testing.T, opts CAOptions) string {
	t.Helper()
	dir := t.TempDir()
	if err := InitCA(CADir(dir), opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

// issued issues credentials for id from the CA of configDir, on clock
// now, and loads them.
func issued(t *testing.T, configDir string, id Identity, now func() time.Time) *Credentials {
	t.Helper()
	out := filepath.Join(t.TempDir(), id.Name)
	if err := issueAt(CADir(configDir), id, nil, 0, out, now); err != nil {
		t.Fatal(err)
	}
	c, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func control(t *testing.T, configDir string) *Credentials {
	t.Helper()
	c, err := Load(ControlDir(configDir))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// result is what one end of a handshake saw.
type result struct {
	err  error
	peer Identity // by PeerIdentity, when the handshake succeeded
}

// handshake connects a client and a server over an in-memory pipe. After
// its handshake the server sends a byte, which the client reads: under TLS
// 1.3 a client's handshake ends before the server has checked the
// client's certificate, and a refusal arrives with the next read.
func handshake(t *testing.T, client, server *tls.Config) (c, s result) {
	t.Helper()
	cc, sc := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	cc.SetDeadline(deadline)
	sc.SetDeadline(deadline)
	done := make(chan result)
	go func() {
		// Close the pipe, not the TLS connection: its close_notify would
		// wait for a reader that has gone.
		defer sc.Close()
		conn := tls.Server(sc, server)
		var r result
		if r.err = conn.Handshake(); r.err == nil {
			r.peer, r.err = PeerIdentity(conn.ConnectionState())
			if r.err == nil {
				_, r.err = conn.Write([]byte{1})
			}
		}
		done <- r
	}()
	conn := tls.Client(cc, client)
	if c.err = conn.Handshake(); c.err == nil {
		var b [1]byte
		if _, c.err = io.ReadFull(conn, b[:]); c.err == nil {
			c.peer, c.err = PeerIdentity(conn.ConnectionState())
		}
	}
	cc.Close()
	s = <-done
	if errors.Is(c.err, os.ErrDeadlineExceeded) || errors.Is(s.err, os.ErrDeadlineExceeded) {
		t.Fatalf("the handshake hung: client %v, server %v", c.err, s.err)
	}
	return c, s
}

func TestHandshakes(t *testing.T) {
	t.Parallel()
	a := newInstall(t, CAOptions{})
	b := newInstall(t, CAOptions{})
	ctl := control(t, a)
	p1 := issued(t, a, Identity{RoleProxy, "p1"}, time.Now)
	p2 := issued(t, a, Identity{RoleProxy, "p2"}, time.Now)
	ctlB := control(t, b)
	p1B := issued(t, b, Identity{RoleProxy, "p1"}, time.Now)
	p1Expired := issued(t, a, Identity{RoleProxy, "p1"}, past)
	ctlExpired := issued(t, a, Identity{RoleControl, "control"}, past)
	p1Future := issued(t, a, Identity{RoleProxy, "p1"}, func() time.Time { return time.Now().Add(time.Hour) })
	// An impostor that trusts installation a but holds a certificate of b:
	// the server, not the client, is the one to find out.
	impostor := *p1B
	impostor.roots = p1.roots
	impostorConfig := impostor.ClientConfig(Identity{RoleProxy, "p1"})
	impostorConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &impostor.cert, nil // sent although the server asks for its own CA's
	}
	noCert := ctl.ClientConfig(Identity{RoleProxy, "p1"})
	noCert.Certificates = nil
	tls12 := ctl.ClientConfig(Identity{RoleProxy, "p1"})
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	proxyServer := func(c *Credentials) *tls.Config { return c.ServerConfig(RoleControl, RoleProxy) }
	tests := []struct {
		name           string
		client, server *tls.Config
		// Either both peers, or an error each end must explain with
		// these words ("" when an end cannot say more).
		clientSees, serverSees Identity
		clientErr, serverErr   string
	}{
		{name: "control to proxy", client: ctl.ClientConfig(Identity{RoleProxy, "p1"}), server: proxyServer(p1),
			clientSees: Identity{RoleProxy, "p1"}, serverSees: Identity{RoleControl, "control"}},
		{name: "proxy to proxy", client: p1.ClientConfig(Identity{RoleProxy, "p2"}), server: p2.ServerConfig(RoleProxy),
			clientSees: Identity{RoleProxy, "p2"}, serverSees: Identity{RoleProxy, "p1"}},
		{name: "proxy to control", client: p1.ClientConfig(Identity{RoleControl, "control"}), server: ctl.ServerConfig(RoleProxy),
			clientSees: Identity{RoleControl, "control"}, serverSees: Identity{RoleProxy, "p1"}},
		{name: "wrong name", client: ctl.ClientConfig(Identity{RoleProxy, "p1"}), server: proxyServer(p2),
			clientErr: `is proxy "p2", not proxy "p1"`, serverErr: "refused this host's certificate"},
		{name: "wrong role of the server", client: p1.ClientConfig(Identity{RoleProxy, "control"}), server: ctl.ServerConfig(RoleProxy),
			clientErr: `is control "control", not proxy "control"`, serverErr: "refused this host's certificate"},
		{name: "wrong role of the client", client: p1.ClientConfig(Identity{RoleProxy, "p2"}), server: p2.ServerConfig(RoleControl),
			clientErr: "refused this host's certificate", serverErr: `names proxy "p1", but only control may connect`},
		{name: "server of another CA", client: ctl.ClientConfig(Identity{RoleProxy, "p1"}), server: proxyServer(p1B),
			clientErr: `(proxy "p1") was not issued by this installation's CA but by "ferry CA `, serverErr: "refused this host's certificate"},
		{name: "client of another CA", client: impostorConfig, server: proxyServer(p1),
			clientErr: "issued by another installation's CA", serverErr: `(proxy "p1") was not issued by this installation's CA`},
		{name: "control of another CA", client: ctlB.ClientConfig(Identity{RoleProxy, "p1"}), server: proxyServer(p1),
			clientErr: "was not issued by this installation's CA", serverErr: "refused this host's certificate"},
		{name: "expired server", client: ctl.ClientConfig(Identity{RoleProxy, "p1"}), server: proxyServer(p1Expired),
			clientErr: `(proxy "p1") expired on ` + stamp(p1Expired.NotAfter()), serverErr: "refused this host's certificate"},
		{name: "server with a clock ahead", client: ctl.ClientConfig(Identity{RoleProxy, "p1"}), server: proxyServer(p1Future),
			clientErr: `(proxy "p1") is not valid before ` + stamp(p1Future.leaf.NotBefore) + ": check the clocks", serverErr: "refused this host's certificate"},
		{name: "expired client", client: ctlExpired.ClientConfig(Identity{RoleProxy, "p1"}), server: proxyServer(p1),
			clientErr: "this host's certificate has expired", serverErr: `(control "control") expired on ` + stamp(ctlExpired.NotAfter())},
		{name: "client without a certificate", client: noCert, server: proxyServer(p1),
			clientErr: "requires a certificate and this host sent none", serverErr: "The peer sent no certificate"},
		{name: "TLS 1.2 client", client: tls12, server: proxyServer(p1),
			clientErr: "TLS 1.3", serverErr: "TLS 1.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, s := handshake(t, tt.client, tt.server)
			if tt.clientErr == "" {
				if c.err != nil || s.err != nil || c.peer != tt.clientSees || s.peer != tt.serverSees {
					t.Fatalf("client: %v, sees %v; server: %v, sees %v", c.err, c.peer, s.err, s.peer)
				}
				return
			}
			if c.err == nil || s.err == nil {
				t.Fatalf("connected: client error %v, server error %v", c.err, s.err)
			}
			for _, end := range []struct {
				name string
				err  error
				want string
			}{{"client", c.err, tt.clientErr}, {"server", s.err, tt.serverErr}} {
				if got := Explain(end.err); !strings.Contains(got, end.want) {
					t.Errorf("%s: %v\nexplained as %q, want %q in it", end.name, end.err, got, end.want)
				}
			}
		})
	}
}

// TestPlaintextClient: a client that does not speak TLS is refused, and
// the server says so.
func TestPlaintextClient(t *testing.T) {
	t.Parallel()
	a := newInstall(t, CAOptions{})
	p1 := issued(t, a, Identity{RoleProxy, "p1"}, time.Now)
	cc, sc := net.Pipe()
	sc.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		cc.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) // a plaintext gRPC client
		io.Copy(io.Discard, cc)
	}()
	conn := tls.Server(sc, p1.ServerConfig(RoleControl))
	err := conn.Handshake()
	conn.Close()
	cc.Close()
	if err == nil {
		t.Fatal("a plaintext client was served")
	}
	if got := Explain(err); !strings.Contains(got, "does not speak TLS") {
		t.Fatalf("%v explained as %q", err, got)
	}
}

// TestPlaintextServer: a client that reaches something that does not
// speak TLS says so.
func TestPlaintextServer(t *testing.T) {
	t.Parallel()
	a := newInstall(t, CAOptions{})
	ctl := control(t, a)
	cc, sc := net.Pipe()
	cc.SetDeadline(time.Now().Add(10 * time.Second))
	go io.Copy(io.Discard, sc)
	go sc.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
	conn := tls.Client(cc, ctl.ClientConfig(Identity{RoleProxy, "p1"}))
	err := conn.Handshake()
	conn.Close()
	sc.Close()
	if err == nil {
		t.Fatal("handshake with a plaintext server succeeded")
	}
	if got := Explain(err); !strings.Contains(got, "does not speak TLS") {
		t.Fatalf("%v explained as %q", err, got)
	}
}

// TestExplainFlattened: errors that reach the caller as text only (gRPC
// flattens handshake errors) are still explained.
func TestExplainFlattened(t *testing.T) {
	t.Parallel()
	tests := []struct{ msg, want string }{
		{`rpc error: code = Unavailable desc = connection error: desc = "transport: authentication handshake failed: peer certificate names proxy "p2", want proxy "p1""`,
			`The server at that address is proxy "p2", not proxy "p1"`},
		{`transport: authentication handshake failed: peer certificate names proxy "p2"; only control may connect`,
			`names proxy "p2", but only control may connect here`},
		{`tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2027-01-02T10:00:00Z is after 2026-12-31T09:00:00Z`,
			"expired on 2026-12-31T09:00:00Z"},
		{"transport: authentication handshake failed: remote error: tls: unknown certificate authority", "issued by another installation's CA"},
		{"connection error: tls: first record does not look like a TLS handshake", "does not speak TLS"},
		{"dial tcp 10.0.0.1:7000: connect: connection refused", ""},
	}
	for _, tt := range tests {
		got := Explain(errors.New(tt.msg))
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("%s\nexplained as %q, want %q", tt.msg, got, tt.want)
		}
	}
	if got := Explain(nil); got != "" {
		t.Errorf("Explain(nil) = %q", got)
	}
}

func TestInitLayoutAndModes(t *testing.T) {
	t.Parallel()
	dir := newInstall(t, CAOptions{Name: "dr-control"})
	ctl := control(t, dir)
	if want := (Identity{RoleControl, "dr-control"}); ctl.Identity() != want {
		t.Fatalf("control plane is %v, want %v", ctl.Identity(), want)
	}
	out := IssuedDir(dir, "p1")
	if err := Issue(CADir(dir), Identity{RoleProxy, "p1"}, nil, 0, out); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "windows" {
		return // modes are Unix's
	}
	for path, want := range map[string]os.FileMode{
		CADir(dir):                               0o700,
		filepath.Join(CADir(dir), CAKeyFile):     0o600,
		filepath.Join(CADir(dir), CACertFile):    0o644,
		ControlDir(dir):                          0o700,
		filepath.Join(ControlDir(dir), KeyFile):  0o600,
		filepath.Join(ControlDir(dir), CertFile): 0o644,
		out:                                      0o700,
		filepath.Join(out, KeyFile):              0o600,
		filepath.Join(out, CACertFile):           0o644,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	// No temporary file is left behind.
	for _, d := range []string{CADir(dir), ControlDir(dir), out} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tempPrefix) {
				t.Errorf("left behind: %s", filepath.Join(d, e.Name()))
			}
		}
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	t.Parallel()
	dir := newInstall(t, CAOptions{})
	crt := filepath.Join(CADir(dir), CACertFile)
	before, _ := os.ReadFile(crt)
	err := InitCA(CADir(dir), CAOptions{})
	if !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), crt) {
		t.Fatalf("second init: %v", err)
	}
	if after, _ := os.ReadFile(crt); !bytes.Equal(before, after) {
		t.Fatal("the CA's certificate changed")
	}
	// A key left without its certificate (an init that crashed) is not
	// replaced either; the error says what to do.
	os.Remove(crt)
	err = InitCA(CADir(dir), CAOptions{})
	if !errors.Is(err, errdefs.ErrAlreadyExists) || !strings.Contains(err.Error(), filepath.Join(CADir(dir), CAKeyFile)) || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("init over a lone key: %v", err)
	}
}

func TestCertificates(t *testing.T) {
	t.Parallel()
	dir := newInstall(t, CAOptions{})
	out := filepath.Join(t.TempDir(), "p1")
	start := time.Now()
	if err := Issue(CADir(dir), Identity{RoleProxy, "p1"}, []string{"proxy1.example.com", "10.0.0.7", "::1"}, 30*24*time.Hour, out); err != nil {
		t.Fatal(err)
	}
	c, err := Load(out)
	if err != nil {
		t.Fatal(err)
	}
	leaf, ca := c.leaf, c.ca
	key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || key.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.Subject.CommonName != "p1" || len(leaf.URIs) != 1 || leaf.URIs[0].String() != "ferry:proxy/p1" {
		t.Errorf("names: CN %q, URIs %v", leaf.Subject.CommonName, leaf.URIs)
	}
	if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("usage: CA %v, key usage %v, ext %v", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
	}
	if len(leaf.DNSNames) != 1 || len(leaf.IPAddresses) != 2 {
		t.Errorf("hosts: %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if d := c.NotAfter().Sub(start.Add(30 * 24 * time.Hour)); d < -time.Minute || d > time.Minute {
		t.Errorf("expires %v, %v off 30 days from now", c.NotAfter(), d)
	}
	if leaf.SerialNumber.BitLen() < 100 || leaf.SerialNumber.Cmp(ca.SerialNumber) == 0 {
		t.Errorf("serial %v (CA's %v) is not a random 128-bit number", leaf.SerialNumber, ca.SerialNumber)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || ca.NotAfter.Sub(start) < DefaultCAValidity-time.Minute {
		t.Errorf("CA: IsCA %v, path length zero %v, expires %v", ca.IsCA, ca.MaxPathLenZero, ca.NotAfter)
	}
}

func TestIssueRefuses(t *testing.T) {
	t.Parallel()
	dir := newInstall(t, CAOptions{Validity: 30 * 24 * time.Hour})
	tests := []struct {
		name     string
		caDir    string
		id       Identity
		hosts    []string
		validity time.Duration
		out      string
		want     string
		class    error
	}{
		{name: "bad name", id: Identity{RoleProxy, "../p1"}, want: "must start with a letter or a digit", class: errdefs.ErrInvalidArgument},
		{name: "bad role", id: Identity{"admin", "p1"}, want: `role "admin"`, class: errdefs.ErrInvalidArgument},
		{name: "bad host", id: Identity{RoleProxy, "p1"}, hosts: []string{"a b"}, want: `host "a b"`, class: errdefs.ErrInvalidArgument},
		{name: "negative validity", id: Identity{RoleProxy, "p1"}, validity: -time.Hour, want: "must be positive", class: errdefs.ErrInvalidArgument},
		{name: "outlives the CA", id: Identity{RoleProxy, "p1"}, want: "would outlive the CA", class: errdefs.ErrInvalidArgument},
		{name: "no CA", caDir: t.TempDir(), id: Identity{RoleProxy, "p1"}, want: "ferry ca init", class: errdefs.ErrNotFound},
		{name: "into the CA folder", id: Identity{RoleProxy, "p1"}, validity: time.Hour, out: CADir(dir), want: "holds a CA's key", class: errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caDir, out := tt.caDir, tt.out
			if caDir == "" {
				caDir = CADir(dir)
			}
			if out == "" {
				out = filepath.Join(t.TempDir(), "out")
			}
			err := Issue(caDir, tt.id, tt.hosts, tt.validity, out)
			if !errors.Is(err, tt.class) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q (%v)", err, tt.want, tt.class)
			}
			if out != CADir(dir) {
				if _, err := os.Stat(out); err == nil {
					t.Errorf("a refused issue made %s", out)
				}
			}
		})
	}
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{
		"p1": true, "dr-proxy_01.site-b": true, "P": true, "0": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, ".": false, "..": false, ".hidden": false, "-x": false,
		"_x": false, "a/b": false, `a\b`: false, "a b": false, "é": false, "a:b": false, "a\x00": false,
	} {
		err := CheckName(name)
		if (err == nil) != ok || err != nil && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CheckName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

// FuzzCheckName: a name CheckName accepts is one path element, never a
// dot folder, and fits a URI's opaque part as it is.
func FuzzCheckName(f *testing.F) {
	for _, s := range []string{"p1", "..", "a/b", "a%2fb", strings.Repeat("x", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if CheckName(name) != nil {
			return
		}
		if filepath.Base(name) != name || name == "." || name == ".." || strings.HasPrefix(name, ".") {
			t.Fatalf("%q is accepted but is not a plain folder name", name)
		}
		u, err := url.Parse(Identity{RoleProxy, name}.uri().String())
		if err != nil || u.Opaque != "proxy/"+name {
			t.Fatalf("%q does not survive a URI: %v %v", name, u, err)
		}
	})
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	a := newInstall(t, CAOptions{})
	b := newInstall(t, CAOptions{})
	good := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "p1")
		if err := Issue(CADir(a), Identity{RoleProxy, "p1"}, nil, 0, dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := Issue(CADir(b), Identity{RoleProxy, "p1"}, nil, 0, other); err != nil {
		t.Fatal(err)
	}
	copyFile := func(t *testing.T, from, to string) {
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		file  string // the file the error must name
		spoil func(t *testing.T, path string)
		want  string
	}{
		{name: "missing key", file: KeyFile, spoil: func(t *testing.T, p string) { os.Remove(p) }, want: "does not exist; a credentials folder holds"},
		{name: "missing CA", file: CACertFile, spoil: func(t *testing.T, p string) { os.Remove(p) }, want: "does not exist"},
		{name: "empty certificate", file: CertFile, spoil: func(t *testing.T, p string) { os.WriteFile(p, nil, 0o644) }, want: "holds no PEM certificate"},
		{name: "garbage key", file: KeyFile, spoil: func(t *testing.T, p string) {
			os.WriteFile(p, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
		}, want: "the key is damaged"},
		{name: "damaged certificate", file: CertFile, spoil: func(t *testing.T, p string) {
			os.WriteFile(p, certPEM([]byte("not DER")), 0o644)
		}, want: "the certificate is damaged"},
		{name: "huge certificate", file: CertFile, spoil: func(t *testing.T, p string) { os.WriteFile(p, bytes.Repeat([]byte("A"), 1<<20), 0o644) }, want: "too large"},
		{name: "folder for a key", file: KeyFile, spoil: func(t *testing.T, p string) { os.Remove(p); os.Mkdir(p, 0o700) }, want: "not a regular file (it is a folder)"},
		{name: "key of another certificate", file: KeyFile, spoil: func(t *testing.T, p string) { copyFile(t, filepath.Join(other, KeyFile), p) }, want: "is not the key of"},
		{name: "certificate of another CA", file: CertFile, spoil: func(t *testing.T, p string) { copyFile(t, filepath.Join(other, CertFile), p) }, want: "was not issued by the CA of"},
		{name: "a leaf for the CA", file: CACertFile, spoil: func(t *testing.T, p string) { copyFile(t, filepath.Join(other, CertFile), p) }, want: "is not a CA's certificate"},
		{name: "two certificates", file: CACertFile, spoil: func(t *testing.T, p string) {
			data, _ := os.ReadFile(p)
			os.WriteFile(p, append(data, data...), 0o644)
		}, want: "more than one certificate"},
	}
	tests = append(tests, platformLoadTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := good(t)
			path := filepath.Join(dir, tt.file)
			tt.spoil(t, path)
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: %v\nwant %q about %s", err, tt.want, path)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Fatalf("the error quotes a key: %v", err)
			}
		})
	}
}

// TestPeerIdentity: a certificate must name one well-formed identity, and
// its common name must agree.
func TestPeerIdentity(t *testing.T) {
	t.Parallel()
	cert := func(cn string, uris ...string) *x509.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotAfter: time.Now().Add(time.Hour)}
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want Identity
		err  string
	}{
		{name: "proxy", cert: cert("p1", "ferry:proxy/p1", "https://example.com/"), want: Identity{RoleProxy, "p1"}},
		{name: "control", cert: cert("control", "ferry:control/control"), want: Identity{RoleControl, "control"}},
		{name: "none", cert: cert("p1"), err: "names no ferry identity"},
		{name: "two", cert: cert("p1", "ferry:proxy/p1", "ferry:control/p1"), err: "names 2 ferry identities"},
		{name: "unknown role", cert: cert("p1", "ferry:admin/p1"), err: `role "admin"`},
		{name: "bad name", cert: cert("..", "ferry:proxy/.."), err: "must start with a letter"},
		{name: "no role", cert: cert("p1", "ferry:p1"), err: "not of the form"},
		{name: "common name differs", cert: cert("p2", "ferry:proxy/p1"), err: `does not match its common name "p2"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := PeerIdentity(tls.ConnectionState{PeerCertificates: []*x509.Certificate{tt.cert}})
			if id != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v, %v; want %v, %q", id, err, tt.want, tt.err)
			}
		})
	}
	if _, err := PeerIdentity(tls.ConnectionState{}); err == nil {
		t.Fatal("an identity without a certificate")
	}
}

func TestServerConfigNeedsRoles(t *testing.T) {
	t.Parallel()
	c := control(t, newInstall(t, CAOptions{}))
	defer func() {
		if recover() == nil {
			t.Fatal("ServerConfig() accepted no role and did not panic")
		}
	}()
	c.ServerConfig()
}

func TestList(t *testing.T) {
	t.Parallel()
	a := newInstall(t, CAOptions{})
	b := newInstall(t, CAOptions{})
	for _, x := range []struct {
		install string
		name    string
	}{{a, "p1"}, {b, "p2"}, {a, "p3"}} {
		if err := Issue(CADir(x.install), Identity{RoleProxy, x.name}, nil, 0, IssuedDir(a, x.name)); err != nil {
			t.Fatal(err)
		}
	}
	os.Remove(filepath.Join(IssuedDir(a, "p3"), KeyFile))
	entries, err := List(CADir(a))
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		dir     string
		ca      bool
		id      Identity
		problem string
	}
	want := []row{
		{dir: CADir(a), ca: true},
		{dir: ControlDir(a), id: Identity{RoleControl, "control"}},
		{dir: IssuedDir(a, "p1"), id: Identity{RoleProxy, "p1"}},
		{dir: IssuedDir(a, "p2"), id: Identity{RoleProxy, "p2"}, problem: "is another CA's"},
		{dir: IssuedDir(a, "p3"), id: Identity{RoleProxy, "p3"}, problem: KeyFile + " does not exist"},
	}
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(entries), len(want), entries)
	}
	for i, e := range entries {
		w := want[i]
		if e.Dir != w.dir || e.CA != w.ca || e.Identity != w.id || e.NotAfter.IsZero() ||
			(e.Problem == nil) != (w.problem == "") || e.Problem != nil && !strings.Contains(e.Problem.Error(), w.problem) {
			t.Errorf("entry %d: %+v, want %+v", i, e, w)
		}
	}
	if _, err := List(t.TempDir()); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "ferry ca init") {
		t.Errorf("List without a CA: %v", err)
	}
}
