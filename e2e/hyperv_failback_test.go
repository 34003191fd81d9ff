package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// hvFailbackLab is a Hyper-V to Hyper-V lab on two simulated hosts: VM
// app-01 (two disks, running on prod-net) replicated by job "e2e".
type hvFailbackLab struct {
	t        *testing.T
	cfg      string
	prod, dr *simhost.Host
	vm       string // the production VM's id
	sizes    []int64
	rng      *rand.Rand
	judged   int // disks libvhdi read
}

func newHVFailbackLab(t *testing.T, sizes ...int64) *hvFailbackLab {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	prod, err := simhost.Open(filepath.Join(dir, "hv-prod"), "prod-net")
	if err != nil {
		t.Fatal(err)
	}
	dr, err := simhost.Open(filepath.Join(dir, "hv-dr"), "dr-net")
	if err != nil {
		t.Fatal(err)
	}
	spec := host.VMSpec{Name: fbVM, Generation: 2, CPUs: 2, MemoryMiB: 2048,
		NICs: []host.NICSpec{{Switch: "prod-net", Guest: host.GuestNetwork{Addresses: []string{"10.1.0.5/24"}, Gateway: "10.1.0.1"}}}}
	for i, s := range sizes {
		spec.Disks = append(spec.Disks, host.DiskSpec{Controller: "scsi", Location: i, Capacity: s})
	}
	v, err := prod.CreateVM(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	l := &hvFailbackLab{t: t, cfg: filepath.Join(dir, "config"), prod: prod, dr: dr, vm: v.ID, sizes: sizes,
		rng: rand.New(rand.NewPCG(uint64(len(t.Name())), 11))}
	for d, s := range sizes {
		l.guestWrite(prod, v.ID, d, 0, l.data(int(s/2)))
	}
	if err := prod.SetRunning(ctx, v.ID, true); err != nil {
		t.Fatal(err)
	}
	(&lab{t: t, cfg: l.cfg}).writeConfig(fmt.Sprintf(`
source "hyperv" "prod"    { host = "sim:%s" }
target "hyperv" "dr"      { host = "sim:%s" }
repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.hyperv.prod
  target     = target.hyperv.dr
  repository = repository.local.meta
  vms        = [%q]
  retention { restore_points = 3 }
  network_map {
    from = "prod-net"
    to   = "dr-net"
  }
}
`, prod.Dir(), dr.Dir(), fbVM))
	return l
}

func (l *hvFailbackLab) data(n int) []byte {
	return (&lab{rng: l.rng}).data(n)
}

func (l *hvFailbackLab) guestWrite(h *simhost.Host, vm string, disk int, off int64, b []byte) {
	l.t.Helper()
	if err := h.GuestWrite(context.Background(), vm, disk, off, b); err != nil {
		l.t.Fatal(err)
	}
}

// scatterChange makes guest writes over about 1% of a disk of a VM.
func (l *hvFailbackLab) scatterChange(h *simhost.Host, vm string, disk int, size int64) {
	l.t.Helper()
	for written := int64(0); written < size/100; {
		n := 4096 * (1 + l.rng.IntN(8))
		off := l.rng.Int64N(size-int64(n)) &^ 511
		l.guestWrite(h, vm, disk, off, l.data(n))
		written += int64(n)
	}
}

// replicaChange changes about 1% of each of the running replica's disks.
func (l *hvFailbackLab) replicaChange() {
	for d, s := range l.sizes {
		l.scatterChange(l.dr, fbVM+"_replica", d, s)
	}
}

func (l *hvFailbackLab) run() session {
	return (&lab{t: l.t, cfg: l.cfg}).run()
}

// disks reads every disk of a VM as it is now, its newest file's chain,
// with the plugin's VHDX reader; judged also checks each against libvhdi.
func (l *hvFailbackLab) disks(h *simhost.Host, vm string, judged bool) [][]byte {
	l.t.Helper()
	v, err := h.GetVM(context.Background(), vm)
	if err != nil {
		l.t.Fatal(err)
	}
	var out [][]byte
	for d, disk := range v.Disks {
		b := readVHDX(l.t, disk.Path)
		if judged {
			if got, want := sdktest.LibvhdiDigest(l.t, vhdxChain(l.t, disk.Path)...), digest(b); got != want {
				l.t.Fatalf("vm %s disk %d: libvhdi reads %s, ferry's reader %s", vm, d, got, want)
			}
			l.judged++
		}
		out = append(out, b)
	}
	return out
}

func readVHDX(t *testing.T, path string) []byte {
	t.Helper()
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

func (l *hvFailbackLab) running(h *simhost.Host, vm string) bool {
	l.t.Helper()
	v, err := h.GetVM(context.Background(), vm)
	if err != nil {
		l.t.Fatal(err)
	}
	return v.Running
}

func (l *hvFailbackLab) failback(args ...string) engine.FailbackResult {
	l.t.Helper()
	return failbackJSON(l.t, l.cfg, fbVM, args...)
}

// TestHyperVFailback fails a Hyper-V VM back from its Hyper-V replica
// through the real binaries, both hosts simulated: production changed
// after its restore point, the replica changed while it ran; the first
// sync sends about what changed on both sides (the replica's RCT marks,
// production's RCT since the point), an undo gives production back byte
// for byte (read by libvhdi) and running, the switch leaves production
// equal to the replica at the switch, and after the commit the next run
// is incremental and its point equals production.
func TestHyperVFailback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sizes := []int64{16 * mib, 8 * mib}
	var total int64
	for _, s := range sizes {
		total += s
	}
	l := newHVFailbackLab(t, sizes...)
	if s := l.run(); s.code != 0 || s.modes() != "full,full" {
		t.Fatalf("first run: %s %s", s.modes(), s.stderr)
	}
	for d, s := range sizes {
		l.scatterChange(l.prod, l.vm, d, s)
	}
	if r := ferry(t, l.cfg, "failover", "e2e", fbVM); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	before := l.disks(l.prod, l.vm, true)

	// A sync while the replica runs: about 1% + 1% of each disk.
	l.replicaChange()
	res := l.failback()
	s, size, modes := sent(res.Syncs)
	t.Logf("first sync: %d bytes sent for %d bytes of disks (modes %v; %s)", s, size, modes, syncFigures(res.Syncs))
	if size != total || strings.Join(modes, ",") != "change-tracking,change-tracking" {
		t.Fatalf("first sync: %d bytes of disks, modes %v (%+v)", size, modes, res.Syncs)
	}
	if s == 0 || s > total/100*2*3 {
		t.Fatalf("first sync sent %d bytes for two 1%% changes of %d bytes of disks", s, total)
	}
	if l.running(l.prod, l.vm) {
		t.Error("production runs during the failback's syncs")
	}
	sameDisks(t, "production after a sync", l.disks(l.prod, l.vm, false), l.disks(l.dr, fbVM+"_replica", false))

	// Undo before the commit: production back as it was, running.
	if res := l.failback("undo"); res.Failback != nil {
		t.Fatalf("a failback survived its undo: %+v", res.Failback)
	}
	sameDisks(t, "production after undo", l.disks(l.prod, l.vm, true), before)
	if !l.running(l.prod, l.vm) || !l.running(l.dr, fbVM+"_replica") {
		t.Errorf("after undo: production running %v, the replica running %v; want both", l.running(l.prod, l.vm), l.running(l.dr, fbVM+"_replica"))
	}
	if cps, _ := l.prod.ListCheckpoints(ctx, l.vm); len(cps) != 0 {
		t.Errorf("production keeps %d checkpoints after the undo", len(cps))
	}

	// Again: sync, more replica writes, switch.
	l.replicaChange()
	l.failback()
	l.replicaChange()
	res = l.failback("switch")
	s, _, modes = sent(res.Syncs)
	t.Logf("final sync: %d bytes sent (modes %v; %s)", s, modes, syncFigures(res.Syncs))
	if len(res.Syncs) != 1 || s == 0 || s > total/100*3 {
		t.Fatalf("the final sync sent %d bytes in %d syncs for a 1%% change", s, len(res.Syncs))
	}
	atSwitch := l.disks(l.dr, fbVM+"_replica", true)
	sameDisks(t, "production after the switch", l.disks(l.prod, l.vm, true), atSwitch)
	if !l.running(l.prod, l.vm) || l.running(l.dr, fbVM+"_replica") {
		t.Errorf("after the switch: production running %v, the replica %v; want production alone", l.running(l.prod, l.vm), l.running(l.dr, fbVM+"_replica"))
	}
	v, err := l.prod.GetVM(ctx, l.vm)
	if err != nil {
		t.Fatal(err)
	}
	if v.NICs[0].Switch != "prod-net" || strings.Join(v.NICs[0].Guest.Addresses, ",") != "10.1.0.5/24" {
		t.Errorf("production's adapter after the switch: %+v", v.NICs[0])
	}

	// Commit: the replica is back in replication, the next run incremental.
	l.failback("commit")
	if cps, _ := l.prod.ListCheckpoints(ctx, l.vm); len(cps) != 0 {
		t.Errorf("production keeps %d checkpoints after the commit", len(cps))
	}
	l.guestWrite(l.prod, l.vm, 0, 4*mib, l.data(64<<10))
	want := l.disks(l.prod, l.vm, false)
	run := l.run()
	if run.code != 0 || run.Result != "success" {
		t.Fatalf("the run after the commit: %s %+v\n%s", run.Result, run.VMs, run.stderr)
	}
	t.Logf("run after the commit: modes %s, %d bytes sent", run.modes(), run.Totals.BytesSent)
	if run.modes() != "change-tracking,change-tracking" || run.Totals.BytesSent > total/10 {
		t.Fatalf("the run after the commit was not incremental: modes %s, %d bytes sent", run.modes(), run.Totals.BytesSent)
	}
	rv, err := l.dr.GetVM(ctx, fbVM+"_replica")
	if err != nil {
		t.Fatal(err)
	}
	cps, err := l.dr.ListCheckpoints(ctx, rv.ID)
	if err != nil {
		t.Fatal(err)
	}
	newest := cps[len(cps)-1]
	for d, cd := range newest.Disks {
		b := readVHDX(t, cd.Path)[:len(want[d])]
		sameBytes(t, fmt.Sprintf("the newest point %s, disk %d", newest.Name, d), b, want[d])
		if got := sdktest.LibvhdiDigest(t, vhdxChain(t, cd.Path)...); got != digest(want[d]) {
			t.Errorf("the newest point %s, disk %d: libvhdi reads %s, production holds %s", newest.Name, d, got, digest(want[d]))
		}
		l.judged++
	}
	t.Logf("libvhdi read %d disks", l.judged)
	if v, _ := l.prod.GetVM(ctx, l.vm); strings.Contains(v.Notes, "ferry failback") {
		t.Errorf("production's notes after the run that followed the commit: %q", v.Notes)
	}
}

// TestHyperVFailbackToANewVM: a failback --to a VM the production host
// does not have creates it from the replica's description (generation,
// disks, its adapter on the production switch the network map maps
// back), fills it whole, and starts it at the switch; its undo removes
// it and leaves the job's VM as it was.
func TestHyperVFailbackToANewVM(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := newHVFailbackLab(t, 8*mib)
	if s := l.run(); s.code != 0 {
		t.Fatalf("first run: %s", s.stderr)
	}
	if r := ferry(t, l.cfg, "failover", "e2e", fbVM); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	before := l.disks(l.prod, l.vm, false)
	l.replicaChange()
	res := l.failback("--to", "app-copy", "--switch")
	if res.Failback == nil || !res.Failback.Create || res.Failback.Production != "app-copy" || res.Failback.State != "switched" {
		t.Fatalf("failback --to a new vm: %+v", res.Failback)
	}
	if _, _, modes := sent(res.Syncs); modes[0] != "full" {
		t.Errorf("the first sync into a created vm: modes %v", modes)
	}
	created, err := l.prod.GetVM(ctx, "app-copy")
	if err != nil {
		t.Fatal(err)
	}
	if created.Generation != 2 || len(created.Disks) != 1 || len(created.NICs) != 1 || created.NICs[0].Switch != "prod-net" || !created.Running {
		t.Errorf("the created vm: %+v", created)
	}
	replica := l.disks(l.dr, fbVM+"_replica", true)
	sameDisks(t, "the created vm", l.disks(l.prod, "app-copy", true), replica)
	l.failback("undo")
	if _, err := l.prod.GetVM(ctx, "app-copy"); err == nil {
		t.Error("the vm a failback created survived its undo")
	}
	sameDisks(t, "the job's vm after a failback to another", l.disks(l.prod, l.vm, true), before)
	if !l.running(l.dr, fbVM+"_replica") {
		t.Error("the replica does not run after the undo")
	}
}

// TestHyperVFailbackKill kills ferry (SIGKILL) at steps of each failback
// command with the Hyper-V plugins; running the command again completes
// it: production holds the replica's data after a sync or a switch, the
// next run after a commit is incremental and its point equals
// production, and an undo gives production back and the replica runs.
func TestHyperVFailbackKill(t *testing.T) {
	t.Parallel()
	tool := crashrun(t)
	cases := []struct {
		before []string
		action string
		at     string
	}{
		{nil, "sync", "failback-begin"},
		{nil, "sync", "failback-moving"},
		{nil, "switch", "failback-stop-replica"},
		{[]string{"sync"}, "switch", "failback-start-production"},
		{[]string{"switch"}, "commit", "failback-commit-production"},
		{[]string{"switch"}, "commit", "failback-return-replica"},
		{[]string{"sync"}, "undo", "failback-undo-production"},
		{[]string{"switch"}, "undo", "failback-start-replica"},
	}
	for _, tc := range cases {
		t.Run(tc.action+" at "+tc.at, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			l := newHVFailbackLab(t, 4*mib)
			if s := l.run(); s.code != 0 {
				t.Fatalf("first run: %s", s.stderr)
			}
			l.scatterChange(l.prod, l.vm, 0, 4*mib)
			if r := ferry(t, l.cfg, "failover", "e2e", fbVM); r.code != 0 {
				t.Fatalf("failover: %s", r)
			}
			before := l.disks(l.prod, l.vm, false)
			l.replicaChange()
			for _, b := range tc.before {
				if b == "sync" {
					l.failback()
				} else {
					l.failback(b)
				}
			}
			wantReplica := l.disks(l.dr, fbVM+"_replica", false)
			res := failbackDiesAt(t, tool, l.cfg, fbVM, tc.action, tc.at)
			switch tc.action {
			case "sync", "switch":
				sameDisks(t, "production after the command ran again", l.disks(l.prod, l.vm, false), wantReplica)
			case "commit":
				if res.Failback != nil {
					t.Fatalf("a failback survived its commit: %+v", res.Failback)
				}
				want := l.disks(l.prod, l.vm, false)
				sameDisks(t, "production after the commit", want, wantReplica)
				run := l.run()
				if run.code != 0 || run.modes() != "change-tracking" {
					t.Fatalf("the run after the commit: exit %d, modes %s\n%s", run.code, run.modes(), run.stderr)
				}
				rv, err := l.dr.GetVM(ctx, fbVM+"_replica")
				if err != nil {
					t.Fatal(err)
				}
				cps, err := l.dr.ListCheckpoints(ctx, rv.ID)
				if err != nil {
					t.Fatal(err)
				}
				sameBytes(t, "the newest point", readVHDX(t, cps[len(cps)-1].Disks[0].Path), want[0])
			case "undo":
				if res.Failback != nil {
					t.Fatalf("a failback survived its undo: %+v", res.Failback)
				}
				sameDisks(t, "production after the undo", l.disks(l.prod, l.vm, false), before)
				sameDisks(t, "the replica after the undo", l.disks(l.dr, fbVM+"_replica", false), wantReplica)
				if !l.running(l.prod, l.vm) || !l.running(l.dr, fbVM+"_replica") {
					t.Errorf("after the undo: production running %v, the replica %v; want both", l.running(l.prod, l.vm), l.running(l.dr, fbVM+"_replica"))
				}
			}
		})
	}
}
