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
	// Command is the command line, for the report.
	Command string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// SpaceFactor is how many times the disk size the scratch folder needs: the
// source, two replicas with their undo stores, the peer's copy, and room.
const SpaceFactor = 5

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
	cfg     Config
	rep     *Report
	scratch string
	prod    string // the source site
	disk    string // the VM's disk image
	peer    string // the peer's copy of the disk
	conf    string // ferry's configuration folder
	targets map[string]string
	ferry   string
	img     *Image
	m       measurer
	start   time.Time
}

// Run runs every scenario and evaluates the goals. It returns an error
// when the run could not start; a scenario that fails is recorded in the
// report, and the run stops there (later scenarios build on its state).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	b := &bench{cfg: cfg, m: measurer{spawner: cfg.Spawner}, start: time.Now()}
	if err := b.prepare(); err != nil {
		return nil, err
	}
	if !cfg.Keep {
		defer os.RemoveAll(b.scratch)
	}
	b.rep = &Report{
		Started: b.start.UTC(), Machine: machine(), Command: cfg.Command,
		Size: cfg.Size, Seed: cfg.Seed, Cache: "cold", Profiled: cfg.Perf != "",
	}
	if cfg.Keep {
		b.rep.Scratch = b.scratch
	}
	switch {
	case cfg.Warm:
		b.rep.Cache, b.rep.CacheNote = "warm", "inputs and outputs read into the page cache before every timed run (as DESIGN.md section 10 measured the peers; -cold drops it instead)"
	default:
		if err := dropPageCache(); err != nil {
			b.rep.Cache, b.rep.CacheNote = "warm", fmt.Sprintf("could not drop the page cache (%v); inputs and outputs read into it before every timed run instead", err)
			b.cfg.Warm = true
			b.logf("warning: %s", b.rep.CacheNote)
		} else {
			b.rep.CacheNote = "page cache dropped (sync; echo 3 > " + dropCaches + ") before every timed run"
		}
	}
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	floor, _, _, err := b.m.run(ctx, []string{"true"}, nil)
	if err != nil {
		return nil, err
	}
	b.rep.RSSFloor = floor.MaxRSS
	for i, sp := range scenarios {
		sc := b.scenario(ctx, i+1, sp)
		b.rep.Scenarios = append(b.rep.Scenarios, sc)
		if sc.Error != "" {
			b.logf("%s failed: %s", sc.Name, sc.Error)
			break
		}
	}
	b.rep.Goals = EvaluateGoals(b.rep)
	b.rep.Duration = time.Since(b.start).Seconds()
	return b.rep, ctx.Err()
}

func (b *bench) logf(format string, args ...any) {
	if b.cfg.Log != nil {
		fmt.Fprintf(b.cfg.Log, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
	}
}

// prepare checks the tools and the free space and makes the scratch folder.
func (b *bench) prepare() error {
	cfg := &b.cfg
	if cfg.Size < 1<<20 {
		return fmt.Errorf("disk size %d: the bench needs at least 1 MiB", cfg.Size)
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
	if need := SpaceFactor * cfg.Size; free < need {
		return fmt.Errorf("%w: a %s disk needs about %s in %s (%dx its size), and %s is free; free some space, or pass -dir on a larger file system or a smaller -size",
			ErrNoSpace, FormatBytes(cfg.Size), FormatBytes(need), cfg.Dir, SpaceFactor, FormatBytes(free))
	}
	b.scratch, err = os.MkdirTemp(cfg.Dir, "ferry-bench-")
	if err != nil {
		return fmt.Errorf("scratch folder: %w", err)
	}
	b.prod = filepath.Join(b.scratch, "prod")
	b.disk = filepath.Join(b.prod, vmName, "disk0.img")
	b.peer = filepath.Join(b.scratch, "peer", "disk0.img")
	b.conf = filepath.Join(b.scratch, "config")
	b.targets = map[string]string{jobPlain: filepath.Join(b.scratch, "dr"), jobZstd: filepath.Join(b.scratch, "dr-zstd")}
	for _, d := range []string{filepath.Dir(b.peer), b.conf} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// setup makes the source VM, fills its disk with the image, and writes
// ferry's configuration.
func (b *bench) setup(ctx context.Context) error {
	var err error
	if b.img, err = NewImage(b.cfg.Seed, b.cfg.Size, DiskMix); err != nil {
		return err
	}
	if err := cli(ctx, nil, nil, "vm", "create", b.prod, vmName, "--disk", strconv.FormatInt(b.cfg.Size, 10)); err != nil {
		return fmt.Errorf("create the source vm: %w", err)
	}
	b.logf("writing a %s disk-like image to %s", FormatBytes(b.cfg.Size), b.disk)
	t := time.Now()
	if err := b.img.WriteFile(ctx, b.disk, runtime.NumCPU()); err != nil {
		return err
	}
	b.rep.Image.WriteSeconds = time.Since(t).Seconds()
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
	hcl := fmt.Sprintf(`# Written by ferry-bench.
source "local" "prod"        { path = %q }
target "local" "dr"          { path = %q }
target "local" "dr_zstd"     { path = %q }
repository "local" "meta"    { path = %q }

job %q {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = [%q]
  retention { restore_points = 2 }
  transfer { compression = "none" }
}

job %q {
  source     = source.local.prod
  target     = target.local.dr_zstd
  repository = repository.local.meta
  vms        = [%q]
  retention { restore_points = 2 }
  transfer { compression = "zstd" }
}
`, b.prod, b.targets[jobPlain], b.targets[jobZstd], filepath.Join(b.scratch, "meta"), jobPlain, vmName, jobZstd, vmName)
	return os.WriteFile(filepath.Join(b.conf, "main.hcl"), []byte(hcl), 0o644)
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

var scenarios = []spec{
	{key: KeyFull, name: "full copy", mode: "full"},
	{key: KeyTracked1, name: "1% changed, change tracking", percent: 1, tracked: true, mode: "change-tracking"},
	{key: KeyTracked10, name: "10% changed, change tracking", percent: 10, tracked: true, mode: "change-tracking"},
	{key: KeyDigest1, name: "1% changed, digests", percent: 1, mode: "digest"},
	{key: KeyDigest10, name: "10% changed, digests", percent: 10, mode: "digest"},
}

func (b *bench) scenario(ctx context.Context, n int, sp spec) Scenario {
	sc := Scenario{Key: sp.key, Name: fmt.Sprintf("%d. %s", n, sp.name), Percent: sp.percent, Tracked: sp.tracked, WantMode: sp.mode}
	if err := b.runScenario(ctx, n, sp, &sc); err != nil {
		sc.Error = err.Error()
	}
	return sc
}

func (b *bench) runScenario(ctx context.Context, n int, sp spec, sc *Scenario) error {
	if sp.percent > 0 {
		info, err := b.change(ctx, b.cfg.Seed+uint64(n), sp.percent, sp.tracked)
		if err != nil {
			return err
		}
		sc.Changes = info
	}
	var err error
	for _, job := range []string{jobPlain, jobZstd} {
		f, ferr := b.runFerry(ctx, job, sp)
		if job == jobPlain {
			sc.Ferry = f
		} else {
			sc.FerryZstd = f
		}
		if ferr != nil {
			return ferr
		}
		b.logf("%s: ferry (%s): %s, %s in %s, %s read, %s sent", sc.Name, f.Compression, f.Mode, f.Lane,
			secs(f.Usage.Wall), FormatBytes(f.BytesRead), FormatBytes(f.BytesSent))
	}
	if sp.percent == 0 {
		sc.Peer, err = b.runCp(ctx)
	} else {
		sc.Peer, err = b.runRsync(ctx)
	}
	if err != nil {
		return err
	}
	b.logf("%s: %s in %s", sc.Name, sc.Peer.Tool, secs(sc.Peer.Usage.Wall))
	if b.cfg.Verify {
		if err := b.verify(ctx, sc); err != nil {
			return err
		}
		sc.Verified = true
	}
	return nil
}

// change makes scattered writes over percent of the disk: through the
// local plugin's tracked writes, or straight into the image file, which
// the plugin notices and answers by resetting change tracking.
func (b *bench) change(ctx context.Context, seed uint64, percent float64, tracked bool) (*ChangeInfo, error) {
	cs, err := NewChanges(seed, b.cfg.Size, percent, DiskMix)
	if err != nil {
		return nil, err
	}
	how := "untracked, straight into the image"
	if tracked {
		how = "tracked, through the local plugin"
	}
	b.logf("applying %d writes (%s) over %.0f%% of the disk, %s", len(cs.Writes), FormatBytes(cs.Bytes()), percent, how)
	t := time.Now()
	if tracked {
		err = cs.Apply(func(off int64, data []byte) error {
			return cli(ctx, bytes.NewReader(data), nil, "vm", "write", b.prod, vmName, "0", strconv.FormatInt(off, 10))
		})
	} else {
		err = b.writeUntracked(cs)
	}
	if err != nil {
		return nil, err
	}
	info := &ChangeInfo{Writes: len(cs.Writes), Bytes: cs.Bytes(), WrittenBytes: cs.WrittenBytes(), ApplySeconds: time.Since(t).Seconds()}
	f, err := os.Open(b.disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := CompressedSize(f, cs.Extents())
	if err != nil {
		return nil, fmt.Errorf("compress the changed bytes: %w", err)
	}
	info.ZstdBytes = c.Compressed
	return info, nil
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
	comp := "none"
	if job == jobZstd {
		comp = "zstd"
	}
	args := []string{b.ferry, "-C", b.conf, "run", "--json", job}
	var profile string
	if b.cfg.Perf != "" {
		profile = filepath.Join(b.cfg.Perf, fmt.Sprintf("%s-%s.perf.data", sp.key, job))
		args = append([]string{"perf", "record", "-q", "-g", "-F", "999", "-o", profile, "--"}, args...)
	}
	if err := b.cache(b.prod, b.targets[job], filepath.Join(b.scratch, "meta")); err != nil {
		return nil, err
	}
	u, out, log, err := b.m.run(ctx, args, []string{"FERRY_PLUGIN_PATH=" + b.cfg.Bin})
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
	p := &PeerRun{Tool: "cp --sparse=always", Command: args, Usage: u, BytesRead: b.cfg.Size, BytesSent: b.cfg.Size}
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
	p := &PeerRun{Tool: "rsync --inplace", Command: args, Usage: u, BytesRead: 2 * b.cfg.Size, BytesSent: st.Sent, Literal: st.Literal}
	p.Flush, err = fsyncFile(b.peer)
	return p, err
}

// verify checks that the new restore point of each replica and the peer's
// copy hold exactly the source disk.
func (b *bench) verify(ctx context.Context, sc *Scenario) error {
	want, err := hashFile(b.disk)
	if err != nil {
		return err
	}
	got, err := hashFile(b.peer)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("verify: the copy of %s differs from the source", sc.Peer.Tool)
	}
	for _, f := range []*FerryRun{sc.Ferry, sc.FerryZstd} {
		h := xxh3.New()
		if err := cli(ctx, nil, h, "vm", "read", b.targets[f.Job], vmName+replicaSfx, "0", "--point", f.RestorePoint); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if h.Sum128() != want {
			return fmt.Errorf("verify: restore point %s of job %s differs from the source", f.RestorePoint, f.Job)
		}
	}
	b.logf("%s: verified: both restore points and the peer's copy equal the source", sc.Name)
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
