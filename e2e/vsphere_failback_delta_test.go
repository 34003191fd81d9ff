package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk/disk/vmdk/vmdktest"
)

// vsReplicaChain puts disk 0 of the running replica on a chain of two
// deltas of kind ("vmfsSparse" or "seSparse") over its base, as ESXi keeps
// what a failed-over replica's guest writes, the grains scattered; change
// tracking is told of them. It returns the top descriptor's local path and
// the disk as the chain holds it.
func vsReplicaChain(l *vsLab, kind string) (string, []byte) {
	t := l.t
	t.Helper()
	replica := vsFbVM + "_replica"
	// A dozen grains in each delta, here and there, some of the second
	// over the first's; zero grains in a seSparse one. (Change tracking
	// reports 64 KiB blocks: a grain of 512 bytes costs a block.)
	var layers [2]vmdktest.Layer
	top, want := l.dr.ChainAbove(t, replica, kind, func(grains [2]int64, size int64) [2]vmdktest.Layer {
		for i, grain := range grains {
			lr := vmdktest.Layer{Grains: map[int64][]byte{}}
			for n := 0; n < 12; n++ {
				g := l.rng.Int64N(size / grain)
				if kind == "seSparse" && n%5 == 0 {
					lr.Grains[g] = nil
					continue
				}
				lr.Grains[g] = (&lab{rng: l.rng}).data(int(grain))
			}
			layers[i] = lr
		}
		return layers
	})
	grains := vcsimtest.ChainGrains(kind)
	for i, lr := range layers {
		for g := range lr.Grains {
			l.dr.TrackWrite(t, replica, 0, g*grains[i], grains[i])
		}
	}
	return top, want
}

// TestVSphereFailbackDeltaChain: a failed-over replica runs on a chain of
// vmfsSparse or seSparse deltas, as on ESXi. Through the real binaries a
// failback sync and the switch leave production byte for byte what
// qemu-img reads of the chain (the plugin reads it as of a read snapshot,
// through the datastore mount), sending what changed, not the disk; no
// failback snapshot is left on the replica; the commit ends the failback.
// (Production changed after the point too: the sync sends both sides'
// changes, as change tracking names them in 64 KiB blocks.)
func TestVSphereFailbackDeltaChain(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (Debian: qemu-utils)")
	}
	for _, kind := range []string{"vmfsSparse", "seSparse"} {
		t.Run(kind, func(t *testing.T) {
			l, _ := vsFailbackLab(t, 4*mib)
			top, want := vsReplicaChain(l, kind)
			raw := filepath.Join(t.TempDir(), "chain.raw")
			if b, err := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", top, raw).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v\n%s", err, b)
			}
			judge, err := os.ReadFile(raw)
			if err != nil {
				t.Fatal(err)
			}
			sameBytes(t, "qemu-img's reading of the chain", judge, want)

			res := vsFailback(l)
			s, size, modes := sent(res.Syncs)
			t.Logf("sync: %d bytes sent for %d bytes of disk (modes %v; %s)", s, size, modes, syncFigures(res.Syncs))
			if strings.Join(modes, ",") != "change-tracking" || s == 0 || s > size/2 {
				t.Fatalf("the sync sent %d bytes (modes %v) for two dozen grains and production's changes on %d bytes", s, modes, size)
			}
			sameBytes(t, "production after the sync", l.state()[vsFbVM][0], judge)

			vsFailback(l, "switch")
			sameBytes(t, "production after the switch", l.state()[vsFbVM][0], judge)
			if p := vsPower(l, "prod"); p != types.VirtualMachinePowerStatePoweredOn {
				t.Errorf("production after the switch is %s", p)
			}
			if snap := l.dr.VM(t, vsFbVM+"_replica").Snapshot; snap != nil {
				for _, n := range flattenTree(snap.RootSnapshotList) {
					if strings.HasPrefix(n, "ferry-failback-read") || strings.HasPrefix(n, "ferry-failback-mark") {
						t.Errorf("snapshot %s left on the replica", n)
					}
				}
			}
			vsFailback(l, "commit")
			if err := l.dr.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func flattenTree(list []types.VirtualMachineSnapshotTree) []string {
	var out []string
	for _, n := range list {
		out = append(out, n.Name)
		out = append(out, flattenTree(n.ChildSnapshotList)...)
	}
	return out
}
