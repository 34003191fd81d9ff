package catalog

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestHoldJobs: a command holding jobs keeps out the sessions of those
// jobs and a second holder, from another Catalog of the file (another
// process, as far as the lock goes) and from its own, each refusal naming
// who holds the job; a running session keeps a holder out, named; the
// jobs are free again once released, and a holder that fails holds none.
func TestHoldJobs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	a, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	since := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	fb := Holder{What: "ferry failback switch e2e app-01", PID: 812, Host: "prod-01", Since: since}
	release, err := a.HoldJobs([]string{"e2e", "db", "e2e"}, fb)
	if err != nil {
		t.Fatal(err)
	}
	const who = "ferry failback switch e2e app-01 (process 812 on prod-01, since 2026-12-06T03:00:00Z)"
	for name, c := range map[string]*Catalog{"another process": b, "the same catalog": a} {
		_, err := c.BeginSession("e2e")
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `begin session of job "e2e": `+who+" holds the job") {
			t.Fatalf("a session of a held job, from %s: %v", name, err)
		}
		_, err = c.HoldJobs([]string{"web", "db"}, Holder{What: "ferry failback plan shop", PID: 9})
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `job "db" is busy: `+who+" holds it") {
			t.Fatalf("a second holder, from %s: %v", name, err)
		}
	}
	// The second holder took web and gave it back when db was refused.
	s, err := b.BeginSession("web")
	if err != nil {
		t.Fatalf("a session of a job nobody holds: %v", err)
	}
	_, err = a.HoldJobs([]string{"web"}, fb)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), `job "web" is busy: session `+s.ID+" of the job runs since") {
		t.Fatalf("holding a job whose session runs: %v", err)
	}
	release()
	s2, err := b.BeginSession("e2e")
	if err != nil {
		t.Fatalf("a session once the holder released: %v", err)
	}
	_ = s2
}
