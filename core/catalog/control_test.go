package catalog

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestAServerClaimsTheJobs(t *testing.T) {
	server, _ := openTest(t)
	person, err := Open(server.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer person.Close()
	if ctl, err := person.Controller(); ctl != nil || err != nil {
		t.Fatalf("controller before any claim: %v, %v", ctl, err)
	}
	since := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	if err := server.ClaimControl(Controller{PID: os.Getpid(), Host: "dr-ctl", Address: "127.0.0.1:7444", Since: since}); err != nil {
		t.Fatal(err)
	}
	// The server begins sessions; a person's run is refused, naming it.
	s, err := server.BeginSession("web")
	if err != nil {
		t.Fatal(err)
	}
	s.Result = ResultSuccess
	if err := server.SaveSession(s); err != nil {
		t.Fatal(err)
	}
	_, err = person.BeginSession("web")
	if !errors.Is(err, ErrControlled) || !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "on dr-ctl, at 127.0.0.1:7444") {
		t.Fatalf("a run beside the server: %v", err)
	}
	ctl, err := person.Controller()
	if err != nil || ctl == nil || ctl.PID != os.Getpid() || !ctl.Since.Equal(since) {
		t.Fatalf("controller: %+v, %v", ctl, err)
	}
	if ctl, _ := server.Controller(); ctl != nil {
		t.Fatalf("the server sees itself as another: %+v", ctl)
	}
	// A second server is refused.
	if err := person.ClaimControl(Controller{PID: 1}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "on dr-ctl") {
		t.Fatalf("a second server: %v", err)
	}
	// The server stops: the jobs are anyone's again.
	server.Close()
	if ctl, err := person.Controller(); ctl != nil || err != nil {
		t.Fatalf("controller after the server stopped: %v, %v", ctl, err)
	}
	if _, err := person.BeginSession("web"); err != nil {
		t.Fatalf("a run after the server stopped: %v", err)
	}
	if err := person.ClaimControl(Controller{PID: 2}); err != nil {
		t.Fatalf("a new server after the first stopped: %v", err)
	}
}

func TestOldSessionsExpire(t *testing.T) {
	c, clock := openTest(t)
	var ids []string
	for _, r := range []Result{ResultSuccess, ResultFailed, ResultSuccess, ResultFailed} {
		s, err := c.BeginSession("web")
		if err != nil {
			t.Fatal(err)
		}
		s.Result = r
		if err := c.SaveSession(s); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
		clock.Advance(24 * time.Hour)
	}
	if err := c.PutJobState(&JobState{Job: "web", LastSession: ids[3], LastSuccess: ids[2]}); err != nil {
		t.Fatal(err)
	}
	running, err := c.BeginSession("db")
	if err != nil {
		t.Fatal(err)
	}
	// Everything ended more than a day ago goes, but the last session and
	// the last success of the job, and the session that runs.
	n, err := c.ExpireSessions(clock.Now().Add(-25 * time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("expired %d: %v", n, err)
	}
	left, err := c.Sessions("", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range left {
		got = append(got, s.ID)
	}
	if want := []string{running.ID, ids[3], ids[2]}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("sessions left %v, want %v", got, want)
	}
	if web, _ := c.Sessions("web", 0); len(web) != 2 {
		t.Fatalf("%d sessions of web left", len(web))
	}
	if _, err := c.Session(ids[0]); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("an expired session is still there: %v", err)
	}
}
