package pluginhost

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup starts the plugin in a process group of its own, so that
// killGroup ends the children it started too, and makes the kernel signal
// the plugin when ferry dies, however it dies. The signal is SIGTERM, not
// SIGKILL: the sdk's Serve answers it by killing the plugin's whole group,
// which the plugin alone can do once ferry is gone.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killGroup kills the process group a plugin leads (its id is the
// plugin's pid). A child that left the group (setsid) escapes it.
func killGroup(pid int) {
	if pid > 0 {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}
