//go:build !linux

package sdk

import "os"

// startWriteback does nothing where the kernel offers no way to start
// writeback early; Sync and Close still make the writes durable.
func startWriteback(*os.File) {}
