package catalog

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var t0 = time.Date(2026, 11, 22, 1, 0, 0, 0, time.UTC)

func point(job, vm, id string, hours int) RestorePoint {
	return RestorePoint{Job: job, VM: vm, ID: id, Created: t0.Add(time.Duration(hours) * time.Hour), Size: int64(hours) * 1024,
		Disks: []PointDisk{{Index: 0, Capacity: 1 << 30, ChangeID: fmt.Sprintf("cid-%d", hours)}}}
}

func pointNames(ps []RestorePoint) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Job+"/"+p.VM+"/"+p.ID)
	}
	return out
}

func TestRestorePointsOrder(t *testing.T) {
	c, _ := openTest(t)
	// Added out of order, across VMs and jobs whose names prefix each other.
	for _, p := range []RestorePoint{
		point("web", "web-02", "b3", 3),
		point("web", "web-01", "a2", 2),
		point("web", "web-01", "a1", 1),
		point("web-tier", "web-01", "t1", 0),
		point("web", "web-01", "a10", 10),
		point("web", "web-02", "b1", 1),
		point("db", "db-01", "d1", 5),
	} {
		if err := c.AddRestorePoint(&p); err != nil {
			t.Fatal(err)
		}
	}
	// A point created a nanosecond after another still sorts after it.
	late := point("web", "web-01", "a1n", 1)
	late.Created = late.Created.Add(time.Nanosecond)
	if err := c.AddRestorePoint(&late); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		job, vm string
		want    []string
	}{
		{"web", "web-01", []string{"web/web-01/a1", "web/web-01/a1n", "web/web-01/a2", "web/web-01/a10"}},
		{"web", "", []string{"web/web-01/a1", "web/web-01/a1n", "web/web-01/a2", "web/web-01/a10", "web/web-02/b1", "web/web-02/b3"}},
		{"web-tier", "", []string{"web-tier/web-01/t1"}},
		{"web", "web-0", nil},
		{"nope", "", nil},
		{"", "", []string{"db/db-01/d1", "web/web-01/a1", "web/web-01/a1n", "web/web-01/a2", "web/web-01/a10", "web/web-02/b1", "web/web-02/b3", "web-tier/web-01/t1"}},
	} {
		t.Run(tc.job+"/"+tc.vm, func(t *testing.T) {
			got, err := c.RestorePoints(tc.job, tc.vm)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(pointNames(got)) != fmt.Sprint(tc.want) {
				t.Fatalf("RestorePoints(%q, %q) = %v, want %v", tc.job, tc.vm, pointNames(got), tc.want)
			}
		})
	}
	got, err := c.RestorePoints("web", "web-02")
	if err != nil {
		t.Fatal(err)
	}
	want := point("web", "web-02", "b1", 1)
	sameJSON(t, "restore point", got[0], want)
}

func TestAddRestorePointIsIdempotent(t *testing.T) {
	c, _ := openTest(t)
	p := point("web", "web-01", "p1", 1)
	for range 2 {
		if err := c.AddRestorePoint(&p); err != nil {
			t.Fatal(err)
		}
	}
	// The target reports the same point with a corrected time and size.
	p2 := point("web", "web-01", "p1", 5)
	if err := c.AddRestorePoint(&p2); err != nil {
		t.Fatal(err)
	}
	got, err := c.RestorePoints("web", "web-01")
	if err != nil {
		t.Fatal(err)
	}
	sameJSON(t, "points", got, []RestorePoint{p2})
}

func TestDeleteRestorePoint(t *testing.T) {
	c, _ := openTest(t)
	for _, p := range []RestorePoint{
		point("web", "web-01", "p1", 1), point("web", "web-01", "p2", 2), point("web", "web-02", "p1", 1),
	} {
		if err := c.AddRestorePoint(&p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.DeleteRestorePoint("web", "web-01", "p1"); err != nil {
		t.Fatal(err)
	}
	all, err := c.RestorePoints("web", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := "[web/web-01/p2 web/web-02/p1]"; fmt.Sprint(pointNames(all)) != want {
		t.Fatalf("after delete: %v, want %s", pointNames(all), want)
	}
	for _, tc := range []struct {
		job, vm, id string
		class       error
	}{
		{"web", "web-01", "p1", errdefs.ErrNotFound}, // deleted already
		{"web", "web-01", "p", errdefs.ErrNotFound},  // a prefix of an id
		{"web", "web-03", "p2", errdefs.ErrNotFound}, // another VM
		{"web", "web-01", "", errdefs.ErrInvalidArgument},
		{"", "web-01", "p2", errdefs.ErrInvalidArgument},
	} {
		if err := c.DeleteRestorePoint(tc.job, tc.vm, tc.id); !errors.Is(err, tc.class) {
			t.Errorf("DeleteRestorePoint(%q, %q, %q) = %v, want %v", tc.job, tc.vm, tc.id, err, tc.class)
		}
	}
}

func TestReplaceRestorePoints(t *testing.T) {
	c, _ := openTest(t)
	for _, p := range []RestorePoint{
		point("web", "web-01", "gone", 1), point("web", "web-01", "kept", 2), point("web", "web-02", "other", 1),
	} {
		if err := c.AddRestorePoint(&p); err != nil {
			t.Fatal(err)
		}
	}
	// What the target really has: "kept" (bigger now), and "found" that the
	// catalog missed, given without job and VM.
	kept := point("web", "web-01", "kept", 2)
	kept.Size = 999
	found := point("", "", "found", 3)
	list := []RestorePoint{found, kept}
	if err := c.ReplaceRestorePoints("web", "web-01", list); err != nil {
		t.Fatal(err)
	}
	if list[0].Job != "" || list[0].VM != "" {
		t.Fatal("the caller's slice was changed")
	}
	got, err := c.RestorePoints("web", "")
	if err != nil {
		t.Fatal(err)
	}
	wantFound := found
	wantFound.Job, wantFound.VM = "web", "web-01"
	sameJSON(t, "points", got, []RestorePoint{kept, wantFound, point("web", "web-02", "other", 1)})

	// Refused lists change nothing.
	for _, tc := range []struct {
		name   string
		job    string
		vm     string
		points []RestorePoint
		want   string
	}{
		{"id twice", "web", "web-01", []RestorePoint{point("web", "web-01", "x", 1), point("web", "web-01", "x", 2)}, `"x" listed twice`},
		{"other vm", "web", "web-01", []RestorePoint{point("web", "web-02", "x", 1)}, `belongs to vm "web-02"`},
		{"other job", "web", "web-01", []RestorePoint{point("db", "web-01", "x", 1)}, `in job "db"`},
		{"no time", "web", "web-01", []RestorePoint{{ID: "x"}}, "creation time is not set"},
		{"no id", "web", "web-01", []RestorePoint{point("web", "web-01", "", 1)}, "empty restore point id"},
		{"no vm", "web", "", nil, "empty vm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.ReplaceRestorePoints(tc.job, tc.vm, tc.points)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReplaceRestorePoints = %v, want ErrInvalidArgument saying %q", err, tc.want)
			}
			after, err := c.RestorePoints("web", "")
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, "points after a refused list", after, got)
		})
	}

	// An empty list: the target has none left.
	if err := c.ReplaceRestorePoints("web", "web-01", nil); err != nil {
		t.Fatal(err)
	}
	left, err := c.RestorePoints("web", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := "[web/web-02/other]"; fmt.Sprint(pointNames(left)) != want {
		t.Fatalf("after an empty list: %v, want %s", pointNames(left), want)
	}
}

func TestAddRestorePointInvalid(t *testing.T) {
	c, _ := openTest(t)
	for _, tc := range []struct {
		name   string
		change func(p *RestorePoint)
		want   string
	}{
		{"empty job", func(p *RestorePoint) { p.Job = "" }, "empty job"},
		{"empty vm", func(p *RestorePoint) { p.VM = "" }, "empty vm"},
		{"empty id", func(p *RestorePoint) { p.ID = "" }, "empty restore point id"},
		{"NUL in id", func(p *RestorePoint) { p.ID = "a\x00b" }, "NUL"},
		{"zero time", func(p *RestorePoint) { p.Created = time.Time{} }, "creation time is not set"},
		{"time out of range", func(p *RestorePoint) { p.Created = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "out of range"},
		{"negative size", func(p *RestorePoint) { p.Size = -1 }, "negative size"},
		{"disk twice", func(p *RestorePoint) { p.Disks = append(p.Disks, p.Disks[0]) }, "listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := point("web", "web-01", "p1", 1)
			tc.change(&p)
			err := c.AddRestorePoint(&p)
			if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("AddRestorePoint = %v, want ErrInvalidArgument saying %q", err, tc.want)
			}
		})
	}
	if ps, err := c.RestorePoints("", ""); err != nil || len(ps) != 0 {
		t.Fatalf("refused points stored: %v %v", ps, err)
	}
	if _, err := c.RestorePoints("", "web-01"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("RestorePoints without job for a vm = %v", err)
	}
}
