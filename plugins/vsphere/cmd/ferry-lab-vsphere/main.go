// Command ferry-lab-vsphere is `ferry lab`: a local two-site vSphere lab
// on govmomi's simulator (package lab). ferry finds it beside itself or on
// the plugin search path and runs it with the arguments of `ferry lab`.
// It is not a plugin: ferry never loads it as one, and the simulator it
// carries stays out of ferry-plugin-vsphere.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferry-dr/ferry/plugins/vsphere/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := lab.RunCLI(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "ferry lab:", err)
	var usage *lab.UsageError
	if errors.As(err, &usage) {
		os.Exit(2)
	}
	os.Exit(1)
}
