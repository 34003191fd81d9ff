// Command ferry-lab-vsphere is `ferry lab`: a local two-site vSphere lab
// on govmomi's simulator (package lab). ferry finds it beside itself or on
// the plugin search path and runs it with the arguments of `ferry lab`.
// It is not a plugin: ferry never loads it as one, and the simulator it
// carries stays out of ferry-plugin-vsphere.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferry-dr/ferry/plugins/vsphere/lab"
)

func main() {
	// Standard output is buffered, so that a table (`status`) reaches a
	// pipe in one write; the commands print at their end, after any
	// wait. A reader that went away (`ferry lab status | grep -q`) is no
	// error: with SIGPIPE handled, the write returns EPIPE instead of the
	// runtime killing the program without a word.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	stdout := &output{buf: bufio.NewWriterSize(os.Stdout, 64<<10)}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := lab.RunCLI(ctx, os.Args[1:], stdout, os.Stderr)
	stop()
	if ferr := stdout.Flush(); ferr != nil && err == nil {
		err = fmt.Errorf("write standard output: %w", ferr)
	}
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

// output is the buffered standard output; once its reader has gone it
// drops what is written, so that the command finishes as it would have.
type output struct {
	buf    *bufio.Writer
	broken bool
}

func (o *output) Write(p []byte) (int, error) {
	if o.broken {
		return len(p), nil
	}
	if _, err := o.buf.Write(p); err != nil {
		return o.check(len(p), err)
	}
	return len(p), nil
}

func (o *output) Flush() error {
	if o.broken {
		return nil
	}
	_, err := o.check(0, o.buf.Flush())
	return err
}

func (o *output) check(n int, err error) (int, error) {
	if errors.Is(err, syscall.EPIPE) {
		o.broken = true
		return n, nil
	}
	return n, err
}
