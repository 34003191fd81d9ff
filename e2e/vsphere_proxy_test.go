package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// proxied puts the vSphere lab's job on two proxies in their own
// processes: p-prod at the source's site (127.0.0.2), p-dr at the
// target's (127.0.0.3). They find ferry-plugin-vsphere in the
// configuration folder, as ferry does, and get the blocks' configuration
// (the password included) from the control plane.
func (l *vsLab) proxied() (prod, dr *proxyProc) {
	l.t.Helper()
	prod, dr = (&lab{t: l.t, cfg: l.cfg}).startSiteProxies()
	hcl := readFile(l.t, filepath.Join(l.cfg, "main.hcl"))
	for _, r := range []struct{ old, new string }{
		{`datacenter = "DC0"`, "datacenter = \"DC0\"\n  site       = \"prod\""},
		{`cluster    = "DC0_C0"`, "cluster    = \"DC0_C0\"\n  site       = \"dr\""},
		{"\njob ", proxyBlocks(prod, dr) + "\njob "},
	} {
		if !strings.Contains(hcl, r.old) {
			l.t.Fatalf("the lab's configuration lacks %q; update the test", r.old)
		}
		hcl = strings.Replace(hcl, r.old, r.new, 1)
	}
	l.writeConfig(hcl)
	return prod, dr
}

// TestVSphereThroughProxies replicates from one simulated vCenter to
// another through two proxies in their own processes: the source proxy
// opens the snapshot disks with its own vSphere plugin (and keeps the
// digests in the repository), the target proxy writes the replica disks
// with its own; the control plane keeps the snapshots, the replica and the
// restore points. A full run and an incremental one (changed block
// tracking, asked for by the control plane, read by the source proxy; a
// disk grown under a restore point), with each transport the plugin has:
// direct (the datastores mounted, as on an NFS proxy), network (ranged
// reads over the datastore HTTP interface) and HotAdd (the disks attached
// to proxy VMs, pinned by hotadd_proxy, and written through the DR one).
// Every restore point reads back byte for byte the source state it froze.
//
// The proxies share this machine with the control plane, so paths the
// configuration names (local_datastore_paths, state_dir, the HotAdd device
// folders) mean the same to every plugin instance; on separate hosts they
// must too (plugins/vsphere/README.md, "Through ferry proxies").
func TestVSphereThroughProxies(t *testing.T) {
	vm := vsVM{name: "web-01", disks: []int64{16 << 20, 4 << 20}, ip: "10.1.0.11/24"}
	for _, tc := range []struct {
		transport string
		lane      string
		lab       func(t *testing.T) *vsLab
	}{
		{"auto", "direct", func(t *testing.T) *vsLab { return newVSLab(t, 3, "auto", vm) }},
		{"network", "stream", func(t *testing.T) *vsLab { return newVSLab(t, 3, "network", vm) }},
		{"hotadd", "direct", func(t *testing.T) *vsLab { l, _, _ := hotaddLab(t, vm); return l }},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			l := tc.lab(t)
			prod, dr := l.proxied()
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("proxy p-prod said:\n%s\nproxy p-dr said:\n%s", prod.stderr, dr.stderr)
				}
			})
			l.write("web-01", 0, 0, 3*mib)
			l.write("web-01", 1, mib, mib)

			var states []map[string][][]byte
			runOK := func(mode string) session {
				t.Helper()
				states = append(states, l.state())
				s := l.run()
				if s.code != 0 || s.Result != "success" {
					t.Fatalf("run %d: exit %d, %s: %+v\n%s", len(states), s.code, s.Result, s.VMs, s.stderr)
				}
				for _, d := range s.vm("web-01").Disks {
					if d.SourceProxy != "p-prod" || d.TargetProxy != "p-dr" || string(d.Mode) != mode || string(d.Lane) != tc.lane {
						t.Fatalf("run %d disk %d: %s/%s through %q>%q, want %s/%s through p-prod>p-dr\n%s",
							len(states), d.Index, d.Mode, d.Lane, d.SourceProxy, d.TargetProxy, mode, tc.lane, s.stderr)
					}
				}
				return s
			}
			first := runOK("full")
			if first.Totals.BytesSent > 6*mib {
				t.Fatalf("the first run sent %d bytes for 4 MiB of data", first.Totals.BytesSent)
			}
			l.scatter("web-01", 0, 20)
			l.scatter("web-01", 1, 3)
			// The second disk grows from 4 to 6 MiB, with data past its old
			// end: the target proxy's plugin grows the replica disk, which
			// has a restore point, and the control plane's makes the next.
			l.prod.ResizeDisk(t, "web-01", 1, 6*mib)
			l.write("web-01", 1, 5*mib, mib/2)
			second := runOK("change-tracking")
			if second.Totals.BytesSent > 2*mib || second.vm("web-01").Disks[1].Size != 6*mib {
				t.Fatalf("the incremental run sent %d bytes for 24 small writes, disk 1 is %d bytes", second.Totals.BytesSent, second.vm("web-01").Disks[1].Size)
			}

			tgt := l.target()
			points := l.points("web-01")
			if len(points) != 2 {
				t.Fatalf("points %v", points)
			}
			for i, p := range points {
				for d := range 2 {
					sameBytes(t, fmt.Sprintf("point %d (%s) disk %d", i+1, p, d), readPoint(t, tgt, "web-01_replica", p, d), states[i]["web-01"][d])
				}
			}
			for d := range 2 {
				sameBytes(t, fmt.Sprintf("replica disk %d", d), l.dr.Disk(t, "web-01_replica", d), states[1]["web-01"][d])
			}
			if snap := l.prod.VM(t, "web-01").Snapshot; snap != nil && len(snap.RootSnapshotList) > 0 {
				t.Fatalf("snapshots left at the source: %+v", snap.RootSnapshotList)
			}
		})
	}
}
