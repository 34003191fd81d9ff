package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The command line as a client of ferry server: with --server ADDR or
// FERRY_ADDR, status, points, sessions, session, run, failover and plan
// act through the server's API rather than on the configuration folder.
// The credentials are FERRY_TOKEN (a bearer token) or, when the folder
// holds them, the control plane's (ca/control: its certificate, and its
// CA to verify the server); FERRY_CACERT names the CA when it does not.

// remote returns the client of the ferry server the command acts through,
// or nil when it acts here.
func (e *env) remote() (*client.Client, error) {
	if e.server == "" {
		return nil, nil
	}
	o := client.Options{Address: e.server, Token: e.getenv("FERRY_TOKEN")}
	if strings.HasPrefix(e.server, "https://") {
		dir := pki.ControlDir(e.configDir)
		switch _, err := os.Stat(dir); {
		case err == nil:
			creds, err := pki.Load(dir)
			if err != nil {
				return nil, fmt.Errorf("the control plane's credentials, to reach ferry server at %s: %w", e.server, err)
			}
			if id := creds.Identity(); id.Role != pki.RoleControl {
				return nil, fmt.Errorf("%s holds a %s certificate (%s), not a control plane's: a client of ferry server needs a control plane's ('ferry ca issue NAME --role control'), or FERRY_TOKEN and FERRY_CACERT", dir, id.Role, id.Name)
			}
			o.Credentials = creds
		case !errors.Is(err, fs.ErrNotExist):
			return nil, err
		default:
			if path := e.getenv("FERRY_CACERT"); path != "" {
				pool, err := readCA(path)
				if err != nil {
					return nil, err
				}
				o.CA = pool
			}
		}
	}
	c, err := client.New(o)
	if errors.Is(err, errdefs.ErrInvalidArgument) {
		return nil, usagef("%v", err)
	}
	return c, err
}

// readCA reads FERRY_CACERT: the installation's CA certificate (PEM).
func readCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("FERRY_CACERT: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("FERRY_CACERT: %s holds no PEM certificate; name the ca.crt of the installation's CA ('ferry ca init' wrote it in ca/)", path)
	}
	return pool, nil
}

// remoteJob checks that the server has a job of that name: a job it does
// not have is a wrong command line, as it is here.
func remoteJob(ctx context.Context, c *client.Client, name string) error {
	_, err := c.Job(ctx, name)
	if !errors.Is(err, errdefs.ErrNotFound) {
		return remoteError(err)
	}
	jobs, lerr := c.Jobs(ctx)
	if lerr != nil {
		return remoteError(lerr)
	}
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.Name
	}
	return usagef("no job %q on ferry server at %s (jobs: %s)", name, c.Address(), strings.Join(names, ", "))
}

// remoteError turns an error of the server's API into what the command
// line says and the exit code of the same error here: an invalid argument
// (a restore point that names none) is the command line's (2); refused
// credentials say what to do about FERRY_TOKEN; the rest exit 1.
func remoteError(err error) error {
	var ae *client.Error
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &ae):
		return err
	case errors.Is(err, client.ErrUnauthenticated):
		return fmt.Errorf("ferry server refused the call: %v; set FERRY_TOKEN to a token it knows ('ferry token create NAME' beside its configuration), or use a folder (-C) that holds the control plane's credentials (ca/control)", err)
	case errors.Is(err, errdefs.ErrPermissionDenied):
		return fmt.Errorf("ferry server refused the call: %v; FERRY_TOKEN holds a token that may only read: use an operator token ('ferry token create NAME --role operator')", err)
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return usagef("%v", err)
	}
	return err
}
