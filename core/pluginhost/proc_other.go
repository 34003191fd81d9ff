//go:build !linux

package pluginhost

import "os/exec"

// bindToParent has no kernel help outside Linux; the sdk's parent watchdog
// in the plugin ends it instead.
func bindToParent(cmd *exec.Cmd) {}
