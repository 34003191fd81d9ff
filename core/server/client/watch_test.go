package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestWatch: the kinds of a stream's events in order, the query and the
// token sent, an early stop, and a refused watch as unavailable.
func TestWatch(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/events" || r.URL.Query().Get("job") != "web" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": watching\n\n")
		for _, k := range []string{"session.started", "disk.progress", "session.finished"} {
			fmt.Fprintf(w, "event: %s\ndata: {\"kind\":%q}\n\n", k, k)
		}
	}))
	defer api.Close()
	c, err := New(Options{Address: api.URL, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	connected := 0
	err = c.Watch(context.Background(), "web", "", func() { connected++ }, func(kind string) bool {
		got = append(got, kind)
		return true
	})
	if err != nil || connected != 1 || !slices.Equal(got, []string{"session.started", "disk.progress", "session.finished"}) {
		t.Fatalf("watch: %v, connected %d, kinds %v", err, connected, got)
	}
	got = nil
	err = c.Watch(context.Background(), "web", "", func() {}, func(kind string) bool {
		got = append(got, kind)
		return false
	})
	if err != nil || len(got) != 1 {
		t.Fatalf("a watch stopped at its first event: %v, kinds %v", err, got)
	}
	err = c.Watch(context.Background(), "db", "", func() { t.Error("connected to a refused watch") }, func(string) bool { return true })
	if !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a refused watch: %v", err)
	}
}
