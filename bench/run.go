//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/ferry-dr/ferry/plugins/local"
)

// Config is one benchmark run.
type Config struct {
	Size int64  // the disk's size in bytes
	Seed uint64 // the seed of the image and of every change
	// Dir is where the scratch folder is made (os.TempDir() when empty);
	// the scratch folder is removed at the end unless Keep.
	Dir  string
	Keep bool
	// Bin is the folder holding ferry and ferry-plugin-local.
	Bin string
	// Warm reads each tool's inputs and outputs into the page cache before
	// its timed run, as DESIGN.md measured the peers; otherwise the cache
	// is dropped before every timed run (cold), and a run that cannot drop
	// it (not root) falls back to warm.
	Warm bool
	// Verify checks after each scenario that both replicas and the peer's
	// copy hold exactly the source disk.
	Verify bool
	// Perf, when set, is a folder where each ferry run is recorded with
	// `perf record -g`; the times then include perf's cost.
	Perf string
	// Spawner is an executable that calls ServeSpawn first (ferry-bench
	// itself): tools are started through it so that their peak memory is
	// not the harness's (see ServeSpawn). Empty starts them directly.
	Spawner string
	// Floors is an executable that runs `floor hash` and `floor copy`
	// (ferry-bench itself): the floors are measured as tools are.
	Floors string
	// BigSize, when more than 0, is the size of the sparse disk replicated
	// after the other scenarios to see how ferry's memory scales with the
	// disk's size (DESIGN.md §10: 64 GiB).
	BigSize int64
	// Direct runs the direct scenarios: ferry without proxies beside cp,
	// rsync and the floors. Proxies runs the scenarios through two
	// proxies (issue 12) after them, or alone on a fresh disk.
	Direct  bool
	Proxies bool
	// VHDX times the VHDX library against a raw file on the image
	// (issue 14), after the direct scenarios.
	VHDX bool
	// Served runs the change scenarios again through `ferry server`
	// (served.go), after the direct scenarios.
	Served bool
	// Server runs `ferry server` at scale (issue 13) last, in a scratch
	// folder of its own: ServerJobs jobs of ServerVMs VMs each on
	// schedules of ServerEvery (server.go).
	Server      bool
	ServerJobs  int
	ServerVMs   int
	ServerEvery time.Duration
	// Command is the command line, for the report.
	Command string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// SpaceFactor is how many times the disk size the scratch folder needs: the
// source, two replicas with their undo stores, the peer's copy, the copy
// floor's copy, and room. The run through proxies comes after the peer's
// and the copy floor's copies are removed, and fits in their place.
const SpaceFactor = 6

// ProxiesSpaceFactor is the same for the run through proxies alone
// (-direct=false): the source, the replica, one copy at a time.
const ProxiesSpaceFactor = 3

// BigStride is how sparse the big disk is: one 1 MiB chunk of the image in
// every BigStride is written, the rest are holes (1 GiB of data on 64 GiB).
const BigStride = 64

// bigSpace is what the big disk's scratch folder needs: its data and the
// changes of its scenarios (2% of the disk) in the source, the replica
// and its undo store.
func bigSpace(size int64) int64 { return 3 * (size/BigStride + size/50) }

// The VM, jobs and codecs of the run. "plain" sends uncompressed, which is
// what compression "auto" picks when both data movers share a machine, so
// its times are the ones compared; "zstd" measures what a WAN link would
// carry. The job names are not prefixes of each other, since the engine
// finds a killed run's leftover snapshots by the job's name prefix.
const (
	vmName     = "bench-01"
	jobPlain   = "plain"
	jobZstd    = "zstd"
	replicaSfx = "_replica"
)

// ErrNoSpace is a file system too small for the run.
var ErrNoSpace = errors.New("not enough free disk space")

type bench struct {
	cfg Config
	rep *Report
	// size is the disk's size; big marks the sparse disk's run: its disk
	// holds one chunk in BigStride, only the plain job runs, and neither
	// peers nor floors.
	size    int64
	big     bool
	jobs    []string
	scratch string
	prod    string // the source site
	disk    string // the VM's disk image
	peer    string // the peer's copy of the disk
	floor   string // the copy floor's copy of the disk
	conf    string // ferry's configuration folder
	targets map[string]string
	// pconf is the proxied job's configuration folder, proxyAddr where
	// each proxy listens.
	pconf     string
	proxyAddr map[string]string
	ferry     string
	img       *Image
	data      int64 // the bytes of the image written into the disk
	m         measurer
	start     time.Time
	// server, when set, is the ferry server runs go through; seeds is
	// added to the seed of each scenario's change and tag to its files'
	// names (served.go).
	server *servedAPI
	seeds  uint64
	tag    string
}

// Run runs every scenario and evaluates the goals. It returns an error
// when the run could not start; a scenario that fails is recorded in the
// report, and the run stops there (later scenarios build on its state).
// The big sparse disk's run comes last, in a scratch folder of its own,
// made after the first one is removed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	start := time.Now()
	rep := &Report{
		Started: start.UTC(), Machine: machine(), Command: cfg.Command,
		Size: cfg.Size, Seed: cfg.Seed, Cache: "cold", Profiled: cfg.Perf != "",
	}
	b := &bench{cfg: cfg, rep: rep, size: cfg.Size, jobs: []string{jobPlain, jobZstd}, m: measurer{spawner: cfg.Spawner}, start: start}
	if cfg.Direct || cfg.Proxies || cfg.VHDX {
		if err := b.runFirst(ctx); err != nil {
			return nil, err
		}
	} else {
		// Nothing runs on the first disk: it is not made.
		rep.DirectSkipped, rep.Cache = true, "none"
	}
	switch {
	case cfg.BigSize == 0:
	case rep.Failed() || ctx.Err() != nil:
		rep.Big = &BigRun{Size: cfg.BigSize, Stride: BigStride, Error: "not run: the first disk's run did not end well"}
	default:
		rep.Big = b.runBig(ctx)
	}
	// The server's run needs no disk of the others, and lasts as long as
	// its schedules do whatever the machine: last.
	if cfg.Server && ctx.Err() == nil {
		rep.Server = runServerScale(ctx, cfg, b.logf)
	}
	rep.Goals = EvaluateGoals(rep)
	rep.Duration = time.Since(start).Seconds()
	return rep, ctx.Err()
}

// runFirst runs what runs on the first disk: the direct scenarios, the
// VHDX library, the two proxies; its scratch folder is removed at the end
// unless Keep.
func (b *bench) runFirst(ctx context.Context) error {
	cfg, rep := b.cfg, b.rep
	if err := b.prepare(); err != nil {
		return err
	}
	if cfg.Keep {
		rep.Scratch = b.scratch
	}
	switch {
	case cfg.Warm:
		rep.Cache, rep.CacheNote = "warm", "inputs and outputs read into the page cache before every timed run (as DESIGN.md section 10 measured the peers; -cold drops it instead)"
	default:
		if err := dropPageCache(); err != nil {
			rep.Cache, rep.CacheNote = "warm", fmt.Sprintf("could not drop the page cache (%v); inputs and outputs read into it before every timed run instead", err)
			b.cfg.Warm = true
			b.logf("warning: %s", rep.CacheNote)
		} else {
			rep.CacheNote = "page cache dropped (sync; echo 3 > " + dropCaches + ") before every timed run"
		}
	}
	specs := scenarios
	if !cfg.Direct {
		specs, rep.DirectSkipped = nil, true
	}
	err := b.runAll(ctx, specs, &rep.Scenarios)
	if err == nil && !rep.Failed() && ctx.Err() == nil {
		if cfg.Direct && cfg.Served {
			// Before the copies go: the copy floor's must follow the
			// source.
			rep.Served = b.runServed(ctx)
		}
		// The direct scenarios' copies are done with: their room is the
		// VHDX run's, then the proxied replica's.
		os.Remove(b.peer)
		os.Remove(b.floor)
		if cfg.VHDX {
			rep.VHDX = b.runVHDX(ctx)
		}
		if cfg.Proxies && ctx.Err() == nil {
			rep.Proxies = b.runProxies(ctx)
		}
	}
	if !cfg.Keep {
		os.RemoveAll(b.scratch)
	}
	return err
}

// runBig replicates the big sparse disk, in a scratch folder of its own.
func (b *bench) runBig(ctx context.Context) *BigRun {
	cfg := b.cfg
	r := &BigRun{Size: cfg.BigSize, Stride: BigStride}
	big := &bench{cfg: cfg, rep: b.rep, size: cfg.BigSize, big: true, jobs: []string{jobPlain}, m: b.m, start: b.start}
	if err := big.prepare(); err != nil {
		r.Error = err.Error()
	} else {
		if cfg.Keep {
			r.Scratch = big.scratch
		}
		if err := big.runAll(ctx, bigScenarios, &r.Scenarios); err != nil {
			r.Error = err.Error()
		}
		r.DataBytes = big.data
		if !cfg.Keep {
			os.RemoveAll(big.scratch)
		}
	}
	if r.Error != "" {
		b.logf("the %s sparse disk's run failed: %s", FormatBytes(cfg.BigSize), r.Error)
	}
	return r
}

// runAll sets up the disk and runs the scenarios in order, appending each
// to out, until one fails.
func (b *bench) runAll(ctx context.Context, specs []spec, out *[]Scenario) error {
	if err := b.setup(ctx); err != nil {
		return err
	}
	if b.rep.RSSFloor == 0 {
		floor, _, _, err := b.m.run(ctx, []string{"true"}, nil)
		if err != nil {
			return err
		}
		b.rep.RSSFloor = floor.MaxRSS
	}
	for i, sp := range specs {
		sc := b.scenario(ctx, i+1, sp)
		*out = append(*out, sc)
		if sc.Error != "" {
			b.logf("%s failed: %s", sc.Name, sc.Error)
			break
		}
	}
	return nil
}

func (b *bench) logf(format string, args ...any) {
	if b.cfg.Log != nil {
		fmt.Fprintf(b.cfg.Log, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
	}
}

// prepare checks the tools and the free space and makes the scratch folder.
func (b *bench) prepare() error {
	cfg := &b.cfg
	if b.size < 1<<20 {
		return fmt.Errorf("disk size %d: the bench needs at least 1 MiB", b.size)
	}
	b.ferry = filepath.Join(cfg.Bin, "ferry")
	for _, p := range []string{b.ferry, filepath.Join(cfg.Bin, "ferry-plugin-local")} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (run make build, or give -bin)", p, err)
		}
	}
	for _, tool := range []string{"rsync", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("the bench needs %s to compare with (apt-get install %s): %w", tool, tool, err)
		}
	}
	if cfg.Perf != "" {
		if _, err := exec.LookPath("perf"); err != nil {
			return fmt.Errorf("-perf needs perf (apt-get install linux-perf): %w", err)
		}
		if err := os.MkdirAll(cfg.Perf, 0o755); err != nil {
			return err
		}
	}
	if cfg.Dir == "" {
		cfg.Dir = os.TempDir()
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("scratch folder: %w", err)
	}
	free, err := freeSpace(cfg.Dir)
	if err != nil {
		return err
	}
	if b.big {
		if need := bigSpace(b.size); free < need {
			return fmt.Errorf("%w: a %s sparse disk needs about %s in %s, and %s is free; free some space, or pass -dir on a larger file system, a smaller -big-size or -big=false",
				ErrNoSpace, FormatBytes(b.size), FormatBytes(need), cfg.Dir, FormatBytes(free))
		}
	} else if factor := b.spaceFactor(); free < factor*b.size {
		return fmt.Errorf("%w: a %s disk needs about %s in %s (%dx its size), and %s is free; free some space, or pass -dir on a larger file system or a smaller -size",
			ErrNoSpace, FormatBytes(b.size), FormatBytes(factor*b.size), cfg.Dir, factor, FormatBytes(free))
	}
	b.scratch, err = os.MkdirTemp(cfg.Dir, "ferry-bench-")
	if err != nil {
		return fmt.Errorf("scratch folder: %w", err)
	}
	b.prod = filepath.Join(b.scratch, "prod")
	b.disk = filepath.Join(b.prod, vmName, "disk0.img")
	b.peer = filepath.Join(b.scratch, "peer", "disk0.img")
	b.floor = filepath.Join(b.scratch, "floor", "disk0.img")
	b.conf = filepath.Join(b.scratch, "config")
	b.targets = map[string]string{jobPlain: filepath.Join(b.scratch, "dr"), jobZstd: filepath.Join(b.scratch, "dr-zstd")}
	for _, d := range []string{filepath.Dir(b.peer), filepath.Dir(b.floor), b.conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// spaceFactor is how many times the disk's size the run needs.
func (b *bench) spaceFactor() int64 {
	if !b.cfg.Direct {
		return ProxiesSpaceFactor
	}
	return SpaceFactor
}

// setup makes the source VM, fills its disk with the image (or, on the
// big disk, one chunk of it in BigStride), and writes ferry's
// configuration.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.img, err = NewImage(b.cfg.Seed, b.size, DiskMix); err != nil {
		return err
	}
	if err := cli(ctx, nil, nil, "vm", "create", b.prod, vmName, "--disk", strconv.FormatInt(b.size, 10)); err != nil {
		return fmt.Errorf("create the source vm: %w", err)
	}
	t := time.Now()
	if b.big {
		b.logf("writing a %s sparse disk (one 1 MiB chunk of the image in %d, the rest holes) to %s", FormatBytes(b.size), BigStride, b.disk)
		if b.data, err = b.img.WriteSparse(ctx, b.disk, runtime.NumCPU(), BigStride); err != nil {
			return err
		}
	} else {
		b.logf("writing a %s disk-like image to %s", FormatBytes(b.size), b.disk)
		if err := b.img.WriteFile(ctx, b.disk, runtime.NumCPU()); err != nil {
			return err
		}
		b.data = b.size
		if err := b.describeImage(time.Since(t)); err != nil {
			return err
		}
	}
	var hcl strings.Builder
	fmt.Fprintf(&hcl, `# Written by ferry-bench.
source "local" "prod"        { path = %q }
repository "local" "meta"    { path = %q }
`, b.prod, filepath.Join(b.scratch, "meta"))
	for _, job := range b.jobs {
		comp := "none"
		if job == jobZstd {
			comp = "zstd"
		}
		fmt.Fprintf(&hcl, `
target "local" %q { path = %q }

job %q {
  source     = source.local.prod
  target     = target.local.%s
  repository = repository.local.meta
  vms        = [%q]
  retention { restore_points = 2 }
  transfer { compression = %q }
}
`, "dr_"+job, b.targets[job], job, "dr_"+job, vmName, comp)
	}
	return os.WriteFile(filepath.Join(b.conf, "main.hcl"), []byte(hcl.String()), 0o644)
}

// describeImage records the image's composition and how well its text
// compresses.
func (b *bench) describeImage(took time.Duration) error {
	b.rep.Image.WriteSeconds = took.Seconds()
	b.rep.Image.Composition = b.img.Composition()
	var text []Extent
	var n int64
	for _, e := range b.img.Extents(Text) {
		if n >= 64<<20 {
			break
		}
		e.Length = min(e.Length, 64<<20-n)
		text = append(text, e)
		n += e.Length
	}
	c, err := CompressedSize(b.img, text)
	if err != nil {
		return err
	}
	if c.Compressed > 0 {
		b.rep.Image.TextZstdRatio = float64(c.Raw) / float64(c.Compressed)
	}
	return nil
}

// cli runs a command of ferry-plugin-local in this process.
func cli(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) error {
	var stderr bytes.Buffer
	if stdout == nil {
		stdout = io.Discard
	}
	if err := local.RunCLI(ctx, args, stdin, stdout, &stderr); err != nil {
		return fmt.Errorf("ferry-plugin-local %s: %w", strings.Join(args, " "), err)
	}
	return nil
}

// spec is a scenario to run.
type spec struct {
	key     string
	name    string
	percent float64 // 0: no change (the first copy)
	tracked bool
	mode    string
}

// scenarios run on the thick disk, each on the state the one before left.
var scenarios = []spec{
	{key: KeyFull, name: "full copy", mode: "full"},
	{key: KeyTracked01, name: "0.1% changed, change tracking", percent: 0.1, tracked: true, mode: "change-tracking"},
	{key: KeyTracked1, name: "1% changed, change tracking", percent: 1, tracked: true, mode: "change-tracking"},
	{key: KeyTracked10, name: "10% changed, change tracking", percent: 10, tracked: true, mode: "change-tracking"},
	{key: KeyDigest01, name: "0.1% changed, digests", percent: 0.1, mode: "digest"},
	{key: KeyDigest1, name: "1% changed, digests", percent: 1, mode: "digest"},
	{key: KeyDigest10, name: "10% changed, digests", percent: 10, mode: "digest"},
}

// bigScenarios run on the big sparse disk, for memory.
var bigScenarios = []spec{
	{key: KeyFull, name: "full copy", mode: "full"},
	{key: KeyTracked1, name: "1% changed, change tracking", percent: 1, tracked: true, mode: "change-tracking"},
	{key: KeyDigest1, name: "1% changed, digests", percent: 1, mode: "digest"},
}

func (b *bench) scenario(ctx context.Context, n int, sp spec) Scenario {
	sc := Scenario{Key: sp.key, Name: fmt.Sprintf("%d. %s", n, sp.name), Percent: sp.percent, Tracked: sp.tracked, WantMode: sp.mode}
	if err := b.runScenario(ctx, n, sp, &sc); err != nil {
		sc.Error = err.Error()
	}
	return sc
}

func (b *bench) runScenario(ctx context.Context, n int, sp spec, sc *Scenario) error {
	var extents string
	if sp.percent > 0 {
		info, es, err := b.change(ctx, b.cfg.Seed+b.seeds+uint64(n), sp.percent, sp.tracked)
		if err != nil {
			return err
		}
		sc.Changes = info
		extents = filepath.Join(b.scratch, fmt.Sprintf("%schanges-%d.extents", b.tag, n))
		if err := writeExtentsFile(extents, es); err != nil {
			return err
		}
	}
	for _, job := range b.jobs {
		f, err := b.runFerry(ctx, job, sp)
		if job == jobPlain {
			sc.Ferry = f
		} else {
			sc.FerryZstd = f
		}
		if err != nil {
			return err
		}
		b.logf("%s: ferry (%s): %s, %s in %s, %s read, %s sent, tree peak %s", sc.Name, f.Compression, f.Mode, f.Lane,
			secs(f.Usage.Wall), FormatBytes(f.BytesRead), FormatBytes(f.BytesSent), FormatBytes(f.Usage.PeakBound()))
	}
	if b.big {
		return b.verifyIf(ctx, sc)
	}
	// The floors. The copy floor runs after every change, tracked or not,
	// since its copy must follow the source; a digest run's floor is the
	// hash floor.
	var err error
	if sp.percent > 0 {
		if !sp.tracked {
			if sc.HashFloor, err = b.runHashFloor(ctx); err != nil {
				return err
			}
			b.logf("%s: %s in %s", sc.Name, sc.HashFloor.Name, secs(sc.HashFloor.Usage.Wall))
		}
		if sc.CopyFloor, err = b.runCopyFloor(ctx, extents, sc.Changes.Bytes); err != nil {
			return err
		}
		b.logf("%s: %s in %s", sc.Name, sc.CopyFloor.Name, secs(sc.CopyFloor.Usage.Wall))
	}
	switch {
	case b.server != nil:
		// Through the server ferry is compared with its floors only.
		return b.verifyIf(ctx, sc)
	case sp.percent == 0:
		sc.Peer, err = b.runCp(ctx)
	default:
		sc.Peer, err = b.runRsync(ctx)
	}
	if err != nil {
		return err
	}
	b.logf("%s: %s in %s", sc.Name, sc.Peer.Tool, secs(sc.Peer.Usage.Wall))
	if sp.percent == 0 {
		// The copy floor's own copy of the first state, made untimed.
		if err := exec.CommandContext(ctx, "cp", "--sparse=always", b.peer, b.floor).Run(); err != nil {
			return fmt.Errorf("copy %s for the copy floor: %w", b.peer, err)
		}
	}
	return b.verifyIf(ctx, sc)
}

func (b *bench) verifyIf(ctx context.Context, sc *Scenario) error {
	if !b.cfg.Verify {
		return nil
	}
	if err := b.verify(ctx, sc); err != nil {
		return err
	}
	sc.Verified = true
	return nil
}

func writeExtentsFile(path string, es []Extent) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := WriteExtents(f, es); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// change makes scattered writes over percent of the disk: through the
// local plugin's tracked writes, or straight into the image file, which
// the plugin notices and answers by resetting change tracking.
func (b *bench) change(ctx context.Context, seed uint64, percent float64, tracked bool) (*ChangeInfo, []Extent, error) {
	cs, err := NewChanges(seed, b.size, percent, DiskMix)
	if err != nil {
		return nil, nil, err
	}
	how := "untracked, straight into the image"
	if tracked {
		how = "tracked, through the local plugin"
	}
	b.logf("applying %d writes (%s) over %g%% of the disk, %s", len(cs.Writes), FormatBytes(cs.Bytes()), percent, how)
	t := time.Now()
	if tracked {
		err = cs.Apply(func(off int64, data []byte) error {
			return cli(ctx, bytes.NewReader(data), nil, "vm", "write", b.prod, vmName, "0", strconv.FormatInt(off, 10))
		})
	} else {
		err = b.writeUntracked(cs)
	}
	if err != nil {
		return nil, nil, err
	}
	es := cs.Extents()
	info := &ChangeInfo{Writes: len(cs.Writes), Bytes: cs.Bytes(), WrittenBytes: cs.WrittenBytes(), ApplySeconds: time.Since(t).Seconds()}
	f, err := os.Open(b.disk)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	c, err := CompressedSize(f, es)
	if err != nil {
		return nil, nil, fmt.Errorf("compress the changed bytes: %w", err)
	}
	info.ZstdBytes = c.Compressed
	return info, es, nil
}

func (b *bench) writeUntracked(cs *Changes) error {
	f, err := os.OpenFile(b.disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := cs.Apply(func(off int64, data []byte) error {
		_, err := f.WriteAt(data, off)
		return err
	}); err != nil {
		return fmt.Errorf("write %s: %w", b.disk, err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// cache puts the page cache in the run's state before a timed run: empty
// (cold), or holding the files the tool reads and writes (warm).
func (b *bench) cache(paths ...string) error {
	if b.cfg.Warm {
		return warmUp(paths...)
	}
	return dropPageCache()
}

func (b *bench) runFerry(ctx context.Context, job string, sp spec) (*FerryRun, error) {
	comp, conf, repo := "none", b.conf, filepath.Join(b.scratch, "meta")
	switch job {
	case jobZstd:
		comp = "zstd"
	case jobProxied:
		comp, conf, repo = "zstd", b.pconf, filepath.Join(b.scratch, "meta-proxied")
	}
	args := []string{b.ferry, "-C", conf, "run", "--json", job}
	var profile string
	if b.cfg.Perf != "" {
		profile = filepath.Join(b.cfg.Perf, fmt.Sprintf("%s-%s.perf.data", sp.key, job))
		args = append([]string{"perf", "record", "-q", "-g", "-F", "999", "-o", profile, "--"}, args...)
	}
	if err := b.cache(b.prod, b.targets[job], repo); err != nil {
		return nil, err
	}
	env := []string{"FERRY_PLUGIN_PATH=" + b.cfg.Bin}
	if b.server != nil {
		env = append(env, b.server.env()...)
	}
	u, out, log, err := b.m.run(ctx, args, env)
	if err != nil {
		return &FerryRun{Job: job, Compression: comp, Usage: u, Log: logLines(log)}, err
	}
	f, err := parseSession(out, sp.mode)
	if f == nil {
		f = &FerryRun{Job: job}
	}
	f.Compression, f.Usage, f.Profile, f.Log = comp, u, profile, logLines(log)
	return f, err
}

func (b *bench) runCp(ctx context.Context) (*PeerRun, error) {
	args := []string{"cp", "--sparse=always", b.disk, b.peer}
	if err := b.cache(b.disk); err != nil {
		return nil, err
	}
	u, _, _, err := b.m.run(ctx, args, nil)
	if err != nil {
		return nil, err
	}
	p := &PeerRun{Tool: "cp --sparse=always", Command: args, Usage: u, BytesRead: b.size, BytesSent: b.size}
	p.Flush, err = fsyncFile(b.peer)
	return p, err
}

func (b *bench) runRsync(ctx context.Context) (*PeerRun, error) {
	// --ignore-times: a size and mtime that happen to match must not let
	// rsync skip the file.
	args := []string{"rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats", b.disk, b.peer}
	if err := b.cache(b.disk, b.peer); err != nil {
		return nil, err
	}
	u, out, _, err := b.m.run(ctx, args, []string{"LC_ALL=C"})
	if err != nil {
		return nil, err
	}
	st, err := parseRsyncStats(string(out))
	if err != nil {
		return nil, err
	}
	if st.Files != 1 {
		return nil, fmt.Errorf("rsync transferred %d files, want 1", st.Files)
	}
	p := &PeerRun{Tool: "rsync --inplace", Command: args, Usage: u, BytesRead: 2 * b.size, BytesSent: st.Sent, Literal: st.Literal}
	p.Flush, err = fsyncFile(b.peer)
	return p, err
}

// runHashFloor reads the whole source disk and hashes every 4 KiB block.
func (b *bench) runHashFloor(ctx context.Context) (*FloorRun, error) {
	args := []string{b.cfg.Floors, "floor", "hash", b.disk}
	if err := b.cache(b.disk); err != nil {
		return nil, err
	}
	u, out, _, err := b.m.run(ctx, args, nil)
	if err != nil {
		return nil, err
	}
	return &FloorRun{Name: "floor: read+hash all", Command: args[1:], Usage: u, BytesRead: b.size, Output: strings.TrimSpace(string(out))}, nil
}

// runCopyFloor copies the changed extents of the source disk into the
// copy floor's copy and syncs it.
func (b *bench) runCopyFloor(ctx context.Context, extents string, changed int64) (*FloorRun, error) {
	args := []string{b.cfg.Floors, "floor", "copy", extents, b.disk, b.floor}
	if err := b.cache(b.disk, b.floor); err != nil {
		return nil, err
	}
	u, out, _, err := b.m.run(ctx, args, nil)
	if err != nil {
		return nil, err
	}
	return &FloorRun{Name: "floor: copy changed", Command: args[1:], Usage: u, BytesRead: changed, BytesWritten: changed, Output: strings.TrimSpace(string(out))}, nil
}

// verify checks that the new restore point of each replica, the peer's
// copy and the copy floor's copy hold exactly the source disk.
func (b *bench) verify(ctx context.Context, sc *Scenario) error {
	want, err := hashFile(b.disk)
	if err != nil {
		return err
	}
	copies := map[string]string{}
	if sc.Peer != nil {
		copies["the copy of "+sc.Peer.Tool] = b.peer
		copies["the copy floor's copy"] = b.floor
	}
	for what, path := range copies {
		got, err := hashFile(path)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("verify: %s differs from the source", what)
		}
	}
	for _, f := range []*FerryRun{sc.Ferry, sc.FerryZstd} {
		if f == nil {
			continue
		}
		h := xxh3.New()
		if err := cli(ctx, nil, h, "vm", "read", b.targets[f.Job], vmName+replicaSfx, "0", "--point", f.RestorePoint); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if h.Sum128() != want {
			return fmt.Errorf("verify: restore point %s of job %s differs from the source", f.RestorePoint, f.Job)
		}
	}
	b.logf("%s: verified: every restore point and copy equals the source", sc.Name)
	return nil
}

// logLines keeps what ferry printed on standard error besides its
// percentages: notices such as a change-tracking reset or digests
// recomputed from the replica explain a slow run.
func logLines(b []byte) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line != "" && !strings.HasSuffix(line, "%") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

func hashFile(path string) (xxh3.Uint128, error) {
	f, err := os.Open(path)
	if err != nil {
		return xxh3.Uint128{}, err
	}
	defer f.Close()
	h := xxh3.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 4<<20)); err != nil {
		return xxh3.Uint128{}, fmt.Errorf("hash %s: %w", path, err)
	}
	return h.Sum128(), nil
}
