//go:build unix && !linux

package pluginhost

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup starts the plugin in a process group of its own, so that
// killGroup ends the children it started too. Without Linux's parent-death
// signal, the sdk's parent watchdog ends a plugin whose ferry is gone.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills the process group a plugin leads (its id is the
// plugin's pid). A child that left the group (setsid) escapes it.
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}
