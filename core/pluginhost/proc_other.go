//go:build !unix

package pluginhost

import "os/exec"

// ownProcessGroup does nothing here (Windows): the sdk's parent watchdog
// in the plugin ends it when ferry is gone.
func ownProcessGroup(cmd *exec.Cmd) {}

// killGroup does nothing here: the plugin itself is killed, and
// exec.Cmd.WaitDelay bounds the wait for output its children hold open.
func killGroup(pid int) {}
