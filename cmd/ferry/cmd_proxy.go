package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/core/proxy"
)

func init() {
	register(&command{
		name: "proxy",
		summary: `Run a proxy: an agent that moves disk data for ferry's control plane.

A proxy runs next to the storage it reads or writes: the source proxy reads
the snapshot disks and keeps the digests in the repository, the target
proxy writes the replica disks, and the data goes straight from one to the
other. It starts the plugins it needs from its own plugin folders, with the
configuration the control plane sends for each task (over mutually
authenticated TLS 1.3; nothing of it is written to disk).

Its credentials are a folder made by 'ferry ca issue NAME' on the control
plane's host (ca.crt, tls.crt, tls.key); the proxy's name is the one its
certificate carries, and a proxy block of that name points at --listen.
Stop it with Ctrl-C or SIGTERM: running tasks end, and the sessions that
ran them fail those disks (earlier restore points stay intact).

On Windows it also runs as a service, ferry-proxy, started at boot:
'ferry proxy install-service --tls DIR [flags]' (as an administrator)
stores the flags given, with --config and --log-level, as the service's
arguments; the service logs to ferry-proxy.log beside ferry.exe, and a
stop of the service is Ctrl-C. 'ferry proxy remove-service' stops and
removes it.`,
		usage: "ferry proxy [install-service] --tls DIR [--listen ADDR] [--site SITE] [--max-tasks N] [--plugins DIR] | ferry proxy remove-service",
		setup: func(fs *pflag.FlagSet) runFunc {
			f := declareProxyFlags()
			fs.AddFlagSet(f.set)
			return func(e *env, args []string) error { return runProxy(e, args, f) }
		},
		complete: func(_ string, args []string) []string {
			if len(args) == 0 {
				return []string{"install-service", "remove-service"}
			}
			return nil
		},
	})
}

// DefaultProxyListen is where a proxy listens unless told otherwise.
const DefaultProxyListen = ":7443"

func runProxy(e *env, args []string, f *proxyFlags) error {
	if len(args) > 0 {
		switch args[0] {
		case "install-service":
			return installService(e, args[1:], f)
		case "remove-service":
			return removeService(e, args[1:])
		}
	}
	if err := f.check(args); err != nil {
		return err
	}
	return runStoppable(e, func(e *env, ctx context.Context, ready func()) error { return serveProxy(ctx, e, f, ready) })
}

// proxyFlags are the flags of `ferry proxy`.
type proxyFlags struct {
	tlsDir, listen, site, pluginDir *string
	maxTasks                        *int
	// set holds these flags alone, without the global ones; which were
	// given is what install-service stores.
	set *pflag.FlagSet
}

// declareProxyFlags declares the flags of `ferry proxy`.
func declareProxyFlags() *proxyFlags {
	fs := pflag.NewFlagSet("proxy", pflag.ContinueOnError)
	return &proxyFlags{
		tlsDir:    fs.String("tls", "", "the proxy's credentials folder (from 'ferry ca issue NAME')"),
		listen:    fs.String("listen", DefaultProxyListen, "the address to listen on, host:port"),
		site:      fs.String("site", "", "the site the proxy is at, as proxy blocks and sources and targets name it"),
		maxTasks:  fs.Int("max-tasks", 4, "how many task halves the proxy runs at once"),
		pluginDir: fs.String("plugins", "", "a folder searched for plugins before the usual ones"),
		set:       fs,
	}
}

// check checks the flags of `ferry proxy` and its arguments (there are
// none).
func (f *proxyFlags) check(args []string) error {
	if len(args) > 0 {
		return usagef("ferry proxy takes no arguments, only flags")
	}
	if *f.tlsDir == "" {
		return usagef("--tls is required: the folder 'ferry ca issue NAME' wrote for this proxy")
	}
	if *f.maxTasks < 1 {
		return usagef("--max-tasks must be at least 1")
	}
	return nil
}

// runUntilSignal runs serve until Ctrl-C or SIGTERM; a second one ends the
// process at once.
func runUntilSignal(e *env, serve serveFunc) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	return serve(e, ctx, func() {})
}

// serveProxy serves until ctx ends, calling ready once it listens.
func serveProxy(ctx context.Context, e *env, f *proxyFlags, ready func()) error {
	tlsDir, listen, site, maxTasks, pluginDir := f.tlsDir, f.listen, f.site, f.maxTasks, f.pluginDir
	creds, err := pki.Load(*tlsDir)
	if err != nil {
		return err
	}
	id := creds.Identity()
	if id.Role != pki.RoleProxy {
		return fmt.Errorf("%s holds a %s certificate (%s); a proxy needs one issued with 'ferry ca issue NAME' (role proxy)", *tlsDir, id.Role, id.Name)
	}
	limitMemory(os.Getenv)
	dirs := pluginhost.SearchPath(e.configDir)
	if *pluginDir != "" {
		dirs = append([]string{*pluginDir}, dirs...)
	}
	host := pluginhost.New(pluginhost.Options{Dirs: dirs, Logger: e.log})
	defer host.Close()
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("proxy %s: %w", id.Name, err)
	}
	a := &proxy.Agent{Name: id.Name, Site: *site, MaxTasks: *maxTasks, Version: version, Plugins: host, Creds: creds, Log: e.log}
	srv := a.Server()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	fmt.Fprintf(e.stdout, "proxy %s listening on %s (site %q, %d task slots, certificate valid until %s)\n",
		id.Name, lis.Addr(), *site, *maxTasks, creds.NotAfter().UTC().Format(time.DateOnly))
	if f, ok := e.stdout.(interface{ Flush() error }); ok {
		f.Flush()
	}
	ready()
	select {
	case err := <-served:
		return fmt.Errorf("proxy %s: %w", id.Name, err)
	case <-ctx.Done():
	}
	fmt.Fprintf(e.stderr, "proxy %s: stopping\n", id.Name)
	// Running tasks end with the connections: their sessions fail those
	// disks and the next run resumes them.
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	<-served // Serve returns nil once stopped
	a.Close()
	return nil
}

// proxyMemoryLimit is the soft limit of a proxy's own Go memory (its
// plugins apart) unless GOMEMLIMIT sets one. The data path keeps its
// buffers and zstd encoders in pools for the next task (about 65 MiB live
// after a full copy of 1 GiB, 100 MiB of 4 GiB), and the garbage collector
// lets the heap grow to twice what is live before it collects: a proxy
// that runs for weeks would settle near 200 MiB on its own, more than a
// proxy and its plugins may hold (256 MiB). Near the limit it collects
// sooner instead.
const proxyMemoryLimit = 160 << 20

// limitMemory sets proxyMemoryLimit unless the environment (getenv) sets
// GOMEMLIMIT, and returns the limit in effect.
func limitMemory(getenv func(string) string) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	debug.SetMemoryLimit(proxyMemoryLimit)
	return proxyMemoryLimit
}
