package vsphere

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// conn is one logged-in session with a vCenter or ESXi host, shared by
// every call of a component instance. It logs in again when the session
// expires (vCenter drops idle sessions after 30 minutes) and logs out at
// Stop. It is safe for concurrent use.
type conn struct {
	cfg    connConfig
	url    *url.URL // without credentials
	log    hclog.Logger
	client *vim25.Client
	soap   *soap.Client
	dc     *object.Datacenter
	finder *find.Finder

	folders folders // the datacenter's folder tree, for VMs' folders
	tags    tagging // the Automation API session, for VMs' tags

	mu      sync.Mutex // serializes logins
	stopped bool
}

// dial connects and logs in. Wrong credentials are ErrPermissionDenied,
// an endpoint that cannot be reached ErrUnavailable, both naming the URL.
func dial(ctx context.Context, cfg connConfig, log hclog.Logger) (*conn, error) {
	u, err := parseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("url %q: %v: %w", cfg.URL, err, errdefs.ErrInvalidArgument)
	}
	tlsCfg, err := tlsConfig(cfg, u)
	if err != nil {
		return nil, err
	}
	sc := soap.NewClient(u, cfg.Insecure)
	t := sc.DefaultTransport()
	t.TLSClientConfig = tlsCfg
	// Our own dialer: it honours the context (govmomi's does not), and it
	// verifies exactly what the configuration asks for.
	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}, Config: tlsCfg}
	t.DialTLSContext = dialer.DialContext
	t.ResponseHeaderTimeout = 10 * time.Minute
	t.MaxIdleConnsPerHost = 16

	c := &conn{cfg: cfg, url: u, log: log, soap: sc}
	c.tags.c = c
	rt := &reloginRoundTripper{rt: sc, c: c}
	vc, err := vim25.NewClient(ctx, rt)
	if err != nil {
		return nil, c.classify(err, "connect")
	}
	c.client = vc
	if err := c.login(ctx); err != nil {
		return nil, err
	}
	c.finder = find.NewFinder(vc, true)
	if err := c.pickDatacenter(ctx); err != nil {
		c.logout(context.WithoutCancel(ctx))
		return nil, err
	}
	log.Debug("connected", "url", u.String(), "api", vc.ServiceContent.About.ApiVersion, "product", vc.ServiceContent.About.FullName)
	return c, nil
}

// tlsConfig builds the verification the configuration asks for: pinning
// one certificate by thumbprint, certificate authorities from a file, the
// system's authorities, or none at all when insecure.
func tlsConfig(cfg connConfig, u *url.URL) (*tls.Config, error) {
	// Resumed sessions skip the public-key work of a handshake: a task
	// wait that ends drops its long-poll connection, so new ones are common.
	tc := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(16)}
	switch {
	case cfg.Insecure:
		tc.InsecureSkipVerify = true
	case cfg.Thumbprint != "":
		want := cfg.Thumbprint
		// The chain is not verified: the pin says which certificate to
		// trust, as vSphere's own thumbprint checks do.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("the server sent no certificate")
			}
			if got := certThumbprint(cs.PeerCertificates[0], len(strings.Split(want, ":"))); got != want {
				return &untrustedError{reason: fmt.Sprintf("its thumbprint is %s, the configuration pins %s", got, want)}
			}
			return nil
		}
	case cfg.CAFile != "":
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate: %w", cfg.CAFile, errdefs.ErrInvalidArgument)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// certThumbprint is the SHA-1 (size 20) or SHA-256 thumbprint of a
// certificate in vSphere's AA:BB:... form.
func certThumbprint(cert *x509.Certificate, size int) string {
	if size == sha256.Size {
		sum := sha256.Sum256(cert.Raw)
		return formatThumbprint(sum[:])
	}
	sum := sha1.Sum(cert.Raw)
	return formatThumbprint(sum[:])
}

// untrustedError is a server certificate the configuration does not trust.
type untrustedError struct{ reason string }

func (e *untrustedError) Error() string {
	return fmt.Sprintf("the server certificate is not trusted: %s (check a thumbprint out of band before pinning it)", e.reason)
}

func (c *conn) login(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loginLocked(ctx)
}

func (c *conn) loginLocked(ctx context.Context) error {
	if c.stopped {
		return fmt.Errorf("vsphere %s: the component was stopped: %w", c.url, errdefs.ErrFailedPrecondition)
	}
	if err := session.NewManager(c.client).Login(ctx, url.UserPassword(c.cfg.Username, c.cfg.Password)); err != nil {
		return c.classify(err, "log in as "+c.cfg.Username)
	}
	return nil
}

// logout ends the sessions; errors are only logged: the sessions time
// out on their own.
func (c *conn) logout(ctx context.Context) {
	c.tags.logout(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	if err := session.NewManager(c.client).Logout(ctx); err != nil {
		c.log.Debug("logout", "url", c.url.String(), "error", err)
	}
	c.soap.CloseIdleConnections()
}

// reloginRoundTripper logs in again and retries once when a call fails
// because the session is gone.
type reloginRoundTripper struct {
	rt soap.RoundTripper
	c  *conn
}

func (r *reloginRoundTripper) RoundTrip(ctx context.Context, req, res soap.HasFault) error {
	err := r.rt.RoundTrip(ctx, req, res)
	if err == nil || !fault.Is(err, &types.NotAuthenticated{}) || r.c.client == nil {
		return err
	}
	if strings.Contains(reflect.TypeOf(req).String(), "Login") || strings.Contains(reflect.TypeOf(req).String(), "Logout") {
		return err
	}
	r.c.log.Debug("session expired; logging in again", "url", r.c.url.String())
	if lerr := r.c.login(ctx); lerr != nil {
		return errors.Join(err, lerr)
	}
	// The failed call left its fault in res: start from a zero response.
	v := reflect.ValueOf(res).Elem()
	v.Set(reflect.Zero(v.Type()))
	return r.rt.RoundTrip(ctx, req, res)
}

// pickDatacenter finds the configured datacenter, or the only one.
func (c *conn) pickDatacenter(ctx context.Context) error {
	var err error
	if c.cfg.Datacenter != "" {
		c.dc, err = c.finder.Datacenter(ctx, c.cfg.Datacenter)
	} else {
		c.dc, err = c.finder.DefaultDatacenter(ctx)
	}
	if err != nil {
		var nf *find.NotFoundError
		var many *find.MultipleFoundError
		switch {
		case errors.As(err, &nf):
			return fmt.Errorf("vsphere %s: datacenter %q: %w", c.url, c.cfg.Datacenter, errdefs.ErrNotFound)
		case errors.As(err, &many):
			return fmt.Errorf("vsphere %s has several datacenters; set datacenter: %w", c.url, errdefs.ErrInvalidArgument)
		}
		return c.classify(err, "find the datacenter")
	}
	c.finder.SetDatacenter(c.dc)
	return nil
}

// classify gives an error from govmomi one of ferry's classes, naming the
// endpoint and the operation.
func (c *conn) classify(err error, op string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("vsphere %s: %s: %w", c.url, op, err)
	}
	var ue *untrustedError
	if errors.As(err, &ue) {
		return fmt.Errorf("vsphere %s: %s: %v: %w", c.url, op, ue, errdefs.ErrPermissionDenied)
	}
	var x509Unknown x509.UnknownAuthorityError
	var x509Host x509.HostnameError
	var x509Invalid x509.CertificateInvalidError
	var verifyErr *tls.CertificateVerificationError
	if errors.As(err, &x509Unknown) || errors.As(err, &x509Host) || errors.As(err, &x509Invalid) || errors.As(err, &verifyErr) {
		return fmt.Errorf("vsphere %s: %s: the server certificate is not trusted (%v); set ca_file or thumbprint: %w", c.url, op, err, errdefs.ErrPermissionDenied)
	}
	if class := faultClass(err); class != nil {
		return fmt.Errorf("vsphere %s: %s: %s: %w", c.url, op, faultMessage(err), class)
	}
	var netErr net.Error
	var urlErr *url.Error
	if errors.As(err, &netErr) || errors.As(err, &urlErr) {
		return fmt.Errorf("vsphere %s cannot be reached: %s: %v: %w", c.url, op, err, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("vsphere %s: %s: %w", c.url, op, err)
}

// faultClass maps a vSphere fault to an error class, or nil.
func faultClass(err error) error {
	switch {
	case fault.Is(err, &types.InvalidLogin{}), fault.Is(err, &types.NoPermission{}), fault.Is(err, &types.NotAuthenticated{}):
		return errdefs.ErrPermissionDenied
	case fault.Is(err, &types.ManagedObjectNotFound{}), fault.Is(err, &types.NotFound{}), fault.Is(err, &types.FileNotFound{}):
		return errdefs.ErrNotFound
	case fault.Is(err, &types.DuplicateName{}), fault.Is(err, &types.FileAlreadyExists{}), fault.Is(err, &types.AlreadyExists{}):
		return errdefs.ErrAlreadyExists
	case fault.Is(err, &types.InvalidPowerState{}), fault.Is(err, &types.InvalidState{}), fault.Is(err, &types.TaskInProgress{}),
		fault.Is(err, &types.SnapshotFault{}), fault.Is(err, &types.CustomizationPending{}):
		return errdefs.ErrFailedPrecondition
	case fault.Is(err, &types.NotSupported{}), fault.Is(err, &types.MethodNotFound{}):
		return errdefs.ErrUnimplemented
	case fault.Is(err, &types.InvalidArgument{}), fault.Is(err, &types.InvalidDeviceSpec{}), fault.Is(err, &types.NicSettingMismatch{}):
		return errdefs.ErrInvalidArgument
	case fault.Is(err, &types.HostNotConnected{}), fault.Is(err, &types.HostCommunication{}), fault.Is(err, &types.RequestCanceled{}):
		return errdefs.ErrUnavailable
	}
	return nil
}

// faultMessage is a fault's message, or the error's.
func faultMessage(err error) string {
	var te task.Error
	if errors.As(err, &te) && te.LocalizedMethodFault != nil && te.LocalizedMethodFault.LocalizedMessage != "" {
		return te.LocalizedMethodFault.LocalizedMessage
	}
	return err.Error()
}

// wait waits for a task and returns its result, classified.
func (c *conn) wait(ctx context.Context, t *object.Task, op string) (types.AnyType, error) {
	info, err := t.WaitForResult(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.classify(err, op)
	}
	return info.Result, nil
}

// call runs a call that starts a task and waits for it.
func (c *conn) call(ctx context.Context, op string, start func(context.Context) (*object.Task, error)) (types.AnyType, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	t, err := start(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, c.classify(err, op)
	}
	return c.wait(ctx, t, op)
}
