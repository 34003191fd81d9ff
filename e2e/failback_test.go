package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
)

// failbackLab is a lab whose VM app-01 (two disks) was replicated, changed
// at production after its restore point, and failed over.
type failbackLab struct {
	*lab
	sizes []int64
	// before is production's content when the failback began.
	before [][]byte
}

const fbVM = "app-01"

func newFailbackLab(t *testing.T, sizes ...int64) *failbackLab {
	t.Helper()
	var disks []string
	for _, s := range sizes {
		disks = append(disks, fmt.Sprintf("%dMiB", s/mib))
	}
	l := &failbackLab{lab: newLab(t, 3, vmSpec{name: fbVM, disks: disks, nic: "prod-net=10.1.0.5/24"}), sizes: sizes}
	for d, s := range sizes {
		l.write(fbVM, d, 0, int(s/2))
	}
	if s := l.run(); s.code != 0 {
		t.Fatalf("first run: %s", s.stderr)
	}
	// Production changes after the point (the disaster came later).
	for d, s := range sizes {
		l.scatterChange(l.prod, fbVM, d, s)
	}
	if r := ferry(t, l.cfg, "failover", "e2e", fbVM); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	for d := range sizes {
		l.before = append(l.before, l.source(fbVM, d))
	}
	return l
}

// scatterChange makes tracked writes over about 1% of a disk of site.
func (l *failbackLab) scatterChange(site, vm string, disk int, size int64) {
	l.t.Helper()
	for written := int64(0); written < size/100; {
		n := 4096 * (1 + l.rng.IntN(8))
		off := l.rng.Int64N(size-int64(n)) &^ 511
		local(l.t, l.data(n), "vm", "write", site, vm, fmt.Sprint(disk), fmt.Sprint(off))
		written += int64(n)
	}
}

// replicaChange changes about 1% of each of the running replica's disks.
func (l *failbackLab) replicaChange() {
	for d, s := range l.sizes {
		l.scatterChange(l.dr, fbVM+"_replica", d, s)
	}
}

func (l *failbackLab) replicaDisks() [][]byte {
	var out [][]byte
	for d := range l.sizes {
		out = append(out, l.replicaDisk(fbVM, d))
	}
	return out
}

func (l *failbackLab) productionDisks() [][]byte {
	var out [][]byte
	for d := range l.sizes {
		out = append(out, l.source(fbVM, d))
	}
	return out
}

// failback runs `ferry failback ARGS... e2e app-01 --json`.
func (l *failbackLab) failback(args ...string) engine.FailbackResult {
	l.t.Helper()
	return failbackJSON(l.t, l.cfg, fbVM, args...)
}

// failbackDiesAt runs `ferry failback ACTION` of vm through crashrun,
// which kills itself (SIGKILL) at step at, then runs the command again
// as a person would and returns what it did.
func failbackDiesAt(t *testing.T, tool, cfg, vm, action, at string) engine.FailbackResult {
	t.Helper()
	cmd := exec.Command(tool, "-config", cfg, "-job", "e2e", "-failback", action, "-vm", vm, "-at", at)
	cmd.Env = append(os.Environ(), "FERRY_PLUGIN_PATH="+bin)
	out, err := cmd.CombinedOutput()
	if !strings.Contains(string(out), "dying at "+at) {
		t.Fatalf("crashrun did not die at %s: %v\n%s", at, err, out)
	}
	var args []string
	if action != "sync" {
		args = []string{action}
	}
	return failbackJSON(t, cfg, vm, args...)
}

// failbackJSON runs `ferry failback ARGS... e2e VM --json` on the
// configuration in cfg, and fails the test unless it succeeds.
func failbackJSON(t *testing.T, cfg, vm string, args ...string) engine.FailbackResult {
	t.Helper()
	r := ferry(t, cfg, append(append([]string{"failback"}, args...), "e2e", vm, "--json")...)
	if r.code != 0 {
		t.Fatalf("ferry failback %v: %s", args, r)
	}
	var res engine.FailbackResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("ferry failback %v --json: %v\n%s", args, err, r)
	}
	return res
}

func sent(syncs []catalog.FailbackSync) (sent, size int64, modes []string) {
	for _, s := range syncs {
		for _, d := range s.Disks {
			sent += d.Sent
			size += d.Size
			modes = append(modes, d.Mode)
		}
	}
	return sent, size, modes
}

// syncFigures says what syncs read, changed and sent, for the log.
func syncFigures(syncs []catalog.FailbackSync) string {
	var read, changed, sent int64
	for _, s := range syncs {
		for _, d := range s.Disks {
			read, changed, sent = read+d.Read, changed+d.Changed, sent+d.Sent
		}
	}
	return fmt.Sprintf("read %d, changed %d, sent %d bytes", read, changed, sent)
}

func sameDisks(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	for d := range want {
		sameBytes(t, fmt.Sprintf("%s, disk %d", what, d), got[d], want[d])
	}
}

func (l *failbackLab) powerOf(site, vm string) string {
	l.t.Helper()
	r := local(l.t, nil, "vm", "show", site, vm, "--json")
	var v struct {
		PowerState string `json:"power_state"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		l.t.Fatalf("vm show --json: %v\n%s", err, r)
	}
	return v.PowerState
}

// TestFailbackEndToEnd: a VM failed over after production changed past
// its restore point, the replica changed while it ran; failback sends
// about what changed on both sides, the final sync what changed since,
// production ends byte for byte what the replica held at the switch, an
// undo before the commit gives production back whole and the replica
// runs again, and after a commit the next run is incremental.
func TestFailbackEndToEnd(t *testing.T) {
	t.Parallel()
	sizes := []int64{16 * mib, 8 * mib}
	l := newFailbackLab(t, sizes...)
	var total int64
	for _, s := range sizes {
		total += s
	}

	// A sync while the replica runs: about 1% + 1% of each disk.
	l.replicaChange()
	res := l.failback()
	s, size, modes := sent(res.Syncs)
	t.Logf("first sync: %d bytes sent for %d bytes of disks (modes %v; %s)", s, size, modes, syncFigures(res.Syncs))
	if size != total || strings.Join(modes, ",") != "change-tracking,change-tracking" {
		t.Fatalf("first sync: %d bytes of disks, modes %v", size, modes)
	}
	if s == 0 || s > total/100*2*3 {
		t.Fatalf("first sync sent %d bytes for two 1%% changes of %d bytes of disks", s, total)
	}
	if res.Failback == nil || res.Failback.State != "synced" {
		t.Fatalf("state after a sync: %+v", res.Failback)
	}

	// Undo before the commit: production back as it was, the replica runs.
	res = l.failback("undo")
	if res.Failback != nil {
		t.Fatalf("a failback survived its undo: %+v", res.Failback)
	}
	sameDisks(t, "production after undo", l.productionDisks(), l.before)
	if p := l.powerOf(l.prod, fbVM); p != "on" {
		t.Errorf("production after undo is powered %q, as before the failback", p)
	}
	if p := l.powerOf(l.dr, fbVM+"_replica"); p != "on" {
		t.Errorf("the replica after undo is powered %q", p)
	}
	if r := ferry(t, l.cfg, "failback", "status", "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("failback status after undo: %s", r)
	}

	// Again: sync, more replica writes, switch.
	l.replicaChange()
	l.failback()
	if r := ferry(t, l.cfg, "failback", "status", "e2e", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"state": "synced"`) {
		t.Fatalf("failback status: %s", r)
	}
	l.replicaChange()
	res = l.failback("switch")
	s, _, modes = sent(res.Syncs)
	t.Logf("final sync: %d bytes sent (modes %v; %s)", s, modes, syncFigures(res.Syncs))
	if len(res.Syncs) != 1 || s == 0 || s > total/100*3 {
		t.Fatalf("the final sync sent %d bytes in %d syncs for a 1%% change", s, len(res.Syncs))
	}
	atSwitch := l.replicaDisks()
	sameDisks(t, "production after the switch", l.productionDisks(), atSwitch)
	if p := l.powerOf(l.prod, fbVM); p != "on" {
		t.Errorf("production after the switch is powered %q", p)
	}
	if p := l.powerOf(l.dr, fbVM+"_replica"); p != "off" {
		t.Errorf("the replica after the switch is powered %q", p)
	}
	if r := run(t, []byte("x"), "ferry-plugin-local", "vm", "write", l.dr, fbVM+"_replica", "0", "0"); r.code == 0 || !strings.Contains(r.stderr, "powered off") {
		t.Errorf("a guest wrote into the stopped replica: %s", r)
	}
	if r := ferry(t, l.cfg, "failback", "e2e", fbVM); r.code == 0 || !strings.Contains(r.stderr, "commit") {
		t.Errorf("a sync after the switch: %s", r)
	}

	// Commit: the replica is back in replication, the next run incremental.
	l.failback("commit")
	l.write(fbVM, 0, 4*mib, 64<<10)
	want := l.productionDisks()
	run := l.run()
	if run.code != 0 || run.Result != "success" {
		t.Fatalf("the run after the commit: %s %+v\n%s", run.Result, run.VMs, run.stderr)
	}
	t.Logf("run after the commit: modes %s, %d bytes sent", run.modes(), run.Totals.BytesSent)
	if strings.Contains(run.modes(), "full") || run.Totals.BytesSent > total/10 {
		t.Fatalf("the run after the commit was not incremental: modes %s, %d bytes sent", run.modes(), run.Totals.BytesSent)
	}
	points := l.points(fbVM)
	newest := points[len(points)-1].ID
	for d := range want {
		sameBytes(t, fmt.Sprintf("the newest point %s, disk %d", newest, d), l.point(fbVM, newest, d), want[d])
	}
}

// TestFailbackKill kills ferry (SIGKILL) at each step of each failback
// command; running the command again completes it with the right content.
func TestFailbackKill(t *testing.T) {
	t.Parallel()
	tool := crashrun(t)
	cases := []struct {
		before []string // commands run first
		action string
		at     string
	}{
		{nil, "sync", "failback-begin"},
		{nil, "sync", "failback-sync"},
		{nil, "sync", "failback-moving"},
		{nil, "switch", "failback-stop-replica"},
		{[]string{"sync"}, "switch", "failback-final-sync"},
		{[]string{"sync"}, "switch", "failback-start-production"},
		{[]string{"switch"}, "commit", "failback-commit-production"},
		{[]string{"switch"}, "commit", "failback-return-replica"},
		{[]string{"switch"}, "commit", "failback-end"},
		{[]string{"sync"}, "undo", "failback-undo-production"},
		{[]string{"switch"}, "undo", "failback-start-replica"},
		{[]string{"switch"}, "undo", "failback-end"},
	}
	for _, tc := range cases {
		t.Run(tc.action+" at "+tc.at, func(t *testing.T) {
			t.Parallel()
			l := newFailbackLab(t, 4*mib)
			l.replicaChange()
			for _, b := range tc.before {
				if b == "sync" {
					l.failback()
				} else {
					l.failback(b)
				}
			}
			wantReplica := l.replicaDisks()
			res := failbackDiesAt(t, tool, l.cfg, fbVM, tc.action, tc.at)
			switch tc.action {
			case "sync", "switch":
				sameDisks(t, "production after the command ran again", l.productionDisks(), wantReplica)
				if tc.action == "switch" && (res.Failback == nil || res.Failback.State != "switched") {
					t.Fatalf("after the switch ran again: %+v", res.Failback)
				}
			case "commit":
				if res.Failback != nil {
					t.Fatalf("a failback survived its commit: %+v", res.Failback)
				}
				sameDisks(t, "production after the commit", l.productionDisks(), wantReplica)
				if run := l.run(); run.code != 0 || strings.Contains(run.modes(), "full") {
					t.Fatalf("the run after the commit: exit %d, modes %s\n%s", run.code, run.modes(), run.stderr)
				}
			case "undo":
				if res.Failback != nil {
					t.Fatalf("a failback survived its undo: %+v", res.Failback)
				}
				sameDisks(t, "production after the undo", l.productionDisks(), l.before)
				sameDisks(t, "the replica after the undo", l.replicaDisks(), wantReplica)
				if p := l.powerOf(l.dr, fbVM+"_replica"); p != "on" {
					t.Errorf("the replica after the undo is powered %q", p)
				}
			}
		})
	}
}

// TestFailbackDigestsAndNewVM: production changed behind its change
// tracking's back, so the sync compares digests (computed from
// production where it lives) and still sends only what differs; a
// failback --to a VM that does not exist creates it, and its undo removes
// it.
func TestFailbackDigestsAndNewVM(t *testing.T) {
	t.Parallel()
	const size = 8 * mib
	l := newFailbackLab(t, size)
	l.untracked(fbVM, 0, 3*mib, 64<<10)
	l.before = l.productionDisks()
	l.replicaChange()
	res := l.failback()
	s, _, modes := sent(res.Syncs)
	t.Logf("digest sync: %d bytes sent (modes %v, %s; %s)", s, modes, res.Syncs[0].Disks[0].Why, syncFigures(res.Syncs))
	if strings.Join(modes, ",") != "digest" || s == 0 || s > size/100*3+64<<10 {
		t.Fatalf("sync after an untracked change at production: modes %v, %d bytes sent", modes, s)
	}
	sameDisks(t, "production after a digest sync", l.productionDisks(), l.replicaDisks())
	l.failback("undo")
	sameDisks(t, "production after undo", l.productionDisks(), l.before)

	r := ferry(t, l.cfg, "failback", "e2e", fbVM, "--to", "app-copy", "--switch", "--json")
	if r.code != 0 {
		t.Fatalf("failback --to a new vm: %s", r)
	}
	var fr engine.FailbackResult
	if err := json.Unmarshal([]byte(r.stdout), &fr); err != nil {
		t.Fatal(err)
	}
	if fr.Failback == nil || !fr.Failback.Create || fr.Failback.Production != "app-copy" || fr.Failback.State != "switched" {
		t.Fatalf("failback --to a new vm: %+v", fr.Failback)
	}
	if _, _, modes := sent(fr.Syncs); modes[0] != "full" {
		t.Errorf("the first sync into a created vm: modes %v", modes)
	}
	sameBytes(t, "the created vm", l.source("app-copy", 0), l.replicaDisk(fbVM, 0))
	show := local(t, nil, "vm", "show", l.prod, "app-copy", "--json").stdout
	if !strings.Contains(show, `"prod-net"`) {
		t.Errorf("the created vm is not on the production network: %s", show)
	}
	l.failback("undo")
	if r := run(t, nil, "ferry-plugin-local", "vm", "show", l.prod, "app-copy"); r.code == 0 {
		t.Errorf("the vm a failback created survived its undo: %s", r)
	}
	sameDisks(t, "the job's vm after a failback to another", l.productionDisks(), l.before)
}
