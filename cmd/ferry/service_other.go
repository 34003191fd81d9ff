//go:build !windows

package main

import (
	"fmt"
	"runtime"
)

// runStoppable runs serve until Ctrl-C or SIGTERM.
func runStoppable(e *env, serve serveFunc) error { return runUntilSignal(e, serve) }

func installService(e *env, _ []string, _ *proxyFlags) error {
	return windowsOnly(e, "install-service")
}

func removeService(e *env, _ []string) error { return windowsOnly(e, "remove-service") }

// windowsOnly refuses a service subcommand: exit 2, saying what to do
// instead.
func windowsOnly(e *env, sub string) error {
	fmt.Fprintf(e.stderr, "ferry proxy %s: Windows services exist only on Windows (this is %s); "+
		"here run 'ferry proxy' under systemd or another supervisor, which stops it with SIGTERM\n", sub, runtime.GOOS)
	return &exitError{code: exitUsage}
}
