package hyperv

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// The Hyper-V target on a failover cluster. The cluster is simulated
// (simhost.Cluster): the plugin's logic of placing, finding and following
// replicas is what these tests prove, not root\MSCluster.

func newCluster(t testing.TB, nodes ...string) *simhost.Cluster {
	t.Helper()
	c, err := simhost.NewCluster(filepath.Join(t.TempDir(), "cluster"), nodes, testSwitches...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPlace(t *testing.T) {
	for _, tc := range []struct {
		counts []int // -1: went down
		want   int
	}{
		{[]int{0}, 0},
		{[]int{3, 1, 2}, 1},
		{[]int{2, 2, 2}, 0},  // a tie goes to the first
		{[]int{-1, 4, 1}, 2}, // down is skipped
		{[]int{0, -1}, 0},
		{[]int{-1, -1}, -1}, // none up
		{nil, -1},
	} {
		if got := place(tc.counts); got != tc.want {
			t.Errorf("place(%v) = %d, want %d", tc.counts, got, tc.want)
		}
	}
}

func TestConformanceTargetOnACluster(t *testing.T) {
	c := newCluster(t, "hv1", "hv2", "hv3")
	cur := NewTarget(newClusterHost(c), "")
	sdktest.RunTarget(t, sdktest.TargetFixture{
		New:          func(*testing.T) sdk.Target { return cur },
		Capabilities: TargetCapabilities,
		Crash: func(t *testing.T) {
			cur.crashForTest()
			cur = NewTarget(newClusterHost(c), "")
		},
	})
}

func TestConformanceTargetOnAClusterOverWire(t *testing.T) {
	c := newCluster(t, "hv1", "hv2")
	cl := sdktest.Connect(t, Plugin())
	p := Plugin().Targets["hyperv"]
	tgt, diags, err := cl.Target(context.Background(), "hyperv", p.Schema, targetValue(c.Name()))
	if err != nil || diags.HasErrors() {
		t.Fatal(err, diags.Err())
	}
	sdktest.RunTarget(t, sdktest.TargetFixture{New: func(*testing.T) sdk.Target { return tgt }, Capabilities: p.Capabilities})
}

// nodeOf returns the node a VM is registered on, and whether it is a
// clustered role there.
func nodeOf(t *testing.T, c *simhost.Cluster, vm string) (string, bool) {
	t.Helper()
	nodes, err := c.Nodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if !n.Up {
			continue
		}
		v, err := c.Node(n.Name).GetVM(context.Background(), vm)
		if err == nil {
			return n.Name, v.Clustered
		}
	}
	t.Fatalf("vm %s is on no node that is up", vm)
	return "", false
}

// clusterRun writes random blocks into the replica's disks through the
// target, makes a restore point, and returns the disks as they are now.
func clusterRun(t *testing.T, tgt *Target, rep *sdk.Replica, have [][]byte, r *rand.Rand) [][]byte {
	t.Helper()
	ctx := context.Background()
	next := make([][]byte, len(have))
	for d := range have {
		next[d] = bytes.Clone(have[d])
		w, err := tgt.OpenReplicaDisk(ctx, rep.ID, d, int64(len(have[d])))
		if err != nil {
			t.Fatal(err)
		}
		for range 4 {
			n := 4096 * (1 + r.IntN(8))
			off := int64(r.IntN(len(have[d])-n)/4096) * 4096
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			copy(next[d][off:], b)
			if _, err := w.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tgt.CreateRestorePoint(ctx, rep.ID, nil); err != nil {
		t.Fatal(err)
	}
	return next
}

// judgePoints reads every restore point of the replica and compares it
// with the disks each run left.
func judgePoints(t *testing.T, tgt *Target, rep *sdk.Replica, want [][][]byte) {
	t.Helper()
	ctx := context.Background()
	points, err := tgt.ListRestorePoints(ctx, rep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != len(want) {
		t.Fatalf("%d restore points, want %d", len(points), len(want))
	}
	for i, p := range points {
		for d := range want[i] {
			rd, err := tgt.OpenRestorePointDisk(ctx, rep.ID, p.ID, d)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want[i][d]))
			if _, err := rd.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			rd.Close()
			if !bytes.Equal(got, want[i][d]) {
				t.Errorf("restore point %d disk %d differs from what run %d wrote", i+1, d, i+1)
			}
		}
	}
}

// TestClusterReplicaFollowsItsOwner places a replica on the node with the
// fewest VMs (a node that is down is skipped), then replicates into it
// while the cluster moves it: by an operator between runs, and by the
// cluster's failover when its node goes down. Every run finds it where it
// is, and every restore point keeps its bytes.
func TestClusterReplicaFollowsItsOwner(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, "hv1", "hv2", "hv3")
	// hv1 runs two VMs, hv2 one; hv3, with none, is down.
	for i, node := range []string{"hv1", "hv1", "hv2"} {
		if _, err := c.Node(node).CreateVM(ctx, host.VMSpec{Name: "busy-" + string(rune('a'+i)), Generation: 2, CPUs: 1, MemoryMiB: 512}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetNodeUp(ctx, "hv3", false); err != nil {
		t.Fatal(err)
	}
	tgt := NewTarget(newClusterHost(c), "")
	vm := sdktest.DefaultVM()
	rep, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-replica", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	if node, clustered := nodeOf(t, c, rep.ID); node != "hv2" || !clustered {
		t.Fatalf("the replica is on %s (clustered %v), want a role on hv2: the node up with the fewest VMs", node, clustered)
	}
	pl, err := tgt.GetPlacement(ctx)
	if err != nil || len(pl.Hosts) != 2 || pl.Hosts[0] != "hv1" || pl.Hosts[1] != "hv2" {
		t.Fatalf("placement hosts %v (%v), want the nodes up: hv1, hv2", pl.Hosts, err)
	}

	r := rand.New(rand.NewPCG(7, 7))
	disks := make([][]byte, len(vm.Disks))
	for d, disk := range vm.Disks {
		disks[d] = make([]byte, roundSector(disk.Capacity))
	}
	var want [][][]byte
	disks = clusterRun(t, tgt, rep, disks, r)
	want = append(want, disks)

	// An operator moves the role to hv1 between runs.
	if err := c.MoveRole(ctx, rep.ID, "hv1"); err != nil {
		t.Fatal(err)
	}
	disks = clusterRun(t, tgt, rep, disks, r)
	want = append(want, disks)
	if node, _ := nodeOf(t, c, rep.ID); node != "hv1" {
		t.Fatalf("after the move the replica is on %s, want hv1", node)
	}

	// hv1 fails: the cluster fails the role over to hv2 (hv3 is down).
	if err := c.SetNodeUp(ctx, "hv1", false); err != nil {
		t.Fatal(err)
	}
	if node, _ := nodeOf(t, c, rep.ID); node != "hv2" {
		t.Fatalf("after hv1 failed the replica is on %s, want hv2", node)
	}
	got, err := tgt.GetReplica(ctx, rep.ID)
	if err != nil || got.ID != rep.ID {
		t.Fatalf("GetReplica after the failover of its node = %+v, %v", got, err)
	}
	disks = clusterRun(t, tgt, rep, disks, r)
	want = append(want, disks)
	judgePoints(t, tgt, rep, want)

	// With every node down, calls fail as unreachable, and say so.
	if err := c.SetNodeUp(ctx, "hv2", false); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.ListRestorePoints(ctx, rep.ID); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("ListRestorePoints with every node down = %v, want unavailable", err)
	}
	if err := c.SetNodeUp(ctx, "hv3", true); err != nil {
		t.Fatal(err)
	}
	// hv2's role stays with hv2 while it is down (no node was up to take
	// it): the replica is out of reach, and not confused with another.
	if _, err := tgt.GetReplica(ctx, rep.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetReplica while its node is down = %v, want not found", err)
	}
	if err := c.SetNodeUp(ctx, "hv2", true); err != nil {
		t.Fatal(err)
	}
	judgePoints(t, tgt, rep, want)
}

// TestClusterNodeFailsMidRun fails the replica's node while a run writes
// into it: a call that was on its way to that node fails as unreachable,
// the writes already made stay (the files are on shared storage), and the
// rest of the run (and the next) reaches the replica on its new node.
func TestClusterNodeFailsMidRun(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, "hv1", "hv2")
	tgt := NewTarget(newClusterHost(c), "")
	vm := sdktest.DefaultVM()
	rep, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "db-replica", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(9, 9))
	disks := make([][]byte, len(vm.Disks))
	for d, disk := range vm.Disks {
		disks[d] = make([]byte, roundSector(disk.Capacity))
	}
	want := [][][]byte{clusterRun(t, tgt, rep, disks, r)}
	disks = want[0]

	owner, _ := nodeOf(t, c, rep.ID)
	stale := c.Node(owner) // a call resolved before the failure
	w, err := tgt.OpenReplicaDisk(ctx, rep.ID, 0, int64(len(disks[0])))
	if err != nil {
		t.Fatal(err)
	}
	next := [][]byte{bytes.Clone(disks[0]), disks[1]}
	half := bytes.Repeat([]byte{0xAB}, 64<<10)
	if _, err := w.WriteAt(half, 0); err != nil {
		t.Fatal(err)
	}
	copy(next[0], half)
	if err := c.SetNodeUp(ctx, owner, false); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.CreateCheckpoint(ctx, rep.ID, host.CheckpointRequest{Name: "late", Type: host.Standard}); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("a call to the failed node = %v, want unavailable", err)
	}
	rest := bytes.Repeat([]byte{0xCD}, 64<<10)
	if _, err := w.WriteAt(rest, 1<<20); err != nil {
		t.Fatal(err)
	}
	copy(next[0][1<<20:], rest)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.CreateRestorePoint(ctx, rep.ID, nil); err != nil {
		t.Fatalf("the restore point after the failover of the replica's node: %v", err)
	}
	want = append(want, next)
	if now, _ := nodeOf(t, c, rep.ID); now == owner {
		t.Fatalf("the replica is still on %s, which is down", owner)
	}
	judgePoints(t, tgt, rep, want)
	judgePoints(t, tgt, rep, want) // twice: reading changes nothing
}

// TestClusterReplicaMadeRoleAfterACrash finds a replica whose creation
// stopped between the VM and its role: the next CreateReplica makes it
// highly available.
func TestClusterReplicaMadeRoleAfterACrash(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t, "hv1", "hv2")
	tgt := NewTarget(newClusterHost(c), "")
	vm := sdktest.DefaultVM()
	rep, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "app-replica", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	// Undo the role behind the plugin's back, as a crash before
	// AddVMRole would have left it.
	node, _ := nodeOf(t, c, rep.ID)
	if err := c.RemoveVMRole(ctx, rep.ID); err != nil {
		t.Fatal(err)
	}
	if _, clustered := nodeOf(t, c, rep.ID); clustered {
		t.Fatal("the role is still there")
	}
	again, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "app-replica", VM: vm})
	if err != nil || again.ID != rep.ID {
		t.Fatalf("CreateReplica again = %+v, %v; want the same replica", again, err)
	}
	if n, clustered := nodeOf(t, c, rep.ID); n != node || !clustered {
		t.Fatalf("after CreateReplica the replica is on %s (clustered %v), want a role on %s", n, clustered, node)
	}
}
