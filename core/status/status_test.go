package status

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
)

// TestAttachPlans: each job carries the plans that hold one of its VMs,
// with their last tests, in its JSON; a test that failed before it
// started a test VM is there though no VM's last test is.
func TestAttachPlans(t *testing.T) {
	plan := func(name string, vms ...config.PlanVM) *config.FailoverPlan {
		return &config.FailoverPlan{Name: name, Groups: []*config.PlanGroup{{Name: "g", VMs: vms}}}
	}
	cfg := map[string]*config.FailoverPlan{
		"shop": plan("shop", config.PlanVM{Job: "db", VM: "db-01"}, config.PlanVM{Job: "web", VM: "web-01"}),
		"crm":  plan("crm", config.PlanVM{Job: "db", VM: "crm-01"}),
	}
	failed := &catalog.TestResult{Plan: "shop", Run: "r1", Started: time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC),
		Error: `test of failover plan "shop": db/db-01 has no restore point at or before 2000-01-01T00:00:00Z`}
	plans := []Plan{{Plan: "crm"}, {Plan: "gone"}, {Plan: "shop", LastTest: failed, TestSchedule: "@weekly"}}
	jobs := []Job{{Job: "db"}, {Job: "web"}, {Job: "mail"}}
	AttachPlans(jobs, plans, cfg)
	var got []string
	for _, j := range jobs {
		var names []string
		for _, p := range j.FailoverPlans {
			names = append(names, p.Plan)
		}
		got = append(got, j.Job+":"+strings.Join(names, ","))
	}
	if strings.Join(got, " ") != "db:crm,shop web:shop mail:" {
		t.Fatalf("plans by job: %v", got)
	}
	b, err := json.Marshal(jobs)
	if err != nil {
		t.Fatal(err)
	}
	var back []struct {
		Job   string `json:"job"`
		Plans []struct {
			Plan     string `json:"plan"`
			LastTest *struct {
				Run, Error string
				VMs        []any `json:"vms"`
			} `json:"last_test"`
		} `json:"failover_plans"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	web := back[1].Plans
	if len(web) != 1 || web[0].LastTest == nil || web[0].LastTest.Run != "r1" || !strings.Contains(web[0].LastTest.Error, "no restore point") || len(web[0].LastTest.VMs) != 0 {
		t.Fatalf("web's plans in JSON: %s", b)
	}
	if strings.Contains(string(b[strings.LastIndex(string(b), `"job":"mail"`):]), "failover_plans") {
		t.Fatalf("a job in no plan has failover_plans: %s", b)
	}
}
