//go:build unix

package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// catchSIGPIPE keeps a write to a closed standard output from killing
// ferry: the Go runtime raises SIGPIPE for it unless the program handles
// the signal, and then the write returns EPIPE instead (see output).
// Handling it, rather than ignoring it, leaves the default in place for
// the processes ferry starts.
func catchSIGPIPE() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

func brokenPipe(err error) bool { return errors.Is(err, syscall.EPIPE) }
