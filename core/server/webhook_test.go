package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
)

const testSecret = "0123456789abcdef-secret"

// receiver records the notices it is posted, after failing the first
// fail of them with 503.
type receiver struct {
	t    *testing.T
	fail atomic.Int32
	mu   sync.Mutex
	got  []Notice
	ids  map[string]int // deliveries by id
	seen chan struct{}
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	r := &receiver{t: t, ids: map[string]int{}, seen: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if !Verify(testSecret, body, req.Header.Get("X-Ferry-Signature-256")) {
			t.Errorf("bad signature %q", req.Header.Get("X-Ferry-Signature-256"))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.mu.Lock()
		r.ids[req.Header.Get("X-Ferry-Delivery")]++
		r.mu.Unlock()
		if r.fail.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var n Notice
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("body %s: %v", body, err)
		}
		if n.Event != req.Header.Get("X-Ferry-Event") {
			t.Errorf("event %q in a body with header %q", n.Event, req.Header.Get("X-Ferry-Event"))
		}
		r.mu.Lock()
		r.got = append(r.got, n)
		r.mu.Unlock()
		r.seen <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) wait(n int) []Notice {
	r.t.Helper()
	for range n {
		select {
		case <-r.seen:
		case <-time.After(10 * time.Second):
			r.t.Fatal("a notice did not arrive")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got
}

func TestWebhooksAreSignedRetriedAndFiltered(t *testing.T) {
	r, srv := newReceiver(t)
	r.fail.Store(2) // the first two attempts fail: the third delivers
	w := NewWebhooks(nil)
	w.Backoff = time.Millisecond
	defer w.Close()
	w.Configure([]*config.Webhook{{Name: "ops", URL: srv.URL, Secret: testSecret, Events: []string{"session.ended", "vm.failed"}}})
	n := Notices{W: w}
	s := &catalog.Session{ID: "s1", Job: "web", Result: catalog.ResultWarning,
		VMs: []catalog.VMResult{{VM: "web-01", Result: catalog.ResultSuccess}, {VM: "web-02", Result: catalog.ResultFailed, Error: "disk 0: gone"}}}
	n.Ended("web", s, nil)
	n.Alarm(RPOAlarm{RPOState: RPOState{Job: "web", VM: "web-01", Breached: true, Age: time.Hour}, RPO: time.Minute}) // not wanted
	got := r.wait(2)
	if len(got) != 2 || got[0].Event != "session.ended" || got[0].Session.ID != "s1" || got[1].Event != "vm.failed" || got[1].VM != "web-02" || got[1].Error != "disk 0: gone" {
		t.Fatalf("notices %+v", got)
	}
	r.mu.Lock()
	retried := 0
	for _, n := range r.ids {
		if n == 3 {
			retried++
		}
	}
	r.mu.Unlock()
	if retried != 1 {
		t.Errorf("deliveries by id %v: want one delivered on its third attempt", r.ids)
	}
}

func TestAWebhookThatHangsNeverBlocks(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang)
	w := NewWebhooks(nil)
	defer w.Close()
	w.Configure([]*config.Webhook{{Name: "slow", URL: srv.URL, Secret: testSecret}})
	start := time.Now()
	for range 2 * queueSize {
		Notices{W: w}.Alarm(RPOAlarm{RPOState: RPOState{Job: "web", VM: "web-01"}})
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("sending took %v", took)
	}
}

func TestAnAnswer4xxIsNotRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusGone)
	}))
	defer srv.Close()
	w := NewWebhooks(nil)
	w.Backoff = time.Millisecond
	w.Configure([]*config.Webhook{{Name: "gone", URL: srv.URL, Secret: testSecret}})
	Notices{W: w}.Alarm(RPOAlarm{RPOState: RPOState{Job: "web", VM: "web-01", Breached: true}})
	// Configure of nothing waits for the worker, which finished its one
	// notice first only if it was quick: poll.
	deadline := time.Now().Add(5 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // room for retries that must not come
	w.Close()
	if c := calls.Load(); c != 1 {
		t.Fatalf("%d attempts at a webhook that answered 410", c)
	}
}

func TestATestFailoverIsNoticed(t *testing.T) {
	r, srv := newReceiver(t)
	w := NewWebhooks(nil)
	defer w.Close()
	w.Configure([]*config.Webhook{{Name: "ops", URL: srv.URL, Secret: testSecret, Events: []string{"test.failed", "test.passed"}}})
	n := Notices{W: w}
	n.Tested(&PlanTest{TestResult: catalog.TestResult{Plan: "shop", Run: "r1", Passed: true, RecoverySeconds: 2}}, nil)
	n.Tested(&PlanTest{TestResult: catalog.TestResult{Plan: "shop", Run: "r2", Error: "group \"db\" is not ready"}}, errors.New("group \"db\" is not ready"))
	n.Tested(&PlanTest{TestResult: catalog.TestResult{Job: "db", VM: "db-01", Run: "r3", Passed: true}}, nil)
	got := r.wait(3)
	if len(got) != 3 || got[0].Event != "test.passed" || got[0].Plan != "shop" || got[0].Test.Run != "r1" || got[0].Error != "" ||
		got[1].Event != "test.failed" || got[1].Test.Run != "r2" || got[1].Test.Passed || got[1].Error != `group "db" is not ready` {
		t.Fatalf("notices %+v", got)
	}
	if vm := got[2]; vm.Event != "test.passed" || vm.Plan != "" || vm.Job != "db" || vm.VM != "db-01" || vm.Test.Run != "r3" {
		t.Fatalf("the notice of a VM's test: %+v", vm)
	}
}

// TestRPOAlarmsAreNoticed: an RPO breach and its recovery each post a
// signed notice with the VM, the RPO and the age of its newest point.
func TestRPOAlarmsAreNoticed(t *testing.T) {
	r, srv := newReceiver(t)
	w := NewWebhooks(nil)
	defer w.Close()
	w.Configure([]*config.Webhook{{Name: "ops", URL: srv.URL, Secret: testSecret, Events: []string{"rpo.breached", "rpo.recovered"}}})
	n := Notices{W: w}
	newest := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	n.Ended("web", &catalog.Session{ID: "s1", Job: "web", Result: catalog.ResultSuccess}, nil) // not wanted
	n.Alarm(RPOAlarm{RPOState: RPOState{Job: "web", VM: "web-01", Breached: true, Age: 2 * time.Hour, Newest: &newest}, RPO: time.Hour})
	n.Alarm(RPOAlarm{RPOState: RPOState{Job: "web", VM: "web-01", Age: time.Minute, Newest: &newest}, RPO: time.Hour})
	got := r.wait(2)
	if len(got) != 2 || got[0].Event != "rpo.breached" || got[1].Event != "rpo.recovered" {
		t.Fatalf("notices %+v", got)
	}
	for _, g := range got {
		if g.Job != "web" || g.VM != "web-01" || g.RPO == nil || g.RPO.RPOSeconds != 3600 || g.RPO.Newest == nil || !g.RPO.Newest.Equal(newest) {
			t.Errorf("notice %s: %+v, rpo %+v", g.Event, g, g.RPO)
		}
	}
	if got[0].RPO.AgeSeconds != 7200 || got[1].RPO.AgeSeconds != 60 {
		t.Errorf("ages %v, %v", got[0].RPO.AgeSeconds, got[1].RPO.AgeSeconds)
	}
}
