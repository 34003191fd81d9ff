package local

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
)

// TestTestFailoverCrashSteps kills StartTest and StopTest at each step
// (through the crash hook, then as a dead process would: a new Target on
// the folder) and checks that the leftover is listed as not running, that
// replication goes on beside it with every point intact, and that
// StopTest removes every trace of it.
func TestTestFailoverCrashSteps(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		step string
		n    int
		stop bool // crash while stopping a running test
	}{
		{"test-journalled", 1, false},
		{"test-copying", 1, false},
		{"test-copying", 3, false},
		{"test-copied", 1, false},
		{"test-described", 1, false},
		{"test-renamed", 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.step, func(t *testing.T) {
			root := t.TempDir()
			tgt, err := NewTarget(root)
			if err != nil {
				t.Fatal(err)
			}
			r := newReplica(t, tgt, "crash")
			rng := testRand(t)
			r.fill(t, rng)
			first := r.point(t, nil)
			r.write(t, 0, scatter(rng, 2<<20, 5)...)
			r.point(t, nil)
			req := sdk.TestRequest{ID: "ferry-test-1", Replica: "crash", Point: first}
			if tc.stop {
				if _, err := tgt.StartTest(ctx, req); err != nil {
					t.Fatal(err)
				}
			}
			tgt.crash = crashAt(tc.step, tc.n)
			if !survive(t, func() {
				if tc.stop {
					tgt.StopTest(ctx, req.ID)
				} else {
					tgt.StartTest(ctx, req)
				}
			}) {
				t.Fatalf("never reached step %s", tc.step)
			}
			tgt.crashForTest()
			if tgt, err = NewTarget(root); err != nil {
				t.Fatal(err)
			}
			r.t = tgt
			tests, err := tgt.ListTests(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.stop && len(tests) != 0:
				t.Fatalf("a test whose stop was killed after the rename is still listed: %+v", tests)
			case !tc.stop && (len(tests) != 1 || tests[0].ID != req.ID || tests[0].Running):
				t.Fatalf("after a killed start ListTests = %+v, want %s listed as not running", tests, req.ID)
			}
			// Replication goes on beside the leftover.
			r.write(t, 1, scatter(rng, 1<<20, 3)...)
			r.point(t, nil)
			r.verify(t, "replicating beside a leftover test")
			if !tc.stop {
				if _, err := tgt.OpenTestDisk(ctx, req.ID, 0); err == nil {
					t.Error("OpenTestDisk of a test whose start was killed succeeded")
				}
				if _, err := tgt.StartTest(ctx, req); err == nil {
					t.Error("StartTest over a leftover of its id succeeded; it must be stopped first")
				}
			}
			if err := tgt.StopTest(ctx, req.ID); err != nil {
				t.Fatal(err)
			}
			entries, err := os.ReadDir(filepath.Join(root, testsDirName))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() != testsLock {
					t.Errorf("after StopTest %s is left in the tests folder", e.Name())
				}
			}
			// And the test runs, from the point of the first try.
			v, err := tgt.StartTest(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			rd, err := tgt.OpenTestDisk(ctx, req.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAllAt(t, rd); string(got) != string(r.points[first][0]) {
				t.Errorf("test %s does not hold point %s", v.ID, first)
			}
			rd.Close()
			r.verify(t, "with the test running")
		})
	}
}

// TestTestFailoverNetworks: an unmapped NIC goes on the configured
// isolated network, a mapped one where the map says, with the re-IP rules
// applied; a failed-over replica's test starts from the description its
// points were made with, not the failover's; the test VM is named after
// its id and never lists as a replica.
func TestTestFailoverNetworks(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	p := Plugin().Targets["local"]
	cfg := cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(root), "isolated_network": cty.StringVal("bubble")})
	if diags := p.Validate(cfg); diags.HasErrors() {
		t.Fatal(diags.Err())
	}
	c, err := p.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tgt := c.(*Target)
	r := newReplica(t, tgt, "web")
	r.fill(t, testRand(t))
	r.point(t, nil)
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "web", Network: sdk.NetworkConfig{NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "dr"}, {From: "backup", To: "dr-backup"}}}}); err != nil {
		t.Fatal(err)
	}
	v, err := tgt.StartTest(ctx, sdk.TestRequest{ID: "t1", Replica: "web", Network: sdk.NetworkConfig{
		NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "lab"}},
		ReIP:       []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.99.0.0/16"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if v.VM.Name != "t1" || v.VM.PowerState != "on" || len(v.VM.NICs) != 2 {
		t.Fatalf("test VM %+v", v.VM)
	}
	if n := v.VM.NICs[0]; n.Network != "lab" || n.Addresses[0] != "10.99.0.5/24" {
		t.Errorf("mapped NIC: %+v, want on lab with 10.99.0.5/24", n)
	}
	if n := v.VM.NICs[1]; n.Network != "bubble" {
		t.Errorf("unmapped NIC: %+v, want on the isolated network bubble", n)
	}
	reps, err := tgt.ListReplicas(ctx)
	if err != nil || len(reps) != 1 || reps[0].State != sdk.ReplicaFailedOver {
		t.Fatalf("replicas with a test running: %+v, %v", reps, err)
	}
	if err := tgt.StopTest(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.UndoFailover(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	r.verify(t, "after a test of a failed-over replica")
}
