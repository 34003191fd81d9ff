package sdktest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The test failover checks of RunTarget, for targets with the
// TestFailover capability.

// testNetwork is the network the checks map a replica's first network to.
const testNetwork = "sdktest-lab"

// tests returns the target's test failover, skipping the check when the
// fixture does not declare it.
func (c *targetCheck) tests(t *testing.T) sdk.TestFailoverer {
	t.Helper()
	if !c.fx.Capabilities.TestFailover {
		t.Skip("capability TestFailover not declared")
	}
	tf, ok := c.tgt.(sdk.TestFailoverer)
	if !ok {
		t.Fatalf("the target declares TestFailover but %T is not an sdk.TestFailoverer", c.tgt)
	}
	return tf
}

// startTest starts a test VM that the check stops when it ends.
func (c *targetCheck) startTest(t *testing.T, tf sdk.TestFailoverer, req sdk.TestRequest) *sdk.TestVM {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		if err := tf.StopTest(ctx, req.ID); err != nil {
			t.Errorf("StopTest(%q) at the end of the check: %v", req.ID, err)
		}
	})
	v, err := tf.StartTest(c.ctx, req)
	if err != nil {
		t.Fatalf("StartTest(%q, point %q): %v", req.ID, req.Point, err)
	}
	return v
}

// checkTestDisks reads every disk of a test VM and compares it with want.
func (c *targetCheck) checkTestDisks(t *testing.T, tf sdk.TestFailoverer, id string, want [][]byte, when string) {
	t.Helper()
	for d := range want {
		r, err := tf.OpenTestDisk(c.ctx, id, d)
		if err != nil {
			t.Fatalf("%s: OpenTestDisk(%q, %d): %v", when, id, d, err)
		}
		if r.Size() != int64(len(want[d])) {
			t.Errorf("%s: test %q disk %d has size %d, want %d", when, id, d, r.Size(), len(want[d]))
		}
		got, err := readAll(r, r.Size())
		closeDisk(t, r, "test disk")
		if err != nil {
			t.Fatalf("%s: read test %q disk %d: %v", when, id, d, err)
		}
		if msg := diffBytes(got, want[d], 0); msg != "" {
			t.Errorf("%s: test %q disk %d does not hold its restore point: %s", when, id, d, msg)
		}
	}
}

// checkWorking compares the replica's working state with the model.
func (c *targetCheck) checkWorking(t *testing.T, m *replicaModel, when string) {
	t.Helper()
	for d := range m.disks {
		r, err := c.tgt.OpenRestorePointDisk(c.ctx, m.id, "", d)
		if err != nil {
			t.Fatalf("%s: OpenRestorePointDisk(point \"\"): %v", when, err)
		}
		got, err := readAll(r, r.Size())
		closeDisk(t, r, "working state disk")
		if err != nil {
			t.Fatalf("%s: read the working state: %v", when, err)
		}
		if msg := diffBytes(got, m.disks[d], 0); msg != "" {
			t.Errorf("%s: the working state of disk %d changed: %s", when, d, msg)
		}
	}
}

// listed returns the test of that id ListTests lists, or nil.
func (c *targetCheck) listed(t *testing.T, tf sdk.TestFailoverer, id string) *sdk.TestVM {
	t.Helper()
	vs, err := tf.ListTests(c.ctx)
	if err != nil {
		t.Fatalf("ListTests: %v", err)
	}
	for i := range vs {
		if vs[i].ID == id {
			return &vs[i]
		}
	}
	return nil
}

// testFailover starts two test VMs of a replica, at an older point and at
// the newest, and checks that each holds its point and sits on the test
// networks, that replication (writes, a new point, deleting the older
// test's point) goes on undisturbed and never reaches the test VMs, that
// what a test VM writes never reaches the replica, and that StopTest
// removes them.
func (c *targetCheck) testFailover(t *testing.T) {
	tf := c.tests(t)
	m := c.newReplica(t, "test-failover")
	c.fill(t, m)
	old := c.point(t, m, nil)
	c.overwrite(t, m)
	newest := c.point(t, m, nil)
	oldDisks, newDisks := clone2(old.disks), clone2(newest.disks)

	first := c.fx.VM.NICs[0].Network
	net := sdk.NetworkConfig{NetworkMap: []sdk.NetworkMapping{{From: first, To: testNetwork}}}
	labels := map[string]string{"ferry.test": "conformance", "ferry.vm": c.fx.VM.Name}
	idOld, idNew := uniqueName(c.rng, "test-old"), uniqueName(c.rng, "test-new")
	if c.fx.IsolatedNetwork == "" {
		// Without an isolated network every NIC must be mapped.
		for _, nic := range c.fx.VM.NICs[1:] {
			net.NetworkMap = append(net.NetworkMap, sdk.NetworkMapping{From: nic.Network, To: testNetwork})
		}
	}
	v := c.startTest(t, tf, sdk.TestRequest{ID: idOld, Replica: m.id, Point: old.id, Network: net, Labels: labels})
	switch {
	case v.ID != idOld || v.Replica != m.id || v.Point != old.id:
		t.Errorf("StartTest returned test %q of replica %q at point %q, want %q, %q, %q", v.ID, v.Replica, v.Point, idOld, m.id, old.id)
	case !v.Running:
		t.Errorf("StartTest returned test %q not running", v.ID)
	case v.Started.IsZero():
		t.Errorf("StartTest returned test %q without its start time", v.ID)
	case !sameLabels(v.Labels, labels):
		t.Errorf("StartTest returned labels %v, want %v", v.Labels, labels)
	case len(v.VM.Disks) != len(c.fx.VM.Disks):
		t.Errorf("test VM %q has %d disks, its replica %d", v.ID, len(v.VM.Disks), len(c.fx.VM.Disks))
	}
	for i, nic := range v.VM.NICs {
		want := c.fx.IsolatedNetwork
		if i == 0 || want == "" {
			want = testNetwork
		}
		if nic.Network != want {
			t.Errorf("test VM %q NIC %d is on network %q, want %q", v.ID, nic.Index, nic.Network, want)
		}
	}
	if r := c.wantState(t, m, sdk.ReplicaReady); r.VM.Name == v.VM.Name {
		t.Errorf("the test VM is named %q, like its replica: it must be a VM of its own", v.VM.Name)
	}
	again, err := tf.StartTest(c.ctx, sdk.TestRequest{ID: idOld, Replica: m.id, Point: old.id, Network: net, Labels: labels})
	if err != nil || again.ID != idOld || again.Point != old.id {
		t.Errorf("StartTest of a running test again = %+v, %v; want it returned as it is", again, err)
	}
	c.startTest(t, tf, sdk.TestRequest{ID: idNew, Replica: m.name, Network: net})
	if l := c.listed(t, tf, idNew); l == nil || l.Point != newest.id || !l.Running {
		t.Errorf("ListTests lists test %q as %+v, want it running from the newest point %q", idNew, l, newest.id)
	}
	if l := c.listed(t, tf, idOld); l == nil || !sameLabels(l.Labels, labels) || l.Replica != m.id {
		t.Errorf("ListTests lists test %q as %+v, want it with its labels and replica", idOld, l)
	}
	c.checkTestDisks(t, tf, idOld, oldDisks, "after StartTest")
	c.checkTestDisks(t, tf, idNew, newDisks, "after StartTest")

	// Replication goes on: writes, a new point, retention deleting the
	// point the first test came from.
	c.overwrite(t, m)
	c.point(t, m, nil)
	if err := c.tgt.DeleteRestorePoint(c.ctx, m.id, old.id); err != nil {
		t.Fatalf("DeleteRestorePoint of the point a test runs from: %v", err)
	}
	m.points = slices.DeleteFunc(m.points, func(p *pointModel) bool { return p == old })
	c.checkList(t, m)
	c.verify(t, m, "replicating while tests run")
	c.checkTestDisks(t, tf, idOld, oldDisks, "after replication went on")
	c.checkTestDisks(t, tf, idNew, newDisks, "after replication went on")

	// What a test VM writes stays in it.
	if c.fx.WriteTest != nil {
		data := randomBytes(c.rng, 64<<10)
		off := int64(len(newDisks[0])) / 3
		c.fx.WriteTest(t, idNew, 0, off, data)
		copy(newDisks[0][off:], data)
		c.checkTestDisks(t, tf, idNew, newDisks, "after the test VM wrote")
		c.verify(t, m, "after a test VM wrote")
		c.checkWorking(t, m, "after a test VM wrote")
	}

	for _, id := range []string{idOld, idNew} {
		if err := tf.StopTest(c.ctx, id); err != nil {
			t.Fatalf("StopTest(%q): %v", id, err)
		}
		if l := c.listed(t, tf, id); l != nil {
			t.Errorf("ListTests lists test %q after StopTest: %+v", id, l)
		}
		_, err := tf.OpenTestDisk(c.ctx, id, 0)
		wantClass(t, "OpenTestDisk of a stopped test", err, errdefs.ErrNotFound)
		if err := tf.StopTest(c.ctx, id); err != nil {
			t.Errorf("StopTest of a stopped test: %v, want success", err)
		}
	}
	c.wantState(t, m, sdk.ReplicaReady)
	c.checkList(t, m)
	c.verify(t, m, "after the tests stopped")
	c.checkWorking(t, m, "after the tests stopped")
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.verify(t, m, "replicating after the tests stopped")
}

// testFailoverRefusals checks what StartTest refuses, and that a refused
// start leaves no test behind.
func (c *targetCheck) testFailoverRefusals(t *testing.T) {
	tf := c.tests(t)
	m := c.newReplica(t, "test-refusals")
	var net sdk.NetworkConfig
	for _, nic := range c.fx.VM.NICs {
		net.NetworkMap = append(net.NetworkMap, sdk.NetworkMapping{From: nic.Network, To: testNetwork})
	}
	id := uniqueName(c.rng, "test-refused")
	_, err := tf.StartTest(c.ctx, sdk.TestRequest{ID: id, Replica: m.id, Network: net})
	wantClass(t, "StartTest of a replica without restore points", err, errdefs.ErrFailedPrecondition)
	c.overwrite(t, m)
	c.point(t, m, nil)
	for _, bad := range []string{"", "../escape", "a/b", ".hidden", string(make([]byte, sdk.MaxTestIDLength+1))} {
		_, err := tf.StartTest(c.ctx, sdk.TestRequest{ID: bad, Replica: m.id, Network: net})
		wantClass(t, fmt.Sprintf("StartTest with id %q", bad), err, errdefs.ErrInvalidArgument)
	}
	_, err = tf.StartTest(c.ctx, sdk.TestRequest{ID: id, Replica: uniqueName(c.rng, "no-such-replica"), Network: net})
	wantClass(t, "StartTest of an unknown replica", err, errdefs.ErrNotFound)
	_, err = tf.StartTest(c.ctx, sdk.TestRequest{ID: id, Replica: m.id, Point: "no-such-point", Network: net})
	wantClass(t, "StartTest of an unknown restore point", err, errdefs.ErrNotFound)
	if c.fx.IsolatedNetwork == "" {
		_, err = tf.StartTest(c.ctx, sdk.TestRequest{ID: id, Replica: m.id})
		wantClass(t, "StartTest with unmapped networks on a target without an isolated network", err, errdefs.ErrFailedPrecondition)
	}
	if l := c.listed(t, tf, id); l != nil {
		t.Errorf("refused starts left test %q behind: %+v", id, l)
	}
	_, err = tf.OpenTestDisk(c.ctx, id, 0)
	wantClass(t, "OpenTestDisk of an unknown test", err, errdefs.ErrNotFound)
	if err := tf.StopTest(c.ctx, id); err != nil {
		t.Errorf("StopTest of an unknown test: %v, want success", err)
	}
	// A test does not stop a failover, nor the other way round.
	v := c.startTest(t, tf, sdk.TestRequest{ID: id, Replica: m.id, Network: net})
	c.failover(t, m, "", sdk.NetworkConfig{})
	if _, err := c.tgt.UndoFailover(c.ctx, m.id); err != nil {
		t.Fatalf("UndoFailover while a test runs: %v", err)
	}
	c.checkTestDisks(t, tf, v.ID, m.points[0].disks, "after a failover and its undo")
}

func clone2(b [][]byte) [][]byte {
	out := make([][]byte, len(b))
	for i := range b {
		out[i] = slices.Clone(b[i])
	}
	return out
}
