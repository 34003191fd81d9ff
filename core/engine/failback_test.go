package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestFailbackRefusals: a failback of a VM that is not failed over, of a
// failback that does not exist, and through components without the
// Failback capability is refused with an error naming the job, the VM
// and the component, and records nothing.
func TestFailbackRefusals(t *testing.T) {
	f := newFixture(t, "web-01")
	ctx := context.Background()
	f.write("web-01", 0, 5)
	f.runOK("web-01")
	if _, err := f.eng.Failback(ctx, f.job, "web-01", failback.Sync, FailbackOptions{}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not failed over") {
		t.Fatalf("failback of a VM that is not failed over: %v", err)
	}
	if _, err := f.eng.Failback(ctx, f.job, "web-01", failback.Commit, FailbackOptions{}); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `job "web" vm "web-01"`) {
		t.Fatalf("commit of no failback: %v", err)
	}
	if _, err := f.eng.Failover(ctx, f.job, "web-01", FailoverStart, ""); err != nil {
		t.Fatal(err)
	}
	_, err := f.eng.Failback(ctx, f.job, "web-01", failback.Sync, FailbackOptions{})
	if !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("failback through a source without the capability: %v", err)
	}
	for _, want := range []string{`job "web" vm "web-01"`, f.job.Source.Address(), `plugin type "mem"`, "Failback capability"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if fb, err := f.cat.Failback("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a refused failback was recorded: %+v %v", fb, err)
	}
}
