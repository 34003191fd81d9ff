package catalog

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	bolt "go.etcd.io/bbolt"
)

var testT0 = time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)

func planTest(plan, run string, minute int, passed bool, vms ...string) *TestResult {
	r := &TestResult{Plan: plan, Run: run, Started: testT0.Add(time.Duration(minute) * time.Minute), Passed: passed, TookSeconds: 3}
	if passed {
		r.RecoverySeconds = 1.5
	}
	for _, v := range vms {
		r.VMs = append(r.VMs, TestVMResult{VM: v, Group: "g", Test: "t-" + run})
	}
	return r
}

func TestTestResultsKeptByPlanAndVM(t *testing.T) {
	c, _ := openTest(t)
	first := planTest("app", "r1", 0, false, "db/db-01", "web/web-01")
	first.VMs[0].Error = "no restore point"
	first.Error = "group \"g\": db/db-01: no restore point"
	first.NotRemoved = []string{"t-r1"}
	for _, r := range []*TestResult{
		first,
		planTest("app", "r2", 10, true, "db/db-01", "web/web-01"),
		planTest("other", "r3", 5, true, "db/db-01"),
		{Job: "web", VM: "web-02", Run: "r4", Started: testT0.Add(20 * time.Minute), Passed: true, RecoverySeconds: 0.5,
			VMs: []TestVMResult{{VM: "web/web-02", Group: "web-02", Test: "web-02-test-r4"}}},
	} {
		if err := c.PutTestResult(r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.TestResults("app", 0)
	if err != nil || len(got) != 2 || got[0].Run != "r2" || got[1].Run != "r1" {
		t.Fatalf("TestResults(app) = %+v, %v; want r2 then r1", got, err)
	}
	sameJSON(t, "the first test of app", got[1], first)
	if last, err := c.LastTestResult("app"); err != nil || last.Run != "r2" || !last.Passed || last.RecoverySeconds != 1.5 {
		t.Fatalf("LastTestResult(app) = %+v, %v", last, err)
	}
	if last, err := c.LastTestResult("never"); err != nil || last != nil {
		t.Fatalf("LastTestResult of a plan never tested = %+v, %v; want nil, nil", last, err)
	}
	// A VM tested alone is kept under its job and VM, not under a plan.
	if alone, err := c.VMTestResults("web", "web-02", 0); err != nil || len(alone) != 1 || alone[0].Run != "r4" {
		t.Fatalf("VMTestResults(web, web-02) = %+v, %v", alone, err)
	}
	if alone, err := c.VMTestResults("db", "db-01", 0); err != nil || len(alone) != 0 {
		t.Fatalf("VMTestResults(db, db-01) = %+v, %v; want none: it was only tested in plans", alone, err)
	}

	for _, tc := range []struct {
		job, vm string
		want    *VMTest
	}{
		// r3 (plan other) started before r2 but was recorded after it:
		// the last test is still the later one.
		{"db", "db-01", &VMTest{Plan: "app", Run: "r2", Started: testT0.Add(10 * time.Minute), Passed: true, RecoverySeconds: 1.5}},
		{"web", "web-01", &VMTest{Plan: "app", Run: "r2", Started: testT0.Add(10 * time.Minute), Passed: true, RecoverySeconds: 1.5}},
		{"web", "web-02", &VMTest{Run: "r4", Started: testT0.Add(20 * time.Minute), Passed: true, RecoverySeconds: 0.5}},
		{"web", "web-03", nil},
	} {
		var got *VMTest
		err := c.View(func(tx *Tx) error {
			var err error
			got, err = tx.LastTest(tc.job, tc.vm)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, "last test of "+tc.job+"/"+tc.vm, got, tc.want)
	}
}

func TestTestResultsKeepTheNewest(t *testing.T) {
	c, _ := openTest(t)
	n := KeepTestResults + 3
	for i := range n {
		if err := c.PutTestResult(planTest("app", fmt.Sprintf("r%02d", i), i, i%2 == 0, "db/db-01")); err != nil {
			t.Fatal(err)
		}
		if err := c.PutTestResult(&TestResult{Job: "db", VM: "db-01", Run: fmt.Sprintf("v%02d", i), Started: testT0.Add(time.Duration(i) * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.TestResults("app", 0)
	if err != nil || len(got) != KeepTestResults {
		t.Fatalf("kept %d results of app (%v), want %d", len(got), err, KeepTestResults)
	}
	if got[0].Run != fmt.Sprintf("r%02d", n-1) || got[len(got)-1].Run != fmt.Sprintf("r%02d", n-KeepTestResults) {
		t.Fatalf("kept %s .. %s, want the newest %d", got[0].Run, got[len(got)-1].Run, KeepTestResults)
	}
	if alone, err := c.VMTestResults("db", "db-01", 0); err != nil || len(alone) != KeepTestResults || alone[0].Run != fmt.Sprintf("v%02d", n-1) {
		t.Fatalf("kept %d results of db/db-01 alone (%v), want the newest %d", len(alone), err, KeepTestResults)
	}
	if two, err := c.TestResults("app", 2); err != nil || len(two) != 2 || two[1].Run != fmt.Sprintf("r%02d", n-2) {
		t.Fatalf("TestResults(app, 2) = %+v, %v", two, err)
	}
	// Another plan's results are not counted against app's.
	if err := c.PutTestResult(planTest("app2", "x", 0, true)); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.TestResults("app", 0); len(got) != KeepTestResults {
		t.Fatalf("app has %d results after a test of app2", len(got))
	}
}

func TestPutTestResultRefusesMalformed(t *testing.T) {
	c, _ := openTest(t)
	for _, tc := range []struct {
		name string
		r    *TestResult
	}{
		{"no subject", &TestResult{Run: "r", Started: testT0}},
		{"plan and VM", &TestResult{Plan: "app", Job: "web", VM: "web-01", Run: "r", Started: testT0}},
		{"job without VM", &TestResult{Job: "web", Run: "r", Started: testT0}},
		{"no run", &TestResult{Plan: "app", Started: testT0}},
		{"no start", &TestResult{Plan: "app", Run: "r"}},
		{"NUL in plan", &TestResult{Plan: "a\x00b", Run: "r", Started: testT0}},
		{"VM not JOB/VM", &TestResult{Plan: "app", Run: "r", Started: testT0, VMs: []TestVMResult{{VM: "web-01"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.PutTestResult(tc.r); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("PutTestResult = %v, want ErrInvalidArgument", err)
			}
		})
	}
	if got, err := c.TestResults("app", 0); err != nil || len(got) != 0 {
		t.Fatalf("refused results were kept: %+v, %v", got, err)
	}
	if _, err := c.TestResults("", 0); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("TestResults of an empty plan: %v", err)
	}
}

// A catalog of schema version 2 (before test results) gains their
// buckets, and keeps what it had.
func TestMigrationAddsTestResults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "catalog.db")
	// Write a version 2 catalog as ferry of that schema did: its
	// migrations, then a job's state.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, m := range migrations[:2] {
			if err := m.apply(tx); err != nil {
				return err
			}
		}
		if err := writeVersion(tx, 2); err != nil {
			return err
		}
		return tx.Bucket(bucketJobs).Put([]byte("web"), []byte(`{"job":"web","fingerprint":"f"}`))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c, err := Open(path, Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.PutTestResult(planTest("app", "r1", 0, true, "web/web-01")); err != nil {
		t.Fatal(err)
	}
	if s, err := c.JobState("web"); err != nil || s.Fingerprint != "f" {
		t.Fatalf("job state after the migration: %+v, %v", s, err)
	}
}
