package main

import (
	"encoding/json"
	"testing"

	"github.com/ferry-dr/ferry/core/plan"
)

// TestPlanJSON: a plan's JSON is the documented shape: snake_case keys,
// actions as words, a disk only for a change of a disk.
func TestPlanJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		plan plan.Plan
		want string
	}{
		{"no changes", plan.Plan{Job: "web"}, `{"job":"web","changes":[]}`},
		{"every action", plan.Plan{Job: "web", Changes: []plan.Change{
			{Action: plan.Update, VM: "", Disk: -1, What: "the job's settings changed since its last run"},
			{Action: plan.Create, VM: "web-01", Disk: -1, What: "replica web-01_replica will be created"},
			{Action: plan.Update, VM: "web-01", Disk: 0, What: "grew"},
			{Action: plan.Delete, VM: "web-02", Disk: -1, What: "left"},
			{Action: plan.Warn, VM: "web-03", Disk: 2, What: "independent"},
			{Action: plan.Keep, VM: "web-04", Disk: -1, What: "incremental"},
		}}, `{"job":"web","changes":[` +
			`{"action":"update","what":"the job's settings changed since its last run"},` +
			`{"action":"create","vm":"web-01","what":"replica web-01_replica will be created"},` +
			`{"action":"update","vm":"web-01","disk":0,"what":"grew"},` +
			`{"action":"delete","vm":"web-02","what":"left"},` +
			`{"action":"warn","vm":"web-03","disk":2,"what":"independent"},` +
			`{"action":"keep","vm":"web-04","what":"incremental"}]}`},
		{"selection and proxies", plan.Plan{Job: "db",
			Selection: []plan.Selected{{Selector: "folder:/prod/db", VMs: []string{"db-01"}}, {Selector: "tag:Test", Exclude: true, Why: "no VM has it"}},
			Proxies:   &plan.Proxies{Source: "p1", SourceWhy: "at the source's site", Target: "p2", TargetWhy: "hotadd", Compression: "zstd", Skipped: []string{"proxy p3: down"}},
		}, `{"job":"db","changes":[],"selection":[{"selector":"folder:/prod/db","vms":["db-01"]},{"selector":"tag:Test","exclude":true,"vms":[],"why":"no VM has it"}],` +
			`"proxies":{"source":"p1","source_why":"at the source's site","target":"p2","target_why":"hotadd","compression":"zstd","skipped":["proxy p3: down"]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(planView(tt.plan))
			if err != nil || string(b) != tt.want {
				t.Fatalf("%s, %v\nwant %s", b, err, tt.want)
			}
		})
	}
}
