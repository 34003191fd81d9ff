// Package client calls the API of a ferry server (core/server) for the
// command line: `ferry status`, `points`, `sessions`, `run`, `failover`
// and `plan` act through it when FERRY_ADDR names a server.
//
// It speaks TLS 1.3 to a server whose certificate is a control plane's of
// the installation's CA (or plaintext HTTP to a loopback address, as the
// server's --insecure-plaintext allows), with the control plane's client
// certificate or a bearer token. Its errors keep the class the API
// answered (errors.Is with the errdefs classes, ErrUnauthenticated), so
// the command line maps them to the exit codes of its local commands.
//
// It never reads the environment, and never retries a call that acts (a
// run, a failover): the caller decides.
package client
