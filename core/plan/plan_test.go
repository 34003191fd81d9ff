package plan

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
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
		VMs:           []string{"new-01", "steady-01", "grown-01", "ghost-01", "down-01", "gone-host-01", "done-01", "shrunk-01"},
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
		},
		SourceErrors: map[string]error{"gone-host-01": errors.New("source.local.prod: unavailable: connection refused")},
	}
	var buf bytes.Buffer
	Make(in).Write(&buf)
	// A job that never ran and finds all its VMs.
	first := *job
	first.Name, first.VMs = "first", []string{"new-01"}
	Make(Inputs{Job: &first, Source: in.Source, Fingerprint: "x"}).Write(&buf)
	golden(t, "plan.golden", buf.Bytes())
}
