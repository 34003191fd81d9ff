package pluginhost

import (
	"os/exec"
	"syscall"
)

// bindToParent makes the kernel kill the plugin when ferry dies, however it
// dies.
func bindToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
