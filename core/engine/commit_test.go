package engine

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/sdk"
)

// olderProxies are proxies older than CommitPoint, as the pool finds
// them (core/proxy tests how it finds them): asked counts the calls.
type olderProxies struct {
	*proxy.Pool
	asked int
}

func (o *olderProxies) CommitPoint(context.Context, any, string, map[string]string, []string) (*proxy.Commit, error) {
	o.asked++
	return nil, fmt.Errorf("proxy p-dst: %w", proxy.ErrNoCommitPoint)
}

// commitRuns runs four sessions of a job of two VMs keeping two points,
// through the proxies that way names ("": none). The third session's
// oldest points are deleted behind the session's back while it moves the
// disks (their deletes answer not found); at the fourth session's
// StepPointCreated, the test notes which of the points retention drops
// the target still holds, and whether the session's source snapshots
// were still there. It returns the notes and the catalog's points of
// each VM at the end, with the number of the session that made each in
// place of its id.
func commitRuns(t *testing.T, way string) (notes []string, points map[string][]catalog.RestorePoint, older *olderProxies) {
	vms := []string{"web-01", "web-02"}
	f := newFixture(t, vms...)
	f.job.Retention.RestorePoints = 2
	switch way {
	case "proxies":
		f.twoSites()
	case "older proxies":
		ts := f.twoSites()
		older = &olderProxies{Pool: ts.pool}
		f.eng.Proxies = older
	}
	ctx := context.Background()
	var session int
	var drop map[string]string // the point the session's retention drops, by VM
	f.eng.Hook = func(s Step, vm string) {
		switch {
		case s == StepMoved && session == 3:
			if err := f.comps.tgt.DeleteRestorePoint(ctx, vm+"_replica", drop[vm]); err != nil {
				t.Errorf("delete %s of %s: %v", drop[vm], vm, err)
			}
		case s == StepPointCreated && session == 4:
			held := "dropped point held"
			if !slices.ContainsFunc(f.points(vm), func(p sdk.RestorePoint) bool { return p.ID == drop[vm] }) {
				held = "dropped point gone"
			}
			snaps, err := f.comps.src.ListSnapshots(ctx, vm)
			if err != nil {
				t.Fatal(err)
			}
			notes = append(notes, fmt.Sprintf("%s: %s, %d snapshot", vm, held, len(snaps)))
		}
	}
	sessions := map[string]string{}
	for session = 1; session <= 4; session++ {
		drop = map[string]string{}
		for _, vm := range vms {
			if session > 2 {
				drop[vm] = f.points(vm)[0].ID
			}
			f.write(vm, 0, 2)
		}
		s := f.run()
		if s.Result != catalog.ResultSuccess {
			t.Fatalf("%s: session %d: %s %+v", way, session, s.Result, s.VMs)
		}
		sessions[s.ID] = fmt.Sprint(session)
	}
	points = map[string][]catalog.RestorePoint{}
	for _, vm := range vms {
		ps, err := f.cat.RestorePoints(f.job.Name, vm)
		if err != nil {
			t.Fatal(err)
		}
		// The catalog agrees with the target.
		var listed, known []string
		for _, p := range f.points(vm) {
			listed = append(listed, fmt.Sprintf("%s %d %s", p.ID, p.Size, p.Created.UTC()))
		}
		for i, p := range ps {
			known = append(known, fmt.Sprintf("%s %d %s", p.ID, p.Size, p.Created))
			// The sessions' ids and the times differ from one fixture to
			// the other.
			ps[i].Session, ps[i].Created = sessions[p.Session], time.Time{}
		}
		if !slices.Equal(listed, known) {
			t.Errorf("%s: the catalog lists the points of %s as\n%s\nthe target as\n%s", way, vm, strings.Join(known, "\n"), strings.Join(listed, "\n"))
		}
		points[vm] = ps
	}
	return notes, points, older
}

func TestRetentionRidesOnThePointsExchangeBehindAProxy(t *testing.T) {
	notes, want, _ := commitRuns(t, "")
	if n := strings.Join(notes, "; "); n != "web-01: dropped point held, 1 snapshot; web-02: dropped point held, 1 snapshot" {
		t.Fatalf("without proxies: %s", n)
	}
	// Behind a proxy the point and the retention are one exchange: the
	// dropped points are gone when the point is there, before the engine
	// does anything else (the source snapshot is still there).
	notes, got, _ := commitRuns(t, "proxies")
	if n := strings.Join(notes, "; "); n != "web-01: dropped point gone, 1 snapshot; web-02: dropped point gone, 1 snapshot" {
		t.Errorf("through proxies: %s", n)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("through proxies the catalog ends with\n%+v\nwithout them with\n%+v", got, want)
	}
}

func TestOlderProxiesTakeThePointsCallsOneByOne(t *testing.T) {
	_, want, _ := commitRuns(t, "")
	notes, got, older := commitRuns(t, "older proxies")
	if n := strings.Join(notes, "; "); n != "web-01: dropped point held, 1 snapshot; web-02: dropped point held, 1 snapshot" {
		t.Errorf("through older proxies: %s", n)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("through older proxies the catalog ends with\n%+v\nwithout proxies with\n%+v", got, want)
	}
	// A session asks once, then makes the calls one by one.
	if older.asked != 4 {
		t.Errorf("four sessions of two VMs asked for CommitPoint %d times, want 4", older.asked)
	}
}
