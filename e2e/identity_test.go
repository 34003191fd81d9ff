package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/core/pluginhost"
)

// TestReplicaIdentityEndToEnd drives the real binaries through what issue
// reports found: a replica deleted at the target, a repository put back
// from an older copy, a second configuration writing into the first's
// replica. After every run that reports success, the newest restore point
// equals the source.
func TestReplicaIdentityEndToEnd(t *testing.T) {
	t.Parallel()
	l := newLab(t, 5, vmSpec{name: "web-01", disks: []string{"8MiB"}, nic: "prod-net=10.1.0.11/24"})
	l.write("web-01", 0, 0, 4*mib)
	runOK := func(what string) session {
		t.Helper()
		s := l.run()
		if s.code != 0 || s.Result != "success" {
			t.Fatalf("%s: exit %d, %s: %+v\n%s", what, s.code, s.Result, s.VMs, s.stderr)
		}
		pts := l.points("web-01")
		sameBytes(t, what+": newest point", l.point("web-01", pts[len(pts)-1].ID, 0), l.source("web-01", 0))
		return s
	}
	runOK("first run")

	// An admin deletes the replica: plan says so, the run fills a new one.
	if err := os.RemoveAll(filepath.Join(l.dr, "web-01_replica")); err != nil {
		t.Fatal(err)
	}
	l.write("web-01", 0, 64<<10, 8<<10)
	if p := ferry(t, l.cfg, "plan", "e2e"); !strings.Contains(p.stdout, "is gone from target.local.dr: it will be created and filled") {
		t.Fatalf("plan does not say the replica is gone:\n%s", p)
	}
	s := runOK("after the replica was deleted")
	if s.modes() != "full" || s.Totals.BytesSent < mib {
		t.Fatalf("the new replica was not filled: modes %s, %d bytes sent", s.modes(), s.Totals.BytesSent)
	}
	if n := len(l.points("web-01")); n != 1 {
		t.Fatalf("ferry points lists %d points, want the new replica's one", n)
	}
	if p := ferry(t, l.cfg, "points", "e2e"); !strings.Contains(p.stdout, "gone: replica web-01_replica") || !strings.Contains(p.stdout, "with 1 restore point,") {
		t.Fatalf("ferry points does not list the gone replica:\n%s", p)
	}

	// The repository is put back from a copy taken before a run; at the
	// source the blocks that run changed go back to what they were.
	backup := filepath.Join(l.dir, "meta-backup")
	cp(t, l.meta, backup)
	before := l.source("web-01", 0)[1*mib : 1*mib+64<<10]
	l.write("web-01", 0, 1*mib, 64<<10)
	runOK("before the rollback")
	if err := os.RemoveAll(l.meta); err != nil {
		t.Fatal(err)
	}
	cp(t, backup, l.meta)
	local(t, before, "vm", "write", l.prod, "web-01", "0", "1048576")
	if !bytes.Equal(l.source("web-01", 0)[1*mib:1*mib+64<<10], before) {
		t.Fatal("the source did not go back")
	}
	runOK("after the repository was rolled back")

	// A manifest object is damaged on the repository's disk: the run
	// treats it as lost, rebuilds it and says so; the next run is normal.
	manifests, _ := filepath.Glob(filepath.Join(l.meta, "objects", "*manifest*"))
	if len(manifests) != 1 {
		t.Fatalf("manifest objects: %v", manifests)
	}
	if err := os.WriteFile(manifests[0], []byte("FERRYOBJ1\n{\"key\": garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	l.write("web-01", 0, 2*mib, 8<<10)
	if s := runOK("after a manifest was damaged"); !strings.Contains(s.stderr, "damaged") {
		t.Errorf("no word of the damage in the run's output:\n%s", s.stderr)
	}
	runOK("the run after that")

	// A second configuration whose source also has a web-01, writing into
	// the same target: refused, and the first job's replica is untouched.
	other := filepath.Join(l.dir, "other")
	local(t, nil, "vm", "create", filepath.Join(l.dir, "prod2"), "web-01", "--disk", "8MiB")
	local(t, l.random(mib), "vm", "write", filepath.Join(l.dir, "prod2"), "web-01", "0", "0")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "main.hcl"), []byte(`
source "local" "prod2"    { path = "../prod2" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta2" }
job "shop" {
  source     = source.local.prod2
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01"]
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if p := ferry(t, other, "plan", "shop"); !strings.Contains(p.stdout, `belongs to job "e2e"`) {
		t.Fatalf("plan of the second configuration does not warn:\n%s", p)
	}
	r := ferry(t, other, "run", "shop")
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, `belongs to job "e2e"`) {
		t.Fatalf("the second configuration's run into the first's replica: %s", r)
	}
	pts := l.points("web-01")
	sameBytes(t, "the first job's newest point", l.point("web-01", pts[len(pts)-1].ID, 0), l.source("web-01", 0))
}

// cp copies a folder tree, as a backup would.
func cp(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a %s %s: %v\n%s", from, to, err, out)
	}
}

// TestFailoverStateFollowsTheTarget: the target finished a change the
// catalog did not see (an undo completed behind ferry's back, as the local
// target does for an undo a kill cut short); a refused failover command
// brings the catalog in line, and runs go on.
func TestFailoverStateFollowsTheTarget(t *testing.T) {
	t.Parallel()
	l := newLab(t, 3, vmSpec{name: "app-01", disks: []string{"4MiB"}, nic: "prod-net=10.1.0.12/24"})
	l.write("app-01", 0, 0, mib)
	if s := l.run(); s.code != 0 {
		t.Fatalf("run: %s", s.stderr)
	}
	if r := ferry(t, l.cfg, "failover", "e2e", "app-01"); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	h := pluginhost.New(pluginhost.Options{Dirs: []string{bin}})
	defer h.Close()
	tgt, _, err := h.Target(context.Background(), "local", cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(l.dr)}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.UndoFailover(context.Background(), "app-01_replica"); err != nil {
		t.Fatal(err)
	}
	r := ferry(t, l.cfg, "failover", "commit", "e2e", "app-01")
	if r.code == 0 || !strings.Contains(r.stderr, "the catalog now says so too") {
		t.Fatalf("commit of a replica the target has ready: %s", r)
	}
	if s := l.run(); s.code != 0 || s.vm("app-01").Result != "success" {
		t.Fatalf("run after the catalog followed the target: %+v\n%s", s.VMs, s.stderr)
	}
}
