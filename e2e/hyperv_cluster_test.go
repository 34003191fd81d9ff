package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
)

// TestReplicationOntoAHyperVCluster replicates a local VM onto a simulated
// Hyper-V failover cluster through the real binaries: the replica goes to
// the node with the fewest VMs as a clustered role, an operator moves it
// between runs, its node fails before the third; every run is incremental
// after the first and every restore point (a checkpoint) holds the source
// as that run captured it. The cluster is simhost's, not Hyper-V's.
func TestReplicationOntoAHyperVCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB", "4MiB"}, nic: "prod-net=10.1.0.11/24"})
	c, err := simhost.NewCluster(filepath.Join(l.dir, "cluster"), []string{"hv1", "hv2", "hv3"}, "dr-net")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node("hv1").CreateVM(ctx, host.VMSpec{Name: "busy", Generation: 2, CPUs: 1, MemoryMiB: 512}); err != nil {
		t.Fatal(err)
	}
	l.writeConfig(fmt.Sprintf(`
source "local" "prod"     { path = "../prod" }
target "hyperv" "dr"      { host = %q }
repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.local.prod
  target     = target.hyperv.dr
  repository = repository.local.meta
  vms        = ["web-01"]
  retention { restore_points = 3 }
  network_map {
    from = "prod-net"
    to   = "dr-net"
  }
}
`, c.Name()))

	// where finds the replica: its node and whether it is a role there.
	where := func() (string, *host.VM) {
		t.Helper()
		nodes, err := c.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if !n.Up {
				continue
			}
			vms, err := c.Node(n.Name).ListVMs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vms {
				if strings.HasPrefix(v.Name, "web-01") {
					return n.Name, &v
				}
			}
		}
		t.Fatal("the replica is on no node that is up")
		return "", nil
	}
	var states [][][]byte
	runOK := func(wantModes string) session {
		t.Helper()
		states = append(states, [][]byte{l.source("web-01", 0), l.source("web-01", 1)})
		s := l.run()
		if s.code != 0 || s.Result != "success" || s.modes() != wantModes {
			t.Fatalf("run %d: exit %d, %s, modes %s (want %s): %+v\n%s", len(states), s.code, s.Result, s.modes(), wantModes, s.VMs, s.stderr)
		}
		return s
	}

	l.write("web-01", 0, 0, 3*mib)
	l.write("web-01", 1, mib, mib)
	runOK("full,full")
	node, rep := where()
	if node != "hv2" || !rep.Clustered {
		t.Fatalf("the replica is on %s (clustered %v), want a role on hv2, the first node with the fewest VMs", node, rep.Clustered)
	}

	if err := c.MoveRole(ctx, rep.ID, "hv3"); err != nil {
		t.Fatal(err)
	}
	l.scatter("web-01", 0, 16*mib, 6)
	second := runOK("change-tracking,change-tracking")
	if second.Totals.BytesSent > 2*mib {
		t.Fatalf("the run after the move sent %d bytes for six small writes", second.Totals.BytesSent)
	}

	if err := c.SetNodeUp(ctx, "hv3", false); err != nil {
		t.Fatal(err)
	}
	if now, _ := where(); now == "hv3" {
		t.Fatal("the replica stayed on hv3, which is down")
	}
	l.scatter("web-01", 1, 4*mib, 4)
	third := runOK("change-tracking,change-tracking")
	if third.Totals.BytesSent > 2*mib {
		t.Fatalf("the run after the node failed sent %d bytes for four small writes", third.Totals.BytesSent)
	}

	// Every restore point, read through its VHDX chain, is the source as
	// its run captured it.
	node, rep = where()
	cps, err := c.Node(node).ListCheckpoints(ctx, rep.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != len(states) {
		t.Fatalf("%d checkpoints on the replica, want %d restore points", len(cps), len(states))
	}
	for i, cp := range cps {
		for d, cd := range cp.Disks {
			img, err := vhdx.Open(cd.Path, os.O_RDONLY)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(states[i][d]))
			_, err = img.ReadAt(got, 0)
			img.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, states[i][d]) {
				t.Errorf("restore point %d disk %d differs from the source at run %d", i+1, d, i+1)
			}
		}
	}
}
