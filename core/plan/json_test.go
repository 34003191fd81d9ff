package plan

import (
	"encoding/json"
	"reflect"
	"testing"
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
