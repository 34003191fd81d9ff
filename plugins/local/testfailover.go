package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/plugins/internal/filelock"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Test VMs live apart from the replicas, in a folder the target's
// listings and a local source never take for a VM:
//
//	TARGET/.tests/.lock                 flock: starting and removing tests
//	TARGET/.tests/<id>/test.json        the test: replica, point, labels, running
//	TARGET/.tests/<id>/vm.json          the test VM's description, once started
//	TARGET/.tests/<id>/disk<N>.img      sparse copies of the point's disks
//	TARGET/.tests/.deleting-<id>-<hex>  a test being removed
//
// A test is written in this order: test.json (not running), the disks
// (each a temporary file renamed when complete), vm.json, test.json
// (running). A process killed at any step leaves a folder ListTests lists
// as not running and StopTest removes. The copy is read from the point
// without holding the replica's lock: a point reader stays right while
// the replica is written and points come and go (restorepoint.go), so a
// test never holds up replication, and the copy shares nothing with the
// replica once made.

const (
	testsDirName = ".tests"
	testFileName = "test.json"
	testsLock    = ".lock"

	// DefaultIsolatedNetwork is where a test VM's NICs go when the
	// request maps none of their networks and the target's configuration
	// names no isolated_network.
	DefaultIsolatedNetwork = "ferry-isolated"
)

var _ sdk.TestFailoverer = (*Target)(nil)

// testState is test.json.
type testState struct {
	ID          string            `json:"id"`
	Replica     string            `json:"replica"`
	ReplicaName string            `json:"replica_name"`
	Point       string            `json:"point"`
	Started     time.Time         `json:"started"`
	Running     bool              `json:"running"`
	Labels      map[string]string `json:"labels,omitempty"`
}

func (t *Target) testsRoot() string        { return filepath.Join(t.root, testsDirName) }
func (t *Target) testDir(id string) string { return filepath.Join(t.testsRoot(), id) }
func testNotFound(id string, root string) error {
	return fmt.Errorf("test %q in target %s: %w", id, root, errdefs.ErrNotFound)
}

// lockTests takes the lock that orders starts and removals of tests.
func (t *Target) lockTests(ctx context.Context) (*filelock.Lock, error) {
	if err := mkdirDurable(t.testsRoot()); err != nil {
		return nil, err
	}
	return filelock.Acquire(ctx, filepath.Join(t.testsRoot(), testsLock))
}

// StartTest copies a restore point's disks into a test VM of its own and
// marks it running, its NICs on the test networks.
func (t *Target) StartTest(ctx context.Context, req sdk.TestRequest) (*sdk.TestVM, error) {
	if err := sdk.CheckTestID(req.ID); err != nil {
		return nil, fmt.Errorf("start test: %w", err)
	}
	rules, err := sdk.CompileNetwork(req.Network)
	if err != nil {
		return nil, fmt.Errorf("start test %q: %w", req.ID, err)
	}
	plan, err := t.planTest(ctx, req, rules)
	if err != nil {
		return nil, err
	}
	defer plan.close()

	tl, err := t.lockTests(ctx)
	if err != nil {
		return nil, err
	}
	dir := t.testDir(req.ID)
	var ts testState
	switch err := readJSON(filepath.Join(dir, testFileName), &ts); {
	case err == nil && ts.Running && ts.Replica == plan.state.Replica && (req.Point == "" || req.Point == ts.Point):
		tl.Release()
		return t.testOf(dir, &ts)
	case err == nil:
		tl.Release()
		return nil, fmt.Errorf("start test %q: the target has a test of that id already (replica %q, point %q, running: %t); stop it first: %w", req.ID, ts.ReplicaName, ts.Point, ts.Running, errdefs.ErrAlreadyExists)
	case !errors.Is(err, fs.ErrNotExist):
		tl.Release()
		return nil, err
	}
	if _, err := os.Stat(dir); err == nil {
		tl.Release()
		return nil, fmt.Errorf("start test %q: %s exists without a test in it; stop the test to remove it: %w", req.ID, dir, errdefs.ErrAlreadyExists)
	}
	err = mkdirDurable(dir)
	if err == nil {
		err = writeJSONAtomic(filepath.Join(dir, testFileName), plan.state)
	}
	tl.Release()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start test %q: %w", req.ID, err), t.StopTest(context.WithoutCancel(ctx), req.ID))
	}
	t.step("test-journalled")
	if err := t.makeTest(ctx, dir, plan); err != nil {
		return nil, errors.Join(fmt.Errorf("start test %q: %w", req.ID, err), t.StopTest(context.WithoutCancel(ctx), req.ID))
	}
	return t.testOf(dir, plan.state)
}

// testPlan is what StartTest found out before it writes anything: the
// test's record and description, and readers of the point's disks.
type testPlan struct {
	state   *testState
	vm      *sdk.VM
	readers []*pointReader
}

func (p *testPlan) close() {
	for _, r := range p.readers {
		r.Close()
	}
}

// planTest resolves the replica and the point and opens the point's disks,
// holding the replica's lock only while it does.
func (t *Target) planTest(ctx context.Context, req sdk.TestRequest, rules *sdk.NetworkRules) (*testPlan, error) {
	x, err := t.begin(ctx, req.Replica, false)
	if err != nil {
		return nil, fmt.Errorf("start test %q: %w", req.ID, err)
	}
	defer x.release()
	rs := x.rs
	live := rs.livePoints()
	var p *pointState
	switch {
	case rs.State == sdk.ReplicaCommitted:
		return nil, fmt.Errorf("start test %q: replica %q is %s and keeps no restore points: %w", req.ID, req.Replica, rs.State, errdefs.ErrFailedPrecondition)
	case req.Point != "":
		for _, lp := range live {
			if lp.ID == req.Point {
				p = lp
			}
		}
		if p == nil {
			return nil, fmt.Errorf("start test %q: restore point %q of replica %q: %w", req.ID, req.Point, req.Replica, errdefs.ErrNotFound)
		}
	case len(live) == 0:
		return nil, fmt.Errorf("start test %q: replica %q has no restore point: %w", req.ID, req.Replica, errdefs.ErrFailedPrecondition)
	default:
		p = live[len(live)-1]
	}
	// A failed-over replica's vm.json has the failover's network: the
	// test starts from the description the points were made with.
	base := rs.PreFailover
	if base == nil {
		if base, err = readVM(x.dir); err != nil {
			return nil, err
		}
	}
	vm := cloneVM(base)
	mapped := map[string]bool{}
	for _, m := range req.Network.NetworkMap {
		mapped[m.From] = true
	}
	unmapped := map[int]bool{}
	for i, n := range vm.NICs {
		if !mapped[n.Network] {
			if t.isolated == "" {
				return nil, fmt.Errorf("start test %q: NIC %d of replica %q is on network %q, which the test's network map does not map, and the target has no isolated_network: %w", req.ID, n.Index, rs.Name, n.Network, errdefs.ErrFailedPrecondition)
			}
			unmapped[i] = true
		}
	}
	if err := applyNetwork(rules, vm); err != nil {
		return nil, fmt.Errorf("start test %q: %w", req.ID, err)
	}
	for i := range vm.NICs {
		if unmapped[i] {
			vm.NICs[i].Network = t.isolated
		}
		vm.NICs[i].MAC = macFor(req.ID, i)
	}
	vm.ID, vm.Name, vm.PowerState = req.ID, req.ID, "on"
	var disks []sdk.Disk
	plan := &testPlan{vm: vm, state: &testState{ID: req.ID, Replica: rs.ID, ReplicaName: rs.Name, Point: p.ID, Started: t.now().UTC(), Labels: req.Labels}}
	for _, d := range p.Disks {
		r, err := t.openPoint(x.dir, rs, rs.Name, p.ID, d.Index)
		if err != nil {
			plan.close()
			return nil, fmt.Errorf("start test %q: %w", req.ID, err)
		}
		plan.readers = append(plan.readers, r)
		disk := sdk.Disk{Index: d.Index, Capacity: d.Size}
		for _, vd := range vm.Disks {
			if vd.Index == d.Index {
				disk = vd
				disk.Capacity = d.Size
			}
		}
		disks = append(disks, disk)
	}
	vm.Disks = disks
	return plan, nil
}

// makeTest copies the disks and describes the VM, then marks it running.
func (t *Target) makeTest(ctx context.Context, dir string, plan *testPlan) error {
	for _, r := range plan.readers {
		if err := copySparse(ctx, r, diskFile(dir, r.disk), func() { t.step("test-copying") }); err != nil {
			return fmt.Errorf("copy disk %d: %w", r.disk, err)
		}
	}
	t.step("test-copied")
	if err := writeVM(dir, plan.vm); err != nil {
		return err
	}
	t.step("test-described")
	plan.state.Running = true
	return writeJSONAtomic(filepath.Join(dir, testFileName), plan.state)
}

func (t *Target) testOf(dir string, ts *testState) (*sdk.TestVM, error) {
	v := &sdk.TestVM{ID: ts.ID, Replica: ts.Replica, Point: ts.Point, Started: ts.Started, Running: ts.Running, Labels: ts.Labels}
	if ts.Running {
		vm, err := readVM(dir)
		if err != nil {
			return nil, err
		}
		v.VM = *vm
	}
	return v, nil
}

// ListTests lists the test folders by id; a folder whose start did not
// finish is listed as not running.
func (t *Target) ListTests(ctx context.Context) ([]sdk.TestVM, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(t.testsRoot())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list tests of target %s: %w", t.root, err)
	}
	var out []sdk.TestVM
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(t.testsRoot(), e.Name())
		var ts testState
		if err := readJSON(filepath.Join(dir, testFileName), &ts); err != nil {
			// Killed between the folder and its record, or damaged:
			// a leftover all the same.
			out = append(out, sdk.TestVM{ID: e.Name()})
			continue
		}
		ts.ID = e.Name()
		v, err := t.testOf(dir, &ts)
		if err != nil {
			v = &sdk.TestVM{ID: ts.ID, Replica: ts.Replica, Point: ts.Point, Started: ts.Started, Labels: ts.Labels}
		}
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// OpenTestDisk opens a test VM's disk file for reading.
func (t *Target) OpenTestDisk(ctx context.Context, id string, disk int) (sdk.DiskReader, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	if err := sdk.CheckTestID(id); err != nil {
		return nil, fmt.Errorf("open test disk: %w", err)
	}
	dir := t.testDir(id)
	var ts testState
	if err := readJSON(filepath.Join(dir, testFileName), &ts); errors.Is(err, fs.ErrNotExist) {
		return nil, testNotFound(id, t.root)
	} else if err != nil {
		return nil, err
	}
	if !ts.Running {
		return nil, fmt.Errorf("test %q did not finish starting; stop it: %w", id, errdefs.ErrFailedPrecondition)
	}
	f, err := os.Open(diskFile(dir, disk))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("disk %d of test %q: %w", disk, id, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open disk %d of test %q: %w", disk, id, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open disk %d of test %q: %w", disk, id, err)
	}
	return &testVMDisk{File: f, size: st.Size()}, nil
}

// testVMDisk reads a test VM's disk file.
type testVMDisk struct {
	*os.File
	size int64
}

func (d *testVMDisk) Size() int64 { return d.size }

// StopTest removes a test's folder: renamed away under the tests' lock,
// then removed, so that a kill half-way leaves no half-removed test
// (NewTarget clears the renamed folders).
func (t *Target) StopTest(ctx context.Context, id string) error {
	if err := sdk.CheckTestID(id); err != nil {
		return fmt.Errorf("stop test: %w", err)
	}
	dir := t.testDir(id)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	tl, err := t.lockTests(ctx)
	if err != nil {
		return err
	}
	gone := filepath.Join(t.testsRoot(), deletingPrefix+id+"-"+randomHex(4))
	err = os.Rename(dir, gone)
	if err == nil {
		err = syncDir(t.testsRoot())
	}
	tl.Release()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // stopped by another call meanwhile
	}
	if err != nil {
		return fmt.Errorf("stop test %q: %w", id, err)
	}
	t.step("test-renamed")
	return removeAllDurable(gone)
}

// clearStoppedTests removes the folders of tests a killed StopTest renamed.
func clearStoppedTests(root string) error {
	entries, err := os.ReadDir(filepath.Join(root, testsDirName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list tests: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), deletingPrefix) {
			if err := removeAllDurable(filepath.Join(root, testsDirName, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
