package recovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// home is a fake production site and DR site for failbacks: the replicas'
// states (a site), each VM's failback state, moved by core/failback's
// decision as the engine moves it, and the calls made.
type home struct {
	*site
	fb map[string]failback.State
	// fail makes a VM's action fail (before it changes anything).
	fail map[string]failback.Action
	// running counts the syncs under way; most is the most at once.
	running, most int
	// hold, when set, is waited on by every sync.
	hold chan struct{}
}

func newHome(addr string, failedOver ...string) *home {
	h := &home{site: newSite(addr), fb: map[string]failback.State{}, fail: map[string]failback.Action{}}
	for _, vm := range failedOver {
		h.state[vm] = sdk.ReplicaFailedOver
	}
	return h
}

func (h *home) failback(ctx context.Context, job *config.Job, vm string, action failback.Action) (*FailbackVM, error) {
	key := job.Name + "/" + vm
	h.mu.Lock()
	h.calls = append(h.calls, string(action)+" "+key)
	st := h.fb[key]
	if st == failback.None && h.state[key] != sdk.ReplicaFailedOver {
		h.mu.Unlock()
		return nil, fmt.Errorf("%s is not failed over: %w", key, errdefs.ErrFailedPrecondition)
	}
	steps, err := failback.Decide(st, action)
	if err == nil && h.fail[key] == action {
		err = errors.New("the production host is down")
	}
	syncs := slices.Contains(steps, failback.SyncData)
	if syncs {
		h.running++
		h.most = max(h.most, h.running)
	}
	hold := h.hold
	h.mu.Unlock()
	if syncs && hold != nil {
		select {
		case <-hold:
		case <-time.After(5 * time.Second):
			return nil, errors.New("the hold never ended")
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if syncs {
		h.running--
	}
	if err != nil {
		return nil, err
	}
	out := &FailbackVM{Production: vm}
	for _, s := range steps {
		switch s {
		case failback.SyncData:
			h.fb[key], out.Sent = failback.Synced, 100
		case failback.StartProduction:
			h.fb[key] = failback.Switched
			out.Addresses = []string{h.addr + "/8"}
		case failback.ReturnReplica:
			h.state[key] = sdk.ReplicaReady
		case failback.End:
			delete(h.fb, key)
		}
	}
	if st, ok := h.fb[key]; ok {
		out.State = string(st)
	}
	if action == failback.Switch && out.State == string(failback.Switched) {
		out.Addresses = []string{h.addr + "/8"}
	}
	return out, nil
}

func (h *home) Failback(job, vm string) (*catalog.Failback, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st, ok := h.fb[job+"/"+vm]
	if !ok {
		return nil, fmt.Errorf("no failback: %w", errdefs.ErrNotFound)
	}
	return &catalog.Failback{Job: job, VM: vm, ID: "fb", Production: vm, State: string(st)}, nil
}

func (h *home) runner(cfg *config.Config, dir string, steps *[]string) *Runner {
	var mu sync.Mutex
	return &Runner{Jobs: cfg.Jobs, Catalog: h, Failback: h.failback, Failbacks: h, Dir: dir, Progress: func(st Step) {
		mu.Lock()
		defer mu.Unlock()
		*steps = append(*steps, strings.Join(slices.DeleteFunc([]string{st.Group, st.VM, st.What}, func(s string) bool { return s == "" }), " "))
	}}
}

func (h *home) states() map[string]failback.State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return cloneStates(h.fb)
}

func cloneStates(m map[string]failback.State) map[string]failback.State {
	out := map[string]failback.State{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

const threeGroups = `
failover_plan "shop" {
  group "db" { vms = ["db/db-01"] }
  group "app" {
    vms        = ["web/app-01", "web/cache-01"]
    depends_on = ["db"]
    ready { script = ["sh", "-c", "test \"$FERRY_FAILBACK $FERRY_GROUP\" = \"1 app\" && echo \"$FERRY_ADDRESSES\" | grep -q 10.1.0.9"] }
  }
  group "web" {
    vms        = ["web/web-01"]
    depends_on = ["app"]
  }
}`

// TestAPlanFailsBackInItsGroupOrder: the switch of a plan first syncs
// every VM not synced yet, then switches the groups in the order the plan
// starts them, each group's readiness check run against production's
// addresses; a VM that is not failed over is left alone.
func TestAPlanFailsBackInItsGroupOrder(t *testing.T) {
	cfg, p := loadPlan(t, threeGroups)
	h := newHome("10.1.0.9", "db/db-01", "web/app-01", "web/web-01")
	h.state["web/cache-01"] = sdk.ReplicaReady
	var steps []string
	res, err := h.runner(cfg, t.TempDir(), &steps).FailbackSwitch(context.Background(), p)
	if err != nil {
		t.Fatalf("%v\nsteps %q", err, steps)
	}
	calls := h.callList()
	at := func(call string) int { return slices.Index(calls, call) }
	for _, vm := range []string{"db/db-01", "web/app-01", "web/web-01"} {
		if at("sync "+vm) < 0 || at("sync "+vm) > at("switch db/db-01") {
			t.Fatalf("%s was not synced before the first switch: %q", vm, calls)
		}
	}
	if !(at("switch db/db-01") < at("switch web/app-01") && at("switch web/app-01") < at("switch web/web-01")) {
		t.Fatalf("switches out of the plan's order: %q", calls)
	}
	if slices.ContainsFunc(calls, func(c string) bool { return strings.Contains(c, "cache-01") }) {
		t.Fatalf("a VM that is not failed over was failed back: %q", calls)
	}
	if !slices.Contains(steps, "app web/cache-01 skipped") || !slices.Contains(steps, "app ready") || !slices.Contains(steps, "web ready") {
		t.Fatalf("steps %q", steps)
	}
	if len(res.VMs) != 3 || len(res.Ready) != 3 {
		t.Fatalf("result %+v", res)
	}
	for _, v := range res.VMs {
		if v.State != "switched" {
			t.Fatalf("%s is %q after the switch", v.VM, v.State)
		}
	}
	// Again: every VM is switched already; nothing is synced again.
	h.calls = nil
	if _, err := h.runner(cfg, t.TempDir(), &steps).FailbackSwitch(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(h.callList(), func(c string) bool { return strings.HasPrefix(c, "sync") }) {
		t.Fatalf("a switched plan synced again: %q", h.callList())
	}
}

// TestAFailedVMStopsAPlansSwitch: a VM whose switch fails stops the plan's
// switch: no group switches after its group, every VM's state is in the
// result, and running the switch again once the VM can switch finishes
// the plan without switching again the VMs that did.
func TestAFailedVMStopsAPlansSwitch(t *testing.T) {
	cfg, p := loadPlan(t, threeGroups)
	h := newHome("10.1.0.9", "db/db-01", "web/app-01", "web/web-01")
	h.fail["web/app-01"] = failback.Switch
	var steps []string
	res, err := h.runner(cfg, t.TempDir(), &steps).FailbackSwitch(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "web/app-01: the production host is down") || !strings.Contains(err.Error(), "failback switch stopped") {
		t.Fatalf("a switch with a VM that fails: %v", err)
	}
	got := map[string]string{}
	for _, v := range res.VMs {
		got[v.VM] = v.State
	}
	want := map[string]string{"db/db-01": "switched", "web/app-01": "synced", "web/web-01": "synced"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("states after the stop: %v, want %v", got, want)
	}
	if !slices.Contains(steps, "web skipped") {
		t.Fatalf("steps %q", steps)
	}
	delete(h.fail, "web/app-01")
	h.calls = nil
	if _, err := h.runner(cfg, t.TempDir(), &steps).FailbackSwitch(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if calls := h.callList(); !slices.Equal(calls, []string{"switch db/db-01", "switch web/app-01", "switch web/web-01"}) {
		t.Fatalf("the switch again: %q", calls)
	}
	for vm, st := range h.states() {
		if st != failback.Switched {
			t.Fatalf("%s is %s", vm, st)
		}
	}
}

// TestAPlanSyncsSeveralVMsAtOnce: a plan's sync runs FailbackParallel VMs
// at once, never more; a VM that fails does not stop the others' syncs.
func TestAPlanSyncsSeveralVMsAtOnce(t *testing.T) {
	cfg, p := loadPlan(t, `
failover_plan "shop" {
  group "db" { vms = ["db/db-01", "db/db-02"] }
  group "web" {
    vms        = ["web/app-01", "web/web-01"]
    depends_on = ["db"]
  }
}`)
	h := newHome("10.1.0.9", "db/db-01", "db/db-02", "web/app-01", "web/web-01")
	h.hold = make(chan struct{})
	h.fail["db/db-02"] = failback.Sync
	var steps []string
	r := h.runner(cfg, t.TempDir(), &steps)
	r.FailbackParallel = 2
	done := make(chan struct{})
	var res *Result
	var err error
	go func() {
		res, err = r.FailbackSync(context.Background(), p)
		close(done)
	}()
	// Wait for two syncs to be under way, then let them all go.
	for deadline := time.Now().Add(5 * time.Second); ; {
		h.mu.Lock()
		n := h.running
		h.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d syncs under way, want 2", n)
		}
		time.Sleep(time.Millisecond)
	}
	close(h.hold)
	<-done
	if err == nil || !strings.Contains(err.Error(), "db/db-02: the production host is down") {
		t.Fatalf("sync with a VM that fails: %v", err)
	}
	if h.most != 2 {
		t.Fatalf("%d syncs ran at once, want 2", h.most)
	}
	if len(res.VMs) != 4 {
		t.Fatalf("result %+v", res.VMs)
	}
	if st := h.states(); len(st) != 3 || st["db/db-01"] != failback.Synced || st["web/web-01"] != failback.Synced {
		t.Fatalf("states after the sync: %v", st)
	}
}

// TestAPlansFailbackCommitAndUndo: commit and undo act on every VM of the
// plan in a failback, in the order the plan starts its groups, and go on
// past a VM that fails; with none in a failback they are refused.
func TestAPlansFailbackCommitAndUndo(t *testing.T) {
	cfg, p := loadPlan(t, threeGroups)
	for _, action := range []failback.Action{failback.Commit, failback.Undo} {
		t.Run(string(action), func(t *testing.T) {
			h := newHome("10.1.0.9", "db/db-01", "web/app-01", "web/web-01")
			h.fb["web/web-01"], h.fb["db/db-01"], h.fb["web/app-01"] = failback.Switched, failback.Switched, failback.Switched
			h.fail["web/app-01"] = action
			var steps []string
			r := h.runner(cfg, t.TempDir(), &steps)
			act := r.FailbackCommit
			if action == failback.Undo {
				act = r.FailbackUndo
			}
			_, err := act(context.Background(), p)
			if err == nil || !strings.Contains(err.Error(), "web/app-01: the production host is down") {
				t.Fatalf("%s with a VM that fails: %v", action, err)
			}
			if calls := h.callList(); !slices.Equal(calls, []string{string(action) + " db/db-01", string(action) + " web/app-01", string(action) + " web/web-01"}) {
				t.Fatalf("%s calls: %q", action, calls)
			}
			delete(h.fail, "web/app-01")
			h.calls = nil
			if _, err := act(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			if calls := h.callList(); !slices.Equal(calls, []string{string(action) + " web/app-01"}) {
				t.Fatalf("%s again acts on the VM left: %q", action, calls)
			}
			_, err = act(context.Background(), p)
			if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "no VM of the plan is in a failback") {
				t.Fatalf("%s with none in a failback: %v", action, err)
			}
		})
	}
}

// TestFailbackOfAPlanWithNothingFailedOver: a plan none of whose VMs is
// failed over has nothing to fail back.
func TestFailbackOfAPlanWithNothingFailedOver(t *testing.T) {
	cfg, p := loadPlan(t, threeGroups)
	h := newHome("10.1.0.9")
	for _, vm := range []string{"db/db-01", "web/app-01", "web/web-01"} {
		h.state[vm] = sdk.ReplicaReady
	}
	var steps []string
	for name, act := range map[string]func(context.Context, *config.FailoverPlan) (*Result, error){
		"sync": h.runner(cfg, t.TempDir(), &steps).FailbackSync, "switch": h.runner(cfg, t.TempDir(), &steps).FailbackSwitch,
	} {
		if _, err := act(context.Background(), p); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "no VM of the plan is failed over") {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if len(h.callList()) != 0 {
		t.Fatalf("calls: %q", h.callList())
	}
}

// TestStartOrder: every group comes after the groups it depends on.
func TestStartOrder(t *testing.T) {
	g := func(name string, deps ...string) *config.PlanGroup {
		return &config.PlanGroup{Name: name, DependsOn: deps}
	}
	cases := []struct {
		name   string
		groups []*config.PlanGroup
	}{
		{"a chain written backwards", []*config.PlanGroup{g("web", "app"), g("app", "db"), g("db")}},
		{"a diamond", []*config.PlanGroup{g("web", "app", "cache"), g("db"), g("cache", "db"), g("app", "db")}},
		{"independent groups", []*config.PlanGroup{g("a"), g("b"), g("c", "a")}},
		{"one group", []*config.PlanGroup{g("db")}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := startOrder(tc.groups)
			if len(out) != len(tc.groups) {
				t.Fatalf("%d groups of %d", len(out), len(tc.groups))
			}
			at := map[string]int{}
			for i, g := range out {
				at[g.Name] = i
			}
			for _, g := range tc.groups {
				for _, d := range g.DependsOn {
					if at[d] > at[g.Name] {
						t.Errorf("%s comes before %s, which it depends on", g.Name, d)
					}
				}
			}
		})
	}
}
