package catalog

import (
	"fmt"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// KeepTestResults is how many results of tests the catalog keeps for each
// plan (and each VM tested alone): PutTestResult drops older ones.
const KeepTestResults = 20

// TestResult is what a test failover of a plan, or of one VM, did: the
// record recovery.Runner.Test returns and the catalog keeps.
type TestResult struct {
	// Plan is the failover plan tested; "" for a test of one VM, which
	// Job and VM name.
	Plan string `json:"plan"`
	Job  string `json:"job,omitempty"`
	VM   string `json:"vm,omitempty"`
	// Run names this test; its test VMs carry it.
	Run     string    `json:"run"`
	Started time.Time `json:"started"`
	// Passed: every group came up, its checks passed.
	Passed bool `json:"passed"`
	// RecoverySeconds is the recovery time the test achieved: from the
	// first test VM's start to the last group's checks passed; 0 when it
	// did not pass.
	RecoverySeconds float64 `json:"recovery_seconds,omitempty"`
	// TookSeconds is the whole test, removal of the test VMs included.
	TookSeconds float64 `json:"took_seconds"`
	// Error says why it did not pass, or what it left behind.
	Error string         `json:"error,omitempty"`
	VMs   []TestVMResult `json:"vms"`
	// Ready are the groups that came up, in order.
	Ready []string `json:"ready,omitempty"`
	// Leftovers are test VMs of earlier tests, removed before this one
	// started.
	Leftovers []string `json:"leftovers,omitempty"`
	// NotRemoved are this test's VMs that could not be removed: a
	// cleanup is still to do.
	NotRemoved []string `json:"not_removed,omitempty"`
}

// TestVMResult is one VM's part of a test.
type TestVMResult struct {
	VM        string   `json:"vm"` // JOB/VM
	Group     string   `json:"group"`
	Test      string   `json:"test"` // the test VM's id on the target
	Point     string   `json:"point,omitempty"`
	Networks  []string `json:"networks,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// VMTest is the last test that started a test VM of a VM, in a test of a
// plan or alone: what `ferry status` shows beside the VM.
type VMTest struct {
	Plan    string    `json:"plan,omitempty"` // "" when the VM was tested alone
	Run     string    `json:"run"`
	Started time.Time `json:"started"`
	// Passed and RecoverySeconds are the whole test's.
	Passed          bool    `json:"passed"`
	RecoverySeconds float64 `json:"recovery_seconds,omitempty"`
	// Error is this VM's own, when its test VM did not start.
	Error string `json:"error,omitempty"`
}

// subject is the start of the keys of r's tests: "plan" NUL the plan, or
// "vm" NUL the job NUL the VM.
func (r *TestResult) subject() ([]string, error) {
	if r.Plan != "" {
		if r.Job != "" || r.VM != "" {
			return nil, fmt.Errorf("the test of plan %q names a job and VM too (%q, %q): %w", r.Plan, r.Job, r.VM, errdefs.ErrInvalidArgument)
		}
		if err := checkName("plan", r.Plan); err != nil {
			return nil, err
		}
		return []string{"plan", r.Plan}, nil
	}
	if err := checkNames("job", r.Job, "VM", r.VM); err != nil {
		return nil, fmt.Errorf("a test names a plan, or a job and a VM: %w", err)
	}
	return []string{"vm", r.Job, r.VM}, nil
}

func (r *TestResult) check() ([]string, error) {
	subj, err := r.subject()
	if err != nil {
		return nil, err
	}
	if err := checkNames("run", r.Run); err != nil {
		return nil, err
	}
	if err := checkTime("start", r.Started); err != nil {
		return nil, err
	}
	for _, v := range r.VMs {
		job, vm, ok := strings.Cut(v.VM, "/")
		if !ok || checkNames("job", job, "VM", vm) != nil {
			return nil, fmt.Errorf("test VM result for %q: not JOB/VM: %w", v.VM, errdefs.ErrInvalidArgument)
		}
	}
	return subj, nil
}

// PutTestResult keeps r, drops the results beyond the newest
// KeepTestResults of its plan (or VM), and records it as the last test of
// each VM it lists. See Catalog.PutTestResult.
func (t *Tx) PutTestResult(r *TestResult) error {
	subj, err := r.check()
	if err != nil {
		return fmt.Errorf("put test result: %w", err)
	}
	fail := func(err error) error { return fmt.Errorf("put result of test %s: %w", r.Run, err) }
	b := t.bucket(bucketTests)
	if err := putJSON(b, key(append(subj, formatTime(r.Started), r.Run)...), r); err != nil {
		return fail(err)
	}
	keys := keysWithPrefix(b, prefix(subj...))
	for len(keys) > KeepTestResults {
		if err := b.Delete(keys[0]); err != nil {
			return fail(err)
		}
		keys = keys[1:]
	}
	last := t.bucket(bucketVMTests)
	for _, v := range r.VMs {
		job, vm, _ := strings.Cut(v.VM, "/")
		k := key(job, vm)
		var old VMTest
		found, err := getJSON(last, k, &old)
		if err != nil {
			return fail(err)
		}
		if found && old.Started.After(r.Started) {
			continue // a later test already reported
		}
		rec := VMTest{Plan: r.Plan, Run: r.Run, Started: r.Started, Passed: r.Passed, RecoverySeconds: r.RecoverySeconds, Error: v.Error}
		if err := putJSON(last, k, rec); err != nil {
			return fail(err)
		}
	}
	return nil
}

// TestResults returns the kept results of the tests of plan, newest
// first, at most n of them (all for n <= 0). See Catalog.TestResults.
func (t *Tx) TestResults(plan string, n int) ([]TestResult, error) {
	if err := checkName("plan", plan); err != nil {
		return nil, fmt.Errorf("list test results: %w", err)
	}
	return t.testResults(prefix("plan", plan), n)
}

// VMTestResults returns the kept results of the tests of vm of job alone
// (not those of plans), newest first, at most n (all for n <= 0).
func (t *Tx) VMTestResults(job, vm string, n int) ([]TestResult, error) {
	if err := checkNames("job", job, "VM", vm); err != nil {
		return nil, fmt.Errorf("list test results: %w", err)
	}
	return t.testResults(prefix("vm", job, vm), n)
}

func (t *Tx) testResults(p []byte, n int) ([]TestResult, error) {
	b := t.bucket(bucketTests)
	keys := keysWithPrefix(b, p)
	out := []TestResult{}
	for i := len(keys) - 1; i >= 0 && (n <= 0 || len(out) < n); i-- {
		var r TestResult
		if _, err := getJSON(b, keys[i], &r); err != nil {
			return nil, fmt.Errorf("list test results: %w", err)
		}
		out = append(out, r)
	}
	return out, nil
}

// LastTest returns the last test that started a test VM of vm of job,
// alone or in a plan; nil, nil when none did.
func (t *Tx) LastTest(job, vm string) (*VMTest, error) {
	if err := checkNames("job", job, "VM", vm); err != nil {
		return nil, fmt.Errorf("get last test: %w", err)
	}
	var r VMTest
	found, err := getJSON(t.bucket(bucketVMTests), key(job, vm), &r)
	if err != nil {
		return nil, fmt.Errorf("get last test of %s/%s: %w", job, vm, err)
	}
	if !found {
		return nil, nil
	}
	return &r, nil
}

// PutTestResult keeps the result of a test in one transaction: under its
// plan, or under its job and VM for a test of one VM (Plan ""), keeping
// the newest KeepTestResults of each; and, for each VM of r.VMs, as that
// VM's last test (LastTest) unless a later one is recorded. Errors:
// ErrInvalidArgument for a result without a plan or a job and VM, without
// a run or a start, or with a VM that is not JOB/VM. Safe for concurrent
// use.
func (c *Catalog) PutTestResult(r *TestResult) error {
	return c.Update(func(tx *Tx) error { return tx.PutTestResult(r) })
}

// TestResults returns the kept results of the tests of plan, newest first,
// at most n of them (all for n <= 0); an empty list for a plan never
// tested. Safe for concurrent use.
func (c *Catalog) TestResults(plan string, n int) ([]TestResult, error) {
	var out []TestResult
	err := c.View(func(tx *Tx) error {
		var err error
		out, err = tx.TestResults(plan, n)
		return err
	})
	return out, err
}

// VMTestResults returns the kept results of the tests of vm of job alone,
// newest first, at most n of them (all for n <= 0). Safe for concurrent
// use.
func (c *Catalog) VMTestResults(job, vm string, n int) ([]TestResult, error) {
	var out []TestResult
	err := c.View(func(tx *Tx) error {
		var err error
		out, err = tx.VMTestResults(job, vm, n)
		return err
	})
	return out, err
}

// LastTestResult returns the newest kept result of the tests of plan, or
// nil, nil when it was never tested. Safe for concurrent use.
func (c *Catalog) LastTestResult(plan string) (*TestResult, error) {
	rs, err := c.TestResults(plan, 1)
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	return &rs[0], nil
}
