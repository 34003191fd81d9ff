package main

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/windows"
)

// catchSIGPIPE does nothing: Windows has no SIGPIPE, a write to a closed
// pipe just fails.
func catchSIGPIPE() {}

// errorNoData is ERROR_NO_DATA, what a write to a pipe whose reader has
// closed it returns.
const errorNoData syscall.Errno = 232

func brokenPipe(err error) bool {
	return errors.Is(err, syscall.ERROR_BROKEN_PIPE) || errors.Is(err, errorNoData)
}

// columns is the width of the console f is, or 0 when it is none.
func columns(f *os.File) int {
	var info windows.ConsoleScreenBufferInfo
	if err := windows.GetConsoleScreenBufferInfo(windows.Handle(f.Fd()), &info); err != nil {
		return 0
	}
	return int(info.Window.Right-info.Window.Left) + 1
}

// notifyHangup does nothing: Windows has no SIGHUP (ferry server reloads
// when a configuration file changes).
func notifyHangup(chan<- os.Signal) {}
