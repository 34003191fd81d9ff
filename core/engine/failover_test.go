package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestFailoverIsRecordedInTheCatalog(t *testing.T) {
	f := newFixture(t, "web-01")
	ctx := context.Background()
	if _, err := f.eng.Failover(ctx, f.job, "web-01", FailoverStart, ""); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "run the job first") {
		t.Fatalf("failover before any run: %v", err)
	}
	f.write("web-01", 0, 10)
	f.runOK("web-01")
	f.write("web-01", 0, 10)
	f.runOK("web-01")
	ps := f.points("web-01")
	var pe *PointError
	if _, err := f.eng.Failover(ctx, f.job, "web-01", FailoverStart, "no-such"); !errors.As(err, &pe) || !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("failover to no point: %v", err)
	}
	if _, err := f.eng.Failover(ctx, f.job, "web-01", FailoverUndo, ps[0].ID); !errors.As(err, &pe) {
		t.Fatalf("undo with a point: %v", err)
	}
	if _, err := f.eng.Failover(ctx, f.job, "web-01", FailoverStart, "point-"); !errors.As(err, &pe) || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("failover to a start of two ids: %v", err)
	}
	// To the older point.
	r, err := f.eng.Failover(ctx, f.job, "web-01", FailoverStart, ps[0].ID)
	if err != nil || r.State != sdk.ReplicaFailedOver || r.FailoverPoint != ps[0].ID {
		t.Fatalf("failover: %+v, %v", r, err)
	}
	if rec, err := f.cat.Replica("web", "web-01"); err != nil || rec.State != sdk.ReplicaFailedOver || rec.FailoverPoint != ps[0].ID {
		t.Fatalf("catalog after failover: %+v, %v", rec, err)
	}
	if r, err = f.eng.Failover(ctx, f.job, "web-01", FailoverUndo, ""); err != nil || r.State != sdk.ReplicaReady {
		t.Fatalf("undo: %+v, %v", r, err)
	}
	if rec, _ := f.cat.Replica("web", "web-01"); rec.State != sdk.ReplicaReady || rec.FailoverPoint != "" {
		t.Fatalf("catalog after undo: %+v", rec)
	}
}
