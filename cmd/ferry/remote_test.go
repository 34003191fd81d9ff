package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/server"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/core/status"
	"github.com/ferry-dr/ferry/scheduler"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// apiLab is a ferry server in this process, with its API on a loopback
// address in plaintext, a job "web" run on demand and a job "db" every
// hour; its sessions succeed at once and make a restore point.
type apiLab struct {
	url              string
	api              *httptest.Server
	reader, operator string
	cat              *catalog.Catalog

	mu     sync.Mutex
	refuse string // a VM whose failover fails
}

func newAPILab(t *testing.T) *apiLab {
	t.Helper()
	dir := t.TempDir()
	cat, err := catalog.Open(filepath.Join(dir, "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	every, err := scheduler.Parse("every 1h", time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{Dir: dir, Jobs: map[string]*config.Job{
		"web": {Name: "web", VMs: []string{"web-01"}},
		"db":  {Name: "db", VMs: []string{"db-01"}, Schedule: every},
	}, FailoverPlans: map[string]*config.FailoverPlan{
		"site-a": {Name: "site-a", Groups: []*config.PlanGroup{
			{Name: "db", VMs: []config.PlanVM{{Job: "db", VM: "db-01"}}},
			{Name: "web", VMs: []config.PlanVM{{Job: "web", VM: "web-01"}}, DependsOn: []string{"db"}},
		}},
	}}
	l := &apiLab{cat: cat}
	var srv *server.Server
	run := func(ctx context.Context, job *config.Job, began func(string)) (*catalog.Session, error) {
		s, err := cat.BeginSession(job.Name)
		if err != nil {
			return nil, err
		}
		began(s.ID)
		srv.Publish(server.Event{Kind: "session.started", Session: s.ID, Job: job.Name, Time: time.Now()})
		time.Sleep(300 * time.Millisecond) // long enough to be followed
		for _, vm := range job.VMs {
			if err := cat.AddRestorePoint(&catalog.RestorePoint{Job: job.Name, VM: vm, ID: s.ID, Session: s.ID, Created: time.Now()}); err != nil {
				return s, err
			}
			s.VMs = append(s.VMs, catalog.VMResult{VM: vm, Result: catalog.ResultSuccess, RestorePoint: s.ID})
		}
		s.Result, s.Ended = catalog.ResultSuccess, time.Now()
		if err := cat.SaveSession(s); err != nil {
			return s, err
		}
		srv.Publish(server.Event{Kind: "session.finished", Session: s.ID, Job: job.Name, Time: s.Ended, Result: string(s.Result)})
		return s, nil
	}
	srv = server.New(run, cat, nil, server.Options{})
	srv.Failover = func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
		l.mu.Lock()
		refused := l.refuse == vm
		l.mu.Unlock()
		if refused {
			return nil, fmt.Errorf("start replica of %s: the host has no room: %w", vm, errdefs.ErrUnavailable)
		}
		if point == "nope" {
			return nil, fmt.Errorf("no restore point %q of %s: %w", point, vm, errdefs.ErrInvalidArgument)
		}
		return &sdk.Replica{Name: vm + "_replica", State: sdk.ReplicaFailedOver, FailoverPoint: "p1", VM: sdk.VM{PowerState: "on"}}, nil
	}
	srv.Plan = func(ctx context.Context, jobs []*config.Job) ([]plan.Plan, error) {
		var out []plan.Plan
		for _, j := range jobs {
			out = append(out, plan.Plan{Job: j.Name, Changes: []plan.Change{{Action: plan.Create, VM: j.VMs[0], Disk: -1, What: "replica will be created"}}})
		}
		return out, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan struct{}), make(chan struct{})
	srv.Ready = func() { close(ready) } // as ferry server, the API answers once the jobs are known
	go func() { srv.Serve(ctx, cfg); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case <-done:
	}
	tokens := server.TokensDir(dir)
	if l.reader, err = server.CreateToken(tokens, "dash", server.RoleRead); err != nil {
		t.Fatal(err)
	}
	if l.operator, err = server.CreateToken(tokens, "ops", server.RoleOperator); err != nil {
		t.Fatal(err)
	}
	cache, err := server.LoadTokens(tokens)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(server.Authorize(srv.Handler(server.NewMetrics(srv), "test"), cache))
	t.Cleanup(api.Close)
	l.url, l.api = api.URL, api
	return l
}

// ferry runs ferry's command line with FERRY_TOKEN set to token and
// FERRY_ADDR to the lab's API, in an empty configuration folder.
func (l *apiLab) ferry(t *testing.T, token string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := newCLI(&out, &errb)
	env := map[string]string{"FERRY_TOKEN": token, "FERRY_ADDR": l.url}
	c.getenv = func(k string) string { return env[k] }
	code := c.execute(append([]string{"-C", t.TempDir()}, args...))
	return code, out.String(), errb.String()
}

// TestTheCommandLineAsAClient: with FERRY_ADDR, the verbs act through the
// server and exit as they would here.
func TestTheCommandLineAsAClient(t *testing.T) {
	l := newAPILab(t)
	ok := func(token string, args ...string) string {
		t.Helper()
		code, out, errs := l.ferry(t, token, args...)
		if code != 0 {
			t.Fatalf("ferry %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	fails := func(code int, stderr, token string, args ...string) {
		t.Helper()
		got, out, errs := l.ferry(t, token, args...)
		if got != code || !strings.Contains(errs, stderr) {
			t.Fatalf("ferry %s: exit %d, want %d with %q\n%s%s", strings.Join(args, " "), got, code, stderr, out, errs)
		}
	}

	var st []status.Job
	if err := json.Unmarshal([]byte(ok(l.reader, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Job != "db" || st[0].NextRun == nil || st[1].NextRun != nil {
		t.Fatalf("status: %+v", st)
	}
	if out := ok(l.reader, "status"); !strings.Contains(out, "job db: never run; next run ") || !strings.Contains(out, "job web: never run\n") {
		t.Fatalf("status:\n%s", out)
	}

	out := ok(l.operator, "run", "web")
	if !strings.Contains(out, "following it (Ctrl-C stops following, not the session)") {
		t.Fatalf("run:\n%s", out)
	}
	if !strings.Contains(out, "  web-01: success, restore point ") || !strings.Contains(out, "job web: success in ") {
		t.Fatalf("run:\n%s", out)
	}
	var runs []sessionSummary
	dec := json.NewDecoder(strings.NewReader(ok(l.operator, "run", "web", "db", "--json")))
	for dec.More() {
		var s sessionSummary
		if err := dec.Decode(&s); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, s)
	}
	if len(runs) != 2 || runs[0].Job != "web" || runs[1].Job != "db" || runs[0].Totals.Success != 1 {
		t.Fatalf("run --json: %+v", runs)
	}
	if out := ok(l.reader, "points", "web"); strings.Count(out, "web-01") != 2 {
		t.Fatalf("points:\n%s", out)
	}
	if out := ok(l.reader, "sessions", "web"); strings.Count(out, " web ") != 2 {
		t.Fatalf("sessions:\n%s", out)
	}
	if out := ok(l.reader, "session", runs[1].ID[:len(runs[1].ID)-1]); !strings.Contains(out, "session "+runs[1].ID+" of job db: success") {
		t.Fatalf("session:\n%s", out)
	}
	if out := ok(l.operator, "failover", "web", "web-01"); !strings.Contains(out, "web-01 failed over to replica web-01_replica (restore point p1); power: on") {
		t.Fatalf("failover:\n%s", out)
	}
	if out := ok(l.reader, "plan", "web"); !strings.Contains(out, "replica will be created") {
		t.Fatalf("plan:\n%s", out)
	}

	// Exit codes as here: a job or VM that is not there, a point that names
	// none, are the command line's; refused credentials say what to do.
	fails(exitUsage, `no job "nosuch" on ferry server at `+l.url+" (jobs: db, web)", l.reader, "points", "nosuch")
	fails(exitUsage, `job "web" has no VM "nosuch"`, l.reader, "points", "web", "nosuch")
	fails(exitUsage, `no job "nosuch"`, l.operator, "run", "nosuch")
	fails(exitUsage, `no restore point "nope"`, l.operator, "failover", "web", "web-01", "--point", "nope")
	fails(exitFailure, "FERRY_TOKEN holds a token that may only read: use an operator token", l.reader, "failover", "web", "web-01")
	fails(exitFailure, "FERRY_TOKEN holds a token that may only read", l.reader, "run", "web")
	fails(exitFailure, "unknown or revoked token; set FERRY_TOKEN to a token it knows", "ferry_made_up", "status")
	fails(exitFailure, "no credentials", "", "sessions")
	fails(exitFailure, `no session "zzz"`, l.reader, "session", "zzz")
	fails(exitUsage, "plain http only to a loopback address", l.reader, "--server", "http://10.1.2.3:7444", "status")
	fails(exitUsage, "write https://HOST:PORT", l.reader, "--server", "dr-ctl:7444", "status")
	fails(exitFailure, "FERRY_CACERT", l.reader, "--server", "https://127.0.0.1:7444", "status")
}

// TestARunFollowsTheSessionTheServerNames: a run that starts follows the
// session the server's answer names; a run queued behind the job's
// session follows the session begun after that one, not the one that
// ran when it was asked.
func TestARunFollowsTheSessionTheServerNames(t *testing.T) {
	l := newAPILab(t)
	c, err := client.New(client.Options{Address: l.url, Token: l.operator})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := c.Run(ctx, "web")
	if err != nil || !first.Started || first.Session == "" {
		t.Fatalf("run: %+v, %v", first, err)
	}
	code, out, errs := l.ferry(t, l.operator, "run", "web", "--json")
	if code != 0 || !strings.Contains(errs, "job web: a run of it is under way on ferry server at "+l.url+": this one is queued") {
		t.Fatalf("a queued run: exit %d\n%s%s", code, out, errs)
	}
	var queued sessionSummary
	if err := json.Unmarshal([]byte(out), &queued); err != nil {
		t.Fatal(err)
	}
	sessions, err := l.cat.Sessions("web", 0)
	if err != nil || len(sessions) != 2 || sessions[1].ID != first.Session || queued.ID != sessions[0].ID || queued.Result != catalog.ResultSuccess {
		t.Fatalf("the queued run followed %s; sessions %+v, %v", queued.ID, sessions, err)
	}
	code, out, errs = l.ferry(t, l.operator, "run", "web")
	if sessions, err = l.cat.Sessions("web", 1); err != nil || len(sessions) != 1 {
		t.Fatal(sessions, err)
	}
	if code != 0 || !strings.Contains(out, "job web: session "+sessions[0].ID+" runs on ferry server at "+l.url+"; following it") {
		t.Fatalf("a run that starts: exit %d\n%s%s", code, out, errs)
	}
}

// TestARunIsShownWhenItsSessionEnds: ferry run through the server hears
// of a session's start and end from the server's events, not at its next
// look: with looks an hour apart, a run that starts and a run queued
// behind it both end with their sessions.
func TestARunIsShownWhenItsSessionEnds(t *testing.T) {
	was := followEvery
	followEvery = time.Hour
	t.Cleanup(func() { followEvery = was })
	l := newAPILab(t)
	c, err := client.New(client.Options{Address: l.url, Token: l.operator})
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.Run(context.Background(), "web")
	if err != nil || !first.Started {
		t.Fatalf("run: %+v, %v", first, err)
	}
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := l.ferry(t, l.operator, "run", "web", "db")
		done <- result{code, out, errs}
	}()
	select {
	case r := <-done:
		if r.code != 0 || strings.Count(r.out, ": success in ") != 2 || !strings.Contains(r.out, "this one is queued") {
			t.Fatalf("ferry run web db: exit %d\n%s%s", r.code, r.out, r.err)
		}
	case <-time.After(time.Minute):
		l.api.CloseClientConnections() // the watches' streams, which the API's close would wait for
		t.Fatal("ferry run web db still follows sessions that ended (300 ms each): the server's events did not wake it")
	}
}

// TestAFailoverPlanThroughTheServer: ferry failover plan asks the server,
// shows the steps and the end as a plan run here does, names the VMs a
// plan that stopped had started, and exits as here.
func TestAFailoverPlanThroughTheServer(t *testing.T) {
	l := newAPILab(t)
	code, out, errs := l.ferry(t, l.operator, "failover", "plan", "site-a", "--point", "latest")
	if code != 0 || !strings.Contains(out, "failover plan site-a: starting\n") || !strings.Contains(out, " db/db-01: failed over (restore point p1") ||
		!strings.Contains(out, " group db: ready (up)") || !strings.Contains(out, "failover plan site-a: 2 VMs failed over, 2 groups up, in ") {
		t.Fatalf("failover plan: exit %d\n%s%s", code, out, errs)
	}
	if strings.Index(out, "group db: ready") > strings.Index(out, "web/web-01: failed over") {
		t.Fatalf("steps out of order:\n%s", out)
	}
	l.mu.Lock()
	l.refuse = "web-01"
	l.mu.Unlock()
	code, out, errs = l.ferry(t, l.operator, "failover", "plan", "site-a")
	if code != exitFailure || !strings.Contains(out, "started before it stopped: db/db-01; return them with 'ferry failover plan undo site-a'") ||
		!strings.Contains(errs, `failover plan "site-a" stopped: group "web": web/web-01: start replica of web-01: the host has no room`) {
		t.Fatalf("a plan that stops: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs = l.ferry(t, l.operator, "failover", "plan", "undo", "site-a"); code != 0 || !strings.Contains(out, "failover plan site-a: undoing\n") {
		t.Fatalf("undo: exit %d\n%s%s", code, out, errs)
	}
	for _, c := range []struct {
		code   int
		stderr string
		token  string
		args   []string
	}{
		{exitUsage, `no failover plan "nosuch" (plans: site-a) on ferry server at ` + l.url, l.operator, []string{"failover", "plan", "nosuch"}},
		{exitUsage, "--point only applies when starting a plan", l.operator, []string{"failover", "plan", "commit", "site-a", "--point", "2026-12-06 14:30"}},
		{exitFailure, "FERRY_TOKEN holds a token that may only read", l.reader, []string{"failover", "plan", "site-a"}},
	} {
		if code, out, errs := l.ferry(t, c.token, c.args...); code != c.code || !strings.Contains(errs, c.stderr) {
			t.Errorf("ferry %s: exit %d, want %d with %q\n%s%s", strings.Join(c.args, " "), code, c.code, c.stderr, out, errs)
		}
	}
	// ferry plan through the server shows what the plan would do, as here.
	if code, out, errs := l.ferry(t, l.reader, "plan"); code != 0 || !strings.Contains(out, "failover plan site-a (ferry failover plan site-a):\n  1. group db\n") {
		t.Fatalf("plan: exit %d\n%s%s", code, out, errs)
	}
}
