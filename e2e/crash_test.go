package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// crashrun is built once for the crash tests.
func crashrun(t *testing.T) string {
	t.Helper()
	path := filepath.Join(bin, "crashrun")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if out, err := exec.Command("go", "build", "-o", path, "./testdata/crashrun").CombinedOutput(); err != nil {
		t.Fatalf("build crashrun: %v\n%s", err, out)
	}
	return path
}

// TestKillAtEveryStep kills the ferry process (or its plugin, or a
// repository write) at each step of a run and proves: every earlier
// restore point stays intact and readable, the next run finishes without a
// full copy, and no source snapshot survives it.
func TestKillAtEveryStep(t *testing.T) {
	cases := []struct {
		name string
		args []string
	}{
		{"ferry at snapshotted", []string{"-at", "snapshotted"}},
		{"ferry while moving", []string{"-at", "moving"}},
		{"ferry at moved", []string{"-at", "moved"}},
		{"ferry at point-created", []string{"-at", "point-created"}},
		{"ferry at cataloged", []string{"-at", "cataloged"}},
		{"ferry at snapshot-gone", []string{"-at", "snapshot-gone"}},
		{"plugin while moving", []string{"-at", "moving", "-kill", "plugin"}},
		{"plugin at moved", []string{"-at", "moved", "-kill", "plugin"}},
		{"repository manifest write 1", []string{"-kill-on-manifest-put", "1"}},
		{"repository manifest write 2", []string{"-kill-on-manifest-put", "2"}},
		{"repository manifest write 5", []string{"-kill-on-manifest-put", "5"}},
	}
	tool := crashrun(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, 5, vmSpec{name: "app-01", disks: []string{"16MiB", "8MiB"}})
			l.write("app-01", 0, 0, 12*mib)
			l.write("app-01", 1, 0, 4*mib)
			before := [][]byte{l.source("app-01", 0), l.source("app-01", 1)}
			if s := l.run(); s.code != 0 {
				t.Fatalf("first run: %s", s.stderr)
			}
			p1 := l.points("app-01")[0].ID

			// Scattered writes over several segments, then the killed run.
			l.scatter("app-01", 0, 16*mib, 40)
			l.scatter("app-01", 1, 8*mib, 10)
			want := [][]byte{l.source("app-01", 0), l.source("app-01", 1)}
			cmd := exec.Command(tool, append([]string{"-config", l.cfg, "-job", "e2e"}, tc.args...)...)
			cmd.Env = append(os.Environ(), "FERRY_PLUGIN_PATH="+bin)
			out, _ := cmd.CombinedOutput()
			t.Logf("killed run said: %s", out)

			// Every earlier point is intact.
			for d := range before {
				sameBytes(t, fmt.Sprintf("point %s disk %d after the kill", p1, d), l.point("app-01", p1, d), before[d])
			}

			// The next run finishes, without a full copy.
			s := l.run()
			if s.code != 0 || s.Result != "success" {
				t.Fatalf("the run after the kill: exit %d %s %+v\n%s", s.code, s.Result, s.VMs, s.stderr)
			}
			if strings.Contains(s.modes(), "full") {
				t.Fatalf("the run after the kill made a full copy: %s", s.modes())
			}
			if s.Totals.BytesSent > 4*mib {
				t.Fatalf("the run after the kill sent %d bytes for about 1.5 MiB of writes", s.Totals.BytesSent)
			}
			points := l.points("app-01")
			newest := points[len(points)-1].ID
			for d := range want {
				sameBytes(t, fmt.Sprintf("newest point %s disk %d", newest, d), l.point("app-01", newest, d), want[d])
				sameBytes(t, fmt.Sprintf("point %s disk %d at the end", p1, d), l.point("app-01", p1, d), before[d])
			}
			if snaps := l.snapshots("app-01"); len(snaps) != 0 {
				t.Fatalf("snapshots survived the next run: %+v", snaps)
			}
		})
	}
}

// TestRetryAfterPluginDeath kills the plugin in the middle of a copy, in a
// session of a job whose retry block asks for a second attempt: the
// session configures the plugin again after the wait, and its second
// attempt makes an exact restore point without a full copy; the earlier
// point stays intact and no snapshot is left.
func TestRetryAfterPluginDeath(t *testing.T) {
	l := newLab(t, 5, vmSpec{name: "app-01", disks: []string{"16MiB", "8MiB"}})
	l.write("app-01", 0, 0, 12*mib)
	l.write("app-01", 1, 0, 4*mib)
	before := [][]byte{l.source("app-01", 0), l.source("app-01", 1)}
	if s := l.run(); s.code != 0 {
		t.Fatalf("first run: %s", s.stderr)
	}
	p1 := l.points("app-01")[0].ID
	l.writeConfig(strings.Replace(readFile(t, filepath.Join(l.cfg, "main.hcl")), "  retention {", "  retry {\n    attempts = 2\n    wait     = \"1s\"\n  }\n  retention {", 1))

	l.scatter("app-01", 0, 16*mib, 40)
	l.scatter("app-01", 1, 8*mib, 10)
	want := [][]byte{l.source("app-01", 0), l.source("app-01", 1)}
	cmd := exec.Command(crashrun(t), "-config", l.cfg, "-job", "e2e", "-at", "moving", "-kill", "plugin", "-retry")
	cmd.Env = append(os.Environ(), "FERRY_PLUGIN_PATH="+bin)
	out, err := cmd.CombinedOutput()
	said := string(out)
	if err != nil || !strings.Contains(said, "\nsuccess\n") || !strings.Contains(said, "app-01 success attempts 2 modes ") ||
		!strings.Contains(said, "note: app-01: attempt 1 of 2 failed; tried again after the other VMs and a wait of 1s: ") ||
		!strings.Contains(said, "exited") || !strings.Contains(said, "of this session's earlier attempt") {
		t.Fatalf("the session with the killed plugin: %v\n%s", err, said)
	}
	if strings.Contains(said, "full") {
		t.Fatalf("the retry made a full copy:\n%s", said)
	}
	points := l.points("app-01")
	if len(points) != 2 || points[0].ID != p1 {
		t.Fatalf("points %+v, want the first and the retry's", points)
	}
	for d := range want {
		sameBytes(t, fmt.Sprintf("point %s disk %d", p1, d), l.point("app-01", p1, d), before[d])
		sameBytes(t, fmt.Sprintf("the retry's point disk %d", d), l.point("app-01", points[1].ID, d), want[d])
	}
	if snaps := l.snapshots("app-01"); len(snaps) != 0 {
		t.Fatalf("snapshots left: %+v", snaps)
	}
}
