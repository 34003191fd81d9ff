package vsphere

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// hotaddTarget connects a target that writes replica disks through HotAdd
// via proxy p: the datastore is not mapped, the ferry folders go under
// stateDir.
func hotaddTarget(t testing.TB, s *vcsimtest.Site, p *vcsimtest.Proxy, stateDir string) *Target {
	t.Helper()
	attrs := map[string]cty.Value{"datastore": cty.StringVal(s.Datastore), "cluster": cty.StringVal("DC0_C0"),
		"transport": cty.StringVal(TransportHotAdd), "hotadd_proxy": cty.StringVal(p.Name), "hotadd_device_dir": cty.StringVal(p.DeviceDir),
		"state_dir": cty.StringVal(stateDir)}
	cfg, err := decodeTarget(configValue(targetSchema(), siteConfig(s, false, attrs)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.productUUIDFile = filepath.Join(t.TempDir(), "no-product-uuid")
	cfg.deviceWait = 10 * time.Second
	tgt, err := newTarget(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tgt.Stop(context.Background()) })
	return tgt
}

// TestConformanceTargetHotAdd runs the target suite on replicas written
// through HotAdd: every working image is the replica's disk attached to a
// proxy VM of the DR site (the fake udev shows it), the ferry folders are
// in a state folder, and the simulator refuses snapshot operations on a
// replica while a disk of it is attached for writing, as ESXi's locks do.
// A crash drops the target and its process's claim on what it attached
// (its owner no longer runs): the next target detaches the leftovers.
func TestConformanceTargetHotAdd(t *testing.T) {
	t.Parallel()
	outer := t
	s := hotaddDRSite(t)
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "dr-proxy"})
	dir := t.TempDir()
	cur := hotaddTarget(t, s, p, dir)
	// Test failover refuses replicas written through HotAdd (this
	// version; TestTestFailoverRefusesHotAdd checks the refusal), and so
	// does failback (TestFailbackRefusesHotAdd).
	caps := TargetCapabilities
	caps.TestFailover, caps.Failback = false, false
	sdktest.RunTarget(t, sdktest.TargetFixture{
		New:          func(*testing.T) sdk.Target { return cur },
		Capabilities: caps,
		Crash: func(*testing.T) {
			cur.crashed()
			liveTokens.Delete(cur.hot.self.Token)
			cur = hotaddTarget(outer, s, p, dir)
		},
		MakeVM: plainVMMaker(s),
	})
	if left := s.HotAdded(t, p.Name); len(left) > 0 {
		t.Fatalf("disks left attached to the proxy after the suite: %v", left)
	}
}

// TestHotAddTargetWrites: a replica written through HotAdd keeps its ferry
// folder in the state folder, never on the datastore; its disks are
// attached to the proxy only while used; snapshot operations wait for or
// refuse attached disks (the simulator refuses them as ESXi's locks do);
// a disk grows, restore points and all, once the other disk's writer is
// done; a target configured to write directly refuses the replica.
func TestHotAddTargetWrites(t *testing.T) {
	t.Parallel()
	s := hotaddDRSite(t)
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "dr-proxy"})
	dir := t.TempDir()
	tgt := hotaddTarget(t, s, p, dir)
	ctx := t.Context()
	vm := sourceVM()
	vm.Disks = []sdk.Disk{{Index: 0, Capacity: 2 << 20, Controller: "scsi0:0"}, {Index: 1, Capacity: 1 << 20, Controller: "scsi0:1"}}
	rep, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "hot", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	write := func(w sdk.DiskWriter, off int64, data string) {
		t.Helper()
		if _, err := w.WriteAt([]byte(data), off); err != nil {
			t.Fatal(err)
		}
	}
	w0, err := tgt.OpenReplicaDisk(ctx, rep.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w0.(sdk.LocalPather); ok {
		t.Fatal("a HotAdd writer offers its device as a direct lane")
	}
	write(w0, 4096, "first")
	if got := s.HotAdded(t, p.Name); len(got) != 1 {
		t.Fatalf("attached to the proxy while writing: %v", got)
	}
	if _, err := tgt.CreateRestorePoint(ctx, rep.ID, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a restore point while a disk is attached: %v", err)
	}
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, "hot"))
	task, err := obj.CreateSnapshot(ctx, "by-hand", "", false, false)
	if err == nil {
		err = task.Wait(ctx)
	}
	if !fault.Is(err, &types.FileLocked{}) {
		t.Fatalf("the simulator took a snapshot of a VM whose disk another VM writes: %v", err)
	}
	if err := w0.Close(); err != nil {
		t.Fatal(err)
	}
	if got := s.HotAdded(t, p.Name); len(got) != 0 {
		t.Fatalf("attached after the writer closed: %v", got)
	}
	if got := s.Disk(t, "hot", 0); string(got[4096:4101]) != "first" {
		t.Fatalf("the replica's disk holds %q", got[4096:4101])
	}
	p1, err := tgt.CreateRestorePoint(ctx, rep.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := s.VM(t, "hot")
	if _, err := os.Stat(filepath.Join(dir, r.Config.InstanceUuid, "replica.json")); err != nil {
		t.Fatalf("no state in the state folder: %v", err)
	}
	if onDS, _ := filepath.Glob(filepath.Join(s.Datastores[s.Datastore], "*", ferryDir)); len(onDS) > 0 {
		t.Fatalf("ferry folders on the datastore: %v", onDS)
	}

	// Disk 1 grows while disk 0 is written: the growth waits for disk 0's
	// writer, then takes the point's snapshot away and back.
	w0, err = tgt.OpenReplicaDisk(ctx, rep.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	write(w0, 4096, "again")
	grown := make(chan error, 1)
	var w1 sdk.DiskWriter
	go func() {
		var err error
		w1, err = tgt.OpenReplicaDisk(ctx, rep.ID, 1, 3<<20)
		grown <- err
	}()
	select {
	case err := <-grown:
		t.Fatalf("disk 1 grew while disk 0 was attached: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := w0.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-grown; err != nil {
		t.Fatal(err)
	}
	write(w1, 2<<20, "grown")
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := tgt.OpenRestorePointDisk(ctx, rep.ID, p1.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := rd.ReadAt(buf, 4096); err != nil || string(buf) != "first" {
		t.Fatalf("point 1 reads %q, %v", buf, err)
	}
	rd.Close()
	if points, err := tgt.ListRestorePoints(ctx, rep.ID); err != nil || len(points) != 1 || points[0].ID != p1.ID || points[0].Disks[1].Capacity != 1<<20 {
		t.Fatalf("points after the growth: %+v, %v", points, err)
	}
	if got := s.Disk(t, "hot", 1); len(got) != 3<<20 || string(got[2<<20:2<<20+5]) != "grown" {
		t.Fatalf("the grown disk: %d bytes", len(got))
	}

	direct := newTestTarget(t, s, nil)
	if _, err := direct.ListRestorePoints(ctx, rep.ID); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "HotAdd") {
		t.Fatalf("a direct target on a HotAdd replica: %v", err)
	}
}

// TestReplicaLockedAcrossProcesses: while one target (another process, to
// the lock: its own open of the lock file) writes a replica, another
// target's calls on that replica fail saying who holds it; once the writer
// closes they work.
func TestReplicaLockedAcrossProcesses(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	a, b := newTestTarget(t, s, nil), newTestTarget(t, s, nil)
	b.lockWait = 300 * time.Millisecond
	ctx := t.Context()
	rep := oneDiskReplica(t, a, "locked")
	w, err := a.OpenReplicaDisk(ctx, rep.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateRestorePoint(ctx, rep.ID, nil); !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), fmt.Sprintf("in use by another process (pid %d", os.Getpid())) {
		t.Fatalf("a restore point while another process writes: %v", err)
	}
	if _, err := b.OpenReplicaDisk(ctx, rep.ID, 0, 0); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a second writer in another process: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateRestorePoint(ctx, rep.ID, nil); err != nil {
		t.Fatalf("a restore point once the writer closed: %v", err)
	}
	// And the first process may work again.
	if _, err := a.ListRestorePoints(ctx, rep.ID); err != nil {
		t.Fatal(err)
	}
}

// TestHotAddFailoverAfterGrowth: on a replica written through HotAdd,
// vSphere's snapshots hold data too, and a growth takes them away and
// back (so each then holds the data of the growth's time). A failover to
// an older point still runs the VM on that point's data, and undo brings
// the newest back: the point's blocks are written after the revert.
func TestHotAddFailoverAfterGrowth(t *testing.T) {
	t.Parallel()
	s := hotaddDRSite(t)
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "dr-proxy"})
	tgt := hotaddTarget(t, s, p, t.TempDir())
	ctx := t.Context()
	r := oneDiskReplica(t, tgt, "grown")
	writeReplica(t, tgt, r.ID, 0, 100, "first")
	p1, err := tgt.CreateRestorePoint(ctx, r.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeReplica(t, tgt, r.ID, 0, 100, "second")
	if _, err := tgt.CreateRestorePoint(ctx, r.ID, nil); err != nil {
		t.Fatal(err)
	}
	size := s.VM(t, "grown").Config.Hardware.Device
	writeReplica(t, tgt, r.ID, diskCapacity(virtualDisks(size)[0])+1<<20, 200, "third")
	if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: r.ID, Point: p1.ID}); err != nil {
		t.Fatal(err)
	}
	if got := s.Disk(t, "grown", 0); string(got[100:105]) != "first" || got[200] != 0 {
		t.Fatalf("failed over to point 1, the VM's disk holds %q and %q", got[100:105], got[200:205])
	}
	if _, err := tgt.UndoFailover(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if got := s.Disk(t, "grown", 0); string(got[100:106]) != "second" || string(got[200:205]) != "third" {
		t.Fatalf("after undo the disk holds %q and %q", got[100:106], got[200:205])
	}
}
