//go:build unix

package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
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

// columns is the width of the terminal f is, or 0 when it is none.
func columns(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// notifyHangup sends SIGHUP to c: ferry server reloads its configuration.
func notifyHangup(c chan<- os.Signal) { signal.Notify(c, syscall.SIGHUP) }
