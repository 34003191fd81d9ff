package catalog

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func replica(job, vm string) *Replica {
	return &Replica{Job: job, VM: vm, ReplicaID: "id-" + vm, ReplicaName: vm + "_replica", Target: "lab.dr", State: sdk.ReplicaReady}
}

func vmsOf(rs []Replica) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Job+"/"+r.VM)
	}
	return out
}

func TestReplicaLifecycle(t *testing.T) {
	c, clock := openTest(t)
	created := clock.Now()
	r := replica("web", "web-01")
	if err := c.PutReplica(r); err != nil {
		t.Fatal(err)
	}
	if !r.Created.Equal(created) || !r.Updated.Equal(created) {
		t.Fatalf("new replica stamped created %v updated %v, want %v", r.Created, r.Updated, created)
	}

	// A later put with a zero Created (a fresh struct from the engine)
	// keeps the first creation time.
	clock.Advance(time.Hour)
	r2 := replica("web", "web-01")
	r2.State, r2.FailoverPoint = sdk.ReplicaFailedOver, "p3"
	if err := c.PutReplica(r2); err != nil {
		t.Fatal(err)
	}
	got, err := c.Replica("web", "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Created.Equal(created) || !got.Updated.Equal(clock.Now()) || got.State != sdk.ReplicaFailedOver || got.FailoverPoint != "p3" {
		t.Fatalf("after update: %+v", got)
	}
	sameJSON(t, "replica", got, r2)

	for _, add := range []*Replica{replica("web", "web-02"), replica("web-tier", "app-01"), replica("db", "db-01"), replica("we", "x")} {
		if err := c.PutReplica(add); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		job  string
		want []string
	}{
		{"web", []string{"web/web-01", "web/web-02"}},
		{"web-tier", []string{"web-tier/app-01"}},
		{"we", []string{"we/x"}},
		{"", []string{"db/db-01", "we/x", "web/web-01", "web/web-02", "web-tier/app-01"}},
		{"nope", nil},
	} {
		rs, err := c.Replicas(tc.job)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(vmsOf(rs)) != fmt.Sprint(tc.want) {
			t.Fatalf("Replicas(%q) = %v, want %v", tc.job, vmsOf(rs), tc.want)
		}
	}
}

func TestDeleteReplicaTakesItsPoints(t *testing.T) {
	c, clock := openTest(t)
	for _, vm := range []string{"web-01", "web-02"} {
		if err := c.PutReplica(replica("web", vm)); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := c.AddRestorePoint(&RestorePoint{Job: "web", VM: vm, ID: fmt.Sprint("p", i), Created: clock.Now().Add(time.Duration(i) * time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.DeleteReplica("web", "web-01"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Replica("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("deleted replica: %v", err)
	}
	if points, err := c.RestorePoints("web", "web-01"); err != nil || len(points) != 0 {
		t.Fatalf("points of the deleted replica: %v, %v", points, err)
	}
	if points, err := c.RestorePoints("web", "web-02"); err != nil || len(points) != 3 {
		t.Fatalf("points of the other replica: %d, %v", len(points), err)
	}
	if err := c.DeleteReplica("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("second delete = %v, want ErrNotFound", err)
	}
}

func TestReplicaInvalid(t *testing.T) {
	c, _ := openTest(t)
	for _, tc := range []struct {
		name   string
		change func(r *Replica)
		want   string
	}{
		{"empty job", func(r *Replica) { r.Job = "" }, "empty job"},
		{"empty vm", func(r *Replica) { r.VM = "" }, "empty vm"},
		{"NUL in vm", func(r *Replica) { r.VM = "a\x00b" }, "NUL"},
		{"empty replica id", func(r *Replica) { r.ReplicaID = "" }, "empty replica id"},
		{"empty state", func(r *Replica) { r.State = "" }, `unknown replica state ""`},
		{"unknown state", func(r *Replica) { r.State = "deleted" }, `unknown replica state "deleted"`},
		{"negative disk", func(r *Replica) { r.Disks = []ReplicaDisk{{Index: -1, Capacity: 1}} }, "disk -1"},
		{"disk twice", func(r *Replica) { r.Disks = []ReplicaDisk{{Index: 0}, {Index: 0}} }, "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := replica("web", "web-01")
			tc.change(r)
			err := c.PutReplica(r)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("PutReplica = %v, want ErrInvalidArgument saying %q", err, tc.want)
			}
		})
	}
	if rs, err := c.Replicas(""); err != nil || len(rs) != 0 {
		t.Fatalf("refused replicas stored: %v %v", rs, err)
	}
	for name, err := range map[string]error{
		"get, empty job":    func() error { _, err := c.Replica("", "web-01"); return err }(),
		"delete, empty vm":  c.DeleteReplica("web", ""),
		"list, NUL in name": func() error { _, err := c.Replicas("a\x00"); return err }(),
	} {
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := c.Replica("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing replica: %v, want ErrNotFound", err)
	}
}
