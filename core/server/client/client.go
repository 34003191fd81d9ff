package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/core/status"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Options say which server to call and with what credentials.
type Options struct {
	// Address is the server's URL: https://HOST:PORT, or http://HOST:PORT
	// for a loopback HOST only.
	Address string
	// Token is a bearer token of 'ferry token create'; "" sends none.
	Token string
	// Credentials are a control plane's (CONFIG/ca/control): the client
	// presents their certificate and verifies the server against their CA.
	// Nil: no client certificate, and the server is verified against CA.
	Credentials *pki.Credentials
	// CA verifies the server when there are no Credentials.
	CA *x509.CertPool
	// Timeout bounds each call but a plan's; 0 means a minute.
	Timeout time.Duration
	// PlanTimeout bounds a plan, for which the server asks every job's
	// source and target; 0 means ten minutes.
	PlanTimeout time.Duration
	// FailoverPlanTimeout bounds an action of a failover plan, which
	// waits for its groups' readiness checks; 0 means an hour. (The plan
	// goes on at the server when the client stops waiting.)
	FailoverPlanTimeout time.Duration
}

// Client calls a ferry server's API. It is safe for concurrent use.
type Client struct {
	base                                      *url.URL
	token                                     string
	http                                      *http.Client
	timeout, planTimeout, failoverPlanTimeout time.Duration
}

// New checks the options and returns a client; it does not call the
// server yet.
func New(o Options) (*Client, error) {
	u, err := url.Parse(o.Address)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("server address %q: write https://HOST:PORT (or http://127.0.0.1:PORT for a server with --insecure-plaintext): %w", o.Address, errdefs.ErrInvalidArgument)
	}
	u.Path = ""
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the API is reached directly, as the proxies are
	switch u.Scheme {
	case "http":
		if !loopback(u.Hostname()) {
			return nil, fmt.Errorf("server address %q: plain http only to a loopback address (127.0.0.1, ::1, localhost), as the server's --insecure-plaintext serves; tokens would cross the network in the clear: use https: %w", o.Address, errdefs.ErrInvalidArgument)
		}
	case "https":
		cfg, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		tr.TLSClientConfig = cfg
	}
	c := &Client{base: u, token: o.Token, http: &http.Client{Transport: tr}, timeout: o.Timeout, planTimeout: o.PlanTimeout, failoverPlanTimeout: o.FailoverPlanTimeout}
	if c.timeout <= 0 {
		c.timeout = time.Minute
	}
	if c.planTimeout <= 0 {
		c.planTimeout = 10 * time.Minute
	}
	if c.failoverPlanTimeout <= 0 {
		c.failoverPlanTimeout = time.Hour
	}
	return c, nil
}

// Address is the server's URL.
func (c *Client) Address() string { return c.base.String() }

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tlsConfig verifies the server as ferry's identities are verified: not
// by a DNS name but by the certificate, which must chain to the CA and
// name a control plane (the server serves with the control plane's
// certificate, whatever address it is reached at).
func tlsConfig(o Options) (*tls.Config, error) {
	var cfg *tls.Config
	var roots *x509.CertPool
	switch {
	case o.Credentials != nil:
		// The control plane's own credentials: their certificate, and
		// their CA for the server.
		cfg = o.Credentials.ClientConfig(pki.Identity{})
		roots = x509.NewCertPool()
		roots.AddCert(o.Credentials.CA())
	case o.CA != nil:
		cfg = &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
		roots = o.CA
	default:
		return nil, fmt.Errorf("https to a ferry server needs the installation's CA to verify it: the control plane's credentials in the configuration folder (ca/control, 'ferry ca init' or 'ferry ca issue NAME --role control'), or FERRY_CACERT naming its ca.crt: %w", errdefs.ErrFailedPrecondition)
	}
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the server sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		for _, ic := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(ic)
		}
		if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		id, err := pki.PeerIdentity(cs)
		if err != nil {
			return err
		}
		if id.Role != pki.RoleControl {
			return &pki.IdentityError{Got: id, Want: pki.Identity{Role: pki.RoleControl, Name: "(any)"}}
		}
		return nil
	}
	return cfg, nil
}

// ErrUnauthenticated is matched by the error of a call the server
// refused for want of credentials it knows (no token, an unknown or
// revoked one).
var ErrUnauthenticated = errors.New("unauthenticated")

// Error is an error the API answered: {"error", "class"}. errors.Is
// matches its class: errdefs.ErrNotFound, ErrInvalidArgument,
// ErrFailedPrecondition, ErrUnavailable, ErrPermissionDenied, or
// ErrUnauthenticated.
type Error struct {
	Status  int    // the HTTP status
	Class   string // not_found, invalid_argument, unauthenticated, ...
	Message string
	// Result is what the action did before it failed, for the actions
	// whose errors say (a failover plan's); nil for the others.
	Result json.RawMessage
}

func (e *Error) Error() string { return e.Message }

// classes are the API's error classes as errors.
var classes = map[string]error{
	"not_found":           errdefs.ErrNotFound,
	"invalid_argument":    errdefs.ErrInvalidArgument,
	"failed_precondition": errdefs.ErrFailedPrecondition,
	"unavailable":         errdefs.ErrUnavailable,
	"permission_denied":   errdefs.ErrPermissionDenied,
	"unauthenticated":     ErrUnauthenticated,
}

// Is makes errors.Is match the error's class.
func (e *Error) Is(target error) bool {
	c, ok := classes[e.Class]
	return ok && c == target
}

// do makes a call and decodes its answer into out (nil: none), within
// the client's timeout.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	return c.doWithin(ctx, c.timeout, method, path, query, body, out)
}

func (c *Client) doWithin(parent context.Context, timeout time.Duration, method, path string, query url.Values, body, out any) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	u := *c.base
	u.Path = path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	switch {
	case err != nil && parent.Err() != nil:
		return parent.Err()
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("%s %s: ferry server at %s did not answer within %v: %w", method, path, c.base, timeout, errdefs.ErrUnavailable)
	case err != nil:
		return c.transportError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read the answer of %s: %w: %w", method, path, c.base, err, errdefs.ErrUnavailable)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error  string          `json:"error"`
			Class  string          `json:"class"`
			Result json.RawMessage `json:"result"`
		}
		if json.Unmarshal(data, &e) != nil || e.Class == "" {
			e.Class, e.Error, e.Result = classOf(resp.StatusCode), fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data))), nil
		}
		return &Error{Status: resp.StatusCode, Class: e.Class, Message: e.Error, Result: e.Result}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: the answer of %s is not what ferry expects (%v); is it a ferry server of this version?", method, path, c.base, err)
	}
	return nil
}

// transportError is a call that got no answer: one clear error, of the
// class unavailable unless the server's certificate was refused.
func (c *Client) transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var cve *tls.CertificateVerificationError
	var ide *pki.IdentityError
	switch {
	case errors.As(err, &cve):
		return fmt.Errorf("the certificate of %s does not verify against the installation's CA (%v): %w", c.base, cve.Err, errdefs.ErrPermissionDenied)
	case errors.As(err, &ide):
		return fmt.Errorf("%s is not a ferry server of this installation: %w", c.base, err)
	}
	return fmt.Errorf("reach ferry server at %s: %v: %w", c.base, err, errdefs.ErrUnavailable)
}

// classOf is the class of an answer without the API's error body (a
// proxy's, a server of another kind).
func classOf(code int) string {
	switch code {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusBadRequest:
		return "invalid_argument"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "permission_denied"
	case http.StatusConflict:
		return "failed_precondition"
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return "unavailable"
	}
	return "internal"
}

// Health is the server's answer to GET /v1/health.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}

// Health asks whether the server answers; it needs no credentials.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	return h, c.do(ctx, "GET", "/v1/health", nil, nil, &h)
}

// Jobs lists the jobs as the server schedules them.
func (c *Client) Jobs(ctx context.Context) ([]server.JobStatus, error) {
	var out []server.JobStatus
	return out, c.do(ctx, "GET", "/v1/jobs", nil, nil, &out)
}

// Job is one job as the server schedules it.
func (c *Client) Job(ctx context.Context, name string) (server.JobStatus, error) {
	var out server.JobStatus
	return out, c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(name), nil, nil, &out)
}

// Status is the status of every job, as `ferry status --json` prints it,
// with the next run of each scheduled job.
func (c *Client) Status(ctx context.Context) ([]status.Job, error) {
	var out []status.Job
	return out, c.do(ctx, "GET", "/v1/status", nil, nil, &out)
}

// MaxSessions is the most sessions one call lists.
const MaxSessions = 1000

// Sessions lists the sessions of job ("": of every job), newest first, at
// most limit (1 to MaxSessions).
func (c *Client) Sessions(ctx context.Context, job string, limit int) ([]catalog.Session, error) {
	q := url.Values{"limit": {strconv.Itoa(limit)}}
	if job != "" {
		q.Set("job", job)
	}
	var out []catalog.Session
	return out, c.do(ctx, "GET", "/v1/sessions", q, nil, &out)
}

// Session is one session, by its whole id.
func (c *Client) Session(ctx context.Context, id string) (*catalog.Session, error) {
	var out catalog.Session
	if err := c.do(ctx, "GET", "/v1/sessions/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Points lists the restore points of a job's VM ("": of all its VMs),
// oldest first. A VM the job neither names nor has a replica of is not
// found.
func (c *Client) Points(ctx context.Context, job, vm string) ([]catalog.RestorePoint, error) {
	var q url.Values
	if vm != "" {
		q = url.Values{"vm": {vm}}
	}
	var out []catalog.RestorePoint
	return out, c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(job)+"/points", q, nil, &out)
}

// GoneReplicas lists the replicas of a job the target no longer had.
func (c *Client) GoneReplicas(ctx context.Context, job string) ([]catalog.GoneReplica, error) {
	var out []catalog.GoneReplica
	return out, c.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(job)+"/replicas/gone", nil, nil, &out)
}

// Run asks the server to run a job now, or once its running session (or
// failover) ends. The answer names the run's session when it began, or
// the session it comes after.
func (c *Client) Run(ctx context.Context, job string) (server.Asked, error) {
	var out server.Asked
	return out, c.do(ctx, "POST", "/v1/jobs/"+url.PathEscape(job)+"/run", nil, nil, &out)
}

// Failover starts ("start"), undoes ("undo") or commits ("commit") the
// failover of a job's VM; point ("" the newest) applies to a start.
func (c *Client) Failover(ctx context.Context, job, vm, action, point string) (*server.FailedOver, error) {
	path := "/v1/jobs/" + url.PathEscape(job) + "/vms/" + url.PathEscape(vm) + "/failover"
	var body any
	switch action {
	case "start":
		if point != "" {
			body = map[string]string{"point": point}
		}
	case "undo", "commit":
		path += "/" + action
	default:
		return nil, fmt.Errorf("no failover action %q: %w", action, errdefs.ErrInvalidArgument)
	}
	var out server.FailedOver
	if err := c.do(ctx, "POST", path, nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Plan is what the next run of each job would do (every job when none is
// named), as `ferry plan` shows it.
func (c *Client) Plan(ctx context.Context, jobs ...string) ([]plan.Plan, error) {
	var out []plan.Plan
	return out, c.doWithin(ctx, c.planTimeout, "GET", "/v1/plan", url.Values{"job": jobs}, nil, &out)
}

// FailoverPlans lists the configuration's failover plans, by name, with
// their groups.
func (c *Client) FailoverPlans(ctx context.Context) ([]server.FailoverPlan, error) {
	var out []server.FailoverPlan
	return out, c.do(ctx, "GET", "/v1/failover-plans", nil, nil, &out)
}

// FailoverPlan is one failover plan with what starting it would do now
// (its Preview). A plan the server does not have is not found.
func (c *Client) FailoverPlan(ctx context.Context, name string) (*server.FailoverPlan, error) {
	var out server.FailoverPlan
	if err := c.do(ctx, "GET", "/v1/failover-plans/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TestFailoverPlan rehearses a failover plan (a test failover) from point
// ("" or "latest" for the newest restore points, or an RFC 3339 time),
// keeping its test VMs keep long once the checks ended. It waits for the
// test's end, keep included. When the test failed, it returns what the
// test did with the error (an *Error).
func (c *Client) TestFailoverPlan(ctx context.Context, name, point string, keep time.Duration) (*server.PlanTest, error) {
	body := map[string]string{}
	if point != "" {
		body["point"] = point
	}
	if keep > 0 {
		body["keep"] = keep.String()
	}
	var out server.PlanTest
	got, err := c.act(ctx, c.failoverPlanTimeout+keep, "/v1/failover-plans/"+url.PathEscape(name)+"/test", body, &out)
	return answer(&out, got, err)
}

// TestFailoverVM rehearses the failover of vm of job alone (point: a
// restore point's id or an unambiguous start of one, "" for the newest),
// keeping its test VM keep long; it waits for the test's end. A test that
// failed returns what it did with the error (an *Error), as
// TestFailoverPlan does.
func (c *Client) TestFailoverVM(ctx context.Context, job, vm, point string, keep time.Duration) (*server.PlanTest, error) {
	body := map[string]string{}
	if point != "" {
		body["point"] = point
	}
	if keep > 0 {
		body["keep"] = keep.String()
	}
	var out server.PlanTest
	got, err := c.act(ctx, c.failoverPlanTimeout+keep, "/v1/jobs/"+url.PathEscape(job)+"/vms/"+url.PathEscape(vm)+"/test", body, &out)
	return answer(&out, got, err)
}

// CleanupTests removes the test VMs that tests of a failover plan left
// behind (plan), or of vm of job alone (plan ""), and returns their ids;
// with an error, those removed before it.
func (c *Client) CleanupTests(ctx context.Context, plan, job, vm string) ([]string, error) {
	path := "/v1/failover-plans/" + url.PathEscape(plan) + "/test/cleanup"
	if plan == "" {
		path = "/v1/jobs/" + url.PathEscape(job) + "/vms/" + url.PathEscape(vm) + "/test/cleanup"
	}
	var out server.Cleaned
	_, err := c.act(ctx, c.failoverPlanTimeout, path, nil, &out)
	return out.Removed, err
}

// RunFailoverPlan runs an action of a failover plan: "failover" (to
// point: "" or "latest" for the newest restore points, or an RFC 3339
// time), "undo" or "commit". When the plan stopped, it returns what the
// plan did with the error (an *Error), so that the VMs it started can be
// named.
func (c *Client) RunFailoverPlan(ctx context.Context, name, action, point string) (*server.PlanRun, error) {
	var body any
	switch action {
	case "failover":
		if point != "" {
			body = map[string]string{"point": point}
		}
	case "undo", "commit":
	default:
		return nil, fmt.Errorf("no failover plan action %q: %w", action, errdefs.ErrInvalidArgument)
	}
	var out server.PlanRun
	got, err := c.act(ctx, c.failoverPlanTimeout, "/v1/failover-plans/"+url.PathEscape(name)+"/"+action, body, &out)
	return answer(&out, got, err)
}

// failbackTimeout bounds a failback action asked of a server: a sync of
// large disks takes hours.
const failbackTimeout = 24 * time.Hour

// Failback runs a failback action of a job's VM ("sync", "switch",
// "commit", "undo"); to names the production VM a sync or switch that
// begins the failback writes ("" the job's VM). When the action failed
// after it did something, it returns what it did with the error (an
// *Error).
func (c *Client) Failback(ctx context.Context, job, vm, action, to string) (*server.FailedBack, error) {
	path := "/v1/jobs/" + url.PathEscape(job) + "/vms/" + url.PathEscape(vm) + "/failback"
	body := map[string]any{}
	switch action {
	case "sync":
	case "switch":
		body["switch"] = true
	case "commit", "undo":
		path += "/" + action
	default:
		return nil, fmt.Errorf("no failback action %q: %w", action, errdefs.ErrInvalidArgument)
	}
	if to != "" {
		body["to"] = to
	}
	var out server.FailedBack
	got, err := c.act(ctx, failbackTimeout, path, body, &out)
	return answer(&out, got, err)
}

// answer is what an action returns: out when act decoded an answer into
// it, with the action's error.
func answer[T any](out *T, got bool, err error) (*T, error) {
	if !got {
		return nil, err
	}
	return out, err
}

// act posts an action's body to path within timeout and decodes its
// answer into out, also when the action failed and said what it did
// before (Error.Result): got says whether out holds an answer; err is the
// action's error.
func (c *Client) act(ctx context.Context, timeout time.Duration, path string, body, out any) (got bool, err error) {
	err = c.doWithin(ctx, timeout, "POST", path, nil, body, out)
	var ae *Error
	if errors.As(err, &ae) && len(ae.Result) > 0 {
		return json.Unmarshal(ae.Result, out) == nil, err
	}
	return err == nil, err
}

// Failbacks lists the failbacks under way, of job ("" every job).
func (c *Client) Failbacks(ctx context.Context, job string) ([]catalog.Failback, error) {
	var q url.Values
	if job != "" {
		q = url.Values{"job": {job}}
	}
	var out []catalog.Failback
	return out, c.do(ctx, "GET", "/v1/failbacks", q, nil, &out)
}

// FailbackPlan runs a failback action ("sync", "switch", "commit",
// "undo") of every VM of a failover plan. When it stopped, it returns
// what it did with the error (an *Error), so that every VM's state can be
// shown.
func (c *Client) FailbackPlan(ctx context.Context, name, action string) (*server.PlanRun, error) {
	path := "/v1/failover-plans/" + url.PathEscape(name) + "/failback"
	switch action {
	case "sync":
	case "switch", "commit", "undo":
		path += "/" + action
	default:
		return nil, fmt.Errorf("no failback action %q: %w", action, errdefs.ErrInvalidArgument)
	}
	var out server.PlanRun
	got, err := c.act(ctx, failbackTimeout, path, nil, &out)
	return answer(&out, got, err)
}
