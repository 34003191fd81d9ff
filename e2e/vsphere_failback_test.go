package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/core/engine"
)

const vsFbVM = "app-01"

// vsFailbackLab is a vSphere lab whose VM app-01 was replicated, changed
// at production after its restore point, and failed over; before is
// production when the failback began.
func vsFailbackLab(t *testing.T, sizes ...int64) (*vsLab, [][]byte) {
	t.Helper()
	l := newVSLab(t, 3, "auto", vsVM{name: vsFbVM, disks: sizes, ip: "10.1.0.11/24"})
	for d, s := range sizes {
		l.write(vsFbVM, d, 0, int(s/2))
	}
	if s := l.run(); s.code != 0 || s.Result != "success" {
		t.Fatalf("first run: %s\n%s", s.Result, s.stderr)
	}
	// Production changes after the point (the disaster came later).
	for d := range sizes {
		l.scatter(vsFbVM, d, 4)
	}
	if r := ferry(t, l.cfg, "failover", "e2e", vsFbVM); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	return l, l.state()[vsFbVM]
}

// replicaWrites makes about 1% of each disk of the running replica
// change, as its guest would (seen by the DR site's change tracking).
func vsReplicaWrites(l *vsLab) {
	l.t.Helper()
	for d, size := range l.disks[vsFbVM] {
		for written := int64(0); written < size/100; {
			n := 4096 * (1 + l.rng.IntN(8))
			l.dr.Write(l.t, vsFbVM+"_replica", d, l.rng.Int64N(size-int64(n))&^511, (&lab{rng: l.rng}).data(n))
			written += int64(n)
		}
	}
}

func vsReplicaDisks(l *vsLab) [][]byte {
	l.t.Helper()
	var out [][]byte
	for d := range l.disks[vsFbVM] {
		out = append(out, l.dr.Disk(l.t, vsFbVM+"_replica", d))
	}
	return out
}

// vsFailback runs `ferry failback ARGS... e2e app-01 --json`.
func vsFailback(l *vsLab, args ...string) engine.FailbackResult {
	l.t.Helper()
	return failbackJSON(l.t, l.cfg, vsFbVM, args...)
}

func vsPower(l *vsLab, site string) types.VirtualMachinePowerState {
	l.t.Helper()
	if site == "dr" {
		return l.dr.VM(l.t, vsFbVM+"_replica").Runtime.PowerState
	}
	return l.prod.VM(l.t, vsFbVM).Runtime.PowerState
}

// TestVSphereFailback fails a VM back home through the real binaries and
// two simulated vCenters: a replica failed over after production changed
// past its point and written while it runs is synced home by change
// tracking on both sides (sending about what changed, not the disks);
// an undo gives production back byte for byte; a second sync and a switch
// leave production byte for byte what the replica held at the switch,
// running, and the replica off; after the commit the next run is
// incremental (digests: production's tracking never saw the failback's
// writes) and its restore point is production.
func TestVSphereFailback(t *testing.T) {
	sizes := []int64{8 * mib, 4 * mib}
	var total int64
	for _, s := range sizes {
		total += s
	}
	l, before := vsFailbackLab(t, sizes...)

	vsReplicaWrites(l)
	res := vsFailback(l)
	s, size, modes := sent(res.Syncs)
	t.Logf("first sync: %d bytes sent for %d bytes of disks (modes %v; %s)", s, size, modes, syncFigures(res.Syncs))
	if size != total || strings.Join(modes, ",") != "change-tracking,change-tracking" {
		t.Fatalf("first sync: %d bytes of disks, modes %v", size, modes)
	}
	if s == 0 || s > total/100*2*3 {
		t.Fatalf("the first sync sent %d bytes for 1%% changes on both sides of %d bytes of disks", s, total)
	}
	sameDisks(t, "production after the first sync", l.state()[vsFbVM], vsReplicaDisks(l))
	if p := vsPower(l, "prod"); p != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("production during the failback is %s", p)
	}

	// Undo: production back as it was, running; the replica runs on.
	if res := vsFailback(l, "undo"); res.Failback != nil {
		t.Fatalf("a failback survived its undo: %+v", res.Failback)
	}
	sameDisks(t, "production after the undo", l.state()[vsFbVM], before)
	if p := vsPower(l, "prod"); p != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("production after the undo is %s, as before the failback", p)
	}
	if p := vsPower(l, "dr"); p != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("the replica after the undo is %s", p)
	}

	// Again: sync, more replica writes, the switch.
	vsReplicaWrites(l)
	res = vsFailback(l)
	s, _, modes = sent(res.Syncs)
	t.Logf("sync after the undo: %d bytes sent (modes %v; %s)", s, modes, syncFigures(res.Syncs))
	if s > total/100*2*3 {
		t.Fatalf("the sync after the undo sent %d bytes", s)
	}
	vsReplicaWrites(l)
	res = vsFailback(l, "switch")
	s, _, modes = sent(res.Syncs)
	t.Logf("final sync: %d bytes sent (modes %v; %s)", s, modes, syncFigures(res.Syncs))
	if len(res.Syncs) != 1 || s == 0 || s > total/100*3 || strings.Join(modes, ",") != "change-tracking,change-tracking" {
		t.Fatalf("the final sync sent %d bytes in %d syncs (modes %v) for a 1%% change", s, len(res.Syncs), modes)
	}
	atSwitch := vsReplicaDisks(l)
	sameDisks(t, "production after the switch", l.state()[vsFbVM], atSwitch)
	if p := vsPower(l, "prod"); p != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("production after the switch is %s", p)
	}
	if p := vsPower(l, "dr"); p != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("the replica after the switch is %s", p)
	}

	// Commit, production writes, a run: incremental, its point is
	// production.
	vsFailback(l, "commit")
	l.write(vsFbVM, 0, 3*mib, 64<<10)
	want := l.state()[vsFbVM]
	run := l.run()
	if run.code != 0 || run.Result != "success" {
		t.Fatalf("the run after the commit: %s %+v\n%s", run.Result, run.VMs, run.stderr)
	}
	t.Logf("run after the commit: modes %s, %d bytes sent", run.modes(), run.Totals.BytesSent)
	if strings.Contains(run.modes(), "full") || run.Totals.BytesSent > total/10 {
		t.Fatalf("the run after the commit was not incremental: modes %s, %d bytes sent", run.modes(), run.Totals.BytesSent)
	}
	points := l.points(vsFbVM)
	newest := points[len(points)-1]
	tgt := l.target()
	for d := range want {
		sameBytes(t, fmt.Sprintf("the newest point %s, disk %d", newest, d), readPoint(t, tgt, vsFbVM+"_replica", newest, d), want[d])
	}
	// A second run is change-tracked again.
	l.write(vsFbVM, 1, mib, 64<<10)
	if run := l.run(); run.code != 0 || run.modes() != "change-tracking,change-tracking" || run.Totals.BytesSent > 2*mib {
		t.Fatalf("the second run after the commit: modes %s, %d bytes sent\n%s", run.modes(), run.Totals.BytesSent, run.stderr)
	}
}

// TestVSphereFailbackKill kills ferry (SIGKILL) at steps of each failback
// command on vSphere; running the command again completes it with the
// right content (an undo after the switch drops what production wrote
// since, too).
func TestVSphereFailbackKill(t *testing.T) {
	tool := crashrun(t)
	cases := []struct {
		before []string
		action string
		at     string
	}{
		{nil, "sync", "failback-moving"},
		{[]string{"sync"}, "switch", "failback-start-production"},
		{[]string{"switch"}, "commit", "failback-return-replica"},
		{[]string{"sync"}, "undo", "failback-end"},
		{[]string{"switch"}, "undo", "failback-undo-production"},
	}
	for _, tc := range cases {
		t.Run(tc.action+" at "+tc.at, func(t *testing.T) {
			l, before := vsFailbackLab(t, 4*mib)
			vsReplicaWrites(l)
			for _, b := range tc.before {
				if b == "sync" {
					vsFailback(l)
				} else {
					vsFailback(l, b)
				}
			}
			wantReplica := vsReplicaDisks(l)
			if tc.action == "undo" && slices.Contains(tc.before, "switch") {
				// Production ran after the switch and wrote: undo drops it.
				l.write(vsFbVM, 0, 0, 64<<10)
			}
			res := failbackDiesAt(t, tool, l.cfg, vsFbVM, tc.action, tc.at)
			switch tc.action {
			case "sync", "switch":
				sameDisks(t, "production after the command ran again", l.state()[vsFbVM], wantReplica)
			case "commit":
				if res.Failback != nil {
					t.Fatalf("a failback survived its commit: %+v", res.Failback)
				}
				sameDisks(t, "production after the commit", l.state()[vsFbVM], wantReplica)
				if run := l.run(); run.code != 0 || strings.Contains(run.modes(), "full") {
					t.Fatalf("the run after the commit: exit %d, modes %s\n%s", run.code, run.modes(), run.stderr)
				}
			case "undo":
				if res.Failback != nil {
					t.Fatalf("a failback survived its undo: %+v", res.Failback)
				}
				sameDisks(t, "production after the undo", l.state()[vsFbVM], before)
				sameDisks(t, "the replica after the undo", vsReplicaDisks(l), wantReplica)
			}
		})
	}
}

// TestVSphereFailbackToNewVM: a failback --to a VM production does not
// have creates it (its NIC on the production network the job's map maps
// the replica's from), fills it from the replica and starts it; its undo
// destroys it and leaves the job's VM as it was.
func TestVSphereFailbackToNewVM(t *testing.T) {
	l, before := vsFailbackLab(t, 4*mib)
	vsReplicaWrites(l)
	r := ferry(t, l.cfg, "failback", "e2e", vsFbVM, "--to", "app-copy", "--switch", "--json")
	if r.code != 0 {
		t.Fatalf("failback --to a new vm: %s", r)
	}
	var res engine.FailbackResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Failback == nil || !res.Failback.Create || res.Failback.Production != "app-copy" || res.Failback.State != "switched" {
		t.Fatalf("failback --to a new vm: %+v", res.Failback)
	}
	t.Logf("syncs into the created vm: %s", syncFigures(res.Syncs))
	sameBytes(t, "the created vm", l.prod.Disk(t, "app-copy", 0), vsReplicaDisks(l)[0])
	vm := l.prod.VM(t, "app-copy")
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || len(vm.Network) != 1 {
		t.Fatalf("the created vm is %s on %d networks", vm.Runtime.PowerState, len(vm.Network))
	}
	var net mo.Network
	if err := property.DefaultCollector(l.prod.Client.Client).RetrieveOne(context.Background(), vm.Network[0], []string{"name"}, &net); err != nil || net.Name != "VM Network" {
		t.Errorf("the created vm is on network %q (%v), not production's", net.Name, err)
	}
	vsFailback(l, "undo")
	f, err := l.prod.Finder(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.VirtualMachine(context.Background(), "app-copy"); err == nil {
		t.Error("the vm a failback created survived its undo")
	}
	sameDisks(t, "the job's vm after a failback to another", l.state()[vsFbVM], before)
}
