package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/server"
)

// serverProc is a `ferry server` the test started.
type serverProc struct {
	cmd    *exec.Cmd
	stderr *logWriter
	url    string
}

// startServer starts `ferry server` on a free loopback port, in plaintext
// (tokens are checked all the same), with the flags given, and waits until
// it serves.
func (l *lab) startServer(flags ...string) *serverProc {
	l.t.Helper()
	s := &serverProc{stderr: newLogWriter()}
	args := append([]string{"-C", l.cfg, "server", "--insecure-plaintext", "--listen", "127.0.0.1:0"}, flags...)
	s.cmd = exec.Command(filepath.Join(bin, "ferry"), args...)
	s.cmd.Env = append(os.Environ(), "HOME="+l.t.TempDir(), "FERRY_PLUGIN_PATH=")
	s.cmd.Stderr = s.stderr
	orphanless(s.cmd)
	if err := s.cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { s.kill() })
	stop := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() { close(stop) })
	defer timer.Stop()
	if !s.stderr.waitFor("; stop with Ctrl-C", 0, stop) {
		l.t.Fatalf("the server did not start:\n%s", s.stderr)
	}
	// "ferry server: N jobs; API on http://ADDR; stop with ..."
	_, rest, _ := strings.Cut(s.stderr.String(), "API on ")
	s.url, _, _ = strings.Cut(rest, ";")
	return s
}

func (s *serverProc) kill() {
	if s.cmd != nil && s.cmd.Process != nil && s.cmd.ProcessState == nil {
		s.cmd.Process.Signal(syscall.SIGKILL)
		s.cmd.Wait()
	}
}

// waitLog waits for s in the server's log after mark.
func (s *serverProc) waitLog(t *testing.T, what string, mark int, within time.Duration) {
	t.Helper()
	stop := make(chan struct{})
	timer := time.AfterFunc(within, func() { close(stop) })
	defer timer.Stop()
	if !s.stderr.waitFor(what, mark, stop) {
		t.Fatalf("the server did not log %q within %v:\n%s", what, within, s.stderr.String()[mark:])
	}
}

// call makes an API call with a token and decodes the answer into out.
func (s *serverProc) call(t *testing.T, token, method, path string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if b, ok := out.(*[]byte); ok {
			*b = body
		} else if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

// hookReceiver records the webhook notices it is posted.
type hookReceiver struct {
	mu  sync.Mutex
	got []server.Notice
	bad int
}

const hookSecret = "e2e-webhook-secret-0123456789"

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	var n server.Notice
	if !server.Verify(hookSecret, body, r.Header.Get("X-Ferry-Signature-256")) || json.Unmarshal(body, &n) != nil {
		h.bad++
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.got = append(h.got, n)
}

func (h *hookReceiver) events() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for _, n := range h.got {
		out[n.Event]++
	}
	return out
}

func (l *lab) writeServerConfig(hook, extra string) {
	l.writeConfig(fmt.Sprintf(`
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01"]
  schedule   = "every 2s"
  rpo        = "1h"
  retention { restore_points = 3 }
}

webhook "test" {
  url    = %q
  secret = %q
}
%s`, hook, hookSecret, extra))
}

func TestServerRunsTheSchedules(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB"}})
	hooks := &hookReceiver{}
	hookSrv := httptest.NewServer(hooks)
	defer hookSrv.Close()
	l.writeServerConfig(hookSrv.URL, "")
	l.write("web-01", 0, 0, 4<<20)
	operator := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)
	reader := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "dash").stdout)
	if !strings.HasPrefix(operator, "ferry_") || !strings.HasPrefix(reader, "ferry_") {
		t.Fatalf("tokens %q %q", operator, reader)
	}

	s := l.startServer()
	// Two scheduled sessions end well.
	s.waitLog(t, `"session ended"`, 0, 30*time.Second)
	mark := s.stderr.mark()
	s.waitLog(t, `"session ended"`, mark, 30*time.Second)

	// A person's run is refused while the server holds the jobs.
	if r := ferry(t, l.cfg, "run", "e2e"); r.code != 1 || !strings.Contains(r.stderr, "runs the jobs of this configuration") || !strings.Contains(r.stderr, s.url) {
		t.Fatalf("ferry run beside the server: %s", r)
	}
	// The API: the job, its sessions, who may act.
	var jobs []server.JobStatus
	if code := s.call(t, reader, "GET", "/v1/jobs", &jobs); code != 200 || len(jobs) != 1 || jobs[0].Schedule != "every 2s" || jobs[0].Next == nil || jobs[0].Last == nil {
		t.Fatalf("GET /v1/jobs: %d %+v", code, jobs)
	}
	var sessions []catalog.Session
	if code := s.call(t, reader, "GET", "/v1/sessions?job=e2e", &sessions); code != 200 || len(sessions) < 2 || sessions[len(sessions)-1].Result != catalog.ResultSuccess {
		t.Fatalf("GET /v1/sessions: %d %+v", code, sessions)
	}
	if code := s.call(t, reader, "POST", "/v1/jobs/e2e/run", nil); code != http.StatusForbidden {
		t.Fatalf("a read token ran a job: %d", code)
	}
	if code := s.call(t, "ferry_made_up", "GET", "/v1/jobs", nil); code != http.StatusUnauthorized {
		t.Fatalf("a made-up token read: %d", code)
	}
	if code := s.call(t, operator, "POST", "/v1/jobs/e2e/run", nil); code != http.StatusAccepted {
		t.Fatalf("an operator token could not run a job: %d", code)
	}
	// Tokens are listed; the server takes a new one, and stops taking a
	// revoked one, at its next look at their folder.
	if r := ferry(t, l.cfg, "token", "list"); r.code != 0 || !strings.Contains(r.stdout, "dash") || !strings.Contains(r.stdout, "operator") || strings.Contains(r.stdout, "ferry_") {
		t.Fatalf("token list: %s", r)
	}
	mark = s.stderr.mark()
	spare := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "spare").stdout)
	s.waitLog(t, `"tokens reloaded"`, mark, 30*time.Second)
	if code := s.call(t, spare, "GET", "/v1/jobs", nil); code != 200 {
		t.Fatalf("a new token: %d", code)
	}
	mark = s.stderr.mark()
	if r := ferry(t, l.cfg, "token", "revoke", "spare"); r.code != 0 {
		t.Fatalf("token revoke: %s", r)
	}
	s.waitLog(t, `"tokens reloaded"`, mark, 30*time.Second)
	if code := s.call(t, spare, "GET", "/v1/jobs", nil); code != http.StatusUnauthorized {
		t.Fatalf("a revoked token read: %d", code)
	}
	// The metrics parse and count the sessions.
	var text []byte
	if code := s.call(t, reader, "GET", "/metrics", &text); code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(text)))
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	if f := fams["ferry_sessions_total"]; f == nil || len(f.GetMetric()) == 0 || f.GetMetric()[0].GetCounter().GetValue() < 2 {
		t.Fatalf("ferry_sessions_total: %v", f)
	}
	if f := fams["ferry_rpo_breached"]; f == nil || f.GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Fatalf("ferry_rpo_breached: %v", f)
	}

	// A broken configuration is reported and the running one kept; a
	// good one is taken.
	if err := os.WriteFile(filepath.Join(l.cfg, "broken.hcl"), []byte("job {"), 0o644); err != nil {
		t.Fatal(err)
	}
	mark = s.stderr.mark()
	s.waitLog(t, "the running one is kept", mark, 30*time.Second)
	s.waitLog(t, `"session ended"`, mark, 30*time.Second)
	if err := os.Remove(filepath.Join(l.cfg, "broken.hcl")); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "configuration reloaded", mark, 30*time.Second)

	// kill -9 while a session runs; the restart runs the missed run once,
	// loses no restore point, goes on incrementally (the killed session
	// left the replica as its last point had it), and the next point is
	// exact.
	mark = s.stderr.mark()
	s.waitLog(t, `"session starts"`, mark, 30*time.Second)
	s.kill()
	killed := time.Now()
	logs := s.stderr.String()
	before := l.points("web-01")
	// The next run must have fallen due while no server ran: wait for
	// the schedule's next two-second mark.
	time.Sleep(time.Until(time.Now().Truncate(2 * time.Second).Add(2*time.Second + 100*time.Millisecond)))
	l.write("web-01", 0, 8<<20, 2<<20)
	want := l.source("web-01", 0)
	s = l.startServer()
	s.waitLog(t, "a run fell due while no server ran", 0, 30*time.Second)
	s.waitLog(t, `"session ended"`, 0, 60*time.Second)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil || !strings.Contains(s.stderr.String(), "ferry server: stopped") {
		t.Fatalf("the server after SIGTERM: %v\n%s", err, s.stderr)
	}
	if n := strings.Count(s.stderr.String(), "a run fell due while no server ran"); n != 1 {
		t.Fatalf("the missed run ran %d times", n)
	}
	ps := l.points("web-01")
	if len(ps) == 0 || len(ps) < len(before) {
		t.Fatalf("%d restore points after the restart, %d before the kill", len(ps), len(before))
	}
	sameBytes(t, "the newest point after the restart", l.point("web-01", ps[len(ps)-1].ID, 0), want)
	var since []session
	if r := ferry(t, l.cfg, "sessions", "e2e", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &since) != nil {
		t.Fatalf("sessions --json: %s", r)
	}
	resumed := 0
	for _, x := range since {
		if x.Started.After(killed) {
			resumed++
			if x.Result != catalog.ResultSuccess || x.modes() != "change-tracking" {
				t.Fatalf("session %s after the restart: %s, modes %s (want an incremental run)", x.ID, x.Result, x.modes())
			}
		}
	}
	if resumed == 0 {
		t.Fatal("no session after the restart")
	}
	// Once the server is gone, a person may run the job again.
	if r := l.run(); r.code != 0 {
		t.Fatalf("ferry run after the server stopped: %d\n%s", r.code, r.stderr)
	}
	// The sessions are kept, listed and shown.
	var listed []session
	if r := ferry(t, l.cfg, "sessions", "e2e", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &listed) != nil || len(listed) < 4 {
		t.Fatalf("sessions --json: %s", r)
	}
	if r := ferry(t, l.cfg, "sessions"); r.code != 0 || strings.Count(r.stdout, " e2e ") < 4 {
		t.Fatalf("sessions: %s", r)
	}
	if r := ferry(t, l.cfg, "session", listed[0].ID[:len(listed[0].ID)-2]); r.code != 0 || !strings.Contains(r.stdout, "session "+listed[0].ID+" of job e2e") || !strings.Contains(r.stdout, "vm web-01: success") {
		t.Fatalf("session: %s", r)
	}
	// The webhook heard the sessions, signed.
	if ev := hooks.events(); ev["session.ended"] < 3 || hooks.bad > 0 {
		t.Fatalf("webhook notices %v, %d badly signed", ev, hooks.bad)
	}
	// Secrets are never logged: the webhook's, the tokens' (asked with
	// and made or revoked while it ran).
	logs += s.stderr.String()
	for what, secret := range map[string]string{"the webhook secret": hookSecret, "the operator token": operator, "the read token": reader, "a revoked token": spare} {
		if strings.Contains(logs, secret) {
			t.Errorf("the server logged %s", what)
		}
	}
}

func TestTheServersSessionsCanBeWatched(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB"}})
	l.writeServerConfig("http://127.0.0.1:9/unused", "")
	l.write("web-01", 0, 0, 8<<20)
	token := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "watch").stdout)
	s := l.startServer()
	req, _ := http.NewRequest("GET", s.url+"/v1/events?job=e2e", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	// The events of the next whole session, in order.
	sc := bufio.NewScanner(resp.Body)
	var kinds []string
	var session string
	deadline := time.AfterFunc(60*time.Second, func() { resp.Body.Close() })
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		var ev server.Event
		if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
			t.Fatal(err)
		}
		if session == "" {
			if ev.Kind != "session.started" {
				continue // joined in the middle of a session
			}
			session = ev.Session
		}
		if ev.Session != session {
			t.Fatalf("an event of another session while one runs: %+v", ev)
		}
		if len(kinds) == 0 || kinds[len(kinds)-1] != ev.Kind {
			kinds = append(kinds, ev.Kind)
		}
		if ev.Kind == "session.finished" {
			if ev.Result != "success" {
				t.Fatalf("session finished: %+v", ev)
			}
			break
		}
	}
	got := strings.Join(kinds, ",")
	if !strings.HasPrefix(got, "session.started,vm.started,") || !strings.Contains(got, "disk.finished") || !strings.HasSuffix(got, "vm.finished,session.finished") {
		t.Fatalf("events %s", got)
	}
}

// logged lists the values of field in the server's JSON log lines whose
// message is msg, in order.
func (s *serverProc) logged(t *testing.T, msg, field string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(s.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["@message"] != msg {
			continue
		}
		v, _ := rec[field].(string)
		out = append(out, v)
	}
	return out
}

// queueJobs is a configuration of on-demand jobs, one VM each: a's
// copies are throttled, so that its session lasts seconds.
func queueJobs(names ...string) string {
	hcl := `
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }
`
	vms := map[string]string{"a": "web-01", "b": "web-02", "c": "web-03"}
	for _, name := range names {
		throttle := ""
		if name == "a" {
			throttle = `transfer { throttle = "1MB/s" }`
		}
		hcl += fmt.Sprintf(`
job %q {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = [%q]
  %s
}
`, name, vms[name], throttle)
	}
	return hcl
}

// TestQueuedRunsSurviveAKill: runs queued behind a session, waiting for a
// slot, or asked through the API are run once each by the next server,
// in the order they were queued, after a kill -9; the run of a job gone
// from the configuration is dropped.
func TestQueuedRunsSurviveAKill(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB"}}, vmSpec{name: "web-02", disks: []string{"4MiB"}}, vmSpec{name: "web-03", disks: []string{"4MiB"}})
	l.writeConfig(queueJobs("a", "b", "c"))
	l.write("web-01", 0, 0, 8<<20)
	l.write("web-02", 0, 0, 1<<20)
	l.write("web-03", 0, 0, 1<<20)
	token := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)

	s := l.startServer("--max-sessions", "1")
	ask := func(job string) server.Asked {
		t.Helper()
		var a server.Asked
		if code := s.call(t, token, "POST", "/v1/jobs/"+job+"/run", &a); code != http.StatusAccepted {
			t.Fatalf("POST /v1/jobs/%s/run: %d\n%s", job, code, s.stderr)
		}
		return a
	}
	// a's session runs (about 8 s, throttled); b and c wait for the slot;
	// a, asked again, is queued behind its session.
	if a := ask("a"); !a.Started || a.Session == "" {
		t.Fatalf("run a: %+v", a)
	}
	if b := ask("b"); !b.WaitingForSlot {
		t.Fatalf("run b: %+v", b)
	}
	if c := ask("c"); !c.WaitingForSlot {
		t.Fatalf("run c: %+v", c)
	}
	if a := ask("a"); !a.Queued {
		t.Fatalf("run a again: %+v", a)
	}
	s.kill()

	// c leaves the configuration while no server runs.
	l.writeConfig(queueJobs("a", "b"))
	s = l.startServer("--max-sessions", "1")
	s.waitLog(t, "is dropped: the job is no longer in the configuration", 0, 30*time.Second)
	s.waitLog(t, `"session ended"`, 0, 60*time.Second)
	s.waitLog(t, `"session ended"`, strings.Index(s.stderr.String(), `"session ended"`)+1, 60*time.Second)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("the server after SIGTERM: %v\n%s", err, s.stderr)
	}
	if got := s.logged(t, "a run queued before the server stopped: running it now", "job"); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("runs resumed %q, want b then a\n%s", got, s.stderr)
	}
	if got := s.logged(t, "session starts", "job"); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("sessions began for %q, want b then a, once each\n%s", got, s.stderr)
	}
	// In the catalog: a's killed session and its queued run, b's run,
	// nothing of c.
	var listed []session
	if r := ferry(t, l.cfg, "sessions", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &listed) != nil {
		t.Fatalf("sessions --json: %s", r)
	}
	count, last := map[string]int{}, map[string]catalog.Result{}
	for _, ls := range listed { // newest first
		if count[ls.Job]++; count[ls.Job] == 1 {
			last[ls.Job] = ls.Result
		}
	}
	if count["a"] != 2 || count["b"] != 1 || count["c"] != 0 || last["a"] != catalog.ResultSuccess || last["b"] != catalog.ResultSuccess {
		t.Fatalf("sessions by job %v, the last ones %v", count, last)
	}
}

// TestAServerKilledMidTransfer: kill -9 of ferry server while a session
// moves a disk's data (its progress seen through the API) loses no
// restore point: the earlier point still reads as the source did; the
// next server's run of the job succeeds, and its point is exactly the
// source.
func TestAServerKilledMidTransfer(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB"}})
	l.writeConfig(`
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01"]
  transfer { throttle = "1MB/s" }
}
`)
	l.write("web-01", 0, 0, 1<<20)
	if r := l.run(); r.code != 0 {
		t.Fatalf("the first run: %s", r.stderr)
	}
	before := l.points("web-01")
	was := l.source("web-01", 0)
	l.write("web-01", 0, 4<<20, 4<<20) // about 4 s at 1 MB/s
	token := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)

	s := l.startServer()
	req, _ := http.NewRequest("GET", s.url+"/v1/events?job=e2e", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	if code := s.call(t, token, "POST", "/v1/jobs/e2e/run", nil); code != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs/e2e/run: %d\n%s", code, s.stderr)
	}
	// Kill once a megabyte of the disk has moved, and before it all has.
	deadline := time.AfterFunc(60*time.Second, func() { resp.Body.Close() })
	defer deadline.Stop()
	sc := bufio.NewScanner(resp.Body)
	var at server.Event
	for sc.Scan() {
		var ev server.Event
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); !ok || json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		if ev.Kind == "disk.finished" || ev.Kind == "session.finished" {
			t.Fatalf("the session moved its data before the kill: %+v", ev)
		}
		if ev.Kind == "disk.progress" && ev.Done >= 1<<20 {
			at = ev
			break
		}
	}
	if at.Kind == "" {
		t.Fatalf("no progress of the disk:\n%s", s.stderr)
	}
	s.kill()
	after := l.points("web-01")
	if len(after) != len(before) || after[len(after)-1].ID != before[len(before)-1].ID {
		t.Fatalf("points after the kill %+v, before %+v", after, before)
	}
	sameBytes(t, "the point before the killed session", l.point("web-01", before[len(before)-1].ID, 0), was)

	want := l.source("web-01", 0)
	s = l.startServer()
	mark := s.stderr.mark()
	if code := s.call(t, token, "POST", "/v1/jobs/e2e/run", nil); code != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs/e2e/run after the restart: %d\n%s", code, s.stderr)
	}
	s.waitLog(t, `"session ended"`, mark, 60*time.Second)
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Wait(); err != nil {
		t.Fatalf("the server after SIGTERM: %v\n%s", err, s.stderr)
	}
	ps := l.points("web-01")
	if len(ps) != len(before)+1 {
		t.Fatalf("%d points after the resumed run, want %d", len(ps), len(before)+1)
	}
	sameBytes(t, "the point of the run after the kill", l.point("web-01", ps[len(ps)-1].ID, 0), want)
	sameBytes(t, "the point before the killed session, after the run", l.point("web-01", before[len(before)-1].ID, 0), was)
	var listed []session
	if r := ferry(t, l.cfg, "sessions", "e2e", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &listed) != nil || len(listed) < 3 {
		t.Fatalf("sessions --json: %s", r)
	}
	if listed[0].Result != catalog.ResultSuccess || listed[1].Result == catalog.ResultSuccess {
		t.Fatalf("the last session %s, the killed one %s: want success after a session that did not succeed", listed[0].Result, listed[1].Result)
	}
}

// TestTheServersMetricsTellTheProxiesSlots: /metrics of a server whose
// jobs run through proxies has each proxy's task slots (the
// configuration's before a session greets it, then what the proxy says,
// bounded by the configuration), the slots its tasks hold while a session
// runs, and the tasks waiting for one: the DR proxy takes one task at a
// time, so of the VM's two disks one moves and one waits.
func TestTheServersMetricsTellTheProxiesSlots(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB", "8MiB"}})
	prod, dr := l.startSiteProxies() // each runs with --max-tasks 4
	l.writeSitesConfig(fmt.Sprintf("\nproxy %q {\n  address   = %q\n  site      = %q\n  max_tasks = 6\n}\n"+
		"\nproxy %q {\n  address   = %q\n  site      = %q\n  max_tasks = 1\n}\n"+
		// Slow enough to be seen moving: about 1.5 s a disk.
		"\ntraffic_rule \"wan\" {\n  from     = [\"site:prod\"]\n  to       = [\"site:dr\"]\n  throttle = \"2MiB/s\"\n}\n",
		prod.name, prod.addr, prod.site, dr.name, dr.addr, dr.site))
	local(t, l.random(3<<20), "vm", "write", l.prod, "web-01", "0", "0")
	local(t, l.random(3<<20), "vm", "write", l.prod, "web-01", "1", "0")
	token := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)
	s := l.startServer()
	gauges := func() map[string]float64 {
		t.Helper()
		var text []byte
		if code := s.call(t, token, "GET", "/metrics", &text); code != 200 {
			t.Fatalf("GET /metrics: %d", code)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(string(text)))
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		out := map[string]float64{}
		for name, f := range fams {
			if !strings.HasPrefix(name, "ferry_proxy_") {
				continue
			}
			for _, m := range f.GetMetric() {
				key := name
				for _, lp := range m.GetLabel() {
					key += fmt.Sprintf(" %s=%s", lp.GetName(), lp.GetValue())
				}
				out[key] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	before := map[string]float64{
		"ferry_proxy_task_slots proxy=p-dr site=dr": 1, "ferry_proxy_task_slots proxy=p-prod site=prod": 6,
		"ferry_proxy_task_slots_busy proxy=p-dr site=dr": 0, "ferry_proxy_task_slots_busy proxy=p-prod site=prod": 0,
		"ferry_proxy_tasks_waiting": 0,
	}
	if got := gauges(); !maps.Equal(got, before) {
		t.Fatalf("before a session: %v, want %v", got, before)
	}
	mark := s.stderr.mark()
	if code := s.call(t, token, "POST", "/v1/jobs/e2e/run", nil); code != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs/e2e/run: %d", code)
	}
	// While the session runs: one task holds a slot of each proxy, the
	// other waits for p-dr's.
	during := maps.Clone(before)
	during["ferry_proxy_task_slots proxy=p-prod site=prod"] = 4 // the proxy's --max-tasks, once greeted
	during["ferry_proxy_task_slots_busy proxy=p-dr site=dr"] = 1
	during["ferry_proxy_task_slots_busy proxy=p-prod site=prod"] = 1
	during["ferry_proxy_tasks_waiting"] = 1
	var seen []map[string]float64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := gauges()
		if maps.Equal(got, during) {
			break
		}
		if len(seen) == 0 || !maps.Equal(seen[len(seen)-1], got) {
			seen = append(seen, got)
		}
		if strings.Contains(s.stderr.String()[mark:], `"session ended"`) || time.Now().After(deadline) {
			t.Fatalf("the session's disks were never seen moving and waiting (%v); the gauges were:\n%v\n%s", during, seen, s.stderr.String()[mark:])
		}
	}
	s.waitLog(t, `"session ended"`, mark, 60*time.Second)
	after := maps.Clone(before)
	after["ferry_proxy_task_slots proxy=p-prod site=prod"] = 4
	if got := gauges(); !maps.Equal(got, after) {
		t.Fatalf("after a session: %v, want %v", got, after)
	}
}

// TestSIGHUPReloadsTheTokens: a token revoked in a way the server's look
// at the tokens' folder cannot see (its file rewritten with another
// secret's digest, same size and times) is honoured until SIGHUP, which
// reads the tokens whatever the folder looks like; after it the old
// secret is refused and the log says why the tokens were reloaded.
func TestSIGHUPReloadsTheTokens(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"1MiB"}})
	l.writeConfig(queueJobs("a"))
	secret := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "dash", "--role", "read").stdout)
	s := l.startServer()
	if code := s.call(t, secret, "GET", "/v1/jobs", nil); code != http.StatusOK {
		t.Fatalf("GET /v1/jobs with the token: %d", code)
	}

	dir := server.TokensDir(l.cfg)
	file := filepath.Join(dir, "dash.json")
	fileInfo, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	dirInfo, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var tok server.Token
	if err := json.Unmarshal(b, &tok); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("ferry_another-secret"))
	other := hex.EncodeToString(sum[:])
	rewritten := strings.Replace(string(b), tok.SHA256, other, 1)
	if len(rewritten) != len(b) || rewritten == string(b) {
		t.Fatalf("the token file was not rewritten in place:\n%s", b)
	}
	if err := os.WriteFile(file, []byte(rewritten), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, info := range map[string]os.FileInfo{file: fileInfo, dir: dirInfo} {
		if err := os.Chtimes(path, info.ModTime(), info.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	// The folder looks unchanged: the look every 2 s reloads nothing,
	// and requests read no file.
	time.Sleep(2500 * time.Millisecond)
	if code := s.call(t, secret, "GET", "/v1/jobs", nil); code != http.StatusOK {
		t.Fatalf("before SIGHUP the server already refused the token (%d): the test cannot tell what SIGHUP does", code)
	}

	mark := s.stderr.mark()
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, `"tokens reloaded"`, mark, 10*time.Second)
	if why := s.logged(t, "tokens reloaded", "why"); len(why) == 0 || why[len(why)-1] != "SIGHUP" {
		t.Fatalf("tokens reloaded because %q, want SIGHUP", why)
	}
	if code := s.call(t, secret, "GET", "/v1/jobs", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/jobs with the revoked token after SIGHUP: %d, want 401", code)
	}
	if code := s.call(t, secret, "GET", "/v1/health", nil); code != http.StatusOK {
		t.Fatalf("the server stopped answering after SIGHUP: %d", code)
	}
}

// TestASecondSignalStopsTheServerAtOnce: on SIGTERM the server stops
// cleanly, which here waits (up to 5 s) for an API client whose request
// is still arriving; a second SIGTERM ends it at once, as killing it
// would. (Watches of the events end with the server: they hold nothing.)
func TestASecondSignalStopsTheServerAtOnce(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"1MiB"}})
	l.writeConfig(queueJobs("a"))
	s := l.startServer()
	u, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Half a request: the API's shutdown waits for it to end.
	if _, err := io.WriteString(conn, "GET /v1/health HTTP/1.1\r\nHost: "+u.Host+"\r\n"); err != nil {
		t.Fatal(err)
	}

	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "stopping: no new sessions", 0, 10*time.Second)
	sent := time.Now()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = s.cmd.Wait()
	took := time.Since(sent)
	ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM || took > 2*time.Second {
		t.Fatalf("after the second SIGTERM the server ended in %v: %v (want killed by the signal at once)\n%s", took, err, s.stderr)
	}
	if strings.Contains(s.stderr.String(), "ferry server: stopped") {
		t.Fatalf("the server stopped cleanly after a second signal:\n%s", s.stderr)
	}
}

// TestPlaintextOnlyOnLoopback: the API is TLS unless --insecure-plaintext
// asks otherwise, which serves a loopback address only and says so at
// every start; without the control plane's certificate the server does
// not start.
func TestPlaintextOnlyOnLoopback(t *testing.T) {
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"1MiB"}})
	l.writeConfig(queueJobs("a"))
	for _, addr := range []string{"0.0.0.0:0", "10.1.2.3:7444", "[::]:0"} {
		if r := ferry(t, l.cfg, "server", "--insecure-plaintext", "--listen", addr); r.code != 2 || !strings.Contains(r.stderr, "--insecure-plaintext serves only a loopback address") {
			t.Fatalf("a plaintext API on %s: %s", addr, r)
		}
	}
	if r := ferry(t, l.cfg, "server", "--listen", "127.0.0.1:0"); r.code == 0 || !strings.Contains(r.stderr, "make it with 'ferry ca init'") {
		t.Fatalf("a TLS API without the control plane's certificate: %s", r)
	}
	s := l.startServer()
	if !strings.Contains(s.stderr.String(), "WARNING: ferry server serves its API WITHOUT TLS on 127.0.0.1:") {
		t.Fatalf("a plaintext API started without its warning:\n%s", s.stderr)
	}
}
