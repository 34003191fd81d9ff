package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSeedExportAndImport carries a job's first copy in a folder: export
// at the production site, a damaged copy of the seed refused at the DR
// site without a replica made, the good one imported, and a first run
// that sends about what changed since the export, never the disks.
func TestSeedExportAndImport(t *testing.T) {
	t.Parallel()
	l := newLab(t, 3,
		vmSpec{name: "web-01", disks: []string{"24MiB", "8MiB"}, nic: "prod-net=10.1.0.11/24"},
		vmSpec{name: "db-01", disks: []string{"16MiB"}})
	l.write("web-01", 0, 0, 18*mib)
	l.write("web-01", 1, 0, 6*mib)
	l.write("db-01", 0, mib, 12*mib)

	seed := filepath.Join(l.dir, "usb-drive")
	r := ferry(t, l.cfg, "seed", "export", "e2e", "--to", seed)
	if r.code != 0 || !strings.Contains(r.stdout, "seed written: 2 VMs") {
		t.Fatalf("seed export: %s", r)
	}
	if _, err := os.Stat(filepath.Join(seed, "seed.json")); err != nil {
		t.Fatal(err)
	}
	// The VMs go on changing after the export.
	l.write("web-01", 0, 4*mib, 512<<10)
	l.write("db-01", 0, 0, 256<<10)

	// A seed damaged on the way is refused, and makes no replica.
	bad := filepath.Join(l.dir, "damaged")
	if out, err := exec.Command("cp", "-r", seed, bad).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	f, err := os.OpenFile(filepath.Join(bad, "vm0", "disk0.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("bit rot"), 3*mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r = ferry(t, l.cfg, "seed", "import", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "does not hold what was exported") {
		t.Fatalf("import of a damaged seed: %s", r)
	}
	if _, err := os.Stat(filepath.Join(l.dr, "web-01_replica")); err == nil {
		t.Fatal("a damaged seed made a replica")
	}

	r = ferry(t, l.cfg, "seed", "import", seed)
	if r.code != 0 || !strings.Contains(r.stdout, "replicas seeded: 2 VMs") {
		t.Fatalf("seed import: %s", r)
	}
	s := l.run()
	if s.code != 0 || s.Result != "success" {
		t.Fatalf("the first run after the seed: %+v\n%s", s.VMs, s.stderr)
	}
	if s.Totals.BytesSent > 2*mib {
		t.Fatalf("the first run after the seed sent %d bytes for 768 KiB changed since the export", s.Totals.BytesSent)
	}
	for vm, disks := range map[string]int{"web-01": 2, "db-01": 1} {
		points := l.points(vm)
		if len(points) != 1 {
			t.Fatalf("%s: %d restore points, want 1", vm, len(points))
		}
		for d := range disks {
			if !bytes.Equal(l.point(vm, points[0].ID, d), l.source(vm, d)) {
				t.Fatalf("%s disk %d: the restore point differs from the source", vm, d)
			}
		}
	}
	r = ferry(t, l.cfg, "seed", "import", seed)
	if r.code == 0 || !strings.Contains(r.stderr, "a seed only starts a replica") {
		t.Fatalf("a second import over replicated VMs: %s", r)
	}
}

// TestSeedOntoVSphere seeds a VM of the simulated prod vCenter onto the
// dr one: export from a snapshot through the vSphere plugin, import as a
// replica VM on the dr site, then a first run that sends about what
// changed since the export; its restore point reads back as the source.
func TestSeedOntoVSphere(t *testing.T) {
	l := newVSLab(t, 2, "auto", vsVM{name: "app-01", disks: []int64{16 << 20}, ip: "10.1.0.31/24"})
	l.write("app-01", 0, 0, 12*mib)
	seed := filepath.Join(l.dir, "seed")
	if r := ferry(t, l.cfg, "seed", "export", "e2e", "--to", seed); r.code != 0 {
		t.Fatalf("seed export: %s", r)
	}
	l.write("app-01", 0, 2*mib, 256<<10)
	if r := ferry(t, l.cfg, "seed", "import", seed); r.code != 0 {
		t.Fatalf("seed import: %s", r)
	}
	want := l.state()
	s := l.run()
	if s.code != 0 || s.Result != "success" {
		t.Fatalf("the first run after the seed: %+v\n%s", s.VMs, s.stderr)
	}
	if s.Totals.BytesSent > 2*mib {
		t.Fatalf("the first run after the seed sent %d bytes for 256 KiB changed since the export", s.Totals.BytesSent)
	}
	points := l.points("app-01")
	if len(points) != 1 {
		t.Fatalf("%d restore points, want 1", len(points))
	}
	tgt := l.target()
	rep, err := tgt.GetReplica(t.Context(), "app-01_replica")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readPoint(t, tgt, rep.ID, points[0], 0), want["app-01"][0]) {
		t.Fatal("the restore point differs from the source")
	}
}
