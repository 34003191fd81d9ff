//go:build linux

package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zeebo/xxh3"

	"github.com/ferry-dr/ferry/sdk/sdktest/faultnet"
)

// The run through two proxies (issue 12). It comes after the direct
// scenarios, on the disk as they left it, with a job of its own in a
// configuration folder of its own (a proxy block in the direct jobs'
// configuration would send them through the proxies too): job proxied,
// compression zstd, a fresh replica in dr-proxied and its own repository.
// The proxies are two `ferry proxy` processes on 127.0.0.2 (site prod) and
// 127.0.0.3 (site dr), with credentials from a CA the bench makes there.

const (
	jobProxied = "proxied"
	// proxyStart bounds how long a proxy may take to say it listens.
	proxyStart = 30 * time.Second
	// proxySampleEvery is how often the proxies' trees are sampled.
	// Their peaks are the kernel's high-water marks (reset before each
	// run), so a sample need not catch the peak, only each process before
	// it exits; at SampleEvery, walking two trees of many threads took a
	// core of this 2-CPU machine away from the run it measured.
	proxySampleEvery = 250 * time.Millisecond
)

// proxySpecs are the scenarios of the set, in order. The two compared
// for the round trip reach the DR proxy through the same relay, one with
// no delay, the other with ProxyRTT: the relay's own cost (every byte
// copied through the bench's process, on the cores the proxies use) is
// then on both sides, and the ratio is the round trip's alone. Each
// follows a session with nothing changed (settle): both then find the
// replica at its retention and delete its oldest point, as a job's
// sessions do once it has its points (the first session after the full
// copy deletes none), and both run on the connection between the
// proxies the session before left.
var proxySpecs = []struct {
	key, name string
	percent   float64 // of the disk; -1: ProxyThrottleChange bytes
	rtt       time.Duration
	relay     bool // through a faultnet relay (adding rtt)
	throttle  int64
	mode      string
	settle    bool
}{
	{KeyProxyFull, "full copy (fresh replica)", 0, 0, false, 0, "full", false},
	{KeyProxyTracked1, "1% changed, change tracking", 1, 0, false, 0, "change-tracking", true},
	{KeyProxyTracked1Relay, "1% changed, change tracking, through the relay, no delay", 1, 0, true, 0, "change-tracking", true},
	{KeyProxyTracked1RT, "1% changed, change tracking, 20 ms more RTT", 1, ProxyRTT, true, 0, "change-tracking", true},
	{KeyProxyThrottled, "16 MiB changed, a traffic rule of 1 MB/s", -1, 0, false, ProxyThrottle, "change-tracking", false},
}

// proxyProc is a `ferry proxy` the bench started.
type proxyProc struct {
	info ProxyInfo
	cmd  *exec.Cmd
	log  string // its standard error
}

// runProxies runs the set; it returns nil only when there is nothing to
// report.
func (b *bench) runProxies(ctx context.Context) *ProxySet {
	set := &ProxySet{}
	procs, err := b.proxySetup(ctx)
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for _, p := range procs {
		set.Proxies = append(set.Proxies, p.info)
	}
	if err != nil {
		set.Error = err.Error()
		b.logf("two proxies: %s", set.Error)
		return set
	}
	for i, sp := range proxySpecs {
		percent := sp.percent
		if percent < 0 {
			percent = min(100, 100*float64(ProxyThrottleChange)/float64(b.size))
		}
		sc := ProxyScenario{Key: sp.key, Name: fmt.Sprintf("%d. %s", i+1, sp.name), Percent: percent, RTT: sp.rtt, Relayed: sp.relay, Throttle: sp.throttle, WantMode: sp.mode}
		err := b.proxyScenario(ctx, i+1, procs, &sc, sp.settle)
		if err != nil {
			sc.Error = err.Error()
		}
		set.Scenarios = append(set.Scenarios, sc)
		if err != nil {
			b.logf("two proxies: %s failed: %s", sc.Name, sc.Error)
			break
		}
		if sp.key == KeyProxyFull {
			b.proxyPeers(ctx, set, sc.Ferry.BytesSent)
		}
		if sp.key == KeyProxyTracked1RT {
			if err := b.morePairs(ctx, i+1, procs, set); err != nil {
				b.logf("two proxies: %s", err)
				break
			}
		}
	}
	return set
}

// ProxyRTTPairs is how many times the scenarios compared for the round
// trip run, one after the other: a 1% session's time varies by a third
// from one to the next here (the replica's writes and syncs), several
// times what the round trip adds, so the goal takes the median of the
// pairs' ratios. Three pairs gave medians of 0.94-1.21x in four runs of
// the same code; five cost about 40 s more.
const ProxyRTTPairs = 5

// morePairs runs the scenario without delay and the one with it again,
// ProxyRTTPairs-1 times (each with a change of its own), and gives both
// scenarios of set each pair's ferry time as their tries.
func (b *bench) morePairs(ctx context.Context, n int, procs []*proxyProc, set *ProxySet) error {
	base, slowed := set.scenario(KeyProxyTracked1Relay), set.scenario(KeyProxyTracked1RT)
	if base == nil || slowed == nil || base.Ferry == nil || slowed.Ferry == nil {
		return errors.New("the round trip's scenarios did not run")
	}
	base.Tries, slowed.Tries = []time.Duration{base.Ferry.Usage.Wall}, []time.Duration{slowed.Ferry.Usage.Wall}
	for pair := 1; pair < ProxyRTTPairs; pair++ {
		for k, sc := range []*ProxyScenario{base, slowed} {
			again := ProxyScenario{Key: sc.Key, Name: fmt.Sprintf("%s (pair %d)", sc.Name, pair+1), Percent: sc.Percent, RTT: sc.RTT, Relayed: sc.Relayed, WantMode: sc.WantMode}
			// Its own change: the same seed would write what the
			// replica holds already.
			if err := b.proxyScenario(ctx, n+10*pair+k, procs, &again, true); err != nil {
				return fmt.Errorf("%s: %w", again.Name, err)
			}
			sc.Tries = append(sc.Tries, again.Ferry.Usage.Wall)
		}
	}
	return nil
}

// proxySetup makes the CA and the credentials, starts the proxies and
// writes the configuration.
func (b *bench) proxySetup(ctx context.Context) ([]*proxyProc, error) {
	b.pconf = filepath.Join(b.scratch, "config-proxied")
	b.targets[jobProxied] = filepath.Join(b.scratch, "dr-proxied")
	if err := os.MkdirAll(b.pconf, 0o755); err != nil {
		return nil, err
	}
	for _, args := range [][]string{{"ca", "init"}, {"ca", "issue", proxyProd}, {"ca", "issue", proxyDR}} {
		cmd := exec.CommandContext(ctx, b.ferry, append([]string{"-C", b.pconf}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ferry %s: %w: %s", strings.Join(args, " "), err, lastLines(string(out), 5))
		}
	}
	var procs []*proxyProc
	for _, p := range []struct{ name, host string }{{proxyProd, "127.0.0.2"}, {proxyDR, "127.0.0.3"}} {
		proc, err := b.startProxy(p.name, p.host)
		if err != nil {
			return procs, err
		}
		procs = append(procs, proc)
		b.logf("two proxies: proxy %s (site %s) listens on %s", p.name, p.name, proc.info.Address)
	}
	b.proxyAddr = map[string]string{proxyProd: procs[0].info.Address, proxyDR: procs[1].info.Address}
	return procs, b.writeProxiedConfig(b.proxyAddr[proxyDR], 0)
}

// startProxy starts `ferry proxy` with the credentials issued to name,
// its site also name, on host at a free port, and waits for its line.
func (b *bench) startProxy(name, host string) (*proxyProc, error) {
	p := &proxyProc{info: ProxyInfo{Name: name, Site: name}, log: filepath.Join(b.scratch, "proxy-"+name+".log")}
	logf, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(b.ferry, "-C", b.pconf, "proxy", "--tls", filepath.Join(b.pconf, "ca", "issued", name),
		"--listen", host+":0", "--site", name, "--max-tasks", "4")
	p.cmd.Env = append(os.Environ(), "FERRY_PLUGIN_PATH="+b.cfg.Bin)
	p.cmd.Stderr = logf
	// Pdeathsig: a harness killed mid-run leaves no proxy behind.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start proxy %s: %w", name, err)
	}
	line := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		s, _ := r.ReadString('\n')
		line <- s
		io.Copy(io.Discard, r) // nothing more is expected; never let it block
	}()
	var s string
	select {
	case s = <-line:
	case <-time.After(proxyStart):
	}
	addr, err := parseProxyLine(s)
	if err != nil {
		p.stop()
		log, _ := os.ReadFile(p.log)
		return nil, fmt.Errorf("proxy %s: %w: %s", name, err, lastLines(string(log), 8))
	}
	p.info.Address = addr
	return p, nil
}

// parseProxyLine reads the address from the line a proxy prints when it
// listens: "proxy NAME listening on ADDR (...)".
func parseProxyLine(line string) (string, error) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "proxy" || f[2] != "listening" || f[3] != "on" {
		return "", fmt.Errorf("want %q, got %q", "proxy NAME listening on ADDR (...)", strings.TrimSpace(line))
	}
	return f[4], nil
}

// stop ends the proxy: SIGTERM, then SIGKILL after 5 s.
func (p *proxyProc) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	endProcess(p.cmd.Process, done, 5*time.Second)
	p.cmd = nil
}

// writeProxiedConfig writes the proxied job's configuration, the dr proxy
// reached at drAddr (its own address, or a relay's).
func (b *bench) writeProxiedConfig(drAddr string, throttle int64) error {
	rule := ""
	if throttle > 0 {
		rule = fmt.Sprintf(`
traffic_rule "wan" {
  from     = ["site:prod"]
  to       = ["site:dr"]
  throttle = "%dB/s"
}
`, throttle)
	}
	hcl := fmt.Sprintf(`# Written by ferry-bench: the run through two proxies.
source "local" "prod" {
  path = %q
  site = "prod"
}
repository "local" "meta" {
  path = %q
  site = "prod"
}
target "local" "dr_proxied" {
  path = %q
  site = "dr"
}

proxy %q {
  address = %q
  site    = "prod"
}
proxy %q {
  address = %q
  site    = "dr"
}

job %q {
  source     = source.local.prod
  target     = target.local.dr_proxied
  repository = repository.local.meta
  vms        = [%q]
  retention { restore_points = 2 }
  transfer { compression = "zstd" }
}
%s`, b.prod, filepath.Join(b.scratch, "meta-proxied"), b.targets[jobProxied],
		proxyProd, b.proxyAddr[proxyProd], proxyDR, drAddr, jobProxied, vmName, rule)
	return os.WriteFile(filepath.Join(b.pconf, "main.hcl"), []byte(hcl), 0o644)
}

// proxyScenario makes the scenario's change, runs ferry through the
// proxies (behind a relay when it adds a round trip) while watching them,
// and verifies the restore point.
func (b *bench) proxyScenario(ctx context.Context, n int, procs []*proxyProc, sc *ProxyScenario, settle bool) error {
	var relay *faultnet.Relay
	if sc.Relayed || sc.RTT > 0 {
		var err error
		if relay, err = faultnet.Listen(b.proxyAddr[proxyDR]); err != nil {
			return err
		}
		defer relay.Close()
		if err := b.writeProxiedConfig(relay.Addr(), 0); err != nil {
			return err
		}
		defer b.writeProxiedConfig(b.proxyAddr[proxyDR], 0)
	}
	if settle {
		// Through the relay before its delay is set: the source proxy
		// keeps its connection to the target proxy between sessions.
		if _, err := b.runFerry(ctx, jobProxied, spec{key: sc.Key + "-settle", mode: sc.WantMode}); err != nil {
			return fmt.Errorf("the session with nothing changed before it: %w", err)
		}
	}
	if relay != nil {
		before := relay.Forwarded(faultnet.Both)
		defer func() { sc.RelayBytes = relay.Forwarded(faultnet.Both) - before }()
		relay.SetLatency(faultnet.Both, sc.RTT/2)
		b.logf("two proxies: %s: the dr proxy is reached through a relay on %s adding %s of round trip", sc.Name, relay.Addr(), sc.RTT)
	}
	if sc.Percent > 0 {
		// Seeds apart from the direct scenarios': other writes.
		info, _, err := b.change(ctx, b.cfg.Seed+100+uint64(n), sc.Percent, true)
		if err != nil {
			return err
		}
		sc.Changes = info
	}
	if sc.Throttle > 0 {
		if err := b.writeProxiedConfig(b.proxyAddr[proxyDR], sc.Throttle); err != nil {
			return err
		}
		defer b.writeProxiedConfig(b.proxyAddr[proxyDR], 0)
	}
	w := b.watchProxies(procs, sc.Key)
	f, err := b.runFerry(ctx, jobProxied, spec{key: sc.Key, mode: sc.WantMode})
	sc.Ferry = f
	sc.Proxies = w.end()
	if err != nil {
		return err
	}
	b.logf("two proxies: %s: ferry: %s in %s, %s read, %s sent; proxies: %s", sc.Name, f.Mode, secs(f.Usage.Wall),
		FormatBytes(f.BytesRead), FormatBytes(f.BytesSent), describeProxies(sc.Proxies))
	if !b.cfg.Verify {
		return nil
	}
	want, err := hashFile(b.disk)
	if err != nil {
		return err
	}
	h := xxh3.New()
	if err := cli(ctx, nil, h, "vm", "read", b.targets[jobProxied], vmName+replicaSfx, "0", "--point", f.RestorePoint); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if h.Sum128() != want {
		return fmt.Errorf("verify: restore point %s of job %s differs from the source", f.RestorePoint, jobProxied)
	}
	sc.Verified = true
	return nil
}

func describeProxies(us []ProxyUsage) string {
	var parts []string
	for _, u := range us {
		parts = append(parts, fmt.Sprintf("%s %s cpu, peak %s (alone %s)", u.Name, secs(u.CPU), FormatBytes(u.TreePeak), FormatBytes(u.Peak)))
	}
	return strings.Join(parts, "; ")
}

// proxyWatch follows the proxies' process trees during one ferry run.
type proxyWatch struct {
	procs    []*proxyProc
	samplers []*sampler
	cpu0     []time.Duration
	perf     []*exec.Cmd
	profiles []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

// watchProxies resets the peak resident set of every process of each
// proxy's tree (clear_refs 5), notes their CPU time and samples /proc
// until end. With -perf it also records each proxy with perf record.
func (b *bench) watchProxies(procs []*proxyProc, key string) *proxyWatch {
	w := &proxyWatch{procs: procs, stop: make(chan struct{})}
	for _, p := range procs {
		pid := p.cmd.Process.Pid
		for _, d := range descendants(pid) {
			// Resets VmHWM to the current VmRSS; a failure leaves the peak
			// since the proxy started, which can only overstate.
			os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d), []byte("5"), 0)
		}
		w.samplers = append(w.samplers, &sampler{root: pid, peaks: map[int]*ProcPeak{}})
		cpu, _ := procCPU(pid)
		w.cpu0 = append(w.cpu0, cpu)
		var profile string
		if b.cfg.Perf != "" {
			profile = filepath.Join(b.cfg.Perf, fmt.Sprintf("%s-proxy-%s.perf.data", key, p.info.Name))
			cmd := exec.Command("perf", "record", "-q", "-g", "-F", "999", "-p", strconv.Itoa(pid), "-o", profile)
			if cmd.Start() == nil {
				w.perf = append(w.perf, cmd)
			}
		}
		w.profiles = append(w.profiles, profile)
	}
	if len(w.perf) > 0 {
		time.Sleep(300 * time.Millisecond) // perf attaches
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(proxySampleEvery)
		defer t.Stop()
		for {
			for _, s := range w.samplers {
				s.sample()
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// end stops watching and returns each proxy's usage.
func (w *proxyWatch) end() []ProxyUsage {
	close(w.stop)
	w.wg.Wait()
	for _, s := range w.samplers {
		s.sample()
	}
	for _, cmd := range w.perf {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}
	var out []ProxyUsage
	for i, p := range w.procs {
		s := w.samplers[i]
		u := ProxyUsage{Name: p.info.Name, PID: s.root, Profile: w.profiles[i]}
		for _, pk := range s.peaks {
			u.TreePeak += pk.HWM
			if pk.PID == s.root {
				u.Peak = pk.HWM
			}
		}
		if cpu, err := procCPU(s.root); err == nil {
			u.CPU = cpu - w.cpu0[i]
		}
		out = append(out, u)
	}
	return out
}

// procCPU is a process's user and system time with that of the children
// it waited for, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime, stime, cutime and cstime (fields 14-17 of
// proc(5), in USER_HZ ticks) from the text of /proc/PID/stat.
func parseStatCPU(stat string) (time.Duration, error) {
	// The command name may hold spaces and parentheses: the fields start
	// after the last ')', with field 3.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no command name")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields after the command name, want at least 15", len(f))
	}
	var ticks int64
	for _, s := range f[11:15] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc/PID/stat: CPU time %q", s)
		}
		ticks += n
	}
	const userHZ = 100
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// proxyPeers runs the full copy's peer and its stages alone, on the disk
// the proxies just copied; sent is what the proxies' data stream carried,
// which the TLS stage pushes.
func (b *bench) proxyPeers(ctx context.Context, set *ProxySet, sent int64) {
	zpath, zerr := exec.LookPath("zstd")
	if zerr != nil {
		set.PeerSkipped = "no zstd command (apt-get install zstd)"
	} else {
		b.runSSHPeer(ctx, set, zpath)
	}
	if set.Peer != nil {
		b.logf("two proxies: %s in %s, through %s, cipher %s", set.Peer.Tool, secs(set.Peer.Usage.Wall), set.PeerSSHD, set.PeerCipher)
	} else {
		b.logf("two proxies: zstd | ssh skipped: %s", set.PeerSkipped)
	}

	zstd := StageRun{Name: "zstd -1 -T0 (compress)", Bytes: b.size}
	if zerr != nil {
		zstd.Skipped = "no zstd command (apt-get install zstd)"
	} else {
		zstd.Command = []string{"zstd", "-1", "-T0", "-q", "-f", b.disk, "-o", "/dev/null"}
		b.runStage(ctx, &zstd, b.disk)
	}
	tls := StageRun{Name: "TLS 1.3 over loopback", Bytes: sent, Command: []string{b.cfg.Floors, "floor", "tls", strconv.FormatInt(sent, 10)}}
	b.runStage(ctx, &tls)
	out := filepath.Join(b.scratch, "stage-write.img")
	write := StageRun{Name: "disk write, one fsync", Command: []string{b.cfg.Floors, "floor", "write", b.disk, out}}
	b.runStage(ctx, &write, b.disk)
	if f := strings.Fields(write.Output); len(f) >= 2 && f[0] == "wrote" {
		write.Bytes, _ = strconv.ParseInt(f[1], 10, 64)
	}
	os.Remove(out)
	set.Stages = []StageRun{zstd, tls, write}
}

// runStage runs a stage alone, its inputs in the state of the run's cache;
// a stage that fails is skipped with its error.
func (b *bench) runStage(ctx context.Context, s *StageRun, inputs ...string) {
	if err := b.cache(inputs...); err != nil {
		s.Skipped = err.Error()
		return
	}
	u, out, _, err := b.m.run(ctx, s.Command, nil)
	s.Usage, s.Output = u, strings.TrimSpace(string(out))
	if err != nil {
		s.Skipped = "failed: " + err.Error()
		return
	}
	b.logf("two proxies: stage %s in %s", s.Name, secs(u.Wall))
}

// runSSHPeer finds how ssh reaches 127.0.0.1 (sshpeer.go) and runs the
// peer through it; the bench's own sshd, if it started one, runs for this
// alone.
func (b *bench) runSSHPeer(ctx context.Context, set *ProxySet, zstd string) {
	route, why := sshRouteFor(ctx, filepath.Join(b.scratch, "sshd"), zstd, b.logf)
	if why != "" {
		set.PeerSkipped = why
		return
	}
	defer route.close()
	set.PeerSSHD, set.PeerCipher, set.PeerServer = route.sshd, route.cipher, route.server
	b.logf("two proxies: zstd | ssh through %s", route.sshd)
	p, err := b.runZstdSSH(ctx, route, zstd)
	if err != nil {
		set.PeerSkipped = "failed: " + err.Error()
	}
	set.Peer = p
}

// runZstdSSH is the peer of a full copy between two sites: the disk
// compressed on every core, sent through ssh to this host, decompressed
// into a copy. Only the sending side is this process's descendant: the
// receiving zstd's CPU is sshd's (the machine's or the bench's own), not
// counted here. zstd is the zstd command, run by its path on both sides.
func (b *bench) runZstdSSH(ctx context.Context, route *sshRoute, zstd string) (*PeerRun, error) {
	copyPath := filepath.Join(b.scratch, "ssh-copy.img")
	defer os.Remove(copyPath)
	script := `disk=$1 zstd=$2; shift 2; "$zstd" -1 -T0 -q -c < "$disk" | "$@"`
	args := append([]string{"sh", "-c", script, "sh", b.disk, zstd, "ssh"}, route.opts...)
	args = append(args, "127.0.0.1", shellQuote(zstd)+" -q -d > "+shellQuote(copyPath))
	if err := b.cache(b.disk); err != nil {
		return nil, err
	}
	u, _, _, err := b.m.run(ctx, args, nil)
	if err != nil {
		return nil, err
	}
	p := &PeerRun{Tool: "zstd -1 -T0 | ssh 127.0.0.1 'zstd -d'", Command: args, Usage: u, BytesRead: b.size}
	if p.Flush, err = fsyncFile(copyPath); err != nil {
		return p, err
	}
	if b.cfg.Verify {
		want, err := hashFile(b.disk)
		if err != nil {
			return p, err
		}
		got, err := hashFile(copyPath)
		if err != nil {
			return p, err
		}
		if got != want {
			return p, errors.New("verify: the copy through ssh differs from the source")
		}
	}
	return p, nil
}
