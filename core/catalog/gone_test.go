package catalog

import (
	"errors"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestRetireReplicaKeepsItsPointsApart(t *testing.T) {
	c, _ := openTest(t)
	created := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	if err := c.PutReplica(&Replica{Job: "web", VM: "web-01", ReplicaID: "r-old", State: sdk.ReplicaReady}); err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"p1", "p2"} {
		if err := c.AddRestorePoint(&RestorePoint{Job: "web", VM: "web-01", ID: id, Created: created.Add(time.Duration(i) * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	g, err := c.RetireReplica("web", "web-01", "deleted at the target")
	if err != nil {
		t.Fatal(err)
	}
	if g.Replica.ReplicaID != "r-old" || len(g.Points) != 2 || g.Why != "deleted at the target" || g.Gone.IsZero() {
		t.Fatalf("retired %+v", g)
	}
	if _, err := c.Replica("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("the retired replica is still the job's: %v", err)
	}
	if pts, err := c.RestorePoints("web", "web-01"); err != nil || len(pts) != 0 {
		t.Fatalf("the retired replica's points are still the job's: %v, %v", pts, err)
	}
	// A new replica of the VM starts with no points of the old one.
	if err := c.PutReplica(&Replica{Job: "web", VM: "web-01", ReplicaID: "r-new", State: sdk.ReplicaReady}); err != nil {
		t.Fatal(err)
	}
	gone, err := c.GoneReplicas("web")
	if err != nil || len(gone) != 1 || gone[0].Replica.ReplicaID != "r-old" || gone[0].Points[1].ID != "p2" {
		t.Fatalf("GoneReplicas = %+v, %v", gone, err)
	}
	if other, err := c.GoneReplicas("db"); err != nil || len(other) != 0 {
		t.Fatalf("GoneReplicas of another job = %+v, %v", other, err)
	}
	if _, err := c.RetireReplica("web", "web-02", "x"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("retiring an unknown replica: %v", err)
	}
}
