package plan

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("plan differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func vm(name string, disks ...int64) *sdk.VM {
	v := &sdk.VM{Name: name}
	for i, c := range disks {
		v.Disks = append(v.Disks, sdk.Disk{Index: i, Capacity: c})
	}
	return v
}

func replica(vm string, state sdk.ReplicaState, disks ...int64) catalog.Replica {
	r := catalog.Replica{Job: "web", VM: vm, ReplicaID: vm + "_replica", ReplicaName: vm + "_replica", State: state}
	if state == sdk.ReplicaFailedOver {
		r.FailoverPoint = "p-7"
	}
	for i, c := range disks {
		r.Disks = append(r.Disks, catalog.ReplicaDisk{Index: i, Capacity: c})
	}
	return r
}

func points(vm string, n int) []catalog.RestorePoint {
	var out []catalog.RestorePoint
	for i := 0; i < n; i++ {
		out = append(out, catalog.RestorePoint{Job: "web", VM: vm, ID: "p", Created: time.Date(2026, 11, 20, 2, i, 0, 0, time.UTC)})
	}
	return out
}

func TestPlanGolden(t *testing.T) {
	job := &config.Job{
		Name:          "web",
		Source:        &config.PluginBlock{Kind: sdk.KindSource, Type: "local", Name: "prod"},
		Target:        &config.PluginBlock{Kind: sdk.KindTarget, Type: "local", Name: "dr"},
		VMs:           []string{"new-01", "steady-01", "grown-01", "ghost-01", "down-01", "gone-host-01", "done-01", "shrunk-01", "/DC0/vm/path-01", "vm-41"},
		ReplicaSuffix: "_replica",
		Retention:     config.Retention{RestorePoints: 3},
	}
	in := Inputs{
		Job: job,
		Replicas: []catalog.Replica{
			replica("steady-01", sdk.ReplicaReady, 8<<30),
			replica("grown-01", sdk.ReplicaReady, 8<<30, 1<<30),
			replica("down-01", sdk.ReplicaFailedOver, 8<<30),
			replica("done-01", sdk.ReplicaCommitted, 8<<30),
			replica("shrunk-01", sdk.ReplicaReady, 8<<30),
			replica("retired-01", sdk.ReplicaReady, 8<<30),
		},
		Points: map[string][]catalog.RestorePoint{
			"steady-01":  points("steady-01", 3),
			"grown-01":   points("grown-01", 1),
			"retired-01": points("retired-01", 2),
		},
		Fingerprint: "new",
		Last:        &catalog.JobState{Job: "web", Fingerprint: "old"},
		Source: map[string]*sdk.VM{
			"new-01":    vm("new-01", 40<<30, 100<<30),
			"steady-01": vm("steady-01", 8<<30),
			"grown-01":  vm("grown-01", 16<<30, 1<<30, 2<<30),
			"down-01":   vm("down-01", 8<<30),
			"done-01":   vm("done-01", 8<<30),
			"shrunk-01": vm("shrunk-01", 4<<30),
			// One VM named by its inventory path and by its id.
			"/DC0/vm/path-01": {ID: "vm-41", Name: "path-01", Disks: []sdk.Disk{{Capacity: 1 << 30}}},
			"vm-41":           {ID: "vm-41", Name: "path-01", Disks: []sdk.Disk{{Capacity: 1 << 30}}},
		},
		SourceErrors: map[string]error{"gone-host-01": fmt.Errorf("connection refused: %w", errdefs.ErrUnavailable)},
	}
	var buf bytes.Buffer
	Make(in).Write(&buf)
	// The target's view: what it has of each replica, whose.
	mine := func(v *sdk.VM) sdk.ReplicaOwner {
		return sdk.ReplicaOwner{Job: "web", Source: "source.local.prod", SourceVM: v.Name}
	}
	tgtJob := *job
	tgtJob.Name, tgtJob.VMs = "web", []string{"steady-01", "grown-01", "shrunk-01", "new-01", "down-01"}
	other := &sdk.Replica{ID: "new-01_replica", Owner: sdk.ReplicaOwner{Job: "shop", Source: "source.local.shop", SourceVM: "new-01"}}
	Make(Inputs{Job: &tgtJob, Replicas: in.Replicas, Points: in.Points, Source: in.Source, Fingerprint: "new", Owner: mine,
		Target: map[string]*sdk.Replica{
			"steady-01": nil,                                                            // deleted at the target
			"grown-01":  {ID: "grown-01_replica-2", Owner: mine(in.Source["grown-01"])}, // replaced
			"shrunk-01": {ID: "shrunk-01_replica", Owner: mine(in.Source["shrunk-01"])},
			"new-01":    other,
			"down-01":   {ID: "down-01_replica"},
		}}).Write(&buf)
	// A source without change tracking; a disk snapshots do not capture.
	untracked := *job
	untracked.Name, untracked.VMs = "untracked", []string{"steady-01", "indep-01"}
	indep := vm("indep-01", 8<<30, 1<<30)
	indep.Disks[1].Independent = true
	Make(Inputs{Job: &untracked, Fingerprint: "new", SourceCaps: &sdk.Capabilities{},
		Replicas: []catalog.Replica{replica("steady-01", sdk.ReplicaReady, 8<<30), replica("indep-01", sdk.ReplicaReady, 8<<30, 1<<30)},
		Points:   map[string][]catalog.RestorePoint{"steady-01": points("steady-01", 1), "indep-01": points("indep-01", 1)},
		Source:   map[string]*sdk.VM{"steady-01": in.Source["steady-01"], "indep-01": indep}}).Write(&buf)
	// What the target lists that the catalog does not: a replica the
	// catalog lost, with its points (taken over, tracked from their
	// change ids), one without points, and a replica without owner
	// holding another job's point.
	lost := *job
	lost.Name, lost.VMs = "lost", []string{"steady-01", "new-01", "shrunk-01"}
	labelled := points("steady-01", 2)
	for i := range labelled {
		labelled[i].Disks = []catalog.PointDisk{{Index: 0, ChangeID: fmt.Sprintf("c%d", i)}}
	}
	foreign := points("shrunk-01", 1)
	foreign[0].Job = "shop"
	Make(Inputs{Job: &lost, Fingerprint: "new", SourceCaps: &sdk.Capabilities{ChangeTracking: true}, Source: in.Source, Owner: mine,
		Target: map[string]*sdk.Replica{
			"steady-01": {ID: "steady-01_replica", Owner: mine(in.Source["steady-01"]), State: sdk.ReplicaReady},
			"new-01":    {ID: "new-01_replica", Owner: mine(in.Source["new-01"]), State: sdk.ReplicaReady},
			"shrunk-01": {ID: "shrunk-01_replica", State: sdk.ReplicaReady},
		},
		TargetPoints: map[string][]Point{"steady-01": labelled, "shrunk-01": foreign}}).Write(&buf)
	// A job that never ran and finds all its VMs.
	first := *job
	first.Name, first.VMs = "first", []string{"new-01"}
	Make(Inputs{Job: &first, Source: in.Source, Fingerprint: "x"}).Write(&buf)
	golden(t, "plan.golden", buf.Bytes())
}

// TestPlanSelectionGolden plans a job with folder and tag selectors and
// exclusions: what each matches, new VMs, VMs that left or are excluded,
// a selector matching nothing, VMs refused for sharing a name.
func TestPlanSelectionGolden(t *testing.T) {
	parse := func(entries ...string) []config.Selector {
		var out []config.Selector
		for _, e := range entries {
			s, err := config.ParseSelector(e)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	job := &config.Job{
		Name:          "web",
		Source:        &config.PluginBlock{Kind: sdk.KindSource, Type: "vsphere", Name: "prod"},
		Target:        &config.PluginBlock{Kind: sdk.KindTarget, Type: "vsphere", Name: "dr"},
		VMs:           []string{"db-01", "ghost-01"},
		Selectors:     parse("folder:/Prod/vm/web", "tag:tier/gold", "tag:tier/platinum"),
		Exclude:       parse("tag:ferry/no-dr"),
		ReplicaSuffix: "_replica",
		Retention:     config.Retention{RestorePoints: 3},
	}
	listing := []sdk.VM{
		*withID(vm("web-01", 8<<30), "vm-1", "/Prod/vm/web"),
		*withID(vm("web-02", 8<<30, 1<<30), "vm-2", "/Prod/vm/web/frontend"),
		*withID(vm("web-test", 4<<30), "vm-3", "/Prod/vm/web", "ferry/no-dr"),
		*withID(vm("db-01", 16<<30), "vm-4", "/Prod/vm/db", "tier/gold"),
		*withID(vm("app", 2<<30), "vm-6", "/Prod/vm/team-a", "tier/gold"),
		*withID(vm("app", 2<<30), "vm-7", "/Prod/vm/team-b", "tier/gold"),
	}
	db := listing[3]
	sel := selection.Select(selection.Inputs{
		Job:         job,
		Named:       map[string]*sdk.VM{"db-01": &db},
		NamedErrors: map[string]error{"ghost-01": fmt.Errorf("vm \"ghost-01\": %w", errdefs.ErrNotFound)},
		Listing:     listing,
		Tags:        []string{"ferry/no-dr", "tier/gold", "tier/silver"},
		Known:       map[string]string{"vm-1": "web-01", "vm-3": "web-test", "vm-4": "db-01", "vm-9": "old-web"},
		Last:        map[string][]string{"old-web": {"folder:/Prod/vm/web"}},
	})
	in := Inputs{
		Job: job,
		Replicas: []catalog.Replica{
			replica("web-01", sdk.ReplicaReady, 8<<30),
			replica("web-test", sdk.ReplicaReady, 4<<30),
			replica("db-01", sdk.ReplicaReady, 16<<30),
			replica("old-web", sdk.ReplicaReady, 8<<30),
		},
		Points: map[string][]catalog.RestorePoint{
			"web-01": points("web-01", 2), "web-test": points("web-test", 3), "db-01": points("db-01", 1), "old-web": points("old-web", 3),
		},
		Fingerprint: "x",
		Selection:   sel,
	}
	var buf bytes.Buffer
	Make(in).Write(&buf)
	// The source cannot be asked: the VMs are unknown, nothing leaves.
	unknown := in
	down := errors.New("vsphere https://vc/sdk cannot be reached: unavailable")
	unknown.Selection, unknown.SelectionErr = nil, fmt.Errorf("list the VMs of the source: %w", down)
	Make(unknown).Write(&buf)
	// Nor when the selectors cannot all be answered.
	unanswered := in
	unanswered.Selection = selection.Select(selection.Inputs{Job: job, Named: map[string]*sdk.VM{"db-01": &db}, Listing: listing,
		TagsErr: fmt.Errorf("the source does not list tags: %w", errdefs.ErrUnimplemented)})
	Make(unanswered).Write(&buf)
	golden(t, "selection.golden", buf.Bytes())
}

func withID(v *sdk.VM, id, folder string, tags ...string) *sdk.VM {
	v.ID, v.Folder, v.Tags = id, folder, tags
	return v
}
