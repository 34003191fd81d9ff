//go:build unix

package sdk

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
)

// endGroupOnTerm makes SIGTERM end the plugin and every process it
// started. ferry runs each plugin as the leader of a process group of its
// own and, on Linux, has the kernel send it SIGTERM when ferry dies: the
// plugin's children (a helper tool, a "sleep" in a script) go with it
// instead of living on. A plugin started otherwise keeps the default.
func endGroupOnTerm(log hclog.Logger) {
	if syscall.Getpgrp() != os.Getpid() {
		return
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		exitGroup(143, log, "terminated; ending this plugin and the processes it started")
	}()
}

// exitGroup ends the process with code, and with it its whole process
// group when it leads one (ferry starts plugins so), so that its children
// do not outlive it. The message is logged only when the process leads no
// group: its stderr is then likely a pipe nobody reads any more, and
// writing to it would end the process (SIGPIPE) before its children.
func exitGroup(code int, log hclog.Logger, msg string, args ...any) {
	stopProfile()
	if syscall.Getpgrp() == os.Getpid() {
		_ = syscall.Kill(0, syscall.SIGKILL)
	}
	log.Error(msg, args...)
	os.Exit(code)
}
