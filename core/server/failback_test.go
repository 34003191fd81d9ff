package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/sdk"
)

// homeSite fails VMs back as the engine would, as far as the catalog can
// tell: core/failback decides the steps from the failback the catalog
// keeps, and the failback and the replica are recorded there as each
// step would leave them.
type homeSite struct {
	cat   *catalog.Catalog
	mu    sync.Mutex
	calls []string
}

func (h *homeSite) failback(ctx context.Context, job *config.Job, vm string, action failback.Action, to string) (*FailedBack, error) {
	h.mu.Lock()
	h.calls = append(h.calls, fmt.Sprintf("%s %s/%s", action, job.Name, vm))
	h.mu.Unlock()
	rec, err := h.cat.Failback(job.Name, vm)
	state := failback.None
	if err == nil {
		state = failback.State(rec.State)
	}
	steps, err := failback.Decide(state, action)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		if to == "" {
			to = vm
		}
		rec = &catalog.Failback{Job: job.Name, VM: vm, ID: "fb-" + vm, Production: to}
	}
	out := &FailedBack{Steps: steps}
	for _, s := range steps {
		switch s {
		case failback.SyncData:
			rec.State, rec.Syncs = string(failback.Synced), rec.Syncs+1
			out.Syncs = append(out.Syncs, catalog.FailbackSync{At: time.Now(), Disks: []catalog.FailbackDiskStat{{Index: 0, Mode: "change-tracking", Sent: 4096}}})
		case failback.StartProduction:
			rec.State = string(failback.Switched)
			out.Production = &sdk.VM{Name: rec.Production, PowerState: "on", NICs: []sdk.NIC{{Addresses: []string{"10.1.0.5/24"}}}}
		case failback.ReturnReplica:
			r, err := h.cat.Replica(job.Name, vm)
			if err != nil {
				return nil, err
			}
			r.State = sdk.ReplicaReady
			if err := h.cat.EndFailback(job.Name, vm, r); err != nil {
				return nil, err
			}
			return out, nil
		case failback.End:
			return out, h.cat.EndFailback(job.Name, vm, nil)
		default:
			if e := failback.Entries[s]; e.Before != "" {
				rec.State = string(e.Before)
			}
		}
	}
	out.Failback = rec
	return out, h.cat.PutFailback(rec)
}

func (h *homeSite) callList() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

// TestFailbackThroughTheAPI: a VM's failback and a plan's through the
// API, the failbacks under way listed; refused while a session of the
// job runs or another process holds the job (named); a plan's switch
// whose check fails stops with every VM's state, and finishes once the
// check passes; the plan's commit ends every failback.
func TestFailbackThroughTheAPI(t *testing.T) {
	l := newLab(t)
	l.took["web"] = 2 * time.Second // a session a failback meets
	cfg := planConfig(t)
	for _, vm := range []string{"db/db-01", "web/app-01", "web/web-01"} {
		job, name, _ := strings.Cut(vm, "/")
		if err := l.cat.PutReplica(&catalog.Replica{Job: job, VM: name, ReplicaID: name + "-r", ReplicaName: name + "_replica", Target: "local.dr", State: sdk.ReplicaFailedOver, FailoverPoint: "p1"}); err != nil {
			t.Fatal(err)
		}
	}
	home := &homeSite{cat: l.cat}
	s := New(l.run, l.cat, nil, Options{})
	s.Failback = home.failback
	s.Controller = catalog.Controller{PID: 812, Host: "dr-01"}
	stop := serve(s, cfg)
	defer stop()
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()

	// One VM, to another production VM.
	var fb FailedBack
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/failback", `{"to": "db-new"}`, 200, &fb)
	if fb.Failback == nil || fb.Failback.State != "synced" || fb.Failback.Production != "db-new" || len(fb.Syncs) != 1 {
		t.Fatalf("a VM's sync: %+v", fb)
	}
	var list []catalog.Failback
	get(t, srv, "GET", "/v1/failbacks", 200, &list)
	if len(list) != 1 || list[0].VM != "db-01" || list[0].State != "synced" {
		t.Fatalf("failbacks: %+v", list)
	}
	get(t, srv, "GET", "/v1/failbacks?job=web", 200, &list)
	if len(list) != 0 {
		t.Fatalf("web's failbacks: %+v", list)
	}
	var e apiError
	get(t, srv, "GET", "/v1/failbacks?job=nosuch", 404, &e)
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/failback/commit", `{"to": "x"}`, 400, &e)
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/failback/commit", "", 409, &e)
	if !strings.Contains(e.Error, "switch first") {
		t.Fatalf("a commit before the switch: %+v", e)
	}
	call(t, srv, "POST", "/v1/jobs/nosuch/vms/db-01/failback", "", 404, &e)

	// Another process holds the job: refused, naming it.
	other, err := catalog.Open(l.cat.Path(), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	release, err := other.HoldJobs([]string{"db"}, catalog.Holder{What: "ferry failback switch db db-01", PID: 4242, Host: "ops-01"})
	if err != nil {
		t.Fatal(err)
	}
	n := len(home.callList())
	call(t, srv, "POST", "/v1/jobs/db/vms/db-01/failback/switch", "", 409, &e)
	if !strings.Contains(e.Error, `job "db" is busy: ferry failback switch db db-01 (process 4242 on ops-01`) || len(home.callList()) != n {
		t.Fatalf("a failback while another process holds the job: %+v", e)
	}
	release()
	other.Close()

	// While a session of the job runs: refused.
	if asked, err := s.RunNow(context.Background(), "web"); err != nil || !asked.Started {
		t.Fatal(asked, err)
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/failback", "", 409, &e)
	if e.Class != "failed_precondition" || !strings.Contains(e.Error, `job "web"`) || len(home.callList()) != n {
		t.Fatalf("a plan's failback while a session of its job runs: %+v", e)
	}
	for st, _ := s.Job("web"); st.Running; st, _ = s.Job("web") {
		time.Sleep(10 * time.Millisecond)
	}

	// The plan's switch: the app group's check fails; every VM's state
	// is in the answer.
	var stopped struct {
		apiError
		Result PlanRun `json:"result"`
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/failback/switch", "", 500, &stopped)
	got := map[string]string{}
	for _, v := range stopped.Result.VMs {
		got[v.VM] = v.State
	}
	if !strings.Contains(stopped.Error, `group "app" is not ready at production`) || got["db/db-01"] != "switched" || got["web/app-01"] != "switched" || got["web/web-01"] != "switched" ||
		!slices.Equal(stopped.Result.Ready, []string{"db"}) || stopped.Result.Action != "switch" {
		t.Fatalf("a plan's switch whose check fails: %+v", stopped)
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "app-ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var run PlanRun
	call(t, srv, "POST", "/v1/failover-plans/shop/failback/switch", "", 200, &run)
	if len(run.VMs) != 3 || !slices.Equal(run.Ready, []string{"db", "app"}) || run.Error != "" {
		t.Fatalf("the plan's switch again: %+v", run)
	}
	call(t, srv, "POST", "/v1/failover-plans/shop/failback/commit", "", 200, &run)
	if len(run.VMs) != 3 || run.Action != "commit" {
		t.Fatalf("the plan's commit: %+v", run)
	}
	if st := states(t, l.cat); st != "db-01 ready, app-01 ready, web-01 ready" {
		t.Fatalf("replicas after the plan's commit: %s", st)
	}
	get(t, srv, "GET", "/v1/failbacks", 200, &list)
	if len(list) != 0 {
		t.Fatalf("failbacks after the commit: %+v", list)
	}
	call(t, srv, "POST", "/v1/failover-plans/nosuch/failback", "", 404, &e)
	call(t, srv, "POST", "/v1/failover-plans/shop/failback/undo", `{"switch": true}`, 400, &e)
}
