package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReplicaMappedOntoAVMOfTheTarget maps a VM onto a copy of it the DR
// folder already has (an old restore, 1% of it out of date): the first run
// compares every block with it and sends about what differs, never a full
// copy; the replica then runs incrementals like any other. A VM whose
// disks do not match is refused, naming the VM and what differs, and left
// as it was.
func TestReplicaMappedOntoAVMOfTheTarget(t *testing.T) {
	t.Parallel()
	l := newLab(t, 3,
		vmSpec{name: "web-01", disks: []string{"24MiB", "8MiB"}, nic: "prod-net=10.1.0.11/24"},
		vmSpec{name: "db-01", disks: []string{"8MiB"}})
	l.write("web-01", 0, 0, 20*mib)
	l.write("web-01", 1, 0, 6*mib)
	l.write("db-01", 0, 0, 4*mib)

	// The DR site has a copy of web-01 from a while ago: its disks as now,
	// with 16 blocks of 16 KiB (1% of the disks) different. It has one of
	// db-01 too, with a disk too many.
	local(t, nil, "vm", "create", l.dr, "web-01-restored", "--disk", "24MiB", "--disk", "8MiB")
	local(t, nil, "vm", "create", l.dr, "db-old", "--disk", "8MiB", "--disk", "1MiB")
	for d := range 2 {
		b := l.source("web-01", d)
		for i := range 8 {
			copy(b[int64(i)*int64(len(b))/8:], l.random(16<<10))
		}
		if err := os.WriteFile(filepath.Join(l.dr, "web-01-restored", "disk"+string(rune('0'+d))+".img"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dbOld := filepath.Join(l.dr, "db-old", "vm.json")
	before, err := os.ReadFile(dbOld)
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	l.writeConfig(strings.Replace(string(base), "  retention {", `  replica_mapping {
    vm      = "web-01"
    replica = "web-01-restored"
  }
  replica_mapping {
    vm      = "db-01"
    replica = "db-old"
  }
  retention {`, 1))

	if r := ferry(t, l.cfg, "plan", "e2e"); r.code != 0 || !strings.Contains(r.stdout, "map the replica onto VM web-01-restored") {
		t.Fatalf("ferry plan does not say it maps web-01: %s", r)
	}
	first := l.run()
	web, db := first.vm("web-01"), first.vm("db-01")
	if web.Result != "success" || len(web.Disks) != 2 || web.Disks[0].Mode != "digest" || web.Disks[1].Mode != "digest" {
		t.Fatalf("web-01: %+v, want a success compared by digests\n%s", web, first.stderr)
	}
	if first.Totals.BytesSent > 2*mib {
		t.Fatalf("the first run onto the mapped VM sent %d bytes for 256 KiB that differ", first.Totals.BytesSent)
	}
	if db.Result == "success" || !strings.Contains(db.Error, "db-old") || !strings.Contains(db.Error, "it has 2 disks") {
		t.Fatalf("db-01 mapped onto a VM with a disk too many: %+v", db)
	}
	if after, err := os.ReadFile(dbOld); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("the refused VM changed (%v)", err)
	}
	points := l.points("web-01")
	if len(points) != 1 {
		t.Fatalf("%d restore points, want 1", len(points))
	}
	for d := range 2 {
		got := []byte(local(t, nil, "vm", "read", l.dr, "web-01-restored", string(rune('0'+d)), "--point", points[0].ID).stdout)
		if !bytes.Equal(got, l.source("web-01", d)) {
			t.Fatalf("disk %d of the first restore point differs from the source", d)
		}
	}

	l.write("web-01", 0, 2*mib, 64<<10)
	second := l.run()
	if w := second.vm("web-01"); w.Result != "success" || w.Disks[0].Mode != "change-tracking" {
		t.Fatalf("the second run: %+v, want change tracking", w)
	}
	points = l.points("web-01")
	got := []byte(local(t, nil, "vm", "read", l.dr, "web-01-restored", "0", "--point", points[len(points)-1].ID).stdout)
	if !bytes.Equal(got, l.source("web-01", 0)) {
		t.Fatal("disk 0 of the second restore point differs from the source")
	}
}
