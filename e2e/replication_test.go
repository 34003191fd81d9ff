package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const mib = 1 << 20

// TestReplicationEndToEnd drives ferry through the life of a job: a first
// run, tracked writes, an untracked change, a disk that grows, retention,
// and failover with undo and commit; every restore point is compared byte
// for byte with the source state it captured.
func TestReplicationEndToEnd(t *testing.T) {
	l := newLab(t, 3,
		vmSpec{name: "web-01", disks: []string{"24MiB", "8MiB"}, nic: "prod-net=10.1.0.11/24"},
		vmSpec{name: "db-01", disks: []string{"32MiB", "8MiB", "4MiB"}, nic: "prod-net=10.1.7.21/24"},
	)
	l.write("web-01", 0, 0, 6*mib)
	l.write("web-01", 1, 2*mib, mib)
	l.write("db-01", 0, 4*mib, 10*mib)
	l.write("db-01", 2, 0, mib)

	type state map[string][][]byte // vm -> disks
	capture := func() state {
		s := state{}
		for vm, n := range map[string]int{"web-01": 2, "db-01": 3} {
			for d := 0; d < n; d++ {
				s[vm] = append(s[vm], l.source(vm, d))
			}
		}
		return s
	}
	var states []state
	var sessions []session
	runOK := func(wantModes string) session {
		t.Helper()
		states = append(states, capture())
		s := l.run()
		if s.code != 0 || s.Result != "success" {
			t.Fatalf("run %d: exit %d, %s: %+v\n%s", len(sessions)+1, s.code, s.Result, s.VMs, s.stderr)
		}
		if s.modes() != wantModes {
			t.Fatalf("run %d: modes %s, want %s", len(sessions)+1, s.modes(), wantModes)
		}
		sessions = append(sessions, s)
		return s
	}

	// 1: the first run copies what is allocated, never zeros.
	first := runOK("full,full,full,full,full")
	if first.Totals.BytesSent > 20*mib {
		t.Fatalf("the first run sent %d bytes for about 18 MiB of data", first.Totals.BytesSent)
	}

	// 2: tracked writes; only they cross.
	l.scatter("web-01", 0, 24*mib, 20)
	l.scatter("db-01", 1, 8*mib, 5)
	second := runOK("change-tracking,change-tracking,change-tracking,change-tracking,change-tracking")
	if second.Totals.BytesSent > 2*mib {
		t.Fatalf("an incremental run sent %d bytes for 25 small writes", second.Totals.BytesSent)
	}

	// 3: an untracked change resets tracking: digests find it.
	l.untracked("db-01", 0, 20*mib, 64<<10)
	third := runOK("change-tracking,change-tracking,digest,change-tracking,change-tracking")
	if d := third.vm("db-01").Disks[0]; d.BytesSent > mib || d.BlocksChanged != 16 {
		t.Fatalf("the digest path sent %d bytes for %d blocks; want the 16 changed blocks", d.BytesSent, d.BlocksChanged)
	}

	// 4: a disk grows; the replica grows, earlier points keep their size.
	local(t, nil, "vm", "resize", l.prod, "web-01", "1", "12MiB")
	l.write("web-01", 1, 10*mib, mib)
	fourth := runOK("change-tracking,digest,change-tracking,change-tracking,change-tracking")
	if fourth.vm("web-01").Disks[1].BytesSent > 2*mib {
		t.Fatalf("growing a disk sent %d bytes", fourth.vm("web-01").Disks[1].BytesSent)
	}

	// Retention keeps the newest 3 of 4, and each reads back exactly.
	for _, vm := range []string{"web-01", "db-01"} {
		points := l.points(vm)
		if len(points) != 3 {
			t.Fatalf("%s has %d restore points, want 3", vm, len(points))
		}
		for i, p := range points {
			want := states[i+1][vm]
			for d := range want {
				sameBytes(t, fmt.Sprintf("%s point %s disk %d", vm, p.ID, d), l.point(vm, p.ID, d), want[d])
			}
		}
		if snaps := l.snapshots(vm); len(snaps) != 0 {
			t.Fatalf("%s: snapshots left at the source: %+v", vm, snaps)
		}
	}
	if got := len(l.point("web-01", l.points("web-01")[0].ID, 1)); got != 8*mib {
		t.Fatalf("the oldest kept point's grown disk reads %d bytes, want its old 8 MiB", got)
	}

	// Failover to the oldest kept point, with the network map and re-IP.
	oldest := l.points("db-01")[0]
	r := ferry(t, l.cfg, "failover", "e2e", "db-01", "--point", oldest.ID)
	if r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	if !strings.Contains(r.stdout, `network "dr-net", addresses 10.2.7.21/24, gateway 10.2.0.1`) {
		t.Fatalf("failover output does not show the mapped network and new address:\n%s", r.stdout)
	}
	for d, want := range states[1]["db-01"] {
		sameBytes(t, fmt.Sprintf("failed-over db-01 disk %d", d), l.replicaDisk("db-01", d), want)
	}
	show := local(t, nil, "vm", "show", l.dr, "db-01_replica", "--json").stdout
	for _, want := range []string{`"dr-net"`, `"10.2.7.21/24"`, `"10.2.0.53"`} {
		if !strings.Contains(show, want) {
			t.Fatalf("replica description lacks %s:\n%s", want, show)
		}
	}
	// A run skips the failed-over VM and says why, without failing (a DR
	// test must not turn scheduled runs red); the other VM goes on.
	s := l.run()
	if s.code != 0 || s.Result != "success" || s.vm("web-01").Result != "success" || s.vm("db-01").Result != "skipped" ||
		!strings.Contains(s.vm("db-01").Error, "is failed over") || !strings.Contains(s.stderr, "db-01: skipped") {
		t.Fatalf("run during a failover: exit %d, %s, %+v\n%s", s.code, s.Result, s.VMs, s.stderr)
	}

	// Undo: ready again, no point lost, replication resumes incrementally.
	if r := ferry(t, l.cfg, "failover", "undo", "e2e", "db-01"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	if n := len(l.points("db-01")); n != 3 {
		t.Fatalf("after undo db-01 has %d points", n)
	}
	for d, want := range states[1]["db-01"] {
		sameBytes(t, fmt.Sprintf("db-01 point %s disk %d after undo", oldest.ID, d), l.point("db-01", oldest.ID, d), want)
	}
	after := l.run()
	if after.code != 0 || strings.Contains(after.modes(), "full") {
		t.Fatalf("run after undo: exit %d, modes %s", after.code, after.modes())
	}

	// Commit: the replica becomes the production VM and leaves the job.
	if r := ferry(t, l.cfg, "failover", "e2e", "web-01"); r.code != 0 {
		t.Fatalf("failover web-01: %s", r)
	}
	if r := ferry(t, l.cfg, "failover", "commit", "e2e", "web-01"); r.code != 0 || !strings.Contains(r.stdout, "committed") {
		t.Fatalf("commit: %s", r)
	}
	status := ferry(t, l.cfg, "status").stdout
	if !strings.Contains(status, "committed") {
		t.Fatalf("status does not show the committed replica:\n%s", status)
	}
	s = l.run()
	if s.vm("web-01").Result != "failed" || !strings.Contains(s.vm("web-01").Error, "remove the VM from the job") {
		t.Fatalf("run after commit: %+v", s.vm("web-01"))
	}
	plan := ferry(t, l.cfg, "plan").stdout
	if !strings.Contains(plan, "! web-01: replica web-01_replica was committed") {
		t.Fatalf("plan after commit:\n%s", plan)
	}
}

func TestBadInput(t *testing.T) {
	t.Run("unknown VM", func(t *testing.T) {
		l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"4MiB"}})
		l.writeConfig(strings.Replace(readFile(t, filepath.Join(l.cfg, "main.hcl")), `vms        = ["web-01"]`, `vms        = ["web-01", "ghost-01"]`, 1))
		s := l.run()
		if s.code != 1 || s.vm("web-01").Result != "success" {
			t.Fatalf("exit %d, %+v", s.code, s.VMs)
		}
		if e := s.vm("ghost-01").Error; !strings.Contains(e, `vm "ghost-01"`) || !strings.Contains(e, "not found on source source.local.prod") {
			t.Fatalf("error for the unknown VM: %q", e)
		}
	})
	t.Run("unreachable repository folder", func(t *testing.T) {
		l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"4MiB"}})
		l.write("web-01", 0, 0, mib)
		first := l.run()
		blocker := filepath.Join(l.dir, "blocker")
		os.WriteFile(blocker, []byte("a file, not a folder"), 0o644)
		l.writeConfig(strings.Replace(readFile(t, filepath.Join(l.cfg, "main.hcl")), `path = "../meta"`, `path = "../blocker/meta"`, 1))
		r := ferry(t, l.cfg, "run", "e2e")
		if r.code != 1 || !strings.Contains(r.stderr, "repository repository.local.meta") || !strings.Contains(r.stderr, "blocker/meta") {
			t.Fatalf("run with an unreachable repository: %s", r)
		}
		points := l.points("web-01")
		if len(points) != 1 || points[0].ID != first.vm("web-01").RestorePoint {
			t.Fatalf("points after the failed run: %+v", points)
		}
	})
	t.Run("full target disk", func(t *testing.T) {
		l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"64MiB"}})
		// A full target is worth a retry (space may be freed), but not a
		// wait in a test: two attempts at once.
		l.writeConfig(strings.Replace(readFile(t, filepath.Join(l.cfg, "main.hcl")), "  retention {", "  retry {\n    attempts = 2\n    wait     = \"0s\"\n  }\n  retention {", 1))
		if err := os.MkdirAll(l.dr, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", l.dr).CombinedOutput(); err != nil {
			t.Fatalf("this test needs to mount a small tmpfs as the target (run as root): %v: %s", err, out)
		}
		defer exec.Command("umount", l.dr).Run()
		l.write("web-01", 0, 0, 8*mib)
		first := l.run()
		if first.code != 0 {
			t.Fatalf("first run: %s", first.stderr)
		}
		want := l.source("web-01", 0)
		l.write("web-01", 0, 16*mib, 40*mib) // more than the target can hold
		s := l.run()
		if s.code != 1 || !strings.Contains(s.vm("web-01").Error, "no space left on device") || !strings.Contains(s.vm("web-01").Error, "disk 0") ||
			s.vm("web-01").Attempts != 2 {
			t.Fatalf("run onto a full target: exit %d, %+v", s.code, s.vm("web-01"))
		}
		points := l.points("web-01")
		if len(points) != 1 {
			t.Fatalf("points after the failed run: %+v", points)
		}
		sameBytes(t, "the earlier restore point", l.point("web-01", points[0].ID, 0), want)
		if snaps := l.snapshots("web-01"); len(snaps) != 0 {
			t.Fatalf("snapshot left after a failed run: %+v", snaps)
		}
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
