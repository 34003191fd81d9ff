//go:build !unix

package config

import "os"

// openFlags open a configuration file; named pipes are checked for before.
const openFlags = os.O_RDONLY
