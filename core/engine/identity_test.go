package engine

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// The invariant of these tests: whatever happens to the replica or the
// repository between runs, after a run that reports success the newest
// restore point equals the source snapshot byte for byte.

func (f *fixture) runOK(vm string) *catalog.Session {
	f.t.Helper()
	s := f.run()
	if s.Result == catalog.ResultFailed || len(s.VMs) == 0 || s.VMs[0].Result == catalog.ResultFailed {
		f.t.Fatalf("run failed: %+v", s.VMs)
	}
	return s
}

func (f *fixture) newestIs(vm string, want [][]byte) {
	f.t.Helper()
	ps := f.points(vm)
	if len(ps) == 0 {
		f.t.Fatal("no restore point")
	}
	same(f.t, "newest point", f.pointImage(vm, ps[len(ps)-1].ID, len(want)), want)
}

func TestDeletedReplicaIsRecreatedAndFilled(t *testing.T) {
	f := newFixture(t, "web-01")
	f.write("web-01", 0, 30)
	f.runOK("web-01")
	old, _ := f.comps.tgt.GetReplica(context.Background(), "web-01_replica")
	if err := f.comps.tgt.DeleteReplica(context.Background(), old.ID); err != nil {
		t.Fatal(err)
	}
	f.write("web-01", 0, 1)
	want := f.sourceImage("web-01")
	notices := f.collectNotices()
	s := f.runOK("web-01")
	f.newestIs("web-01", want)
	if modes(s) != "full,full" {
		t.Errorf("modes %s, want full copies into the new replica", modes(s))
	}
	if !strings.Contains(notices(), "is gone from") {
		t.Errorf("no notice says the replica was gone: %q", notices())
	}
	gone, err := f.cat.GoneReplicas("web")
	if err != nil || len(gone) != 1 || gone[0].Replica.ReplicaID != old.ID || len(gone[0].Points) != 1 {
		t.Fatalf("gone replicas = %+v, %v", gone, err)
	}
	pts, err := f.cat.RestorePoints("web", "web-01")
	if err != nil || len(pts) != 1 || pts[0].ID != f.points("web-01")[0].ID {
		t.Fatalf("the catalog's live points %+v (%v) are not the new replica's", pts, err)
	}
}

func TestReplacedReplicaIsComparedNotTrusted(t *testing.T) {
	f := newFixture(t, "web-01")
	f.write("web-01", 0, 30)
	f.runOK("web-01")
	ctx := context.Background()
	old, _ := f.comps.tgt.GetReplica(ctx, "web-01_replica")
	owner := old.Owner
	f.comps.tgt.DeleteReplica(ctx, old.ID)
	// Another VM of the replica's name takes its place (restored from
	// elsewhere), with other data and a point labelled as this job's.
	vm, _ := f.comps.src.DescribeVM(ctx, "web-01")
	impostor, err := f.comps.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01_replica", VM: *vm, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := f.comps.tgt.OpenReplicaDisk(ctx, impostor.ID, 0, diskSize)
	junk := make([]byte, diskSize)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	w.WriteAt(junk, 0)
	w.Close()
	f.comps.tgt.CreateRestorePoint(ctx, impostor.ID, map[string]string{LabelJob: "web", LabelVM: "web-01", LabelSession: "elsewhere"})

	f.write("web-01", 0, 1)
	want := f.sourceImage("web-01")
	f.runOK("web-01")
	f.newestIs("web-01", want)
	gone, _ := f.cat.GoneReplicas("web")
	if len(gone) != 1 || !strings.Contains(gone[0].Why, "replaced") {
		t.Fatalf("gone replicas = %+v", gone)
	}
}

// copyRepo copies every object of a repository, as a backup of the
// metadata host would.
func copyRepo(t *testing.T, from, to sdk.Repository) {
	t.Helper()
	ctx := context.Background()
	objs, err := from.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		data, _, err := from.Get(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := to.Put(ctx, o.Key, data, sdk.IfAny); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRolledBackRepositoryIsNotTrusted(t *testing.T) {
	f := newFixture(t, "web-01")
	a := make([]byte, 64<<10)
	for i := range a {
		a[i] = byte(i%251 + 1)
	}
	b := make([]byte, len(a))
	for i := range b {
		b[i] = byte(i%13 + 1)
	}
	const off = 1 << 20
	f.comps.src.WriteDisk("web-01", 0, off, a)
	f.runOK("web-01")
	backup := sdktest.NewMemRepository()
	copyRepo(t, f.comps.repo, backup)

	f.comps.src.WriteDisk("web-01", 0, off, b)
	f.runOK("web-01")

	// The metadata host is restored from its copy of before run 2; at the
	// source the blocks go back to what they were then.
	f.comps.repo = backup
	f.comps.src.WriteDisk("web-01", 0, off, a)
	want := f.sourceImage("web-01")
	notices := f.collectNotices()
	f.runOK("web-01")
	f.newestIs("web-01", want)
	if !strings.Contains(notices(), "not trusted") {
		t.Errorf("no notice says the metadata was not trusted: %q", notices())
	}
}

func TestTwoJobsNeverShareAReplica(t *testing.T) {
	a := newFixture(t, "web")
	b := newFixture(t, "web")
	b.comps.tgt = a.comps.tgt // one DR target
	b.job.Name = "shop"
	a.write("web", 0, 20)
	b.write("web", 0, 20)
	wantA := a.sourceImage("web")
	a.runOK("web")

	s := b.run()
	if len(s.VMs) != 1 || s.VMs[0].Result != catalog.ResultFailed || !strings.Contains(s.VMs[0].Error, `belongs to job "web"`) {
		t.Fatalf("the second job's run into the first's replica: %+v", s.VMs)
	}
	a.newestIs("web", wantA)
	if pts, _ := b.cat.RestorePoints("shop", "web"); len(pts) != 0 {
		t.Fatalf("the second job records the first's points: %+v", pts)
	}
	// With a replica name of its own, the second job replicates.
	b.job.ReplicaSuffix = "_shop"
	wantB := b.sourceImage("web")
	b.runOK("web")
	ps, _ := b.comps.tgt.ListRestorePoints(context.Background(), "web_shop")
	same(t, "the second job's point", b.pointImageOf("web_shop", ps[0].ID, 2), wantB)
}

func (f *fixture) pointImageOf(replica, point string, disks int) [][]byte {
	f.t.Helper()
	var out [][]byte
	for d := 0; d < disks; d++ {
		r, err := f.comps.tgt.OpenRestorePointDisk(context.Background(), replica, point, d)
		if err != nil {
			f.t.Fatal(err)
		}
		out = append(out, readAll(f.t, r))
	}
	return out
}

func TestReplicaWithoutOwner(t *testing.T) {
	for _, tc := range []struct {
		name    string
		job     string // the job that made the replica's point
		refused bool
	}{
		{"made by this job: adopted", "web", false},
		{"made by another job: refused", "shop", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, "web-01")
			ctx := context.Background()
			vm, _ := f.comps.src.DescribeVM(ctx, "web-01")
			legacy, err := f.comps.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01_replica", VM: *vm})
			if err != nil {
				t.Fatal(err)
			}
			f.comps.tgt.CreateRestorePoint(ctx, legacy.ID, map[string]string{LabelJob: tc.job, LabelVM: "web-01", LabelSession: "old"})
			f.write("web-01", 0, 5)
			want := f.sourceImage("web-01")
			s := f.run()
			if tc.refused {
				if s.VMs[0].Result != catalog.ResultFailed || !strings.Contains(s.VMs[0].Error, `of job "shop"`) {
					t.Fatalf("a replica of another job was not refused: %+v", s.VMs)
				}
				return
			}
			if s.VMs[0].Result == catalog.ResultFailed {
				t.Fatalf("run: %+v", s.VMs)
			}
			f.newestIs("web-01", want)
			r, _ := f.comps.tgt.GetReplica(ctx, legacy.ID)
			if r.Owner != (sdk.ReplicaOwner{Job: "web", Source: f.job.Source.Address(), SourceVM: vm.ID}) {
				t.Fatalf("the adopted replica's owner is %+v", r.Owner)
			}
		})
	}
}

// firstListFails is a target whose first ListRestorePoints fails, as one
// made behind an Attach that its proxy refused does.
type firstListFails struct {
	*sdktest.MemTarget
	failed atomic.Bool
}

func (t *firstListFails) ListRestorePoints(ctx context.Context, replica string) ([]sdk.RestorePoint, error) {
	if t.failed.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("the Attach this call followed failed: %w", errdefs.ErrFailedPrecondition)
	}
	return t.MemTarget.ListRestorePoints(ctx, replica)
}

type listComponents struct {
	*memComponents
	tgt sdk.Target
}

func (c listComponents) Target(context.Context, *config.PluginBlock) (sdk.Target, sdk.Capabilities, error) {
	return c.tgt, c.memComponents.tgt.Capabilities(), nil
}

// The points of the replica the catalog knows are listed beside the
// first calls to the target; when that list fails, it is made again, and
// the run goes on from the points the target holds.
func TestAFailedEarlyListIsMadeAgain(t *testing.T) {
	f := newFixture(t, "web-01")
	f.write("web-01", 0, 30)
	f.runOK("web-01")
	tgt := &firstListFails{MemTarget: f.comps.tgt}
	f.eng.Components = listComponents{memComponents: f.comps, tgt: tgt}
	f.write("web-01", 0, 1)
	want := f.sourceImage("web-01")
	f.runOK("web-01")
	if !tgt.failed.Load() {
		t.Fatal("the early list was never made")
	}
	f.newestIs("web-01", want)
	if n := len(f.points("web-01")); n != 2 {
		t.Fatalf("%d restore points after two runs, want 2", n)
	}
}
