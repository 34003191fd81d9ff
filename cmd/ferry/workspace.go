package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/sdk"
)

// workspace is what the verbs that act on jobs share: the loaded
// configuration, the plugin host and the catalog.
type workspace struct {
	env  *env
	cfg  *config.Config
	host *pluginhost.Host
	cat  *catalog.Catalog
	pool *proxy.Pool // made on first use
}

// openWorkspace loads and checks the configuration (printing diagnostics)
// and opens the catalog.
func openWorkspace(ctx context.Context, e *env) (*workspace, error) {
	h := e.host()
	cfg, diags := loadConfig(ctx, e.configDir, h)
	if len(diags) > 0 {
		cfg.WriteDiagnostics(e.stderr, diags, 100, false)
	}
	if diags.HasErrors() {
		h.Close()
		return nil, &exitError{code: exitFailure}
	}
	cat, err := catalog.Open(catalog.DefaultPath(cfg.Dir), catalog.Options{})
	if err != nil {
		h.Close()
		return nil, err
	}
	// The catalog is shared with other ferry processes (runs of other
	// jobs, status): it fails only the sessions whose process is gone.
	if n, err := cat.MarkAbandoned(); err != nil {
		e.log.Warn("mark the sessions of a ferry that was killed", "error", err)
	} else if n > 0 {
		e.log.Warn("sessions of a ferry that was killed were marked failed", "sessions", n)
	}
	return &workspace{env: e, cfg: cfg, host: h, cat: cat}, nil
}

func (w *workspace) Close() error {
	if w.pool != nil {
		w.pool.Close()
	}
	cerr := w.cat.Close()
	if err := w.host.Close(); err != nil {
		w.env.log.Warn("stop plugins", "error", err)
	}
	return cerr
}

// job finds a job by name, with an error listing the jobs there are.
func (w *workspace) job(name string) (*config.Job, error) {
	if j, ok := w.cfg.Jobs[name]; ok {
		return j, nil
	}
	return nil, usagef("no job %q in %s (jobs: %s)", name, w.cfg.Dir, strings.Join(w.jobNames(), ", "))
}

func (w *workspace) jobNames() []string {
	names := make([]string, 0, len(w.cfg.Jobs))
	for n := range w.cfg.Jobs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// proxyPool returns the control plane's pool of the configured proxies,
// reached with its own certificate (made by 'ferry ca init'); the
// workspace closes it.
func (w *workspace) proxyPool() (*proxy.Pool, error) {
	if w.pool == nil {
		pool, err := newProxyPool(w.cfg, w.env.log)
		if err != nil {
			return nil, err
		}
		w.pool = pool
	}
	return w.pool, nil
}

// proxyMembers are cfg's proxies, by name.
func proxyMembers(cfg *config.Config) []proxy.Member {
	members := make([]proxy.Member, 0, len(cfg.Proxies))
	for _, p := range cfg.Proxies {
		members = append(members, proxy.Member{Name: p.Name, Address: p.Address, Site: p.Site, MaxTasks: p.MaxTasks})
	}
	slices.SortFunc(members, func(a, b proxy.Member) int { return strings.Compare(a.Name, b.Name) })
	return members
}

// earlyPool is a pool of proxies greeted before the configuration was
// checked with the plugins.
type earlyPool struct {
	pool    *proxy.Pool
	members []proxy.Member
}

// warmProxies reads the proxy blocks of the configuration in dir without
// the plugins, and starts greeting those proxies: checking the rest of
// the configuration starts the plugins, tens of milliseconds a run would
// otherwise spend before the handshakes and Hellos of its proxies, three
// round trips of each link. It returns nil when there are no proxies or
// their pool cannot be made (the workspace's pool says why).
func warmProxies(dir string, log hclog.Logger) *earlyPool {
	cfg, _ := config.Load(dir, nil)
	if len(cfg.Proxies) == 0 {
		return nil
	}
	pool, err := newProxyPool(cfg, log)
	if err != nil {
		return nil
	}
	pool.Warm()
	return &earlyPool{pool: pool, members: proxyMembers(cfg)}
}

// adopt makes the early pool the workspace's when it has the proxies the
// configuration declares, and closes it otherwise.
func (w *workspace) adopt(early *earlyPool) {
	if early == nil {
		return
	}
	if w.pool == nil && slices.Equal(early.members, proxyMembers(w.cfg)) {
		w.pool = early.pool
		return
	}
	early.pool.Close()
}

// newProxyPool is the pool of cfg's proxies.
func newProxyPool(cfg *config.Config, log hclog.Logger) (*proxy.Pool, error) {
	members := proxyMembers(cfg)
	names := make([]string, 0, len(members))
	for _, m := range members {
		names = append(names, m.Name)
	}
	dir := pki.ControlDir(cfg.Dir)
	creds, err := pki.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("the configuration declares proxies (%s) and ferry reaches them with the control plane's certificate: %w; create it with 'ferry ca init'", strings.Join(names, ", "), err)
	}
	if id := creds.Identity(); id.Role != pki.RoleControl {
		return nil, fmt.Errorf("%s holds a %s certificate (%s), not the control plane's; 'ferry ca init' makes the control plane's", dir, id.Role, id.Name)
	}
	return proxy.NewPool(members, creds, version, log), nil
}

func (w *workspace) engine() *engine.Engine {
	return &engine.Engine{Components: components{w}, Catalog: w.cat, Log: w.env.log}
}

// controlEngine is the engine with the configured proxies, if any: what a
// verb that calls a job's plugins outside a session calls them through,
// so that they run where the job's sessions run them.
func (w *workspace) controlEngine() (*engine.Engine, error) {
	eng := w.engine()
	if len(w.cfg.Proxies) > 0 {
		pool, err := w.proxyPool()
		if err != nil {
			return nil, err
		}
		eng.Proxies = pool
	}
	return eng, nil
}

// components configures a job's plugin blocks through the plugin host.
type components struct{ w *workspace }

func (c components) Source(ctx context.Context, b *config.PluginBlock) (sdk.Source, sdk.Capabilities, error) {
	return c.w.host.Source(ctx, b.Type, b.Config)
}

func (c components) Target(ctx context.Context, b *config.PluginBlock) (sdk.Target, sdk.Capabilities, error) {
	return c.w.host.Target(ctx, b.Type, b.Config)
}

// Repository configures the job's repository, or for a job that names none
// a local repository in .ferry/metadata beside the configuration.
func (c components) Repository(ctx context.Context, b *config.PluginBlock) (sdk.Repository, error) {
	if b != nil {
		return c.w.host.Repository(ctx, b.Type, b.Config)
	}
	path := filepath.Join(c.w.cfg.Dir, ".ferry", "metadata")
	repo, err := c.w.host.Repository(ctx, "local", cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(path)}))
	if err != nil {
		return nil, fmt.Errorf("the default repository (local, %s): %w", path, err)
	}
	return repo, nil
}
