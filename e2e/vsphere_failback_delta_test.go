package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk/disk/vmdk"
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
	var disk *types.VirtualDisk
	for _, d := range l.dr.VM(t, replica).Config.Hardware.Device {
		if vd, ok := d.(*types.VirtualDisk); ok && (disk == nil || vd.Key < disk.Key) {
			disk = vd
		}
	}
	baseDS := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName
	baseLocal := l.dr.LocalPath(t, baseDS)
	text, err := os.ReadFile(baseLocal)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := vmdk.ParseDescriptor(text)
	if err != nil {
		t.Fatal(err)
	}
	base, err := vmdk.Open(baseLocal)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, base.Size())
	if _, err := base.ReadAt(want, 0); err != nil {
		t.Fatal(err)
	}
	base.Close()
	size := int64(len(want))

	// A dozen grains in each delta, here and there, some of the second
	// over the first's; zero grains in a seSparse one. (Change tracking
	// reports 64 KiB blocks: a grain of 512 bytes costs a block.)
	layer := func(grain int64, zeros bool) vmdktest.Layer {
		lr := vmdktest.Layer{Grains: map[int64][]byte{}}
		for n := 0; n < 12; n++ {
			g := l.rng.Int64N(size / grain)
			if zeros && n%5 == 0 {
				lr.Grains[g] = nil
				continue
			}
			lr.Grains[g] = (&lab{rng: l.rng}).data(int(grain))
		}
		return lr
	}
	dir, name := filepath.Dir(baseLocal), strings.TrimSuffix(filepath.Base(baseLocal), ".vmdk")
	var top string
	var layers []vmdktest.Layer
	var grains []int64
	switch kind {
	case "vmfsSparse":
		layers, grains = []vmdktest.Layer{layer(512, false), layer(4096, false)}, []int64{512, 4096}
		if _, err = vmdktest.WriteCOWD(dir, name+"-000001", name+".vmdk", desc.CID, 0x100, size, 1, layers[0]); err == nil {
			top, err = vmdktest.WriteCOWD(dir, name+"-000002", name+"-000001.vmdk", 0x100, 0x200, size, 8, layers[1])
		}
	case "seSparse":
		layers, grains = []vmdktest.Layer{layer(4096, true), layer(4096, true)}, []int64{4096, 4096}
		if _, err = vmdktest.WriteSESparse(dir, name+"-000001", name+".vmdk", desc.CID, 0x100, size, layers[0], 0); err == nil {
			top, err = vmdktest.WriteSESparse(dir, name+"-000002", name+"-000001.vmdk", 0x100, 0x200, size, layers[1], 0)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, lr := range layers {
		lr.Apply(want, grains[i])
		for g := range lr.Grains {
			l.dr.TrackWrite(t, replica, 0, g*grains[i], grains[i])
		}
	}
	sibling := func(n string) string { return baseDS[:strings.LastIndex(baseDS, "/")+1] + n }
	l.dr.SetDiskChain(t, replica, 0, []string{sibling(name + "-000002.vmdk"), sibling(name + "-000001.vmdk"), baseDS})
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
