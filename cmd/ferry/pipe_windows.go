package main

import (
	"errors"
	"syscall"
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
