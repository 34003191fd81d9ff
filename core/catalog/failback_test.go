package catalog

import (
	"errors"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestFailbackRecord(t *testing.T) {
	c, _ := openTest(t)
	if _, err := c.Failback("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("failback of a vm in none: %v", err)
	}
	if err := c.PutFailback(&Failback{Job: "web", VM: "web-01"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("a failback without an id or state: %v", err)
	}
	f := &Failback{Job: "web", VM: "web-01", ID: "fb-1", Production: "web-01", State: "syncing", Point: "p3"}
	f.Disk(1).Mark = "m1"
	f.Disk(0)
	f.Disk(1).Mark = "m2"
	if len(f.Disks) != 2 {
		t.Fatalf("disks: %+v", f.Disks)
	}
	if err := c.PutFailback(f); err != nil {
		t.Fatal(err)
	}
	other := &Failback{Job: "db", VM: "db-01", ID: "fb-2", Production: "db-01", State: "switched"}
	if err := c.PutFailback(other); err != nil {
		t.Fatal(err)
	}
	got, err := c.Failback("web", "web-01")
	if err != nil || got.ID != "fb-1" || got.Disk(1).Mark != "m2" || got.Started.IsZero() || got.Point != "p3" {
		t.Fatalf("failback read back: %+v %v", got, err)
	}
	if all, err := c.Failbacks(""); err != nil || len(all) != 2 || all[0].Job != "db" {
		t.Errorf("every failback: %+v %v", all, err)
	}
	if web, err := c.Failbacks("web"); err != nil || len(web) != 1 {
		t.Errorf("failbacks of job web: %+v %v", web, err)
	}
	r := &Replica{Job: "web", VM: "web-01", ReplicaID: "r1", Target: "local.dr", State: sdk.ReplicaReady}
	if err := c.EndFailback("web", "web-01", r); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Failback("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("failback after its end: %v", err)
	}
	if rep, err := c.Replica("web", "web-01"); err != nil || rep.State != sdk.ReplicaReady {
		t.Errorf("the replica its end recorded: %+v %v", rep, err)
	}
	if err := c.EndFailback("web", "web-01", nil); err != nil {
		t.Errorf("end a failback that is gone: %v", err)
	}
	// A bad replica fails the end whole: the failback stays.
	if err := c.EndFailback("db", "db-01", &Replica{Job: "db", VM: "db-01"}); err == nil {
		t.Error("ending with an invalid replica succeeded")
	}
	if _, err := c.Failback("db", "db-01"); err != nil {
		t.Errorf("a failed end removed the failback: %v", err)
	}
}
