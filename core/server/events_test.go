package server

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
)

// readEvents reads a server-sent event stream to its end.
func readEvents(t *testing.T, url string, ready chan<- struct{}) []Event {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	var out []Event
	sc := bufio.NewScanner(resp.Body)
	var kind string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == ": watching" && ready != nil:
			close(ready)
		case strings.HasPrefix(line, "event: "):
			kind = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var ev Event
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil || ev.Kind != kind {
				t.Errorf("event %q: %s (%v)", kind, line, err)
			}
			out = append(out, ev)
		}
	}
	return out
}

func TestTheSessionsCanBeWatched(t *testing.T) {
	l := newLab(t)
	s := New(l.run, l.cat, nil, Options{})
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()
	running, err := l.cat.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	got := make(chan []Event)
	go func() { got <- readEvents(t, srv.URL+"/v1/events?session="+running.ID, ready) }()
	<-ready
	disk := 0
	t0 := time.Now()
	s.Publish(Event{Kind: "session.started", Time: t0, Session: running.ID, Job: "web"})
	s.Publish(Event{Kind: "notice", Time: t0, Session: "other", Job: "web", Message: "another session's"})
	for i := range 10 { // ten within 250 ms: one goes through
		s.Publish(Event{Kind: "disk.progress", Time: t0.Add(time.Duration(i) * 10 * time.Millisecond), Session: running.ID, Job: "web", VM: "web-01", Disk: &disk, Done: int64(i)})
	}
	s.Publish(Event{Kind: "disk.progress", Time: t0.Add(300 * time.Millisecond), Session: running.ID, Job: "web", VM: "web-01", Disk: &disk, Done: 30})
	s.Publish(Event{Kind: "notice", Time: t0, Session: running.ID, Job: "web", VM: "web-01", Message: "compared by digests"})
	s.Publish(Event{Kind: "session.finished", Time: t0, Session: running.ID, Job: "web", Result: "success"})
	events := <-got // the stream ends with the session
	var kinds []string
	for _, ev := range events {
		kinds = append(kinds, ev.Kind)
	}
	if want := "session.started,disk.progress,disk.progress,notice,session.finished"; strings.Join(kinds, ",") != want {
		t.Fatalf("events %s, want %s", strings.Join(kinds, ","), want)
	}
	if events[2].Done != 30 || events[3].Message != "compared by digests" {
		t.Fatalf("events %+v", events)
	}

	// A session that ended: its end at once.
	running.Result = catalog.ResultFailed
	running.Error = "interrupted"
	if err := l.cat.SaveSession(running); err != nil {
		t.Fatal(err)
	}
	events = readEvents(t, srv.URL+"/v1/events?session="+running.ID, nil)
	if len(events) != 1 || events[0].Kind != "session.finished" || events[0].Result != "failed" || events[0].Error != "interrupted" {
		t.Fatalf("events of an ended session: %+v", events)
	}
	if resp, err := http.Get(srv.URL + "/v1/events?session=nosuch"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("events of no session: %v %v", resp.StatusCode, err)
	}
}

// TestWatchesEndWhenTheServerStops: a watch of a job's sessions, which
// has no end of its own, ends when Serve returns, so that the API's
// shutdown does not wait for the clients that follow sessions.
func TestWatchesEndWhenTheServerStops(t *testing.T) {
	l := newLab(t)
	s := New(l.run, l.cat, nil, Options{})
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()
	stop := serve(s, &config.Config{Jobs: map[string]*config.Job{"web": {Name: "web", VMs: []string{"web-01"}}}})
	ready := make(chan struct{})
	got := make(chan []Event)
	go func() { got <- readEvents(t, srv.URL+"/v1/events?job=web", ready) }()
	<-ready
	s.Publish(Event{Kind: "session.started", Time: time.Now(), Session: "s1", Job: "web"})
	stop()
	select {
	case events := <-got:
		if len(events) != 1 || events[0].Kind != "session.started" {
			t.Fatalf("events %+v", events)
		}
	case <-time.After(time.Minute):
		srv.CloseClientConnections()
		t.Fatal("the watch of a job outlived the server's Serve")
	}
	// A watch begun after the stop (the API still answers while ferry
	// server shuts it down) ends at once.
	go func() { got <- readEvents(t, srv.URL+"/v1/events?job=web", nil) }()
	select {
	case events := <-got:
		if len(events) != 0 {
			t.Fatalf("events after the stop %+v", events)
		}
	case <-time.After(time.Minute):
		srv.CloseClientConnections()
		t.Fatal("a watch begun after the server stopped did not end")
	}
}
