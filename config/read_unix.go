//go:build unix

package config

import (
	"os"
	"syscall"
)

// openFlags open a configuration file without blocking, should it have
// become a named pipe since it was checked.
const openFlags = os.O_RDONLY | syscall.O_NONBLOCK
