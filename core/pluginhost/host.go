package pluginhost

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// Options tune a Host.
type Options struct {
	// Dirs are the folders to search, in order (see SearchPath).
	Dirs []string
	// Logger receives ferry's and the plugins' logs; nil discards them.
	Logger hclog.Logger
	// StartTimeout bounds the handshake of a starting plugin.
	StartTimeout time.Duration
	// StopDrain is how long a stopping plugin may finish its calls.
	StopDrain time.Duration
}

// Host starts plugins on first use and keeps them running until Close. It
// is safe for concurrent use.
type Host struct {
	opts  Options
	log   hclog.Logger
	found map[string]Found

	mu      sync.Mutex
	running map[string]*process
	closed  bool
	sockDir string // set once the host holds the socket folder
}

// process is one running plugin.
type process struct {
	name   string
	path   string
	client *plugin.Client
	rpc    *sdk.Client
	info   *sdk.Info

	mu        sync.Mutex
	instances map[string]*instance // by instanceKey
}

// instance is a block configured in a plugin process, or being configured:
// done closes when comp or err is set.
type instance struct {
	done chan struct{}
	comp any
	err  error
}

func (p *process) exited() bool { return p.client.Exited() }

// New returns a Host over the plugins found in opts.Dirs. It starts nothing.
func New(opts Options) *Host {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if opts.StopDrain == 0 {
		opts.StopDrain = 5 * time.Second
	}
	h := &Host{opts: opts, log: opts.Logger, found: map[string]Found{}, running: map[string]*process{}}
	for _, f := range Discover(opts.Dirs) {
		if !f.Shadowed {
			h.found[f.Name] = f
		}
	}
	return h
}

// Found lists the plugins the host can start, by name.
func (h *Host) Found() []Found {
	out := make([]Found, 0, len(h.found))
	for _, f := range h.found {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Info starts the plugin if needed and returns what it says of itself.
func (h *Host) Info(ctx context.Context, name string) (*sdk.Info, error) {
	p, err := h.process(ctx, name)
	if err != nil {
		return nil, err
	}
	return p.info, nil
}

// Client starts the plugin if needed and returns its client.
func (h *Host) Client(ctx context.Context, name string) (*sdk.Client, error) {
	p, err := h.process(ctx, name)
	if err != nil {
		return nil, err
	}
	return p.rpc, nil
}

// pluginFor names the plugin that serves a component type: the plugin of
// the same name, or for a type "<name>-<variant>" the plugin <name>.
func (h *Host) pluginFor(typ string) (string, error) {
	if _, ok := h.found[typ]; ok {
		return typ, nil
	}
	if i := strings.IndexByte(typ, '-'); i > 0 {
		if _, ok := h.found[typ[:i]]; ok {
			return typ[:i], nil
		}
	}
	return "", fmt.Errorf("no plugin serves %q (looked for %s%s in %s): %w", typ, Prefix, typ, strings.Join(h.opts.Dirs, ", "), errdefs.ErrNotFound)
}

// Component finds the plugin and the description of a component type.
func (h *Host) Component(ctx context.Context, kind sdk.Kind, typ string) (*sdk.Client, sdk.ComponentInfo, error) {
	p, c, err := h.component(ctx, kind, typ)
	if err != nil {
		return nil, c, err
	}
	return p.rpc, c, nil
}

func (h *Host) component(ctx context.Context, kind sdk.Kind, typ string) (*process, sdk.ComponentInfo, error) {
	name, err := h.pluginFor(typ)
	if err != nil {
		return nil, sdk.ComponentInfo{}, err
	}
	p, err := h.process(ctx, name)
	if err != nil {
		return nil, sdk.ComponentInfo{}, err
	}
	c, ok := p.info.Component(kind, typ)
	if !ok {
		return nil, sdk.ComponentInfo{}, fmt.Errorf("plugin %s (%s) serves no %s %q: %w", name, p.path, kind, typ, errdefs.ErrNotFound)
	}
	return p, c, nil
}

// Schema returns the body schema of a component type, starting its plugin
// if needed.
func (h *Host) Schema(kind sdk.Kind, typ string) (*schema.Block, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.StartTimeout)
	defer cancel()
	_, c, err := h.Component(ctx, kind, typ)
	if err != nil {
		return nil, err
	}
	return c.Schema, nil
}

// ComponentInfo returns what the plugin serving a component type declares
// of it (capabilities, limits, schema), starting the plugin if needed. It
// lets config.Load check jobs against what their components can do.
func (h *Host) ComponentInfo(kind sdk.Kind, typ string) (sdk.ComponentInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.StartTimeout)
	defer cancel()
	_, c, err := h.Component(ctx, kind, typ)
	return c, err
}

// Validate asks the plugin serving a component type to check a decoded
// configuration.
func (h *Host) Validate(ctx context.Context, kind sdk.Kind, typ string, cfg cty.Value) (schema.Diagnostics, error) {
	rpc, c, err := h.Component(ctx, kind, typ)
	if err != nil {
		return nil, err
	}
	return rpc.Validate(ctx, kind, typ, c.Schema, cfg)
}

// Source returns the source instance of a component type configured
// with cfg. The first call configures it in the plugin; later calls with
// the same type and configuration return that instance, for as long as
// the plugin process runs (see instance).
func (h *Host) Source(ctx context.Context, typ string, cfg cty.Value) (sdk.Source, sdk.Capabilities, error) {
	got, c, err := h.instance(ctx, sdk.KindSource, typ, cfg, func(rpc *sdk.Client, s *schema.Block) (any, error) {
		src, _, err := rpc.Source(ctx, typ, s, cfg)
		return src, err
	})
	if err != nil {
		return nil, c.Capabilities, err
	}
	return got.(sdk.Source), c.Capabilities, nil
}

// Target returns the target instance of a component type configured with
// cfg, as Source does.
func (h *Host) Target(ctx context.Context, typ string, cfg cty.Value) (sdk.Target, sdk.Capabilities, error) {
	got, c, err := h.instance(ctx, sdk.KindTarget, typ, cfg, func(rpc *sdk.Client, s *schema.Block) (any, error) {
		tgt, _, err := rpc.Target(ctx, typ, s, cfg)
		return tgt, err
	})
	if err != nil {
		return nil, c.Capabilities, err
	}
	return got.(sdk.Target), c.Capabilities, nil
}

// Repository returns the repository instance of a component type
// configured with cfg, as Source does.
func (h *Host) Repository(ctx context.Context, typ string, cfg cty.Value) (sdk.Repository, error) {
	got, _, err := h.instance(ctx, sdk.KindRepository, typ, cfg, func(rpc *sdk.Client, s *schema.Block) (any, error) {
		repo, _, err := rpc.Repository(ctx, typ, s, cfg)
		return repo, err
	})
	if err != nil {
		return nil, err
	}
	return got.(sdk.Repository), nil
}

// instance returns the instance of a block (kind, type and configuration)
// in the plugin serving the type, configuring it with configure on first
// use.
//
// A long-running host (ferry server) asks for a job's blocks at every
// session: configuring them anew each time would cost a Configure call
// per block per session (a vSphere block logs in to vCenter) and leave
// every earlier instance, with its connection, in the plugin until it
// stops, since the protocol has no call to release one. So an instance
// is kept for as long as its plugin process runs and is shared by every
// caller with the same block, as a proxy shares its instances (package
// proxy): plugins serve concurrent calls on an instance already. A block
// whose configuration changed is a new instance; the old one stays idle
// in the plugin. A restarted plugin starts with no instances. A failed
// Configure is not kept: the next call tries again.
func (h *Host) instance(ctx context.Context, kind sdk.Kind, typ string, cfg cty.Value, configure func(*sdk.Client, *schema.Block) (any, error)) (any, sdk.ComponentInfo, error) {
	p, c, err := h.component(ctx, kind, typ)
	if err != nil {
		return nil, c, err
	}
	key, ok := instanceKey(kind, typ, cfg)
	if !ok {
		got, err := configure(p.rpc, c.Schema)
		return got, c, err
	}
	for {
		p.mu.Lock()
		in := p.instances[key]
		if in == nil {
			in = &instance{done: make(chan struct{})}
			if p.instances == nil {
				p.instances = map[string]*instance{}
			}
			p.instances[key] = in
			p.mu.Unlock()
			in.comp, in.err = configure(p.rpc, c.Schema)
			if in.err != nil {
				p.mu.Lock()
				delete(p.instances, key)
				p.mu.Unlock()
			}
			close(in.done)
			return in.comp, c, in.err
		}
		p.mu.Unlock()
		select {
		case <-in.done:
		case <-ctx.Done():
			return nil, c, ctx.Err()
		}
		if in.err == nil {
			return in.comp, c, nil
		}
		// The call that configured it failed (perhaps only its context
		// ended): try again under this call's.
	}
}

// instanceKey names a block's instance: BlockKey of its configuration's
// JSON. ok is false for a configuration that cannot be encoded, which is
// configured each time.
func instanceKey(kind sdk.Kind, typ string, cfg cty.Value) (string, bool) {
	cfg, _ = cfg.UnmarkDeep()
	t, err := ctyjson.MarshalType(cfg.Type())
	if err != nil {
		return "", false
	}
	v, err := ctyjson.Marshal(cfg, cfg.Type())
	if err != nil {
		return "", false
	}
	return BlockKey(kind, typ, t, v), true
}

// BlockKey names a plugin block by its kind, type and configuration (the
// cty JSON of its type and of its value, secrets included): a SHA-256,
// raw, never shown. The host keys its instances with it, and a proxy its
// attached blocks.
func BlockKey(kind sdk.Kind, typ string, typeJSON, valueJSON []byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", kind, typ, len(typeJSON))
	h.Write(typeJSON)
	h.Write(valueJSON)
	return string(h.Sum(nil))
}

// process returns the running process of a plugin, starting it (again,
// after a crash) when needed.
func (h *Host) process(ctx context.Context, name string) (*process, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("plugin %s: the plugin host is closed: %w", name, errdefs.ErrFailedPrecondition)
	}
	if p := h.running[name]; p != nil {
		if !p.exited() {
			return p, nil
		}
		h.log.Warn("plugin exited; starting it again", "plugin", name, "path", p.path)
		p.client.Kill()
		delete(h.running, name)
	}
	f, ok := h.found[name]
	if !ok {
		return nil, fmt.Errorf("plugin %s not found (looked for %s%s in %s): %w", name, Prefix, name, strings.Join(h.opts.Dirs, ", "), errdefs.ErrNotFound)
	}
	p, err := h.start(ctx, f)
	if err != nil {
		return nil, err
	}
	h.running[name] = p
	return p, nil
}

// allowedEnv are the variables a plugin inherits; secrets in ferry's
// environment stay there (configuration values reach plugins through
// Configure). FERRY_CPUPROFILE profiles the plugins with ferry.
var allowedEnv = []string{"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ", "USER", sdk.CPUProfileEnv}

func (h *Host) start(ctx context.Context, f Found) (*process, error) {
	if h.sockDir == "" {
		dir, err := acquireSocketDir()
		if err != nil {
			return nil, fmt.Errorf("plugin %s (%s): %w", f.Name, f.Path, err)
		}
		h.sockDir = dir
	}
	// The plugin's listener accepts only ferry's certificate, and ferry
	// only the plugin's: another process cannot talk to the plugin, or
	// pose as it.
	creds, err := sdk.NewHostTLS()
	if err != nil {
		return nil, fmt.Errorf("plugin %s (%s): %w", f.Name, f.Path, err)
	}
	p := &process{name: f.Name, path: f.Path}
	stderr := &tailWriter{max: 4096}
	p.client = plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.ClientPlugins(sdk.ClientOptions{Name: f.Name, Exited: func() bool { return p.client.Exited() }}),
		// go-plugin fills spec's environment (handshake, socket
		// folder); the runner starts the plugin from it, with the
		// plugin's credentials.
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
			cmd := exec.Command(f.Path)
			cmd.Env = append(spec.Env, creds.Env...)
			for _, k := range allowedEnv {
				if v, ok := os.LookupEnv(k); ok {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
			}
			return newProcRunner(cmd), nil
		},
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// Not go-plugin's AutoMTLS, which makes a P-521 key on each
		// side. A plugin of an older sdk still answers with it, and
		// go-plugin trusts the certificate it sends in the handshake
		// in place of the one made here (see sdk.NewHostTLS).
		TLSConfig:        creds.Config,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: h.sockDir},
		Logger:           h.log.Named(f.Name),
		StartTimeout:     h.opts.StartTimeout,
		Stderr:           stderr,
		GRPCDialOptions:  dialOptions(),
	})
	rpcClient, err := p.client.Client()
	if err != nil {
		p.client.Kill()
		return nil, startError(f, err, stderr.String())
	}
	raw, err := rpcClient.Dispense(sdk.DispenseName)
	if err != nil {
		p.client.Kill()
		return nil, fmt.Errorf("plugin %s (%s): %w", f.Name, f.Path, err)
	}
	p.rpc = raw.(*sdk.Client)
	info, err := p.rpc.Info(ctx)
	if err != nil {
		p.client.Kill()
		return nil, fmt.Errorf("plugin %s (%s): get info: %w", f.Name, f.Path, err)
	}
	if info.ProtocolMajor != sdk.ProtocolMajor {
		p.client.Kill()
		return nil, fmt.Errorf("plugin %s (%s) speaks protocol %d, ferry speaks %d: %w", f.Name, f.Path, info.ProtocolMajor, sdk.ProtocolMajor, errdefs.ErrFailedPrecondition)
	}
	if info.Name != f.Name {
		p.client.Kill()
		return nil, fmt.Errorf("plugin file %s says its name is %q: %w", f.Path, info.Name, errdefs.ErrFailedPrecondition)
	}
	p.info = info
	h.log.Debug("plugin started", "plugin", f.Name, "version", info.Version, "path", f.Path)
	return p, nil
}

// startError turns go-plugin's start failures into one sentence a person
// can act on.
func startError(f Found, err error, stderr string) error {
	msg := err.Error()
	var why string
	switch {
	case strings.Contains(msg, "Unrecognized remote plugin message"):
		line := strings.TrimPrefix(strings.SplitN(msg, "\n", 2)[0], "Unrecognized remote plugin message: ")
		why = fmt.Sprintf("it wrote %q on stdout before the handshake (plugins must not print to stdout; log to stderr)", line)
	case strings.Contains(msg, "plugin exited before we could connect"):
		why = "it exited before the handshake"
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		why = "it did not complete the handshake in time"
	case strings.Contains(msg, "Incompatible API version"), strings.Contains(msg, "incompatible"):
		why = "it speaks another protocol version: " + msg
	default:
		why = msg
	}
	if tail := strings.TrimSpace(stderr); tail != "" {
		why += "; its last output: " + lastLines(tail, 5)
	}
	return fmt.Errorf("plugin %s (%s) failed to start: %s: %w", f.Name, f.Path, why, errdefs.ErrUnavailable)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// Close stops every plugin: a graceful Stop with a drain, then the process
// is ended whatever it does. It returns the plugins that did not stop in
// time.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	running := h.running
	h.running = map[string]*process{}
	sockDir := h.sockDir
	h.sockDir = ""
	h.mu.Unlock()
	if sockDir != "" {
		defer releaseSocketDir()
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(running))
	for _, p := range running {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- h.stop(p)
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		if err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

func (h *Host) stop(p *process) error {
	defer p.client.Kill()
	if p.exited() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.StopDrain+2*time.Second)
	defer cancel()
	if err := p.rpc.Stop(ctx, h.opts.StopDrain); err != nil {
		return fmt.Errorf("plugin %s (%s) did not stop within %s and was killed: %w", p.name, p.path, h.opts.StopDrain+2*time.Second, err)
	}
	return nil
}

// tailWriter keeps the last bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

var _ io.Writer = (*tailWriter)(nil)

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = w.buf[len(w.buf)-w.max:]
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

// Types lists the component types of a kind that the found plugins serve,
// starting them to ask; a plugin that does not start is left out (asking
// for its types again reports its error).
func (h *Host) Types(kind sdk.Kind) []string {
	ctx, cancel := context.WithTimeout(context.Background(), h.opts.StartTimeout)
	defer cancel()
	var out []string
	for _, f := range h.Found() {
		info, err := h.Info(ctx, f.Name)
		if err != nil {
			continue
		}
		for _, c := range info.Components {
			if c.Kind == kind {
				out = append(out, c.Type)
			}
		}
	}
	sort.Strings(out)
	return out
}
