package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// drSite fails VMs over as the engine would, as far as the catalog can
// tell: it records each replica's state there. A VM named in refuse does
// not fail over.
type drSite struct {
	cat *catalog.Catalog

	mu     sync.Mutex
	refuse map[string]bool // JOB/VM
	calls  []string
}

func (d *drSite) failover(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
	key := job.Name + "/" + vm
	d.mu.Lock()
	d.calls = append(d.calls, action+" "+key)
	refused := d.refuse[key]
	d.mu.Unlock()
	if refused && action == "start" {
		return nil, fmt.Errorf("start replica of %s: the host has no room: %w", vm, errdefs.ErrUnavailable)
	}
	rec, err := d.cat.Replica(job.Name, vm)
	if err != nil {
		return nil, err
	}
	switch action {
	case "start":
		rec.State, rec.FailoverPoint = sdk.ReplicaFailedOver, "p1"
	case "undo":
		rec.State, rec.FailoverPoint = sdk.ReplicaReady, ""
	case "commit":
		rec.State = sdk.ReplicaCommitted
	}
	if err := d.cat.PutReplica(rec); err != nil {
		return nil, err
	}
	return &sdk.Replica{Name: rec.ReplicaName, State: rec.State, FailoverPoint: rec.FailoverPoint,
		VM: sdk.VM{PowerState: "on", NICs: []sdk.NIC{{Addresses: []string{"10.2.0.5/24"}}}}}, nil
}

func (d *drSite) callList() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// planConfig is a configuration in a temporary folder of two jobs over
// the local plugin and a failover plan "shop" of two groups: db, then app
// (two VMs of job web), ready when the file "app-ready" exists.
func planConfig(t *testing.T) *config.Config {
	t.Helper()
	src := `
source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
job "db" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["db-01"]
}
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["app-01", "web-01"]
}
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
  group "app" {
    vms        = ["web/app-01", "web/web-01"]
    depends_on = ["db"]
    ready {
      script  = ["test", "-e", "app-ready"]
      timeout = "5s"
    }
  }
}
`
	local := &schema.Block{Attributes: map[string]*schema.Attribute{"path": {Type: cty.String, Required: true}}}
	cfg, diags := config.LoadFiles(t.TempDir(), map[string][]byte{"main.hcl": []byte(src)}, config.StaticComponents{
		sdk.KindSource: {"local": {Schema: local}},
		sdk.KindTarget: {"local": {Schema: local}},
	})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return cfg
}

func TestFailoverPlansThroughTheAPI(t *testing.T) {
	l := newLab(t)
	l.took["web"] = 2 * time.Second // a session the plan meets
	cfg := planConfig(t)
	for _, vm := range []string{"db/db-01", "web/app-01", "web/web-01"} {
		job, name, _ := strings.Cut(vm, "/")
		if err := l.cat.PutReplica(&catalog.Replica{Job: job, VM: name, ReplicaID: name + "-r", ReplicaName: name + "_replica", Target: "local.dr", State: sdk.ReplicaReady}); err != nil {
			t.Fatal(err)
		}
		if err := l.cat.AddRestorePoint(&catalog.RestorePoint{Job: job, VM: name, ID: "p1", Created: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	site := &drSite{cat: l.cat, refuse: map[string]bool{}}
	s := New(l.run, l.cat, nil, Options{})
	s.Failover = site.failover
	stop := serve(s, cfg)
	defer stop()
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()
	// The plans, with their groups; one with what it would do now.
	var list []FailoverPlan
	get(t, srv, "GET", "/v1/failover-plans", 200, &list)
	if len(list) != 1 || list[0].Name != "shop" || len(list[0].Groups) != 2 || list[0].Groups[1].Name != "app" ||
		!slices.Equal(list[0].Groups[1].VMs, []string{"web/app-01", "web/web-01"}) || !slices.Equal(list[0].Groups[1].DependsOn, []string{"db"}) || list[0].Preview != nil {
		t.Fatalf("plans %+v", list)
	}
	var one FailoverPlan
	get(t, srv, "GET", "/v1/failover-plans/shop", 200, &one)
	if pv := one.Preview; pv == nil || len(pv.Waves) != 2 || pv.Waves[1][0].Group != "app" || pv.Waves[1][0].Ready != "test -e app-ready exits 0" ||
		len(pv.Waves[1][0].VMs) != 2 || pv.Waves[1][0].VMs[1].Point != "p1" || pv.Waves[1][0].VMs[1].Problem != "" {
		t.Fatalf("plan %+v", one)
	}

	// An unknown plan, a point that is no time, a point for an undo.
	var e apiError
	for _, path := range []string{"/v1/failover-plans/nosuch", "/v1/failover-plans/nosuch/failover", "/v1/failover-plans/nosuch/undo", "/v1/failover-plans/nosuch/commit"} {
		method := "POST"
		if path == "/v1/failover-plans/nosuch" {
			method = "GET"
		}
		e = apiError{}
		call(t, srv, method, path, "", 404, &e)
		if e.Class != "not_found" || !strings.Contains(e.Error, `no failover plan "nosuch" (plans: shop)`) {
			t.Errorf("%s %s: %+v", method, path, e)
		}
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/failover", `{"point": "yesterday"}`, 400, &e)
	call(t, srv, "POST", "/v1/failover-plans/shop/undo", `{"point": "2026-12-06T14:30:00Z"}`, 400, &e)
	// No restore point at or before the time: refused, nothing started.
	call(t, srv, "POST", "/v1/failover-plans/shop/failover", `{"point": "2001-01-01T00:00:00Z"}`, 409, &e)
	if !strings.Contains(e.Error, "no restore point at or before") || len(site.callList()) != 0 {
		t.Fatalf("a time before every point: %+v, calls %q", e, site.callList())
	}

	// While a session of one of its jobs runs, the plan is refused.
	if asked, err := s.RunNow(context.Background(), "web"); err != nil || !asked.Started {
		t.Fatal(asked, err)
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/failover", "", 409, &e)
	if e.Class != "failed_precondition" || !strings.Contains(e.Error, `failover plan "shop": job "web"`) || len(site.callList()) != 0 {
		t.Fatalf("a plan while a session of its job runs: %+v", e)
	}
	for st, _ := s.Job("web"); st.Running; st, _ = s.Job("web") {
		time.Sleep(10 * time.Millisecond)
	}

	// A VM of the second group does not fail over: the plan stops, and its
	// answer names every VM started and the one that failed. (The plan's
	// error does not keep the VM's class: internal.)
	site.mu.Lock()
	site.refuse["web/web-01"] = true
	site.mu.Unlock()
	var stopped struct {
		apiError
		Result PlanRun `json:"result"`
	}
	// The VM's failure keeps its class (the host has no room: unavailable).
	call(t, srv, "POST", "/v1/failover-plans/shop/failover", `{"point": "latest"}`, 503, &stopped)
	vms := map[string]recovery.VMResult{}
	for _, vm := range stopped.Result.VMs {
		vms[vm.VM] = vm
	}
	if stopped.Class != "unavailable" || !strings.Contains(stopped.Error, "the host has no room") || len(vms) != 3 ||
		vms["db/db-01"].State != "failed_over" || vms["web/app-01"].State != "failed_over" || vms["web/web-01"].Error == "" ||
		!slices.Equal(stopped.Result.Ready, []string{"db"}) || len(stopped.Result.Steps) == 0 {
		t.Fatalf("a plan that stopped: %+v", stopped)
	}
	if st := states(t, l.cat); st != "db-01 failed_over, app-01 failed_over, web-01 ready" {
		t.Fatalf("replicas after the plan stopped: %s", st)
	}
	// Undo from there returns the two started, dependents first.
	var undone PlanRun
	call(t, srv, "POST", "/v1/failover-plans/shop/undo", "", 200, &undone)
	if len(undone.VMs) != 2 || undone.VMs[0].VM != "web/app-01" || undone.VMs[1].VM != "db/db-01" || undone.Error != "" {
		t.Fatalf("undo: %+v", undone)
	}
	if st := states(t, l.cat); st != "db-01 ready, app-01 ready, web-01 ready" {
		t.Fatalf("replicas after the undo: %s", st)
	}

	// Every VM fails over and the check passes: both groups up; then
	// commit.
	site.mu.Lock()
	site.refuse = map[string]bool{}
	site.mu.Unlock()
	if err := os.WriteFile(filepath.Join(cfg.Dir, "app-ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var done PlanRun
	call(t, srv, "POST", "/v1/failover-plans/shop/failover", "", 200, &done)
	if len(done.VMs) != 3 || !slices.Equal(done.Ready, []string{"db", "app"}) || done.Action != "failover" || done.Error != "" {
		t.Fatalf("failover: %+v", done)
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/commit", "", 200, &done)
	if len(done.VMs) != 3 || done.Action != "commit" {
		t.Fatalf("commit: %+v", done)
	}
	if st := states(t, l.cat); st != "db-01 committed, app-01 committed, web-01 committed" {
		t.Fatalf("replicas after the commit: %s", st)
	}
}

// call makes a call with a body, decodes the answer into out and returns
// it.
func call(t *testing.T, srv *httptest.Server, method, path, body string, wantCode int, out any) string {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantCode {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, wantCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return string(b)
}

// states are the replicas' states of the plan's VMs, in its order.
func states(t *testing.T, cat *catalog.Catalog) string {
	t.Helper()
	var out []string
	for _, vm := range []string{"db/db-01", "web/app-01", "web/web-01"} {
		job, name, _ := strings.Cut(vm, "/")
		r, err := cat.Replica(job, name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, name+" "+string(r.State))
	}
	return strings.Join(out, ", ")
}
