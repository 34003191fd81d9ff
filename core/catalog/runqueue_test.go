package catalog

import (
	"errors"
	"fmt"
	"testing"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestRunQueueKeepsTheOrderAndQueuesOnce(t *testing.T) {
	c, _ := openTest(t)
	for _, step := range []struct{ job, why string }{{"b", "asked"}, {"a", "queued"}, {"b", "schedule"}, {"c", "asked"}} {
		if err := c.QueueRun(step.job, step.why); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.UnqueueRun("c"); err != nil {
		t.Fatal(err)
	}
	if err := c.UnqueueRun("never"); err != nil {
		t.Fatalf("unqueue a job never queued: %v", err)
	}
	// Reopened, as a restarted server does.
	path := c.Path()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.QueuedRuns()
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range got {
		order = append(order, r.Job+"/"+r.Why)
		if r.Queued.IsZero() {
			t.Errorf("run of %s without the time it was queued", r.Job)
		}
	}
	// b keeps its first place and why; c is gone.
	if want := "[b/asked a/queued]"; fmt.Sprint(order) != want {
		t.Fatalf("queue %s, want %s", fmt.Sprint(order), want)
	}
	// Queued again after it left, a job goes to the end.
	if err := c.UnqueueRun("b"); err != nil {
		t.Fatal(err)
	}
	if err := c.QueueRun("b", "asked"); err != nil {
		t.Fatal(err)
	}
	got, _ = c.QueuedRuns()
	if len(got) != 2 || got[0].Job != "a" || got[1].Job != "b" {
		t.Fatalf("queue after b left and came back: %+v", got)
	}
	if err := c.QueueRun("", "asked"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("QueueRun without job = %v", err)
	}
}
