package vsphere

import (
	"context"
	"crypto/sha256"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/vim25/mo"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func siteConn(s *vcsimtest.Site) connConfig {
	return connConfig{URL: s.URL, Username: s.Username, Password: s.Password, Datacenter: s.Datacenter}
}

func TestConnectTLS(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "tls"})
	sum := sha256.Sum256(s.Server.Certificate().Raw)
	wrong := "00:" + s.Thumbprint[3:]
	if wrong == s.Thumbprint {
		wrong = "11:" + s.Thumbprint[3:]
	}
	cases := []struct {
		name  string
		set   func(*connConfig)
		class error // nil: connects
		say   []string
	}{
		{"ca_file", func(c *connConfig) { c.CAFile = s.CAFile }, nil, nil},
		{"sha-1 thumbprint", func(c *connConfig) { c.Thumbprint = s.Thumbprint }, nil, nil},
		{"sha-256 thumbprint", func(c *connConfig) { c.Thumbprint = formatThumbprint(sum[:]) }, nil, nil},
		{"insecure", func(c *connConfig) { c.Insecure = true }, nil, nil},
		{"wrong thumbprint", func(c *connConfig) { c.Thumbprint = wrong }, errdefs.ErrPermissionDenied,
			[]string{s.URL, "not trusted", s.Thumbprint}},
		{"system roots", func(c *connConfig) {}, errdefs.ErrPermissionDenied, []string{s.URL, "not trusted", "ca_file or thumbprint"}},
		{"wrong password", func(c *connConfig) { c.CAFile, c.Password = s.CAFile, "wrong" }, errdefs.ErrPermissionDenied, []string{s.URL, "log in"}},
		{"unknown datacenter", func(c *connConfig) { c.CAFile, c.Datacenter = s.CAFile, "DC9" }, errdefs.ErrNotFound, []string{"DC9"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := siteConn(s)
			tc.set(&cfg)
			c, err := dial(t.Context(), cfg, testLogger(t))
			if tc.class == nil {
				if err != nil {
					t.Fatal(err)
				}
				c.logout(context.Background())
				return
			}
			if !errors.Is(err, tc.class) {
				t.Fatalf("dial: %v, want class %v", err, tc.class)
			}
			for _, want := range tc.say {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error %q does not say %q", err, want)
				}
			}
		})
	}
}

func TestConnectUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "https://" + addr + "/sdk"
	_, err = dial(t.Context(), connConfig{URL: url, Username: "u", Password: "p", Insecure: true}, testLogger(t))
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), url) {
		t.Fatalf("dial of a closed port: %v, want ErrUnavailable naming %s", err, url)
	}
}

// TestSessionRenewedAndLoggedOut: a session vCenter drops is renewed on
// the next call; Stop logs out.
func TestSessionRenewedAndLoggedOut(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "session"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm1", Disks: []int64{1 << 20}})
	src := newTestSource(t, s, false, nil)
	us, err := session.NewManager(src.c.client).UserSession(t.Context())
	if err != nil || us == nil {
		t.Fatal(us, err)
	}
	admin := session.NewManager(s.Client.Client)
	if err := admin.TerminateSession(t.Context(), []string{us.Key}); err != nil {
		t.Fatal(err)
	}
	if _, err := src.DescribeVM(t.Context(), "vm1"); err != nil {
		t.Fatalf("a call after the session was dropped: %v", err)
	}
	renewed, err := session.NewManager(src.c.client).UserSession(t.Context())
	if err != nil || renewed == nil || renewed.Key == us.Key {
		t.Fatalf("session after renewal: %+v, %v", renewed, err)
	}
	if err := src.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	var sm mo.SessionManager
	if err := s.Client.RetrieveOne(t.Context(), *s.Client.ServiceContent.SessionManager, []string{"sessionList"}, &sm); err != nil {
		t.Fatal(err)
	}
	for _, l := range sm.SessionList {
		if l.Key == renewed.Key {
			t.Fatal("the session is still there after Stop")
		}
	}
	if _, err := src.ListVMs(t.Context()); err == nil {
		t.Fatal("a stopped source still answers")
	}
}
