package catalog

import (
	"errors"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestJobState(t *testing.T) {
	c, clock := openTest(t)
	if _, err := c.JobState("web"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("JobState of a job that never ran = %v, want ErrNotFound", err)
	}
	s := &JobState{Job: "web", Fingerprint: "f1", LastSession: "s1"}
	if err := c.PutJobState(s); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	s2 := &JobState{Job: "web", Fingerprint: "f2", LastSession: "s2", LastSuccess: "s2"}
	if err := c.PutJobState(s2); err != nil {
		t.Fatal(err)
	}
	got, err := c.JobState("web")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "job state", got, &JobState{Job: "web", Fingerprint: "f2", LastSession: "s2", LastSuccess: "s2", Updated: clock.Now()})
	if err := c.PutJobState(&JobState{}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("PutJobState without job = %v", err)
	}
	if _, err := c.JobState(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("JobState(\"\") = %v", err)
	}
}
