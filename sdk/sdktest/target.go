package sdktest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TargetFixture is what a plugin author provides to run RunTarget.
type TargetFixture struct {
	// New returns the target under test, configured and ready. The suite
	// calls it once per check with that check's t, and again after Crash.
	// It may return the same instance every time, but the Stop check,
	// which runs last, stops what it gets.
	New func(t *testing.T) sdk.Target
	// Capabilities are what the component declares; checks of a feature it
	// does not declare are skipped.
	Capabilities sdk.Capabilities
	// VM is the source VM description replicas are made from. Its disks
	// should be small (a few MiB): checks write and read them in full.
	// The zero VM means DefaultVM().
	VM sdk.VM
	// NetworkMap maps every network of VM's NICs to a network of the
	// target, for the re-IP checks. Nil maps each network N to "N-dr".
	NetworkMap []sdk.NetworkMapping
	// Crash, when set, simulates a crash of the target: its process dies
	// without closing anything. Components New returns afterwards must
	// see what survived on storage. Nil skips the crash check and makes
	// the abandoned-writer check run without a crash.
	Crash func(t *testing.T)
	// Deadline is how long a call with a cancelled context, or Stop, may
	// take to return. Zero means 10 seconds.
	Deadline time.Duration
	// IsolatedNetwork is the network a target with the TestFailover
	// capability puts a test VM's unmapped NICs on; "" says it has none
	// and must refuse a test with a NIC its network map does not map.
	IsolatedNetwork string
	// WriteTest, when set, writes into a test VM's disk as its guest
	// would, for the check that a test's writes never reach the replica.
	WriteTest func(t *testing.T, id string, disk int, off int64, data []byte)
	// MakeVM makes a VM on the target that is no replica, named name, with
	// a disk holding each of disks, for the checks of a target with the
	// MapReplicas capability (which then require it).
	MakeVM func(t *testing.T, name string, disks [][]byte)
	// WriteFailedOver, when set, writes into a failed-over replica's disk
	// (named by the replica's name) as its guest would, for the check that
	// a target with the Failback capability reports what it wrote.
	WriteFailedOver func(t *testing.T, replica string, disk int, off int64, data []byte)
}

// DefaultVM is the VM TargetFixture uses when it names none: two small
// disks, one of a size that is no multiple of 4 KiB, and two NICs with IPv4
// and IPv6 addresses.
func DefaultVM() sdk.VM {
	return sdk.VM{
		ID: "vm-sdktest", Name: "sdktest-vm", CPUs: 2, MemoryMiB: 2048, Firmware: "efi", GuestOS: "linux",
		Folder: "/sdktest/vm", Tags: []string{"conformance", "tier/gold"},
		Disks: []sdk.Disk{
			{Index: 0, Name: "system", Capacity: 2 << 20, Controller: "scsi0:0", Thin: true},
			{Index: 1, Name: "data", Capacity: 1<<20 + 5<<10, Controller: "scsi0:1"},
		},
		NICs: []sdk.NIC{
			{Index: 0, Network: "prod-lan", MAC: "00:50:56:00:00:01", Addresses: []string{"10.1.0.5/24"}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.53"}},
			{Index: 1, Network: "prod-backup", MAC: "00:50:56:00:00:02", Addresses: []string{"172.16.3.7/16", "fd00:1::7/64"}, Gateway: "172.16.0.1"},
		},
	}
}

// RunTarget runs the conformance checks of a Target, each as a subtest of
// t. See the package documentation for the list.
func RunTarget(t *testing.T, fx TargetFixture) {
	if fx.New == nil {
		t.Fatal("sdktest: TargetFixture needs New")
	}
	if len(fx.VM.Disks) == 0 {
		fx.VM = DefaultVM()
	}
	checks := []struct {
		name string
		run  func(c *targetCheck, t *testing.T)
	}{
		{"Placement", (*targetCheck).placement},
		{"ReplicaCreateIdempotent", (*targetCheck).replicaIdempotent},
		{"ReplicaGet", (*targetCheck).replicaGet},
		{"ReplicaUnknown", (*targetCheck).replicaUnknown},
		{"ReplicaOwnerAndIncarnation", (*targetCheck).replicaOwner},
		{"ReplicaDelete", (*targetCheck).replicaDelete},
		{"WriterPastEnd", (*targetCheck).writerPastEnd},
		{"RestorePointReadBack", (*targetCheck).pointReadBack},
		{"RestorePointList", (*targetCheck).pointList},
		{"WorkingState", (*targetCheck).workingState},
		{"RestorePointUnknown", (*targetCheck).pointUnknown},
		{"DiskGrow", (*targetCheck).diskGrow},
		{"DescribedWhileWritten", (*targetCheck).describedWhileWritten},
		{"DeleteOldestPoint", func(c *targetCheck, t *testing.T) { c.deletePoint(t, 0) }},
		{"DeleteMiddlePoint", func(c *targetCheck, t *testing.T) { c.deletePoint(t, 1) }},
		{"AbandonedWriter", (*targetCheck).abandonedWriter},
		{"PreparedWrites", (*targetCheck).preparedWrites},
		{"FailoverUndo", (*targetCheck).failoverUndo},
		{"FailoverNewest", (*targetCheck).failoverNewest},
		{"FailoverTwice", (*targetCheck).failoverTwice},
		{"FailoverReIP", (*targetCheck).failoverReIP},
		{"ApplyNetwork", (*targetCheck).applyNetwork},
		{"CommitFailover", (*targetCheck).commitFailover},
		{"TestFailover", (*targetCheck).testFailover},
		{"TestFailoverRefusals", (*targetCheck).testFailoverRefusals},
		{"MapReplica", (*targetCheck).mapReplica},
		{"MapReplicaRefusals", (*targetCheck).mapReplicaRefusals},
		{"FailbackRead", (*targetCheck).failbackRead},
		{"CrashKeepsPoints", (*targetCheck).crash},
		{"SyncedWritesSurviveCrash", (*targetCheck).syncedWrites},
		{"Cancel", (*targetCheck).cancel},
		{"Stop", func(c *targetCheck, t *testing.T) { checkStop(t, c.tgt, c.deadline) }},
	}
	for _, check := range checks {
		t.Run(check.name, func(t *testing.T) {
			c := &targetCheck{fx: fx, ctx: t.Context(), rng: newRand(t), deadline: deadlineOr(fx.Deadline)}
			c.tgt = fx.New(t)
			check.run(c, t)
		})
	}
}

// targetCheck is the state of one check of RunTarget.
type targetCheck struct {
	fx       TargetFixture
	tgt      sdk.Target
	ctx      context.Context
	rng      *rand.Rand
	deadline time.Duration
}

// replicaModel is what the suite knows a replica must hold: its working
// state as written through closed writers, and each restore point's disks
// as they were when it was made.
type replicaModel struct {
	id, name string
	disks    [][]byte
	points   []*pointModel
}

type pointModel struct {
	id     string
	labels map[string]string
	disks  [][]byte
}

func (m *replicaModel) pointIDs() []string {
	ids := make([]string, len(m.points))
	for i, p := range m.points {
		ids[i] = p.id
	}
	return ids
}

// newReplica creates a replica of the fixture's VM, deleted when the check
// ends.
func (c *targetCheck) newReplica(t *testing.T, what string) *replicaModel {
	t.Helper()
	name := uniqueName(c.rng, what)
	owner := sdk.ReplicaOwner{Job: "job-" + what, Source: "source.test.prod", SourceVM: c.fx.VM.ID}
	r, err := c.tgt.CreateReplica(c.ctx, sdk.ReplicaRequest{Name: name, VM: c.fx.VM, Owner: owner})
	if err != nil {
		t.Fatalf("CreateReplica(%q): %v", name, err)
	}
	if r.Owner != owner {
		t.Errorf("new replica %q has owner %+v, want %+v", name, r.Owner, owner)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		if err := c.tgt.DeleteReplica(ctx, r.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("delete replica %q: %v", r.ID, err)
		}
	})
	c.checkReplica(t, r, name)
	if r.State != sdk.ReplicaReady {
		t.Errorf("new replica %q is %q, want %q", name, r.State, sdk.ReplicaReady)
	}
	m := &replicaModel{id: r.ID, name: name}
	for _, d := range c.fx.VM.Disks {
		m.disks = append(m.disks, make([]byte, d.Capacity))
	}
	return m
}

// checkReplica checks what every replica description must say.
func (c *targetCheck) checkReplica(t *testing.T, r *sdk.Replica, name string) {
	t.Helper()
	if r.ID == "" || r.Name != name {
		t.Fatalf("replica %q is described with ID %q and name %q", name, r.ID, r.Name)
	}
	if r.Incarnation == "" {
		t.Errorf("replica %q is described without an incarnation", name)
	}
	if len(r.VM.Disks) != len(c.fx.VM.Disks) {
		t.Fatalf("replica %q has %d disks, its source VM %d", name, len(r.VM.Disks), len(c.fx.VM.Disks))
	}
}

// writeDisk writes spans to a replica disk through one writer, opened with
// size, from workers goroutines (the spans must then be disjoint), and
// closes it. On success the model holds the writes.
func (c *targetCheck) writeDisk(m *replicaModel, disk int, size int64, spans []span, workers int) error {
	w, err := c.tgt.OpenReplicaDisk(c.ctx, m.id, disk, size)
	if err != nil {
		return fmt.Errorf("OpenReplicaDisk(disk %d, size %d): %w", disk, size, err)
	}
	want := max(size, int64(len(m.disks[disk])))
	if w.Size() != want {
		w.Close()
		return fmt.Errorf("OpenReplicaDisk(disk %d, size %d): writer Size %d, want %d", disk, size, w.Size(), want)
	}
	if want > int64(len(m.disks[disk])) {
		m.disks[disk] = append(m.disks[disk], make([]byte, want-int64(len(m.disks[disk])))...)
	}
	workers = max(workers, 1)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			for i := g; i < len(spans); i += workers {
				s := spans[i]
				if n, err := w.WriteAt(s.data, s.off); n != len(s.data) || err != nil {
					errs[g] = fmt.Errorf("WriteAt(%d bytes at %d) = %d, %v", len(s.data), s.off, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		w.Close()
		return fmt.Errorf("disk %d: %w", disk, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("close writer of disk %d: %w", disk, err)
	}
	apply(m.disks[disk], spans)
	return nil
}

// fill writes every disk of the replica in full, all disks at once and
// each from four goroutines: random data with zero runs.
func (c *targetCheck) fill(t *testing.T, m *replicaModel) {
	t.Helper()
	spans := make([][]span, len(m.disks))
	for d := range m.disks {
		spans[d] = fullSpans(c.rng, int64(len(m.disks[d])))
	}
	errs := make([]error, len(m.disks))
	var wg sync.WaitGroup
	for d := range m.disks {
		wg.Go(func() { errs[d] = c.writeDisk(m, d, 0, spans[d], 4) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// overwrite writes scattered data and zero runs over every disk, one write
// after the other (they overlap).
func (c *targetCheck) overwrite(t *testing.T, m *replicaModel) {
	t.Helper()
	for d := range m.disks {
		if err := c.writeDisk(m, d, 0, overwrites(c.rng, int64(len(m.disks[d]))), 1); err != nil {
			t.Fatal(err)
		}
	}
}

// fullSpans returns writes that cover [0, size) without overlapping, of
// random data with zero runs, in pieces of odd sizes.
func fullSpans(rng *rand.Rand, size int64) []span {
	data := randomBytes(rng, int(size))
	addZeroRuns(rng, data)
	var spans []span
	for off := int64(0); off < size; {
		n := min(size-off, 1+rng.Int64N(300<<10))
		spans = append(spans, span{off: off, data: data[off : off+n]})
		off += n
	}
	return spans
}

// overwrites returns overlapping writes: random data in awkward places and
// zero runs over what was there.
func overwrites(rng *rand.Rand, size int64) []span {
	spans := scattered(rng, size, 12)
	for range 4 {
		z := randomSpan(rng, size, 100_000)
		clear(z.data)
		spans = append(spans, z)
	}
	rng.Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
	return spans
}

// point creates a restore point and records what it must hold.
func (c *targetCheck) point(t *testing.T, m *replicaModel, labels map[string]string) *pointModel {
	t.Helper()
	rp, err := c.tgt.CreateRestorePoint(c.ctx, m.id, labels)
	if err != nil {
		t.Fatalf("CreateRestorePoint: %v", err)
	}
	if rp.ID == "" {
		t.Fatal("CreateRestorePoint returned a point without an ID")
	}
	if !sameLabels(rp.Labels, labels) {
		t.Errorf("CreateRestorePoint returned labels %v, want %v", rp.Labels, labels)
	}
	p := &pointModel{id: rp.ID, labels: labels}
	for _, d := range m.disks {
		p.disks = append(p.disks, slices.Clone(d))
	}
	m.points = append(m.points, p)
	return p
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// readPoint reads a disk of a restore point in full, checking its size.
func (c *targetCheck) readPoint(m *replicaModel, p *pointModel, disk int) ([]byte, error) {
	r, err := c.tgt.OpenRestorePointDisk(c.ctx, m.id, p.id, disk)
	if err != nil {
		return nil, fmt.Errorf("OpenRestorePointDisk(point %q, disk %d): %w", p.id, disk, err)
	}
	if r.Size() != int64(len(p.disks[disk])) {
		r.Close()
		return nil, fmt.Errorf("restore point %q disk %d has size %d, want %d", p.id, disk, r.Size(), len(p.disks[disk]))
	}
	data, err := readAll(r, r.Size())
	if cerr := r.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close: %w", cerr)
	}
	if err != nil {
		return nil, fmt.Errorf("read restore point %q disk %d: %w", p.id, disk, err)
	}
	return data, nil
}

// verify reads every disk of every restore point of the model and compares
// it with what it must hold.
func (c *targetCheck) verify(t *testing.T, m *replicaModel, when string) {
	t.Helper()
	for i, p := range m.points {
		for d := range p.disks {
			got, err := c.readPoint(m, p, d)
			if err != nil {
				t.Errorf("%s: %v", when, err)
				continue
			}
			if msg := diffBytes(got, p.disks[d], 0); msg != "" {
				t.Errorf("%s: restore point %d (%q) disk %d does not read back what was written: %s", when, i+1, p.id, d, msg)
			}
		}
	}
}

// checkList compares ListRestorePoints with the model: the same points,
// oldest first, with their labels and disk sizes.
func (c *targetCheck) checkList(t *testing.T, m *replicaModel) {
	t.Helper()
	points, err := c.tgt.ListRestorePoints(c.ctx, m.id)
	if err != nil {
		t.Fatalf("ListRestorePoints: %v", err)
	}
	ids := make([]string, len(points))
	for i, p := range points {
		ids[i] = p.ID
	}
	if !slices.Equal(ids, m.pointIDs()) {
		t.Fatalf("ListRestorePoints = %q, want %q (oldest first)", ids, m.pointIDs())
	}
	for i, p := range points {
		want := m.points[i]
		if !sameLabels(p.Labels, want.labels) {
			t.Errorf("restore point %q has labels %v, want %v", p.ID, p.Labels, want.labels)
		}
		if i > 0 && p.Created.Before(points[i-1].Created) {
			t.Errorf("restore point %q was created at %v, before the one listed ahead of it (%v)", p.ID, p.Created, points[i-1].Created)
		}
		if len(p.Disks) != len(want.disks) {
			t.Errorf("restore point %q describes %d disks, want %d", p.ID, len(p.Disks), len(want.disks))
			continue
		}
		for d, sd := range p.Disks {
			if sd.Index != d || sd.Capacity != int64(len(want.disks[d])) {
				t.Errorf("restore point %q disk %d is described as %+v, want index %d and capacity %d", p.ID, d, sd, d, len(want.disks[d]))
			}
		}
	}
}

func (c *targetCheck) placement(t *testing.T) {
	p, err := c.tgt.GetPlacement(c.ctx)
	if err != nil || p == nil {
		t.Fatalf("GetPlacement = %v, %v", p, err)
	}
}

func (c *targetCheck) replicaIdempotent(t *testing.T) {
	m := c.newReplica(t, "idempotent")
	again, err := c.tgt.CreateReplica(c.ctx, sdk.ReplicaRequest{Name: m.name, VM: c.fx.VM})
	if err != nil {
		t.Fatalf("CreateReplica of an existing name: %v, want the existing replica", err)
	}
	if again.ID != m.id {
		t.Errorf("CreateReplica of an existing name made replica %q, want the existing %q", again.ID, m.id)
	}
	list, err := c.tgt.ListReplicas(c.ctx)
	if err != nil {
		t.Fatalf("ListReplicas: %v", err)
	}
	n := 0
	for _, r := range list {
		if r.Name == m.name {
			n++
		}
	}
	if n != 1 {
		t.Errorf("ListReplicas lists %d replicas named %q, want 1", n, m.name)
	}
}

// replicaOwner checks that a replica keeps the owner it was created with,
// that an ownerless one is adopted by the first owner that asks, and that a
// replica created again under the same name has a new incarnation.
func (c *targetCheck) replicaOwner(t *testing.T) {
	name := uniqueName(c.rng, "owner")
	a := sdk.ReplicaOwner{Job: "job-a", Source: "source.test.a", SourceVM: "vm-a"}
	b := sdk.ReplicaOwner{Job: "job-b", Source: "source.test.b", SourceVM: "vm-b"}
	create := func(owner sdk.ReplicaOwner) *sdk.Replica {
		t.Helper()
		r, err := c.tgt.CreateReplica(c.ctx, sdk.ReplicaRequest{Name: name, VM: c.fx.VM, Owner: owner})
		if err != nil {
			t.Fatalf("CreateReplica(%q, owner %+v): %v", name, owner, err)
		}
		c.checkReplica(t, r, name)
		return r
	}
	remove := func(id string) {
		t.Helper()
		if err := c.tgt.DeleteReplica(c.ctx, id); err != nil {
			t.Fatalf("DeleteReplica(%q): %v", id, err)
		}
	}
	// Created without an owner (as before owners existed), then adopted.
	first := create(sdk.ReplicaOwner{})
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		if err := c.tgt.DeleteReplica(ctx, name); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("delete replica %q: %v", name, err)
		}
	})
	if !first.Owner.IsZero() {
		t.Errorf("replica created without an owner has owner %+v", first.Owner)
	}
	if got := create(a); got.ID != first.ID || got.Owner != a {
		t.Errorf("CreateReplica(owner a) of an ownerless replica = %q owned by %+v, want %q adopted by %+v", got.ID, got.Owner, first.ID, a)
	}
	if got := create(b); got.ID != first.ID || got.Owner != a {
		t.Errorf("CreateReplica(owner b) of a replica owned by a = %q owned by %+v, want %q still owned by %+v", got.ID, got.Owner, first.ID, a)
	}
	got, err := c.tgt.GetReplica(c.ctx, first.ID)
	if err != nil {
		t.Fatalf("GetReplica(%q): %v", first.ID, err)
	}
	if got.Owner != a || got.Incarnation != first.Incarnation {
		t.Errorf("GetReplica = owner %+v incarnation %q, want %+v and %q", got.Owner, got.Incarnation, a, first.Incarnation)
	}
	list, err := c.tgt.ListReplicas(c.ctx)
	if err != nil {
		t.Fatalf("ListReplicas: %v", err)
	}
	found := false
	for _, r := range list {
		if r.ID == first.ID {
			found = true
			if r.Owner != a || r.Incarnation != first.Incarnation {
				t.Errorf("ListReplicas describes %q with owner %+v incarnation %q, want %+v and %q", r.ID, r.Owner, r.Incarnation, a, first.Incarnation)
			}
		}
	}
	if !found {
		t.Errorf("ListReplicas does not list %q", first.ID)
	}
	// Deleted and created again under the same name: a new incarnation,
	// whatever the ID.
	remove(first.ID)
	again := create(b)
	if again.Incarnation == first.Incarnation {
		t.Errorf("a replica created again under the name %q has the deleted one's incarnation %q", name, again.Incarnation)
	}
	if again.Owner != b {
		t.Errorf("a replica created again with owner %+v has owner %+v", b, again.Owner)
	}
}

func (c *targetCheck) replicaGet(t *testing.T) {
	m := c.newReplica(t, "get")
	for _, key := range []string{m.id, m.name} {
		r, err := c.tgt.GetReplica(c.ctx, key)
		if err != nil {
			t.Fatalf("GetReplica(%q): %v", key, err)
		}
		c.checkReplica(t, r, m.name)
		if r.ID != m.id {
			t.Errorf("GetReplica(%q) returned replica %q, want %q", key, r.ID, m.id)
		}
		for d, disk := range r.VM.Disks {
			if disk.Capacity != c.fx.VM.Disks[d].Capacity {
				t.Errorf("GetReplica(%q): disk %d has capacity %d, want %d", key, d, disk.Capacity, c.fx.VM.Disks[d].Capacity)
			}
		}
	}
}

func (c *targetCheck) replicaUnknown(t *testing.T) {
	_, err := c.tgt.GetReplica(c.ctx, uniqueName(c.rng, "no-such-replica"))
	wantClass(t, "GetReplica of an unknown replica", err, errdefs.ErrNotFound)
}

func (c *targetCheck) replicaDelete(t *testing.T) {
	m := c.newReplica(t, "delete")
	c.overwrite(t, m)
	c.point(t, m, nil)
	if err := c.tgt.DeleteReplica(c.ctx, m.id); err != nil {
		t.Fatalf("DeleteReplica: %v", err)
	}
	_, err := c.tgt.GetReplica(c.ctx, m.id)
	wantClass(t, "GetReplica after DeleteReplica", err, errdefs.ErrNotFound)
	list, err := c.tgt.ListReplicas(c.ctx)
	if err != nil {
		t.Fatalf("ListReplicas: %v", err)
	}
	for _, r := range list {
		if r.ID == m.id {
			t.Errorf("ListReplicas lists replica %q after DeleteReplica", m.id)
		}
	}
}

// writerPastEnd checks that a write past the end of a disk fails instead
// of growing the disk: only OpenReplicaDisk grows disks.
func (c *targetCheck) writerPastEnd(t *testing.T) {
	m := c.newReplica(t, "past-end")
	last := len(m.disks) - 1
	w, err := c.tgt.OpenReplicaDisk(c.ctx, m.id, last, 0)
	if err != nil {
		t.Fatalf("OpenReplicaDisk: %v", err)
	}
	size := w.Size()
	if n, err := w.WriteAt([]byte{1, 2}, size-1); err == nil {
		t.Errorf("WriteAt(2 bytes at %d, across the end) = %d, nil; want an error", size-1, n)
	}
	if n, err := w.WriteAt([]byte{1}, size); err == nil {
		t.Errorf("WriteAt(1 byte at the end, %d) = %d, nil; want an error", size, n)
	}
	w.Close() // a writer that saw errors may report them again
	rp, err := c.tgt.CreateRestorePoint(c.ctx, m.id, nil)
	if err != nil {
		t.Fatalf("CreateRestorePoint: %v", err)
	}
	r, err := c.tgt.OpenRestorePointDisk(c.ctx, m.id, rp.ID, last)
	if err != nil {
		t.Fatalf("OpenRestorePointDisk: %v", err)
	}
	defer closeDisk(t, r, "restore point disk")
	if r.Size() != int64(len(m.disks[last])) {
		t.Errorf("after writes past the end, disk %d has size %d, want %d", last, r.Size(), len(m.disks[last]))
	}
}

func (c *targetCheck) pointReadBack(t *testing.T) {
	m := c.newReplica(t, "read-back")
	c.fill(t, m)
	c.point(t, m, map[string]string{"sdktest": "first"})
	c.overwrite(t, m)
	c.point(t, m, map[string]string{"sdktest": "second"})
	c.verify(t, m, "two restore points")
	for d := range m.disks {
		r, err := c.tgt.OpenRestorePointDisk(c.ctx, m.id, m.points[1].id, d)
		if err != nil {
			t.Fatalf("OpenRestorePointDisk: %v", err)
		}
		checkReadPastEnd(t, r, m.points[1].disks[d])
		closeDisk(t, r, "restore point disk")
	}
}

// workingState: an empty point opens what the replica holds now, before
// and after a restore point.
func (c *targetCheck) workingState(t *testing.T) {
	m := c.newReplica(t, "working-state")
	check := func(when string) {
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
				t.Errorf("%s: the working state of disk %d does not read back what was written: %s", when, d, msg)
			}
		}
	}
	c.fill(t, m)
	check("before any restore point")
	c.point(t, m, nil)
	c.overwrite(t, m)
	check("after a restore point and more writes")
	c.verify(t, m, "after reading the working state")
}

func (c *targetCheck) pointList(t *testing.T) {
	m := c.newReplica(t, "list")
	labels := []map[string]string{
		{"job": "nightly/db", "note": "ünïcode, spaces and = signs", "empty": ""},
		nil,
		{"sdktest": "third"},
	}
	for _, l := range labels {
		c.overwrite(t, m)
		c.point(t, m, l)
	}
	c.checkList(t, m)
}

func (c *targetCheck) pointUnknown(t *testing.T) {
	m := c.newReplica(t, "unknown-point")
	c.point(t, m, nil)
	_, err := c.tgt.OpenRestorePointDisk(c.ctx, m.id, uniqueName(c.rng, "no-such-point"), 0)
	wantClass(t, "OpenRestorePointDisk of an unknown restore point", err, errdefs.ErrNotFound)
	_, err = c.tgt.OpenRestorePointDisk(c.ctx, uniqueName(c.rng, "no-such-replica"), m.points[0].id, 0)
	wantClass(t, "OpenRestorePointDisk of an unknown replica", err, errdefs.ErrNotFound)
}

func (c *targetCheck) diskGrow(t *testing.T) {
	m := c.newReplica(t, "grow")
	c.fill(t, m)
	c.point(t, m, nil)
	old := int64(len(m.disks[0]))
	grown := old + 1<<20
	tail := min(old, 1000)
	spans := []span{
		{off: old - tail, data: randomBytes(c.rng, int(tail)+5000)}, // across the old end
		{off: grown - 300, data: randomBytes(c.rng, 300)},           // at the new end
	}
	if err := c.writeDisk(m, 0, grown, spans, 1); err != nil {
		t.Fatal(err)
	}
	c.point(t, m, nil)
	// Asking for a smaller size never shrinks a disk.
	if err := c.writeDisk(m, 0, old, nil, 1); err != nil {
		t.Fatal(err)
	}
	c.verify(t, m, "after growing disk 0")
	c.checkList(t, m)
}

// describedWhileWritten asks for a replica, the replicas and its points
// while a writer grows and fills disk 0, one synced write into each MiB:
// a control plane looks replicas up while other sessions write them, and
// a target that reads a disk's metadata from its file while the writer
// extends it must still describe it whole. The writes read back after.
func (c *targetCheck) describedWhileWritten(t *testing.T) {
	m := c.newReplica(t, "described-while-written")
	const mib = 1 << 20
	size := max(int64(len(m.disks[0])), 24*mib)
	w, err := c.tgt.OpenReplicaDisk(c.ctx, m.id, 0, size)
	if err != nil {
		t.Fatalf("OpenReplicaDisk(disk 0, size %d): %v", size, err)
	}
	m.disks[0] = append(m.disks[0], make([]byte, size-int64(len(m.disks[0])))...)
	var spans []span
	for off := int64(0); off+4096 <= size; off += mib {
		spans = append(spans, span{off: off + mib/2, data: randomBytes(c.rng, 4096)})
	}
	describe := func() error {
		r, err := c.tgt.GetReplica(c.ctx, m.id)
		if err != nil {
			return fmt.Errorf("GetReplica: %w", err)
		}
		if len(r.VM.Disks) != len(m.disks) {
			return fmt.Errorf("GetReplica describes %d disks, want %d", len(r.VM.Disks), len(m.disks))
		}
		if _, err := c.tgt.ListReplicas(c.ctx); err != nil {
			return fmt.Errorf("ListReplicas: %w", err)
		}
		if _, err := c.tgt.ListRestorePoints(c.ctx, m.id); err != nil {
			return fmt.Errorf("ListRestorePoints: %w", err)
		}
		return nil
	}
	// Once before the first write and once after the last, the writer
	// open both times, and as often as it can meanwhile.
	if err := describe(); err != nil {
		w.Close()
		t.Fatalf("with a writer open on disk 0: %v", err)
	}
	written := make(chan error, 1)
	go func() {
		for _, sp := range spans {
			if _, err := w.WriteAt(sp.data, sp.off); err != nil {
				written <- fmt.Errorf("WriteAt(%d bytes at %d): %w", len(sp.data), sp.off, err)
				return
			}
			if err := w.Sync(); err != nil {
				written <- fmt.Errorf("Sync after the write at %d: %w", sp.off, err)
				return
			}
		}
		written <- nil
	}()
	var werr, derr error
	for asked := 0; ; asked++ {
		select {
		case werr = <-written:
		default:
			if derr = describe(); derr == nil {
				continue
			}
			derr = fmt.Errorf("after %d answers: %w", asked, derr)
			werr = <-written
		}
		break
	}
	if derr == nil {
		derr = describe()
	}
	if err := w.Close(); werr == nil && err != nil {
		werr = fmt.Errorf("close: %w", err)
	}
	if werr != nil {
		t.Fatalf("writing disk 0: %v", werr)
	}
	if derr != nil {
		t.Fatalf("while disk 0 was written: %v", derr)
	}
	apply(m.disks[0], spans)
	c.point(t, m, nil)
	c.verify(t, m, "after writes made while the replica was described")
}

// deletePoint makes three points and deletes the one at index i.
func (c *targetCheck) deletePoint(t *testing.T, i int) {
	m := c.newReplica(t, "delete-point")
	c.fill(t, m)
	c.point(t, m, nil)
	for range 2 {
		c.overwrite(t, m)
		c.point(t, m, nil)
	}
	gone := m.points[i]
	if err := c.tgt.DeleteRestorePoint(c.ctx, m.id, gone.id); err != nil {
		t.Fatalf("DeleteRestorePoint(%q): %v", gone.id, err)
	}
	m.points = slices.Delete(m.points, i, i+1)
	c.checkList(t, m)
	// Deleting it again deletes nothing, and says so with no error or
	// "not found": ferry's retention takes either for a point gone
	// already (deleted by an operator while a run ran).
	if err := c.tgt.DeleteRestorePoint(c.ctx, m.id, gone.id); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("DeleteRestorePoint of a point deleted already: %v, want no error or one of class %q", err, errdefs.Class(errdefs.ErrNotFound))
	}
	c.checkList(t, m)
	c.verify(t, m, fmt.Sprintf("after deleting restore point %d of 3", i+1))
	// Replication goes on after the deletion.
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.verify(t, m, "after a new point")
}

// abandonedWriter leaves a writer unclosed (and crashes, when the fixture
// can), then replicates again through a new writer: no restore point may
// change, and the new point holds the new writes.
func (c *targetCheck) abandonedWriter(t *testing.T) {
	m := c.newReplica(t, "abandoned")
	c.fill(t, m)
	c.point(t, m, nil)

	size := int64(len(m.disks[0]))
	abandoned := randomSpan(c.rng, size, 256<<10)
	w, err := c.tgt.OpenReplicaDisk(c.ctx, m.id, 0, 0)
	if err != nil {
		t.Fatalf("OpenReplicaDisk: %v", err)
	}
	if _, err := w.WriteAt(abandoned.data, abandoned.off); err != nil {
		t.Fatalf("WriteAt: %v", err)
	}
	if c.fx.Crash != nil {
		c.fx.Crash(t)
		c.tgt = c.fx.New(t)
	}
	// The new writes cover the middle of the abandoned range and more.
	mid := abandoned.off + int64(len(abandoned.data))/4
	again := []span{{off: mid, data: randomBytes(c.rng, len(abandoned.data)/2+1)}, randomSpan(c.rng, size, 64<<10)}
	again[0].data = again[0].data[:min(int64(len(again[0].data)), size-mid)]
	before := slices.Clone(m.disks[0])
	if err := c.writeDisk(m, 0, 0, again, 1); err != nil {
		t.Fatal(err)
	}
	p2 := c.point(t, m, nil)

	// Unclosed writes are not durable: each of their bytes that no later
	// write covers may hold the old data or the abandoned data.
	got, err := c.readPoint(m, p2, 0)
	if err != nil {
		t.Fatal(err)
	}
	overwritten := make([]bool, size)
	for _, s := range again {
		for i := s.off; i < s.end(); i++ {
			overwritten[i] = true
		}
	}
	same := bytes.Equal(got, p2.disks[0])
	for i := 0; !same && i < len(got); i++ {
		off := int64(i)
		in := off >= abandoned.off && off < abandoned.end() && !overwritten[i]
		if got[i] == p2.disks[0][i] || (in && got[i] == abandoned.data[off-abandoned.off]) {
			continue
		}
		t.Fatalf("restore point after an abandoned writer: byte %d is %#x, want %#x (before: %#x; inside the abandoned write and no later one: %v)",
			i, got[i], p2.disks[0][i], before[i], in)
	}
	p2.disks[0] = got
	m.disks[0] = slices.Clone(got)
	c.verify(t, m, "after an abandoned writer")

	// Closing the abandoned writer at last changes no restore point.
	w.Close()
	c.verify(t, m, "after closing the abandoned writer late")
}

// preparedWrites: a replica writer that prepares writes (sdk.WritePreparer)
// keeps every restore point whole when the prepared ranges are then written
// in its file by someone else (LocalPather: the check writes the file
// itself) or through the writer (a host's writer that writes the file in
// its own process), and refuses to change points while it is open.
func (c *targetCheck) preparedWrites(t *testing.T) {
	m := c.newReplica(t, "prepared")
	c.fill(t, m)
	c.point(t, m, nil)
	c.overwrite(t, m)
	c.point(t, m, nil)

	w, err := c.tgt.OpenReplicaDisk(c.ctx, m.id, 0, 0)
	if err != nil {
		t.Fatalf("OpenReplicaDisk: %v", err)
	}
	defer w.Close()
	wp, ok := w.(sdk.WritePreparer)
	if !ok {
		t.Skip("the writer of a replica with restore points does not prepare writes (sdk.WritePreparer)")
	}
	spans := scattered(c.rng, int64(len(m.disks[0])), 16)
	slices.SortFunc(spans, func(a, b span) int { return int(a.off - b.off) })
	var es []sdk.Extent
	for _, s := range spans {
		es = append(es, sdk.Extent{Offset: s.off, Length: int64(len(s.data))})
	}
	if err := wp.PrepareWrites(es); err != nil {
		t.Fatalf("PrepareWrites: %v", err)
	}
	if _, err := c.tgt.CreateRestorePoint(c.ctx, m.id, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("CreateRestorePoint while a writer with prepared writes is open: %v, want ErrFailedPrecondition", err)
	}
	if lp, ok := w.(sdk.LocalPather); ok {
		f, err := os.OpenFile(lp.LocalPath(), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range spans {
			if _, err := f.WriteAt(s.data, s.off); err != nil {
				t.Fatal(err)
			}
		}
		if err := errors.Join(f.Sync(), f.Close()); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, s := range spans {
			if n, err := w.WriteAt(s.data, s.off); n != len(s.data) || err != nil {
				t.Fatalf("WriteAt(%d bytes at %d) of a prepared range = %d, %v", len(s.data), s.off, n, err)
			}
		}
	}
	// Earlier points are whole while the writer is still open.
	c.verify(t, m, "after prepared writes, writer open")
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	apply(m.disks[0], spans)
	c.point(t, m, nil)
	c.verify(t, m, "after prepared writes")
}

// failover fails over and checks the replica says so.
func (c *targetCheck) failover(t *testing.T, m *replicaModel, point string, net sdk.NetworkConfig) *sdk.Replica {
	t.Helper()
	r, err := c.tgt.Failover(c.ctx, sdk.FailoverRequest{Replica: m.id, Point: point, Network: net})
	if err != nil {
		t.Fatalf("Failover(point %q): %v", point, err)
	}
	want := point
	if want == "" {
		want = m.points[len(m.points)-1].id
	}
	if r.State != sdk.ReplicaFailedOver || r.FailoverPoint != want {
		t.Fatalf("after Failover(point %q) the replica is %q from point %q, want %q from %q", point, r.State, r.FailoverPoint, sdk.ReplicaFailedOver, want)
	}
	return r
}

// wantState checks the replica's state as GetReplica reports it.
func (c *targetCheck) wantState(t *testing.T, m *replicaModel, state sdk.ReplicaState) *sdk.Replica {
	t.Helper()
	r, err := c.tgt.GetReplica(c.ctx, m.id)
	if err != nil {
		t.Fatalf("GetReplica: %v", err)
	}
	if r.State != state {
		t.Errorf("GetReplica says the replica is %q, want %q", r.State, state)
	}
	return r
}

func (c *targetCheck) failoverUndo(t *testing.T) {
	m := c.newReplica(t, "failover-undo")
	c.fill(t, m)
	c.point(t, m, nil)
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.failover(t, m, m.points[0].id, sdk.NetworkConfig{})
	if r := c.wantState(t, m, sdk.ReplicaFailedOver); r.FailoverPoint != m.points[0].id {
		t.Errorf("GetReplica says the replica runs from point %q, want %q", r.FailoverPoint, m.points[0].id)
	}
	c.verify(t, m, "while failed over")
	r, err := c.tgt.UndoFailover(c.ctx, m.id)
	if err != nil {
		t.Fatalf("UndoFailover: %v", err)
	}
	if r.State != sdk.ReplicaReady {
		t.Errorf("after UndoFailover the replica is %q, want %q", r.State, sdk.ReplicaReady)
	}
	c.wantState(t, m, sdk.ReplicaReady)
	c.checkList(t, m)
	c.verify(t, m, "after UndoFailover")
	// Replication goes on.
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.verify(t, m, "replicating after UndoFailover")
}

func (c *targetCheck) failoverNewest(t *testing.T) {
	m := c.newReplica(t, "failover-newest")
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.failover(t, m, "", sdk.NetworkConfig{})
	if _, err := c.tgt.UndoFailover(c.ctx, m.id); err != nil {
		t.Fatalf("UndoFailover: %v", err)
	}
}

func (c *targetCheck) failoverTwice(t *testing.T) {
	m := c.newReplica(t, "failover-twice")
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.failover(t, m, m.points[0].id, sdk.NetworkConfig{})
	_, err := c.tgt.Failover(c.ctx, sdk.FailoverRequest{Replica: m.id, Point: m.points[0].id})
	wantClass(t, "Failover of a failed-over replica", err, errdefs.ErrFailedPrecondition)
	c.wantState(t, m, sdk.ReplicaFailedOver)
	if _, err := c.tgt.UndoFailover(c.ctx, m.id); err != nil {
		t.Fatalf("UndoFailover: %v", err)
	}
}

func (c *targetCheck) commitFailover(t *testing.T) {
	m := c.newReplica(t, "commit")
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.failover(t, m, "", sdk.NetworkConfig{})
	r, err := c.tgt.CommitFailover(c.ctx, m.id)
	if err != nil {
		t.Fatalf("CommitFailover: %v", err)
	}
	if r.State != sdk.ReplicaCommitted {
		t.Errorf("after CommitFailover the replica is %q, want %q", r.State, sdk.ReplicaCommitted)
	}
	c.wantState(t, m, sdk.ReplicaCommitted)
}

func (c *targetCheck) needReIP(t *testing.T) {
	t.Helper()
	if !c.fx.Capabilities.ReIP {
		t.Skip("capability ReIP not declared")
	}
}

func (c *targetCheck) failoverReIP(t *testing.T) {
	c.needReIP(t)
	net, want := c.network(t)
	m := c.newReplica(t, "re-ip")
	c.overwrite(t, m)
	c.point(t, m, nil)
	before := c.wantState(t, m, sdk.ReplicaReady)
	r := c.failover(t, m, "", net)
	if msg := diffNICs(r.VM.NICs, want); msg != "" {
		t.Errorf("Failover with a network map and re-IP rules: %s", msg)
	}
	if msg := diffNICs(c.wantState(t, m, sdk.ReplicaFailedOver).VM.NICs, want); msg != "" {
		t.Errorf("GetReplica after Failover with re-IP rules: %s", msg)
	}
	undone, err := c.tgt.UndoFailover(c.ctx, m.id)
	if err != nil {
		t.Fatalf("UndoFailover: %v", err)
	}
	if msg := diffNICs(undone.VM.NICs, before.VM.NICs); msg != "" {
		t.Errorf("UndoFailover did not return the network settings to what they were: %s", msg)
	}
}

func (c *targetCheck) applyNetwork(t *testing.T) {
	c.needReIP(t)
	net, want := c.network(t)
	m := c.newReplica(t, "apply-network")
	r, err := c.tgt.ApplyNetwork(c.ctx, m.id, net)
	if err != nil {
		t.Fatalf("ApplyNetwork: %v", err)
	}
	if msg := diffNICs(r.VM.NICs, want); msg != "" {
		t.Errorf("ApplyNetwork: %s", msg)
	}
	if msg := diffNICs(c.wantState(t, m, sdk.ReplicaReady).VM.NICs, want); msg != "" {
		t.Errorf("GetReplica after ApplyNetwork: %s", msg)
	}
}

// network returns a network configuration for the fixture's VM and the
// NICs a replica must have once it is applied: every network mapped, every
// address moved into the next subnet of its size with the host part kept,
// the gateway and DNS server set from the rule that moved the NIC's first
// moved address. A rule that matches nothing comes first and must change
// nothing.
func (c *targetCheck) network(t *testing.T) (sdk.NetworkConfig, []sdk.NIC) {
	t.Helper()
	var net sdk.NetworkConfig
	net.NetworkMap = c.fx.NetworkMap
	mapped := map[string]string{}
	for _, nic := range c.fx.VM.NICs {
		if _, ok := mapped[nic.Network]; !ok && c.fx.NetworkMap == nil {
			net.NetworkMap = append(net.NetworkMap, sdk.NetworkMapping{From: nic.Network, To: nic.Network + "-dr"})
		}
		mapped[nic.Network] = nic.Network
	}
	for _, nm := range net.NetworkMap {
		if _, ok := mapped[nm.From]; ok {
			mapped[nm.From] = nm.To
		}
	}

	type rule struct {
		from, to netip.Prefix
		gateway  netip.Addr
		dns      netip.Addr
	}
	var addrs []netip.Prefix
	for _, nic := range c.fx.VM.NICs {
		for _, a := range nic.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				t.Fatalf("TargetFixture.VM NIC %d address %q: %v", nic.Index, a, err)
			}
			addrs = append(addrs, p)
		}
	}
	var rules []rule
	decoy := rule{from: netip.MustParsePrefix("198.51.100.0/24"), to: netip.MustParsePrefix("203.0.113.0/24"), gateway: netip.MustParseAddr("203.0.113.1"), dns: netip.MustParseAddr("203.0.113.2")}
	if !slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return decoy.from.Contains(p.Addr()) }) {
		rules = append(rules, decoy)
	}
	decoys := len(rules)
	// One rule per subnet of a NIC's first address.
	for _, nic := range c.fx.VM.NICs {
		if len(nic.Addresses) == 0 {
			continue
		}
		from := netip.MustParsePrefix(nic.Addresses[0]).Masked()
		if slices.ContainsFunc(rules, func(r rule) bool { return r.from == from }) {
			continue
		}
		next, ok := addHostBit(from.Addr(), from.Addr().BitLen()-from.Bits())
		if !ok || from.Bits() == 0 {
			t.Fatalf("TargetFixture.VM NIC %d: subnet %v has no next subnet to re-IP into", nic.Index, from)
		}
		gateway := next.Next()
		rules = append(rules, rule{from: from, to: netip.PrefixFrom(next, from.Bits()), gateway: gateway, dns: gateway.Next()})
	}
	if len(rules) == decoys {
		t.Fatal("TargetFixture.VM has no NIC addresses to re-IP")
	}
	for _, r := range rules {
		net.ReIP = append(net.ReIP, sdk.ReIPRule{FromSubnet: r.from.String(), ToSubnet: r.to.String(), Gateway: r.gateway.String(), DNS: []string{r.dns.String()}})
	}

	want := copyVM(c.fx.VM).NICs
	for i := range want {
		nic := &want[i]
		nic.Network = mapped[nic.Network]
		moved := false
		for j, a := range nic.Addresses {
			p := netip.MustParsePrefix(a)
			for _, r := range rules {
				if !r.from.Contains(p.Addr()) {
					continue
				}
				// The next subnet of the same size is the old one plus one
				// at its lowest network bit: adding the same to the address
				// keeps the host part.
				addr, _ := addHostBit(p.Addr(), p.Addr().BitLen()-r.from.Bits())
				nic.Addresses[j] = netip.PrefixFrom(addr, p.Bits()).String()
				if !moved {
					moved = true
					nic.Gateway = r.gateway.String()
					nic.DNS = []string{r.dns.String()}
				}
				break
			}
		}
	}
	return net, want
}

// addHostBit adds 2^bit to addr; false when that overflows the address.
func addHostBit(addr netip.Addr, bit int) (netip.Addr, bool) {
	b := addr.AsSlice()
	i := len(b) - 1 - bit/8
	carry := 1 << (bit % 8)
	for ; i >= 0 && carry > 0; i-- {
		sum := int(b[i]) + carry
		b[i], carry = byte(sum), sum>>8
	}
	if carry > 0 {
		return netip.Addr{}, false
	}
	out, _ := netip.AddrFromSlice(b)
	return out, true
}

// diffNICs compares the network settings of NICs: network, addresses,
// gateway, DNS servers.
func diffNICs(got, want []sdk.NIC) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d NICs, want %d", len(got), len(want))
	}
	norm := func(addrs []string) []string {
		out := make([]string, len(addrs))
		for i, a := range addrs {
			out[i] = a
			if p, err := netip.ParsePrefix(a); err == nil {
				out[i] = p.String()
			} else if ip, err := netip.ParseAddr(a); err == nil {
				out[i] = ip.String()
			}
		}
		return out
	}
	for i := range got {
		g, w := got[i], want[i]
		switch {
		case g.Network != w.Network:
			return fmt.Sprintf("NIC %d is on network %q, want %q", i, g.Network, w.Network)
		case !slices.Equal(norm(g.Addresses), norm(w.Addresses)):
			return fmt.Sprintf("NIC %d has addresses %q, want %q", i, g.Addresses, w.Addresses)
		case !slices.Equal(norm([]string{g.Gateway}), norm([]string{w.Gateway})):
			return fmt.Sprintf("NIC %d has gateway %q, want %q", i, g.Gateway, w.Gateway)
		case !slices.Equal(norm(g.DNS), norm(w.DNS)):
			return fmt.Sprintf("NIC %d has DNS servers %q, want %q", i, g.DNS, w.DNS)
		}
	}
	return ""
}

func (c *targetCheck) crash(t *testing.T) {
	if c.fx.Crash == nil {
		t.Skip("TargetFixture.Crash is nil")
	}
	m := c.newReplica(t, "crash")
	c.fill(t, m)
	c.point(t, m, nil)
	c.overwrite(t, m)
	c.point(t, m, nil)
	w, err := c.tgt.OpenReplicaDisk(c.ctx, m.id, 0, 0)
	if err != nil {
		t.Fatalf("OpenReplicaDisk: %v", err)
	}
	s := randomSpan(c.rng, int64(len(m.disks[0])), 128<<10)
	if _, err := w.WriteAt(s.data, s.off); err != nil {
		t.Fatalf("WriteAt: %v", err)
	}
	c.fx.Crash(t)
	c.tgt = c.fx.New(t)
	c.wantState(t, m, sdk.ReplicaReady)
	c.checkList(t, m)
	c.verify(t, m, "after a crash")
	// Replication goes on, overwriting whatever the lost writer left.
	if err := c.writeDisk(m, 0, 0, fullSpans(c.rng, int64(len(m.disks[0]))), 4); err != nil {
		t.Fatal(err)
	}
	c.point(t, m, nil)
	c.verify(t, m, "replicating after a crash")
}

// syncedWrites checks that Sync makes the writes before it durable: after
// a crash (or, without one, on a writer left open) the working state holds
// them, on a replica with and without restore points.
func (c *targetCheck) syncedWrites(t *testing.T) {
	m := c.newReplica(t, "synced")
	for round, withPoint := range []bool{false, true} {
		if withPoint {
			c.fill(t, m)
			c.point(t, m, nil)
		}
		w, err := c.tgt.OpenReplicaDisk(c.ctx, m.id, 0, 0)
		if err != nil {
			t.Fatalf("round %d: OpenReplicaDisk: %v", round, err)
		}
		size := int64(len(m.disks[0]))
		var spans []span
		for range 8 {
			spans = append(spans, randomSpan(c.rng, size, 64<<10))
		}
		for _, s := range spans {
			if _, err := w.WriteAt(s.data, s.off); err != nil {
				t.Fatalf("round %d: WriteAt: %v", round, err)
			}
		}
		if err := w.Sync(); err != nil {
			t.Fatalf("round %d: Sync: %v", round, err)
		}
		apply(m.disks[0], spans)
		if c.fx.Crash != nil {
			c.fx.Crash(t)
			c.tgt = c.fx.New(t)
			w = nil
		} // else the writer stays open while the working state is read
		r, err := c.tgt.OpenRestorePointDisk(c.ctx, m.id, "", 0)
		if err != nil {
			t.Fatalf("round %d: OpenRestorePointDisk(point \"\"): %v", round, err)
		}
		got, err := readAll(r, r.Size())
		closeDisk(t, r, "working state disk")
		if err != nil {
			t.Fatalf("round %d: read the working state: %v", round, err)
		}
		if msg := diffBytes(got, m.disks[0], 0); msg != "" {
			t.Fatalf("round %d (restore point: %v, crash: %v): the working state lacks writes made before Sync: %s", round, withPoint, c.fx.Crash != nil, msg)
		}
		if w != nil {
			if err := w.Close(); err != nil {
				t.Fatalf("round %d: Close: %v", round, err)
			}
		}
	}
	c.verify(t, m, "after synced writes")
}

func (c *targetCheck) cancel(t *testing.T) {
	m := c.newReplica(t, "cancel")
	c.overwrite(t, m)
	c.point(t, m, nil)
	name := uniqueName(c.rng, "cancel-create")
	calls := []struct {
		what string
		call func(ctx context.Context) error
	}{
		{"GetPlacement", func(ctx context.Context) error { _, err := c.tgt.GetPlacement(ctx); return err }},
		{"ListReplicas", func(ctx context.Context) error { _, err := c.tgt.ListReplicas(ctx); return err }},
		{"GetReplica", func(ctx context.Context) error { _, err := c.tgt.GetReplica(ctx, m.id); return err }},
		{"CreateReplica", func(ctx context.Context) error {
			_, err := c.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: name, VM: c.fx.VM})
			return err
		}},
		{"ListRestorePoints", func(ctx context.Context) error { _, err := c.tgt.ListRestorePoints(ctx, m.id); return err }},
		{"OpenReplicaDisk", func(ctx context.Context) error { return closeIfOpened(c.tgt.OpenReplicaDisk(ctx, m.id, 0, 0)) }},
		{"OpenRestorePointDisk", func(ctx context.Context) error {
			return closeIfOpened(c.tgt.OpenRestorePointDisk(ctx, m.id, m.points[0].id, 0))
		}},
		{"CreateRestorePoint", func(ctx context.Context) error { _, err := c.tgt.CreateRestorePoint(ctx, m.id, nil); return err }},
		{"Failover", func(ctx context.Context) error {
			_, err := c.tgt.Failover(ctx, sdk.FailoverRequest{Replica: m.id})
			return err
		}},
	}
	for _, call := range calls {
		expectCanceled(t, c.deadline, call.what, call.call)
	}
	// A cancelled CreateReplica may have made its replica; clean it up.
	if r, err := c.tgt.GetReplica(c.ctx, name); err == nil {
		if err := c.tgt.DeleteReplica(c.ctx, r.ID); err != nil {
			t.Errorf("delete the replica a cancelled CreateReplica left: %v", err)
		}
	}
	// A restore point exists only once CreateRestorePoint returns nil.
	c.checkList(t, m)
	c.wantState(t, m, sdk.ReplicaReady)
}

// closeIfOpened closes what a cancelled open returned anyway.
func closeIfOpened[T io.Closer](disk T, err error) error {
	if err == nil {
		disk.Close()
	}
	return err
}
