package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func get(t *testing.T, srv *httptest.Server, method, path string, wantCode int, out any) string {
	t.Helper()
	return call(t, srv, method, path, "", wantCode, out)
}

func TestAPI(t *testing.T) {
	l := newLab(t)
	s := New(l.run, l.cat, nil, Options{})
	m := NewMetrics(s)
	s.Ended = m.Ended
	cfg := jobs(t, map[string]string{"web": "", "db": "@daily"})
	cfg.Jobs["db"].RPO = time.Hour
	ended := make(chan string, 4)
	s.Ended = func(job string, sess *catalog.Session, err error) {
		m.Ended(job, sess, err)
		ended <- job
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveReady(ctx, s, cfg)
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(s.Handler(m, "test"))
	defer srv.Close()

	var list []JobStatus
	get(t, srv, "GET", "/v1/jobs", 200, &list)
	if len(list) != 2 || list[0].Name != "db" || list[0].Next == nil || list[0].RPO != "1h0m0s" || list[1].Name != "web" || list[1].Next != nil {
		t.Fatalf("jobs %+v", list)
	}
	var started map[string]any
	get(t, srv, "POST", "/v1/jobs/web/run", 202, &started)
	if started["started"] != true || started["queued"] != false || started["session"] == "" {
		t.Fatalf("run: %v", started)
	}
	<-ended
	var one JobStatus
	get(t, srv, "GET", "/v1/jobs/web", 200, &one)
	if one.Last == nil || one.Last.Result != catalog.ResultSuccess || one.Last.ID == "" {
		t.Fatalf("job after its run: %+v", one)
	}
	var sessions []catalog.Session
	get(t, srv, "GET", "/v1/sessions?job=web", 200, &sessions)
	if len(sessions) != 1 || sessions[0].ID != one.Last.ID || sessions[0].ID != started["session"] {
		t.Fatalf("sessions %+v", sessions)
	}
	var sess catalog.Session
	get(t, srv, "GET", "/v1/sessions/"+one.Last.ID, 200, &sess)
	if sess.Job != "web" || sess.Result != catalog.ResultSuccess {
		t.Fatalf("session %+v", sess)
	}
	var e apiError
	for _, c := range []struct{ method, path, class string }{
		{"GET", "/v1/jobs/nosuch", "not_found"},
		{"POST", "/v1/jobs/nosuch/run", "not_found"},
		{"GET", "/v1/sessions/nosuch", "not_found"},
		{"GET", "/v1/nothing", "not_found"},
	} {
		get(t, srv, c.method, c.path, 404, &e)
		if e.Class != c.class || e.Error == "" {
			t.Errorf("%s %s: %+v", c.method, c.path, e)
		}
	}
	get(t, srv, "GET", "/v1/sessions?limit=0", 400, &e)
	if e.Class != "invalid_argument" {
		t.Errorf("limit 0: %+v", e)
	}

	// The metrics parse as Prometheus text and say what happened.
	body := get(t, srv, "GET", "/metrics", 200, nil)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("no metric %s", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("no metric %s with %v", name, labels)
		return 0
	}
	if v := value("ferry_sessions_total", map[string]string{"job": "web", "result": "success"}); v != 1 {
		t.Errorf("ferry_sessions_total %v", v)
	}
	if v := value("ferry_session_duration_seconds", map[string]string{"job": "web"}); v != 1 {
		t.Errorf("ferry_session_duration_seconds count %v", v)
	}
	if v := value("ferry_rpo_seconds", map[string]string{"job": "db"}); v != 3600 {
		t.Errorf("ferry_rpo_seconds %v", v)
	}
	if v := value("ferry_rpo_breached", map[string]string{"job": "db", "vm": "web-01"}); v != 0 {
		t.Errorf("ferry_rpo_breached %v", v)
	}
	if v := value("ferry_session_slots", nil); v != DefaultMaxSessions {
		t.Errorf("ferry_session_slots %v", v)
	}
	if value("ferry_job_next_run_timestamp_seconds", map[string]string{"job": "db"}) < float64(time.Now().Unix()) {
		t.Error("db's next run is in the past")
	}
}

// TestTheOpenAPIDocumentDescribesEveryRoute: the document kept in the
// repository and served lists exactly the operations the API serves.
func TestTheOpenAPIDocumentDescribesEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	described := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			described[strings.ToUpper(method)+" "+path] = true
		}
	}
	l := newLab(t)
	s := New(l.run, l.cat, nil, Options{})
	for _, r := range s.routes(NewMetrics(s), "test") {
		op := r.method + " " + r.path
		if !described[op] {
			t.Errorf("%s is served but not described", op)
		}
		delete(described, op)
	}
	for op := range described {
		t.Errorf("%s is described but not served", op)
	}
}

// TestTheDocumentedMetricsExist: every ferry_* metric docs/server.md and
// the example alerting rules name is one the server registers, and every
// one it registers is documented.
func TestTheDocumentedMetricsExist(t *testing.T) {
	l := newLab(t)
	s := New(l.run, l.cat, nil, Options{})
	m := NewMetrics(s)
	m.Proxies = func() ([]ProxySlots, int) { return []ProxySlots{{Proxy: "p1", Site: "prod", Slots: 4, Busy: 2}}, 1 }
	// Counters and histograms appear once they have a value.
	m.Ended("web", &catalog.Session{ID: "s", Job: "web", Result: catalog.ResultSuccess, Started: time.Now(), Ended: time.Now(),
		VMs: []catalog.VMResult{{VM: "web-01", Result: catalog.ResultSuccess, Attempts: 2}}}, nil)
	cfg := jobs(t, map[string]string{"web": "@daily"})
	cfg.Jobs["web"].RPO = time.Hour
	cfg.FailoverPlans = testedPlan(t, "@weekly")
	if err := l.cat.PutTestResult(&catalog.TestResult{Plan: "shop", Run: "r1", Started: time.Now(), Passed: true}); err != nil {
		t.Fatal(err)
	}
	s.Reload(cfg)
	s.checkRPO()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "ferry_") {
			registered[f.GetName()] = true
		}
	}
	name := regexp.MustCompile(`\bferry_[a-z_]+[a-z]\b`)
	doc, err := os.ReadFile("../../docs/server.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, n := range name.FindAllString(string(doc), -1) {
		documented[n] = true
	}
	alerts, err := os.ReadFile("../../docs/prometheus-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range name.FindAllString(string(alerts), -1) {
		if !registered[n] {
			t.Errorf("the alerting rules use %s, which the server does not have", n)
		}
	}
	for n := range documented {
		if !registered[n] {
			t.Errorf("docs/server.md names %s, which the server does not have", n)
		}
	}
	for n := range registered {
		if !documented[n] {
			t.Errorf("%s is not in docs/server.md", n)
		}
	}
}

func TestFailoverThroughTheAPI(t *testing.T) {
	l := newLab(t)
	l.took["web"] = time.Hour // a session that runs until the test ends it
	s := New(l.run, l.cat, nil, Options{})
	var mu sync.Mutex
	var asked []string
	s.Failover = func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
		mu.Lock()
		asked = append(asked, job.Name+"/"+vm+" "+action+" "+point)
		mu.Unlock()
		switch {
		case vm == "gone":
			return nil, fmt.Errorf("job %q vm %q has no replica yet: %w", job.Name, vm, errdefs.ErrNotFound)
		case point == "nope":
			return nil, fmt.Errorf("no restore point %q: %w", point, errdefs.ErrInvalidArgument)
		}
		return &sdk.Replica{Name: vm + "_replica", State: sdk.ReplicaFailedOver, FailoverPoint: "p1",
			VM: sdk.VM{PowerState: "on", NICs: []sdk.NIC{{Index: 0, Network: "dr-net", Addresses: []string{"10.2.0.5/24"}}}}}, nil
	}
	m := NewMetrics(s)
	ctx, cancel := context.WithCancel(context.Background())
	done := serveReady(ctx, s, jobs(t, map[string]string{"db": "", "web": ""}))
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(s.Handler(m, "test"))
	defer srv.Close()
	post := func(path, body string, wantCode int, out any) {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != wantCode {
			t.Fatalf("POST %s: %d, want %d: %s", path, resp.StatusCode, wantCode, b)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatal(err)
			}
		}
	}
	var fo FailedOver
	post("/v1/jobs/db/vms/db-01/failover", `{"point": "p1"}`, 200, &fo)
	if fo.State != sdk.ReplicaFailedOver || fo.Replica != "db-01_replica" || len(fo.NICs) != 1 || fo.NICs[0].Addresses[0] != "10.2.0.5/24" {
		t.Fatalf("failover: %+v", fo)
	}
	post("/v1/jobs/db/vms/db-01/failover/undo", "", 200, nil)
	post("/v1/jobs/db/vms/db-01/failover/commit", "", 200, nil)
	var e apiError
	post("/v1/jobs/db/vms/gone/failover", "", 404, &e)
	post("/v1/jobs/db/vms/db-01/failover", `{"point": "nope"}`, 400, &e)
	post("/v1/jobs/db/vms/db-01/failover", `{"point": `, 400, &e)
	post("/v1/jobs/nosuch/vms/db-01/failover", "", 404, &e)
	// While a session of the job runs, no failover.
	if asked, err := s.RunNow(context.Background(), "web"); !asked.Started || err != nil {
		t.Fatal(asked, err)
	}
	post("/v1/jobs/web/vms/web-01/failover", "", 409, &e)
	if e.Class != "failed_precondition" {
		t.Fatalf("busy: %+v", e)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"db/db-01 start p1", "db/db-01 undo ", "db/db-01 commit ", "db/gone start ", "db/db-01 start nope"}
	if strings.Join(asked, ",") != strings.Join(want, ",") {
		t.Fatalf("asked %q, want %q", asked, want)
	}
}

// TestTheRunAnswerSaysWhichSessionToFollow: POST /v1/jobs/NAME/run
// answers the session a run began, or what a queued run comes after, or
// that it waits for a slot; a run that ends before its session began is
// an error of its class.
func TestTheRunAnswerSaysWhichSessionToFollow(t *testing.T) {
	l := newLab(t)
	l.took["web"], l.took["db"] = time.Hour, time.Hour // until the server stops
	l.refuse["bad"] = fmt.Errorf("begin session: another ferry runs it: %w", errdefs.ErrFailedPrecondition)
	s := New(l.run, l.cat, nil, Options{MaxSessions: 1})
	stop := serve(s, jobs(t, map[string]string{"web": "", "db": "", "bad": ""}))
	defer stop()
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()

	var e apiError
	get(t, srv, "POST", "/v1/jobs/bad/run", 409, &e)
	if e.Class != "failed_precondition" || !strings.Contains(e.Error, `job "bad": the run ended before its session began: begin session: another ferry runs it`) {
		t.Fatalf("a run that ends before its session: %+v", e)
	}

	var started, queued, waiting, joined Asked
	get(t, srv, "POST", "/v1/jobs/web/run", 202, &started)
	if !started.Started || started.Queued || started.Session == "" || started.After != "" {
		t.Fatalf("started: %+v", started)
	}
	sess, err := l.cat.Session(started.Session)
	if err != nil || sess.Job != "web" || sess.Result != catalog.ResultRunning {
		t.Fatalf("the session answered: %+v, %v", sess, err)
	}
	var job JobStatus
	if get(t, srv, "GET", "/v1/jobs/web", 200, &job); !job.Running || job.Session != started.Session {
		t.Fatalf("the job while it runs: %+v", job)
	}
	get(t, srv, "POST", "/v1/jobs/web/run", 202, &queued)
	if queued.Started || !queued.Queued || queued.Session != "" || queued.After != started.Session {
		t.Fatalf("queued: %+v", queued)
	}
	// The only slot is web's: db waits for it, and a second ask is that
	// same run, not one queued behind it.
	get(t, srv, "POST", "/v1/jobs/db/run", 202, &waiting)
	if !waiting.Started || !waiting.WaitingForSlot || waiting.Queued || waiting.Session != "" || waiting.After != "" {
		t.Fatalf("waiting for a slot: %+v", waiting)
	}
	get(t, srv, "POST", "/v1/jobs/db/run", 202, &joined)
	if joined != waiting {
		t.Fatalf("asked again while waiting: %+v", joined)
	}
	var db JobStatus
	if get(t, srv, "GET", "/v1/jobs/db", 200, &db); !db.Waiting || db.Queued || db.Session != "" {
		t.Fatalf("the job waiting for a slot: %+v", db)
	}
}

// TestAFailoverOutlivesItsClient: a client that hangs up while a VM is
// failed over does not stop the failover halfway; it runs to its end
// under the server, which still holds the job meanwhile.
func TestAFailoverOutlivesItsClient(t *testing.T) {
	l := newLab(t)
	s := New(l.run, l.cat, nil, Options{})
	entered, finish := make(chan struct{}), make(chan struct{})
	ended := make(chan error, 1)
	s.Failover = func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
		close(entered)
		<-finish
		ended <- ctx.Err()
		return &sdk.Replica{Name: vm + "_replica", State: sdk.ReplicaFailedOver}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := serveReady(ctx, s, jobs(t, map[string]string{"db": ""}))
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()

	reqCtx, hangUp := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(reqCtx, "POST", srv.URL+"/v1/jobs/db/vms/db-01/failover", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if resp, err := srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	hangUp()
	// The job is still held: a second failover is refused meanwhile.
	var e apiError
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/failover/undo", "", 409, &e)
	close(finish)
	if err := <-ended; err != nil {
		t.Fatalf("the failover's context ended with its client: %v", err)
	}
}
