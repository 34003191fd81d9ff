package server

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/status"
)

// TestWhatTheCommandLineAsks: the routes `ferry status`, `points` and
// `plan` call as the server's client answer the documents those commands
// print, with what only the server knows (the next run).
func TestWhatTheCommandLineAsks(t *testing.T) {
	l := newLab(t)
	s := New(l.run, l.cat, nil, Options{})
	s.Controller = catalog.Controller{PID: 7, Host: "dr-01", Address: "https://127.0.0.1:7444", Since: time.Now()}
	var planned []string
	s.Plan = func(ctx context.Context, jobs []*config.Job) ([]plan.Plan, error) {
		var out []plan.Plan
		for _, j := range jobs {
			planned = append(planned, j.Name)
			out = append(out, plan.Plan{Job: j.Name, Changes: []plan.Change{{Action: plan.Create, VM: "web-01", Disk: -1, What: "replica web-01_replica will be created"}}})
		}
		return out, nil
	}
	cfg := jobs(t, map[string]string{"web": "", "db": "every 1h"})
	stop := serve(s, cfg)
	defer stop()
	for _, p := range []*catalog.RestorePoint{
		{Job: "web", VM: "web-01", ID: "p1", Created: time.Now().Add(-time.Hour)},
		{Job: "web", VM: "web-01", ID: "p2", Created: time.Now()},
	} {
		if err := l.cat.AddRestorePoint(p); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(s.Handler(NewMetrics(s), "test"))
	defer srv.Close()

	var st []status.Job
	get(t, srv, "GET", "/v1/status", 200, &st)
	if len(st) != 2 || st[0].Job != "db" || st[1].Job != "web" {
		t.Fatalf("status %+v", st)
	}
	if db := st[0]; !db.Scheduled || db.NextRun == nil || time.Until(*db.NextRun) > time.Hour || !strings.Contains(db.ScheduledBy, "process 7 on dr-01") {
		t.Fatalf("a scheduled job's status: %+v", db)
	}
	if web := st[1]; web.Scheduled || web.NextRun != nil || len(web.VMs) != 1 || web.VMs[0].RestorePoints != 2 {
		t.Fatalf("an unscheduled job's status: %+v", web)
	}

	var points []catalog.RestorePoint
	get(t, srv, "GET", "/v1/jobs/web/points", 200, &points)
	if len(points) != 2 || points[0].ID != "p1" {
		t.Fatalf("points %+v", points)
	}
	get(t, srv, "GET", "/v1/jobs/web/points?vm=web-01", 200, &points)
	if len(points) != 2 {
		t.Fatalf("points of web-01 %+v", points)
	}
	get(t, srv, "GET", "/v1/jobs/db/points?vm=web-01", 200, &points)
	if len(points) != 0 {
		t.Fatalf("points of a VM without any: %+v", points)
	}
	var gone []catalog.GoneReplica
	get(t, srv, "GET", "/v1/jobs/web/replicas/gone", 200, &gone)
	if gone == nil || len(gone) != 0 {
		t.Fatalf("gone %+v", gone)
	}

	var plans []plan.Plan
	get(t, srv, "GET", "/v1/plan?job=web", 200, &plans)
	if len(plans) != 1 || plans[0].Job != "web" || len(plans[0].Changes) != 1 || plans[0].Changes[0].Action != plan.Create {
		t.Fatalf("plan %+v", plans)
	}
	body := get(t, srv, "GET", "/v1/plan", 200, &plans)
	if len(plans) != 2 || !strings.Contains(body, `"action": "create"`) {
		t.Fatalf("plan of every job: %s", body)
	}
	if strings.Join(planned, ",") != "web,db,web" {
		t.Fatalf("planned %v", planned)
	}

	var e apiError
	for _, c := range []struct{ path, class string }{
		{"/v1/jobs/nosuch/points", "not_found"},
		{"/v1/jobs/web/points?vm=nosuch", "not_found"},
		{"/v1/jobs/nosuch/replicas/gone", "not_found"},
		{"/v1/plan?job=web&job=nosuch", "not_found"},
	} {
		get(t, srv, "GET", c.path, 404, &e)
		if e.Class != c.class || e.Error == "" {
			t.Errorf("%s: %+v", c.path, e)
		}
	}
	none := httptest.NewServer(New(l.run, l.cat, nil, Options{}).Handler(NewMetrics(s), "test"))
	defer none.Close()
	get(t, none, "GET", "/v1/plan", 503, &e)
	if e.Class != "unavailable" {
		t.Errorf("a server that does not plan: %+v", e)
	}
}
