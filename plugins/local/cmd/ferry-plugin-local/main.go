// Command ferry-plugin-local is ferry's file-backed plugin. Started by the
// ferry host (no arguments; go-plugin sets FERRY_PLUGIN_MAGIC_COOKIE) it
// serves the plugin protocol and prints nothing of its own on stdout;
// started by a person it is the CLI of package local.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/ferry-dr/ferry/plugins/local"
	"github.com/ferry-dr/ferry/sdk"
)

func main() {
	if len(os.Args) == 1 {
		sdk.Serve(local.Plugin())
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := local.RunCLI(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "ferry-plugin-local:", err)
	var usage *local.UsageError
	if errors.As(err, &usage) {
		os.Exit(2)
	}
	os.Exit(1)
}
