package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/core/traffic"
	"github.com/ferry-dr/ferry/sdk"
)

func init() {
	register(&command{
		name: "server",
		summary: `Run the jobs at their schedules, with an API, metrics and webhooks.

ferry server runs every job of the configuration at its schedule with the
engine 'ferry run' uses: one session of a job at a time (a run due while
the last one runs is queued once), at most --max-sessions at once, and once
at start a run missed while no server ran, and each run it owed when it
stopped (queued, asked, or waiting for a slot). It watches each job's rpo, posts
the configuration's webhooks, and serves an HTTP API with Prometheus
metrics on --listen (TLS with the control plane's certificate of 'ferry ca
init'; a client needs that certificate or a token of 'ferry token
create'). While it runs, 'ferry run' of its jobs from elsewhere is refused.
SIGHUP, or a change of a .hcl file, reloads the configuration (an invalid
one is reported and the running one kept); SIGHUP, or a token made or
revoked, reloads the API's tokens. SIGTERM or Ctrl-C stops it:
running sessions stop as Ctrl-C stops 'ferry run'; a second signal stops at
once. docs/server.md says more.`,
		usage: "ferry [--config DIR] server [--listen ADDR] [--insecure-plaintext] [--max-sessions N] [--skip-missed] [--keep-sessions DURATION]",
		setup: func(fs *pflag.FlagSet) runFunc {
			var o serverOptions
			fs.StringVar(&o.listen, "listen", "127.0.0.1:7444", "the `address` the API listens on")
			fs.BoolVar(&o.plaintext, "insecure-plaintext", false, "serve the API without TLS, on a loopback address only (development); tokens are still needed")
			fs.IntVar(&o.maxSessions, "max-sessions", server.DefaultMaxSessions, "how many sessions run at once, of all jobs")
			fs.BoolVar(&o.skipMissed, "skip-missed", false, "do not run at start the jobs whose run, or the plans whose scheduled test, fell due while no server ran")
			fs.StringVar(&o.keep, "keep-sessions", "90d", "how long a session is kept after it ended (0: forever)")
			return func(e *env, args []string) error {
				if len(args) > 0 {
					return usagef("unexpected argument %q", args[0])
				}
				return runServer(e, o)
			}
		},
	})
}

type serverOptions struct {
	listen      string
	plaintext   bool
	maxSessions int
	skipMissed  bool
	keep        string
}

// reloadEvery is how often the server looks for a changed configuration
// file.
const reloadEvery = 2 * time.Second

func runServer(e *env, o serverOptions) error {
	keep, err := parseKeep(o.keep)
	if err != nil {
		return usagef("--keep-sessions %q: %v", o.keep, err)
	}
	if o.maxSessions < 1 {
		return usagef("--max-sessions must be at least 1")
	}
	logger := serverLogger(e)
	signaled, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// After the first signal, a second one ends the server at once,
		// as killing it would: the crash tests show that is safe too. The
		// server begins to stop only once the signals' default action is
		// back, so that a second signal can never be taken for the first.
		<-signaled.Done()
		stopSignals()
		cancel()
	}()
	w, err := openWorkspace(ctx, e)
	if err != nil {
		return err
	}
	defer w.Close()
	lis, scheme, err := apiListener(w, o)
	if err != nil {
		return err
	}
	defer lis.Close()
	host, _ := os.Hostname()
	addr := lis.Addr().String()
	self := catalog.Controller{PID: os.Getpid(), Host: host, Address: scheme + "://" + addr, Since: time.Now().UTC()}
	if err := w.cat.ClaimControl(self); err != nil {
		return err
	}

	st := &serverState{w: w, log: logger}
	defer st.close()
	if err := st.configure(ctx, w.cfg); err != nil {
		return err
	}
	var srv *server.Server
	logged := logEvent(logger)
	events, stopRecording := recordProgress(w.cat, logger, func(ev engine.Event) {
		logged(ev)
		srv.Publish(serverEvent(ev))
	})
	defer stopRecording()
	run := func(ctx context.Context, job *config.Job, began func(string)) (*catalog.Session, error) {
		eng := st.engine()
		eng.Events = func(ev engine.Event) {
			if ev.Kind == engine.SessionStarted {
				began(ev.Session)
			}
			events(ev)
		}
		return eng.Run(ctx, job)
	}
	srv = server.New(run, w.cat, logger, server.Options{MaxSessions: o.maxSessions, SkipMissed: o.skipMissed, KeepSessions: keep})
	metrics := server.NewMetrics(srv)
	metrics.Proxies = st.proxySlots
	hooks := server.NewWebhooks(logger.Named("webhook"))
	defer hooks.Close()
	hooks.Configure(w.cfg.Webhooks)
	notices := server.Notices{W: hooks}
	srv.Ended = func(job string, s *catalog.Session, err error) {
		metrics.Ended(job, s, err)
		notices.Ended(job, s, err)
	}
	srv.Alarm = notices.Alarm
	srv.Tested = notices.Tested
	srv.Failover = func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
		return st.engine().Failover(ctx, job, vm, engine.FailoverAction(action), point)
	}
	srv.Failback = func(ctx context.Context, job *config.Job, vm string, action failback.Action, to string) (*server.FailedBack, error) {
		res, err := st.engine().Failback(ctx, job, vm, action, engine.FailbackOptions{To: to})
		if res == nil {
			return nil, err
		}
		return &server.FailedBack{Failback: res.Failback, Ended: res.Ended, Steps: res.Steps, Syncs: res.Syncs, Production: res.Production}, err
	}
	srv.Tests = serverTests{st}
	srv.Plan = func(ctx context.Context, jobs []*config.Job) ([]plan.Plan, error) {
		return st.engine().Plan(ctx, jobs)
	}
	srv.Controller = self

	tokens, err := server.LoadTokens(server.TokensDir(w.cfg.Dir))
	if err != nil {
		return err
	}
	api := &http.Server{
		Handler:           server.Authorize(srv.Handler(metrics, version), tokens),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logger.StandardWriter(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}), "", 0),
	}
	// The API answers once the server knows its jobs: a call made as
	// soon as the line below is printed finds every job of the
	// configuration.
	srv.Ready = func() {
		go func() {
			if err := api.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("the API stopped", "error", err)
			}
		}()
		go st.watch(ctx, srv, hooks, tokens)
		if o.plaintext {
			fmt.Fprintf(e.stderr, "WARNING: ferry server serves its API WITHOUT TLS on %s (--insecure-plaintext): for development only; tokens cross in the clear\n", addr)
		}
		fmt.Fprintf(e.stderr, "ferry server: %d jobs; API on %s://%s; stop with Ctrl-C or SIGTERM\n", len(w.cfg.Jobs), scheme, addr)
	}
	err = srv.Serve(ctx, w.cfg)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	api.Shutdown(sctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, "ferry server: stopped; earlier restore points are intact, the next run resumes")
	return nil
}

// parseKeep reads --keep-sessions: a duration as the configuration
// writes them (90d, 12h), 0 for forever.
func parseKeep(s string) (time.Duration, error) {
	d, err := config.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("write a duration such as 90d, 12h or 30m")
	}
	return d, nil
}

// serverLogger is the server's log: hclog on standard error, JSON when
// that is not a terminal, at info unless --log-level says more.
func serverLogger(e *env) hclog.Logger {
	level := e.log.GetLevel()
	if level > hclog.Info || level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: "ferry-server", Level: level, Output: e.stderr, JSONFormat: !isTerminal(e.stderr)})
}

// logEvent logs what the engine says of its sessions.
func logEvent(log hclog.Logger) func(engine.Event) {
	return func(ev engine.Event) {
		switch ev.Kind {
		case engine.SessionStarted:
			log.Debug("session started", "job", ev.Job, "session", ev.Session)
		case engine.Notice:
			args := []any{"job", ev.Job, "session", ev.Session}
			if ev.VM != "" {
				args = append(args, "vm", ev.VM)
			}
			log.Info(ev.Message, args...)
		case engine.VMFinished:
			args := []any{"job", ev.Job, "session", ev.Session, "vm", ev.VM, "result", ev.Result}
			if ev.Err != nil {
				args = append(args, "error", ev.Err.Error())
			}
			log.Info("vm finished", args...)
		}
	}
}

// serverEvent is an engine event as the API's watchers get it.
func serverEvent(ev engine.Event) server.Event {
	out := server.Event{Time: ev.Time.UTC(), Session: ev.Session, Job: ev.Job, VM: ev.VM, Message: ev.Message, Result: string(ev.Result)}
	disk := ev.Disk
	switch ev.Kind {
	case engine.SessionStarted:
		out.Kind = "session.started"
	case engine.VMStarted:
		out.Kind = "vm.started"
	case engine.DiskStarted:
		out.Kind, out.Disk, out.Total = "disk.started", &disk, ev.Total
	case engine.DiskProgress:
		out.Kind, out.Disk, out.Done, out.Total = "disk.progress", &disk, ev.Done, ev.Total
	case engine.DiskFinished:
		out.Kind, out.Disk, out.Done, out.Total = "disk.finished", &disk, ev.Done, ev.Total
	case engine.VMFinished:
		out.Kind = "vm.finished"
	case engine.SessionFinished:
		out.Kind = "session.finished"
	default:
		out.Kind = "notice"
	}
	if ev.Err != nil {
		out.Error = ev.Err.Error()
	}
	return out
}

// apiListener opens the API's listener: TLS with the control plane's
// credentials, or plaintext on a loopback address when asked.
func apiListener(w *workspace, o serverOptions) (net.Listener, string, error) {
	if o.plaintext {
		host, _, err := net.SplitHostPort(o.listen)
		if err != nil {
			return nil, "", usagef("--listen %q: %v", o.listen, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, "", usagef("--insecure-plaintext serves only a loopback address (127.0.0.1, ::1), not %q: use TLS (ferry ca init) anywhere else", host)
		}
		lis, err := net.Listen("tcp", o.listen)
		return lis, "http", err
	}
	creds, err := pki.Load(pki.ControlDir(w.cfg.Dir))
	if err != nil {
		return nil, "", fmt.Errorf("ferry server serves its API over TLS with the control plane's certificate: %w; make it with 'ferry ca init' (or --insecure-plaintext on a loopback address, for development)", err)
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, "", err
	}
	return tls.NewListener(lis, server.TLSConfig(creds)), "https", nil
}

// serverState is what sessions run with, changed by a reload: the
// configuration's proxies and traffic rules. (The workspace keeps the
// configuration the server started with: of it, sessions use only the
// folder and the plugin host, which a reload does not change.)
type serverState struct {
	w   *workspace
	log hclog.Logger

	mu        sync.Mutex
	pool      *proxy.Pool
	traffic   *traffic.Registry
	stopRules context.CancelFunc
	proxies   string        // the configured proxies, to tell a change
	pools     []*proxy.Pool // every pool made, closed at the end
}

// configure takes a configuration's proxies and traffic rules.
func (st *serverState) configure(ctx context.Context, cfg *config.Config) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if key := proxiesKey(cfg); key != st.proxies || st.pool == nil && len(cfg.Proxies) > 0 {
		st.pool, st.proxies = nil, key
		if len(cfg.Proxies) > 0 {
			// Sessions that run keep the pool they began with; the new
			// one is for the sessions after.
			pool, err := newProxyPool(cfg, st.log)
			if err != nil {
				return err
			}
			st.pool, st.pools = pool, append(st.pools, pool)
		}
	}
	if st.stopRules != nil {
		st.stopRules()
		st.stopRules, st.traffic = nil, nil
	}
	if len(cfg.TrafficRules) > 0 {
		reg := traffic.NewRegistry()
		rctx, stopRules := context.WithCancel(ctx)
		var changed func()
		if st.pool != nil {
			st.pool.Traffic = reg
			changed = st.pool.PushRates
		}
		next := reg.Update(cfg.TrafficRules, time.Now())
		go reg.Keep(rctx, cfg.TrafficRules, next, changed)
		st.traffic, st.stopRules = reg, stopRules
	}
	return nil
}

// proxySlots are the task slots of the proxies, for the metrics: the
// current configuration's pool, and the tasks that sessions begun before
// a reload run on older ones.
func (st *serverState) proxySlots() ([]server.ProxySlots, int) {
	st.mu.Lock()
	current, older := st.pool, slices.Clone(st.pools)
	st.mu.Unlock()
	older = slices.DeleteFunc(older, func(p *proxy.Pool) bool { return p == current })
	slices.Reverse(older) // newest first
	states, waiting := proxy.SlotsOf(current, older...)
	out := make([]server.ProxySlots, len(states))
	for i, s := range states {
		out[i] = server.ProxySlots{Proxy: s.Proxy, Site: s.Site, Slots: s.Slots, Busy: s.Busy}
	}
	return out, waiting
}

func proxiesKey(cfg *config.Config) string {
	var parts []string
	for _, p := range cfg.Proxies {
		parts = append(parts, fmt.Sprintf("%s@%s/%s/%d", p.Name, p.Address, p.Site, p.MaxTasks))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// engine is the engine of one session, as the configuration is now.
// serverTests runs test VMs with the server's engine of the moment.
type serverTests struct{ st *serverState }

func (t serverTests) StartTest(ctx context.Context, job *config.Job, vm, id, point string, testMap []config.NetworkMapping, labels map[string]string) (*sdk.TestVM, error) {
	return t.st.engine().StartTest(ctx, job, vm, id, point, testMap, labels)
}

func (t serverTests) ListTests(ctx context.Context, job *config.Job) ([]sdk.TestVM, error) {
	return t.st.engine().ListTests(ctx, job)
}

func (t serverTests) StopTest(ctx context.Context, job *config.Job, id string) error {
	return t.st.engine().StopTest(ctx, job, id)
}

var _ recovery.Tests = serverTests{}

func (st *serverState) engine() *engine.Engine {
	st.mu.Lock()
	defer st.mu.Unlock()
	eng := st.w.engine()
	if st.pool != nil {
		eng.Proxies = st.pool
	}
	if st.traffic != nil {
		eng.Traffic = st.traffic
	}
	return eng
}

func (st *serverState) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stopRules != nil {
		st.stopRules()
	}
	for _, p := range st.pools {
		p.Close()
	}
}

// watch reloads the configuration on SIGHUP and when a .hcl file of the
// folder changes, and the API's tokens on SIGHUP and when their folder
// changes (a token made or revoked), until ctx ends.
func (st *serverState) watch(ctx context.Context, srv *server.Server, hooks *server.Webhooks, tokens *server.TokenCache) {
	hup := make(chan os.Signal, 1)
	notifyHangup(hup)
	defer signal.Stop(hup)
	tick := time.NewTicker(reloadEvery)
	defer tick.Stop()
	dir := st.w.cfg.Dir
	last := folderPrint(dir)
	for {
		var why string
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
			st.reloadTokens(tokens, why, true)
		case <-tick.C:
			st.reloadTokens(tokens, "their folder changed", false)
			now := folderPrint(dir)
			if now == last {
				continue
			}
			why = "a configuration file changed"
		}
		last = folderPrint(dir)
		st.reload(ctx, why, srv, hooks)
	}
}

// reloadTokens reads the API's tokens again: always, or only when their
// folder changed. A folder that cannot be read keeps the tokens known.
func (st *serverState) reloadTokens(tokens *server.TokenCache, why string, always bool) {
	reloaded, err := true, error(nil)
	if always {
		err = tokens.Reload()
	} else {
		reloaded, err = tokens.Refresh()
	}
	switch {
	case err != nil:
		st.log.Error("the tokens cannot be read: the ones known are kept", "why", why, "error", err)
	case reloaded:
		st.log.Info("tokens reloaded", "why", why, "tokens", tokens.Len())
	}
}

// reload reads the configuration again and applies it, or keeps the
// running one when the new one has errors.
func (st *serverState) reload(ctx context.Context, why string, srv *server.Server, hooks *server.Webhooks) {
	cfg, diags := loadConfig(ctx, st.w.cfg.Dir, st.w.host)
	if diags.HasErrors() {
		var b strings.Builder
		cfg.WriteDiagnostics(&b, diags, 100, false)
		st.log.Error("the configuration has errors: the running one is kept", "why", why, "diagnostics", b.String())
		return
	}
	if err := st.configure(ctx, cfg); err != nil {
		st.log.Error("the configuration's proxies cannot be used: the running configuration is kept", "why", why, "error", err)
		return
	}
	srv.Reload(cfg)
	hooks.Configure(cfg.Webhooks)
	st.log.Info("configuration reloaded", "why", why, "jobs", len(cfg.Jobs))
}

// folderPrint is a fingerprint of the .hcl files of dir: names, sizes and
// times, to see a change without reading them.
func folderPrint(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	h := sha256.New()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".hcl") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			fmt.Fprintf(h, "%s error\n", e.Name())
			continue
		}
		fmt.Fprintf(h, "%s %d %d\n", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return string(h.Sum(nil))
}
