package plan

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
)

// TestPlanJSON: a plan's JSON is the documented shape: snake_case keys,
// actions as words, a disk only for a change of a disk; and it reads back
// as the plan it was (a server's plan, shown by the command line).
func TestPlanJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		plan Plan
		want string
	}{
		{"no changes", Plan{Job: "web"}, `{"job":"web","changes":[]}`},
		{"every action", Plan{Job: "web", Changes: []Change{
			{Action: Update, VM: "", Disk: -1, What: "the job's settings changed since its last run"},
			{Action: Create, VM: "web-01", Disk: -1, What: "replica web-01_replica will be created"},
			{Action: Update, VM: "web-01", Disk: 0, What: "grew"},
			{Action: Delete, VM: "web-02", Disk: -1, What: "left"},
			{Action: Warn, VM: "web-03", Disk: 2, What: "independent"},
			{Action: Keep, VM: "web-04", Disk: -1, What: "incremental"},
		}}, `{"job":"web","changes":[` +
			`{"action":"update","what":"the job's settings changed since its last run"},` +
			`{"action":"create","vm":"web-01","what":"replica web-01_replica will be created"},` +
			`{"action":"update","vm":"web-01","disk":0,"what":"grew"},` +
			`{"action":"delete","vm":"web-02","what":"left"},` +
			`{"action":"warn","vm":"web-03","disk":2,"what":"independent"},` +
			`{"action":"keep","vm":"web-04","what":"incremental"}]}`},
		{"selection and proxies", Plan{Job: "db",
			Selection: []Selected{{Selector: "folder:/prod/db", VMs: []string{"db-01"}}, {Selector: "tag:Test", Exclude: true, Why: "no VM has it"}},
			Proxies:   &Proxies{Source: "p1", SourceWhy: "at the source's site", Target: "p2", TargetWhy: "hotadd", Compression: "zstd", Skipped: []string{"proxy p3: down"}},
		}, `{"job":"db","changes":[],"selection":[{"selector":"folder:/prod/db","vms":["db-01"]},{"selector":"tag:Test","exclude":true,"vms":[],"why":"no VM has it"}],` +
			`"proxies":{"source":"p1","source_why":"at the source's site","target":"p2","target_why":"hotadd","compression":"zstd","skipped":["proxy p3: down"]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.plan)
			if err != nil || string(b) != tt.want {
				t.Fatalf("%s, %v\nwant %s", b, err, tt.want)
			}
			var back Plan
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			want := tt.plan
			for i := range want.Selection {
				if want.Selection[i].VMs == nil {
					want.Selection[i].VMs = []string{}
				}
			}
			if !reflect.DeepEqual(back, want) {
				t.Fatalf("read back %+v, want %+v", back, want)
			}
		})
	}
}

func TestPlanJSONRefusesAnUnknownAction(t *testing.T) {
	var p Plan
	if err := json.Unmarshal([]byte(`{"job":"web","changes":[{"action":"explode","what":"x"}]}`), &p); err == nil {
		t.Fatalf("read %+v", p)
	}
}

// TestPlanJSONCarriesTheDecisions: a plan Make made reads back from its
// JSON with the same typed decision per VM (a server's plan, for a
// client), versioned; a version this ferry does not know is skipped.
func TestPlanJSONCarriesTheDecisions(t *testing.T) {
	t.Parallel()
	job := &config.Job{
		Name:          "web",
		Source:        &config.PluginBlock{Kind: sdk.KindSource, Type: "local", Name: "prod"},
		Target:        &config.PluginBlock{Kind: sdk.KindTarget, Type: "local", Name: "dr"},
		VMs:           []string{"new-01", "steady-01", "grown-01", "done-01", "gone-host-01"},
		ReplicaSuffix: "_replica",
		Retention:     config.Retention{RestorePoints: 2},
	}
	p := Make(Inputs{
		Job: job,
		Replicas: []catalog.Replica{
			replica("steady-01", sdk.ReplicaReady, 8<<30),
			replica("grown-01", sdk.ReplicaReady, 8<<30, 1<<30),
			replica("done-01", sdk.ReplicaCommitted, 8<<30),
		},
		Points:      map[string][]catalog.RestorePoint{"steady-01": points("steady-01", 3), "grown-01": points("grown-01", 1)},
		Fingerprint: "f",
		Last:        &catalog.JobState{Job: "web", Fingerprint: "f"},
		Source: map[string]*sdk.VM{
			"new-01":    vm("new-01", 40<<30),
			"steady-01": vm("steady-01", 8<<30),
			"grown-01":  vm("grown-01", 16<<30, 1<<30, 2<<30),
			"done-01":   vm("done-01", 8<<30),
		},
		SourceErrors: map[string]error{"gone-host-01": errors.New("unavailable: connection refused")},
		SourceCaps:   &sdk.Capabilities{ChangeTracking: true},
	})
	if len(p.VMs) != 5 {
		t.Fatalf("%d decisions, want 5: %+v", len(p.VMs), p.VMs)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"decisions":{"version":1,"vms":[{"vm":"new-01","verdict":"create","replica":"new-01_replica","disks":[{"index":0,"capacity":42949672960,"mode":"full"}]}`) {
		t.Fatalf("the decisions' JSON: %s", b)
	}
	var back Plan
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	var verdicts []string
	for i, d := range p.VMs {
		verdicts = append(verdicts, d.VM+" "+string(d.Verdict)+" "+string(d.Refusal))
		if got, want := back.VMs[i], exported(d); !reflect.DeepEqual(got, want) {
			t.Errorf("decision of %s read back:\n got  %+v\n want %+v", d.VM, got, want)
		}
	}
	// The cases the plan must hold for the test to mean something.
	want := []string{"new-01 create ", "steady-01 incremental ", "grown-01 incremental ", "done-01 fail committed", "gone-host-01 fail source-missing"}
	if !reflect.DeepEqual(verdicts, want) {
		t.Fatalf("verdicts %q, want %q", verdicts, want)
	}
	if len(p.VMs[1].Drop) == 0 || len(p.VMs[2].Disks) != 3 || !p.VMs[2].Disks[2].New || p.VMs[2].Disks[0].Was == 0 {
		t.Fatalf("no point dropped or no new disk to read back: %+v", p.VMs)
	}
	if !reflect.DeepEqual(back.Changes, p.Changes) {
		t.Fatalf("changes read back %+v, want %+v", back.Changes, p.Changes)
	}

	// Decisions of another version are skipped, the changes kept.
	newer := strings.Replace(string(b), `"decisions":{"version":1`, `"decisions":{"version":2`, 1)
	var skipped Plan
	if err := json.Unmarshal([]byte(newer), &skipped); err != nil || skipped.VMs != nil || len(skipped.Changes) != len(p.Changes) {
		t.Fatalf("decisions of version 2: %+v, %v", skipped.VMs, err)
	}
}

// exported is d without what the JSON does not carry: the facts it was
// made from.
func exported(d Decision) Decision {
	return Decision{VM: d.VM, Verdict: d.Verdict, Refusal: d.Refusal, ReplicaName: d.ReplicaName, Adopt: d.Adopt,
		Retire: d.Retire, TakeOver: d.TakeOver, Disks: d.Disks, Drop: d.Drop}
}
