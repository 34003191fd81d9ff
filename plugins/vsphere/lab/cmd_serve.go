package lab

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
)

var cmdServe = &command{
	usage: "ferry-lab-vsphere serve [--dir DIR] [--dr vsphere|hyperv] [--socket PATH] [--ready-fd N]",
	help: `Runs the lab's server in the foreground: what 'ferry lab up' starts in
the background. It builds the lab, writes its configuration and state,
reports on file descriptor N (a pipe 'up' made) that it is ready or why it
failed, and serves the control socket until 'ferry lab down' or a signal
stops it; its log goes to standard error.`,
	flags: func(fs *flag.FlagSet, c *call) {
		fs.StringVar(&c.socket, "socket", "", "the control socket's `path` (default DIR/lab.sock)")
		fs.IntVar(&c.readyFD, "ready-fd", 0, "a file `descriptor` to report readiness on")
		drFlag(fs, c)
	},
	run: runServe,
}

func runServe(ctx context.Context, c *call) error {
	var ready *os.File
	if c.readyFD > 2 {
		ready = os.NewFile(uintptr(c.readyFD), "ready")
	}
	report := func(r response) {
		if ready != nil {
			json.NewEncoder(ready).Encode(r)
			ready.Close()
		}
	}
	socket := c.socket
	if socket == "" {
		socket = socketPath(c.dir)
	}
	// The simulator keeps each datastore in a folder under the temporary
	// folder: make that the lab's, so that everything stays in DIR.
	sites := filepath.Join(c.dir, sitesDir)
	if err := os.MkdirAll(sites, 0o700); err != nil {
		report(response{Error: err.Error()})
		return err
	}
	os.Setenv("TMPDIR", sites)
	logger := log.New(c.stderr, "", log.LstdFlags|log.Lmicroseconds)
	logger.Printf("starting the lab in %s", c.dir)
	s, err := startServer(ctx, c.dir, socket, c.drKind, vmsOf(c.drKind), logger)
	if err != nil {
		err = fmt.Errorf("start the lab in %s: %w", c.dir, err)
		logger.Print(err)
		report(response{Error: err.Error()})
		return err
	}
	logger.Printf("ready: control socket %s", socket)
	report(response{PID: os.Getpid()})
	s.serve(ctx)
	return nil
}
