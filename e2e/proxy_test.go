package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proxyProc is a `ferry proxy` running in its own process.
type proxyProc struct {
	name, site, listen string
	addr               string // where it listens, as it said
	cmd                *exec.Cmd
	stderr             *logWriter
}

// logWriter keeps what a process writes and lets a test wait for a line.
type logWriter struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{} // closed and replaced at every write
}

func newLogWriter() *logWriter { return &logWriter{changed: make(chan struct{})} }

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	close(w.changed)
	w.changed = make(chan struct{})
	return len(p), nil
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// mark is where the log ends now, for waitFor.
func (w *logWriter) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Len()
}

// waitFor waits until what was written after mark holds s; it reports
// whether it did before stop was closed.
func (w *logWriter) waitFor(s string, mark int, stop <-chan struct{}) bool {
	for {
		w.mu.Lock()
		found, changed := strings.Contains(w.b.String()[mark:], s), w.changed
		w.mu.Unlock()
		if found {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			return false
		}
	}
}

// startProxy starts `ferry proxy` with the credentials issued to name in
// the lab's CA, listening on host (a loopback address) at a free port.
func (l *lab) startProxy(name, site, host string) *proxyProc {
	l.t.Helper()
	p := &proxyProc{name: name, site: site, listen: host + ":0", stderr: newLogWriter()}
	p.start(l)
	return p
}

func (p *proxyProc) start(l *lab) {
	l.t.Helper()
	tlsDir := filepath.Join(l.cfg, "ca", "issued", p.name)
	p.cmd = exec.Command(filepath.Join(bin, "ferry"), "-C", l.cfg, "--log-level", "info", "proxy", "--tls", tlsDir, "--listen", p.listen, "--site", p.site, "--max-tasks", "4")
	p.cmd.Env = append(os.Environ(), "HOME="+l.t.TempDir(), "FERRY_PLUGIN_PATH=")
	p.cmd.Stderr = p.stderr
	orphanless(p.cmd)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { p.kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		l.t.Fatalf("proxy %s said nothing: %v\n%s", p.name, err, p.stderr)
	}
	// "proxy NAME listening on ADDR (...)"
	f := strings.Fields(line)
	if len(f) < 5 || f[2] != "listening" {
		l.t.Fatalf("proxy %s: %q", p.name, line)
	}
	p.addr = f[4]
	p.listen = p.addr // a restart listens where the first start did
}

// kill ends the proxy at once, as a crash would.
func (p *proxyProc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		p.cmd = nil
	}
}

// twoSitesLab issues the certificates of a control plane and two proxies,
// starts the proxies on two loopback addresses and writes a configuration
// whose job runs on them.
func twoSitesLab(t *testing.T) (*lab, *proxyProc, *proxyProc) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB", "8MiB"}})
	prod, dr := l.startSiteProxies()
	l.writeSitesConfig("", prod, dr)
	return l, prod, dr
}

// writeSitesConfig writes a configuration whose job e2e replicates
// web-01 from site prod to site dr through the proxies ps, with extra
// blocks.
func (l *lab) writeSitesConfig(extra string, ps ...*proxyProc) {
	l.t.Helper()
	l.writeConfig(fmt.Sprintf(`
source "local" "prod" {
  path = "../prod"
  site = "prod"
}
target "local" "dr" {
  path = "../dr"
  site = "dr"
}
repository "local" "meta" { path = "../meta" }
%s%s
job "e2e" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01"]
  retention { restore_points = 3 }
}
`, proxyBlocks(ps...), extra))
}

// startSiteProxies makes the lab's CA, issues the credentials of two
// proxies and starts them: p-prod at site prod on 127.0.0.2, p-dr at site
// dr on 127.0.0.3.
func (l *lab) startSiteProxies() (prod, dr *proxyProc) {
	l.t.Helper()
	for _, args := range [][]string{{"ca", "init"}, {"ca", "issue", "p-prod"}, {"ca", "issue", "p-dr"}} {
		if r := ferry(l.t, l.cfg, args...); r.code != 0 {
			l.t.Fatalf("ferry %s: %s", strings.Join(args, " "), r)
		}
	}
	return l.startProxy("p-prod", "prod", "127.0.0.2"), l.startProxy("p-dr", "dr", "127.0.0.3")
}

// proxyBlocks is the configuration's proxy blocks for running proxies.
func proxyBlocks(ps ...*proxyProc) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\nproxy %q {\n  address = %q\n  site    = %q\n}\n", p.name, p.addr, p.site)
	}
	return b.String()
}

func (s session) proxies() string {
	var out []string
	for _, vm := range s.VMs {
		for _, d := range vm.Disks {
			out = append(out, d.SourceProxy+">"+d.TargetProxy)
		}
	}
	return strings.Join(out, ",")
}

func TestTwoSitesThroughProxies(t *testing.T) {
	l, prod, dr := twoSitesLab(t)
	if r := ferry(t, l.cfg, "plan", "e2e"); r.code != 0 || !strings.Contains(r.stdout, "proxies: read by p-prod (direct storage access, at the source's site prod), written by p-dr (direct storage access, at the target's site dr), compression zstd") {
		t.Fatalf("plan: %s", r)
	}
	l.write("web-01", 0, 0, 4<<20)
	l.write("web-01", 1, 1<<20, 2<<20)
	want0, want1 := l.source("web-01", 0), l.source("web-01", 1)
	s := l.run()
	if s.code != 0 || s.modes() != "full,full" || s.proxies() != "p-prod>p-dr,p-prod>p-dr" {
		t.Fatalf("first run: exit %d, modes %s, proxies %s\n%s", s.code, s.modes(), s.proxies(), s.stderr)
	}
	if !strings.Contains(s.stderr, "between sites, compression zstd") {
		t.Fatalf("auto compression between sites is not zstd:\n%s", s.stderr)
	}
	for _, want := range []string{"the source's calls run on proxy p-prod", "the target's calls run on proxy p-dr"} {
		if !strings.Contains(s.stderr, want) {
			t.Fatalf("no %q:\n%s", want, s.stderr)
		}
	}
	if sent, changed := s.Totals.BytesSent, int64(6<<20); sent >= changed {
		t.Fatalf("zstd between sites sent %d bytes for %d bytes of data", sent, changed)
	}
	ps := l.points("web-01")
	sameBytes(t, "point 1 disk 0", l.point("web-01", ps[0].ID, 0), want0)
	sameBytes(t, "point 1 disk 1", l.point("web-01", ps[0].ID, 1), want1)

	// The target proxy dies: the source proxy takes both halves, with a
	// warning (it reaches the DR storage here; a plugin that cannot would
	// fail the disk).
	dr.kill()
	if r := ferry(t, l.cfg, "plan", "e2e"); r.code != 0 || !strings.Contains(r.stdout, "written by p-prod (direct storage access; no proxy at the target's site dr reaches its disks), compression none") || !strings.Contains(r.stdout, "skipped: proxy p-dr") {
		t.Fatalf("plan without p-dr: %s", r)
	}
	l.scatter("web-01", 0, 16<<20, 20)
	want0 = l.source("web-01", 0)
	s = l.run()
	if s.code != 1 || s.Result != "warning" || s.proxies() != "p-prod>p-prod,p-prod>p-prod" || !strings.Contains(strings.Join(s.Warnings, "\n"), "proxy p-dr is skipped") {
		t.Fatalf("run without the target proxy: exit %d, %s, proxies %s, warnings %q\n%s", s.code, s.Result, s.proxies(), s.Warnings, s.stderr)
	}
	if !strings.Contains(s.stderr, "one host, compression none") || !strings.Contains(s.stderr, "the target's calls run on proxy p-prod") {
		t.Fatalf("auto compression on one proxy is not none, or the target's calls did not move:\n%s", s.stderr)
	}
	ps = l.points("web-01")
	sameBytes(t, "point 2 disk 0", l.point("web-01", ps[1].ID, 0), want0)

	// No proxy left: the session fails (no proxy can make the source's
	// calls) and every point stays.
	prod.kill()
	l.scatter("web-01", 0, 16<<20, 20)
	s = l.run()
	if s.code == 0 || !strings.Contains(s.Error, "no proxy can act for the source") {
		t.Fatalf("run without proxies: exit %d, %q\n%s", s.code, s.Error, s.stderr)
	}
	if ps := l.points("web-01"); len(ps) != 2 {
		t.Fatalf("%d points after the failed run", len(ps))
	}

	// Both back: the next run is incremental and exact.
	prod.start(l)
	dr.start(l)
	want0 = l.source("web-01", 0)
	s = l.run()
	if s.code != 0 || s.modes() != "change-tracking,change-tracking" || s.proxies() != "p-prod>p-dr,p-prod>p-dr" {
		t.Fatalf("run after the proxies came back: exit %d, modes %s, proxies %s\n%s", s.code, s.modes(), s.proxies(), s.stderr)
	}
	ps = l.points("web-01")
	if len(ps) != 3 {
		t.Fatalf("%d points", len(ps))
	}
	sameBytes(t, "point 3 disk 0", l.point("web-01", ps[2].ID, 0), want0)
	sameBytes(t, "point 3 disk 1", l.point("web-01", ps[2].ID, 1), want1)

	// Failover and its undo run on the DR proxy, as the sessions' calls.
	for _, args := range [][]string{{"failover", "e2e", "web-01"}, {"failover", "undo", "e2e", "web-01"}} {
		if r := ferry(t, l.cfg, args...); r.code != 0 {
			t.Fatalf("ferry %s: %s", strings.Join(args, " "), r)
		}
	}
	for _, m := range []string{"Target/Failover", "Target/UndoFailover"} {
		if !strings.Contains(dr.stderr.String(), "relayed call: method=/ferry.plugin.v1."+m) {
			t.Fatalf("%s did not run on p-dr:\n%s", m, dr.stderr)
		}
	}

	// A fourth point: retention drops the first, and the DR proxy deletes
	// it in the exchange that made the point (CommitPoint).
	l.scatter("web-01", 0, 16<<20, 5)
	want0 = l.source("web-01", 0)
	if s = l.run(); s.code != 0 {
		t.Fatalf("fourth run: exit %d\n%s", s.code, s.stderr)
	}
	after := l.points("web-01")
	if len(after) != 3 || after[0].ID != ps[1].ID || after[1].ID != ps[2].ID {
		t.Fatalf("points %+v after the fourth run, want the last two of %+v and a new one", after, ps)
	}
	sameBytes(t, "point 4 disk 0", l.point("web-01", after[2].ID, 0), want0)
	for _, said := range []string{"restore point made: replica=", "restore point deleted: replica=", "point=" + ps[0].ID} {
		if !strings.Contains(dr.stderr.String(), said) {
			t.Fatalf("p-dr did not log %q:\n%s", said, dr.stderr)
		}
	}
}

// TestProxyStopsOnSIGTERM: a proxy asked to stop (SIGTERM, as systemd
// does; Ctrl-C and a Windows service stop take the same path) says so and
// exits 0.
func TestProxyStopsOnSIGTERM(t *testing.T) {
	l := newLab(t, 1)
	prod, dr := l.startSiteProxies()
	for _, p := range []*proxyProc{prod, dr} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		err := p.cmd.Wait()
		p.cmd = nil
		if err != nil || !strings.Contains(p.stderr.String(), "proxy "+p.name+": stopping") {
			t.Fatalf("proxy %s after SIGTERM: %v\n%s", p.name, err, p.stderr)
		}
	}
}

// startRun starts `ferry run --json JOB` without waiting for it.
func (l *lab) startRun(job string) (*exec.Cmd, *logWriter, *strings.Builder) {
	l.t.Helper()
	cmd := exec.Command(filepath.Join(bin, "ferry"), "-C", l.cfg, "run", "--json", job)
	cmd.Env = append(os.Environ(), "HOME="+l.t.TempDir(), "FERRY_PLUGIN_PATH=")
	stderr, stdout := newLogWriter(), &strings.Builder{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	orphanless(cmd)
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, stderr, stdout
}

// firstToLog waits until one of the proxies logs s (after marks, their
// logs' ends taken before) and returns it.
func firstToLog(t *testing.T, s string, marks []int, ps ...*proxyProc) *proxyProc {
	t.Helper()
	found := make(chan *proxyProc, len(ps))
	stop := make(chan struct{})
	defer close(stop)
	for i, p := range ps {
		go func() {
			if p.stderr.waitFor(s, marks[i], stop) {
				found <- p
			}
		}()
	}
	select {
	case p := <-found:
		return p
	case <-time.After(time.Minute):
		t.Fatalf("no proxy logged %q", s)
		return nil
	}
}

// TestKillsMidTransfer kills a target proxy, then the control plane, in
// the middle of moving a disk (a traffic rule slows the link down to
// make sure of it): the first run goes on with the other DR proxy, the
// second leaves the proxies clean and the run after it resumes; every
// point is exact.
func TestKillsMidTransfer(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB"}})
	prod, dr := l.startSiteProxies()
	if r := ferry(t, l.cfg, "ca", "issue", "p-dr2"); r.code != 0 {
		t.Fatalf("ca issue: %s", r)
	}
	dr2 := l.startProxy("p-dr2", "dr", "127.0.0.4")
	l.writeSitesConfig(`
traffic_rule "wan" {
  from     = ["site:prod"]
  to       = ["site:dr"]
  throttle = "2MiB/s"
}
`, prod, dr, dr2)
	local(t, l.random(6<<20), "vm", "write", l.prod, "web-01", "0", "0")
	want := l.source("web-01", 0)

	// A DR proxy dies while it writes: the disk moves to the other one.
	marks := []int{dr.stderr.mark(), dr2.stderr.mark()}
	cmd, stderr, stdout := l.startRun("e2e")
	victim := firstToLog(t, "target half: replica disk open", marks, dr, dr2)
	victim.kill()
	err := cmd.Wait()
	var s session
	if jerr := json.Unmarshal([]byte(stdout.String()), &s); err != nil || jerr != nil {
		t.Fatalf("run with %s killed: %v, %v\n%s", victim.name, err, jerr, stderr)
	}
	if other := map[string]string{"p-dr": "p-dr2", "p-dr2": "p-dr"}[victim.name]; s.proxies() != "p-prod>"+other || !strings.Contains(stderr.String(), "placing it again") {
		t.Fatalf("proxies %s after %s was killed\n%s", s.proxies(), victim.name, stderr)
	}
	ps := l.points("web-01")
	sameBytes(t, "point 1", l.point("web-01", ps[0].ID, 0), want)
	victim.start(l)

	// The control plane dies while a disk moves: the proxies drop the
	// task, and the next run resumes.
	local(t, l.random(6<<20), "vm", "write", l.prod, "web-01", "0", fmt.Sprint(8<<20))
	want = l.source("web-01", 0)
	marks = []int{dr.stderr.mark(), dr2.stderr.mark()}
	cmd, runErr, _ := l.startRun("e2e")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the second run said:\n%s\nproxy p-prod:\n%s\nproxy p-dr:\n%s\nproxy p-dr2:\n%s", runErr, prod.stderr, dr.stderr, dr2.stderr)
		}
	})
	target := firstToLog(t, "target half: replica disk open", marks, dr, dr2)
	mark := marks[0]
	if target == dr2 {
		mark = marks[1]
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	stop := make(chan struct{})
	time.AfterFunc(time.Minute, func() { close(stop) })
	if !target.stderr.waitFor("target half: abandoned by the control plane", mark, stop) {
		t.Fatalf("proxy %s kept the task of a dead control plane:\n%s", target.name, target.stderr)
	}
	s = l.run()
	if s.code != 0 || s.modes() != "change-tracking" {
		t.Fatalf("run after the kill: exit %d, modes %s\n%s", s.code, s.modes(), s.stderr)
	}
	ps = l.points("web-01")
	if len(ps) != 2 {
		t.Fatalf("%d points", len(ps))
	}
	sameBytes(t, "point 2", l.point("web-01", ps[1].ID, 0), want)
}
