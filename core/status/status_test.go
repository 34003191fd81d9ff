package status

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
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

// TestFailbackInStatus: a VM in failback shows its state, since when, and
// the production VM it goes to; a VM in none shows no failback, and the
// failback leaves the status once it ends.
func TestFailbackInStatus(t *testing.T) {
	cat, err := catalog.Open(filepath.Join(t.TempDir(), "catalog.db"), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	for _, vm := range []string{"app-01", "db-01"} {
		if err := cat.PutReplica(&catalog.Replica{Job: "e2e", VM: vm, ReplicaID: vm + "_replica", Target: "local.dr", State: sdk.ReplicaFailedOver, FailoverPoint: "p1"}); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	fb := &catalog.Failback{Job: "e2e", VM: "app-01", ID: "fb-1", Production: "app-new", Create: true, State: "synced", Syncs: 2, Sent: 4096,
		LastSync: &catalog.FailbackSync{At: at, Seconds: 1.5}}
	if err := cat.PutFailback(fb); err != nil {
		t.Fatal(err)
	}
	job := &config.Job{Name: "e2e", VMs: []string{"app-01", "db-01"}}
	jobs, err := Jobs(cat, []*config.Job{job}, Unscheduled, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	app, db := jobs[0].VMs[0], jobs[0].VMs[1]
	f := app.Failback
	if f == nil || f.State != "synced" || f.Production != "app-new" || !f.Created || f.Syncs != 2 || f.Sent != 4096 || f.Since.IsZero() ||
		f.LastSync == nil || !f.LastSync.Equal(at.Add(1500*time.Millisecond)) {
		t.Fatalf("app-01's failback: %+v", f)
	}
	if db.Failback != nil {
		t.Fatalf("db-01 is in no failback: %+v", db.Failback)
	}
	b, _ := json.Marshal(jobs)
	if !strings.Contains(string(b), `"failback":{"id":"fb-1","state":"synced","production":"app-new","created":true`) {
		t.Fatalf("status JSON: %s", b)
	}
	if err := cat.EndFailback("e2e", "app-01", nil); err != nil {
		t.Fatal(err)
	}
	if jobs, err = Jobs(cat, []*config.Job{job}, Unscheduled, time.Now()); err != nil || jobs[0].VMs[0].Failback != nil {
		t.Fatalf("after the failback ended: %+v %v", jobs[0].VMs[0].Failback, err)
	}
}
