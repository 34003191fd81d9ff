package recovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// site is a fake DR site: replicas by JOB/VM and the calls made.
type site struct {
	mu     sync.Mutex
	state  map[string]sdk.ReplicaState
	points map[string][]catalog.RestorePoint
	calls  []string
	// gate, when set for a VM, is waited on before its failover returns.
	gate map[string]chan struct{}
	addr string // every replica's address
}

func newSite(addr string, vms ...string) *site {
	s := &site{state: map[string]sdk.ReplicaState{}, points: map[string][]catalog.RestorePoint{}, gate: map[string]chan struct{}{}, addr: addr}
	for _, vm := range vms {
		s.state[vm] = sdk.ReplicaReady
	}
	return s
}

func (s *site) failover(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
	key := job.Name + "/" + vm
	s.mu.Lock()
	s.calls = append(s.calls, action+" "+key+" "+point)
	gate := s.gate[key]
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-time.After(5 * time.Second):
			return nil, errors.New("the gate never opened")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch action {
	case "start":
		s.state[key] = sdk.ReplicaFailedOver
	case "undo":
		s.state[key] = sdk.ReplicaReady
	case "commit":
		s.state[key] = sdk.ReplicaCommitted
	}
	return &sdk.Replica{Name: vm + "_replica", State: s.state[key], FailoverPoint: point,
		VM: sdk.VM{NICs: []sdk.NIC{{Addresses: []string{s.addr + "/8"}}}}}, nil
}

func (s *site) RestorePoints(job, vm string) ([]catalog.RestorePoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.points[job+"/"+vm], nil
}

func (s *site) Replica(job, vm string) (*catalog.Replica, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.state[job+"/"+vm]
	if !ok {
		return nil, fmt.Errorf("no replica: %w", errdefs.ErrNotFound)
	}
	return &catalog.Replica{Job: job, VM: vm, State: st}, nil
}

func (s *site) callList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func loadPlan(t *testing.T, plan string) (*config.Config, *config.FailoverPlan) {
	t.Helper()
	src := `
source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
job "db" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["db-01", "db-02"]
}
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01", "app-01", "cache-01"]
}
` + plan
	local := &schema.Block{Attributes: map[string]*schema.Attribute{"path": {Type: cty.String, Required: true}}}
	schemas := config.StaticComponents{
		sdk.KindSource: {"local": {Schema: local}},
		sdk.KindTarget: {"local": {Schema: local}},
	}
	cfg, diags := config.LoadFiles(t.TempDir(), map[string][]byte{"main.hcl": []byte(src)}, schemas)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for _, p := range cfg.FailoverPlans {
		return cfg, p
	}
	t.Fatal("no plan")
	return nil, nil
}

// listen accepts connections on a loopback port until the test ends.
func listen(t *testing.T) (string, int) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	a := lis.Addr().(*net.TCPAddr)
	return a.IP.String(), a.Port
}

func TestAPlanStartsItsGroupsInOrder(t *testing.T) {
	ip, port := listen(t)
	cfg, p := loadPlan(t, fmt.Sprintf(`
failover_plan "shop" {
  group "db" {
    vms = ["db/db-01", "db/db-02"]
    ready { tcp_port = %d }
  }
  group "cache" { vms = ["web/cache-01"] }
  group "app" {
    vms        = ["web/app-01"]
    depends_on = ["db", "cache"]
    ready { script = ["sh", "-c", "test \"$FERRY_GROUP $FERRY_VMS\" = \"app web/app-01\""] }
  }
  group "web" {
    vms        = ["web/web-01"]
    depends_on = ["app"]
    ready { delay = "10ms" }
  }
}`, port))
	s := newSite(ip, "db/db-01", "db/db-02", "web/cache-01", "web/app-01", "web/web-01")
	// db-01 fails over only once cache-01 has started: the two groups
	// start together.
	s.gate["db/db-01"] = make(chan struct{})
	var steps []string
	var mu sync.Mutex
	r := &Runner{Jobs: cfg.Jobs, Failover: func(ctx context.Context, job *config.Job, vm, action, point string) (*sdk.Replica, error) {
		if vm == "cache-01" {
			close(s.gate["db/db-01"])
		}
		return s.failover(ctx, job, vm, action, point)
	}, Catalog: s, Dir: t.TempDir(), Progress: func(st Step) {
		mu.Lock()
		steps = append(steps, st.Group+" "+st.What)
		mu.Unlock()
	}}
	res, err := r.Start(context.Background(), p, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.VMs) != 5 || len(res.Ready) != 4 || res.Ready[2] != "app" || res.Ready[3] != "web" {
		t.Fatalf("result %+v", res)
	}
	calls := s.callList()
	at := func(call string) int { return slices.Index(calls, call) }
	if at("start web/app-01 ") < at("start db/db-02 ") || at("start web/app-01 ") < at("start web/cache-01 ") || at("start web/web-01 ") < at("start web/app-01 ") {
		t.Fatalf("calls out of order: %q", calls)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(steps, "db checking") || !slices.Contains(steps, "app checking") || !slices.Contains(steps, "web ready") {
		t.Fatalf("steps %q", steps)
	}
}

func TestAFailedCheckStopsThePlanAndUndoReturnsWhatStarted(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
  group "app" {
    vms        = ["web/app-01"]
    depends_on = ["db"]
    ready {
      script  = "false"
      timeout = "5s"
    }
  }
  group "web" {
    vms        = ["web/web-01"]
    depends_on = ["app"]
  }
}`)
	s := newSite("127.0.0.1", "db/db-01", "web/app-01", "web/web-01")
	r := &Runner{Jobs: cfg.Jobs, Failover: s.failover, Catalog: s, Dir: t.TempDir()}
	res, err := r.Start(context.Background(), p, time.Time{})
	if err == nil || !strings.Contains(err.Error(), `group "app" is not ready`) {
		t.Fatalf("plan with a failing check: %v", err)
	}
	var started []string
	for _, vm := range res.VMs {
		started = append(started, vm.VM)
	}
	slices.Sort(started)
	if !slices.Equal(started, []string{"db/db-01", "web/app-01"}) || slices.Contains(s.callList(), "start web/web-01 ") {
		t.Fatalf("started %q, calls %q", started, s.callList())
	}
	// Undo from there: the started ones, dependents first.
	before := len(s.callList())
	if _, err := r.Undo(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if undo := s.callList()[before:]; !slices.Equal(undo, []string{"undo web/app-01 ", "undo db/db-01 "}) {
		t.Fatalf("undo calls %q", undo)
	}
	for vm, st := range s.state {
		if st != sdk.ReplicaReady {
			t.Errorf("%s is %s after the undo", vm, st)
		}
	}
}

func TestAPlanFailsOverToAPointInTime(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "db" {
  group "db" { vms = ["db/db-01", "db/db-02"] }
}`)
	s := newSite("127.0.0.1", "db/db-01", "db/db-02")
	t0 := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	for i, id := range []string{"p1", "p2", "p3"} {
		s.points["db/db-01"] = append(s.points["db/db-01"], catalog.RestorePoint{ID: id, Created: t0.Add(time.Duration(i) * time.Hour)})
	}
	s.points["db/db-02"] = []catalog.RestorePoint{{ID: "q1", Created: t0.Add(90 * time.Minute)}}
	r := &Runner{Jobs: cfg.Jobs, Failover: s.failover, Catalog: s, Dir: t.TempDir()}
	// Before any point of db-02: nothing starts.
	if _, err := r.Start(context.Background(), p, t0.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "db/db-02") || len(s.callList()) != 0 {
		t.Fatalf("a time before db-02's first point: %v, calls %q", err, s.callList())
	}
	if _, err := r.Start(context.Background(), p, t0.Add(100*time.Minute)); err != nil {
		t.Fatal(err)
	}
	calls := s.callList()
	slices.Sort(calls)
	if !slices.Equal(calls, []string{"start db/db-01 p2", "start db/db-02 q1"}) {
		t.Fatalf("calls %q", calls)
	}
}

func TestAFailingPreScriptStartsNothing(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "db" {
  pre_script = ["sh", "-c", "echo not today >&2; exit 3"]
  group "db" { vms = ["db/db-01"] }
}`)
	s := newSite("127.0.0.1", "db/db-01")
	r := &Runner{Jobs: cfg.Jobs, Failover: s.failover, Catalog: s, Dir: t.TempDir()}
	_, err := r.Start(context.Background(), p, time.Time{})
	if err == nil || !strings.Contains(err.Error(), "not today") || len(s.callList()) != 0 {
		t.Fatalf("pre_script failing: %v, calls %q", err, s.callList())
	}
}

func TestAPreviewSaysWhatAPlanWouldDo(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "web" {
    vms        = ["web/web-01"]
    depends_on = ["app", "cache"]
  }
  group "app" {
    vms        = ["web/app-01"]
    depends_on = ["db"]
    ready {
      tcp_port = 8080
      delay    = "5s"
    }
  }
  group "db" { vms = ["db/db-01", "db/db-02"] }
  group "cache" { vms = ["web/cache-01"] }
}`)
	s := newSite("127.0.0.1", "db/db-01", "web/app-01", "web/cache-01", "web/web-01")
	s.state["web/cache-01"] = sdk.ReplicaFailedOver
	s.points["db/db-01"] = []catalog.RestorePoint{{ID: "p1"}, {ID: "p2"}}
	s.points["web/app-01"] = []catalog.RestorePoint{{ID: "a1"}}
	r := &Runner{Jobs: cfg.Jobs, Catalog: s}
	pv, err := r.Preview(p)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	pv.Write(&out)
	want := `failover plan shop (ferry failover plan shop):
  1. group db
  +   db/db-01: fails over to restore point p2
  !   db/db-02: no replica yet: run the job first
  1. group cache
  !   web/cache-01: its replica is failed_over
  2. group app after db; ready when port 8080 answers, then 5s pass
  +   web/app-01: fails over to restore point a1
  3. group web after app, cache
  !   web/web-01: no restore point
`
	if out.String() != want {
		t.Fatalf("preview:\n%s\nwant:\n%s", out.String(), want)
	}
}
