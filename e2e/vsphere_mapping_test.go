package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
)

// plainVM makes a powered-off VM on a site that is no replica, one NIC on
// "VM Network" and a disk holding each of disks, as a restore from a
// backup leaves one.
func plainVM(t *testing.T, s *vcsimtest.Site, name string, disks [][]byte) {
	t.Helper()
	sizes := make([]int64, len(disks))
	for i, d := range disks {
		sizes[i] = int64(len(d))
	}
	s.CreateVM(t, vcsimtest.VMSpec{Name: name, Disks: sizes, NICs: []vcsimtest.NICSpec{{Network: "VM Network"}}})
	for i, d := range disks {
		s.WriteUntracked(t, name, i, 0, d)
	}
}

// TestVSphereReplicaMapped maps a VM onto a copy of it the DR vCenter
// already has (an old restore, 1% of it out of date), through the real
// plugin binary: the first run compares every block with it and sends
// about what differs, never a full copy, and its restore point is the
// source; the next run is change-tracked. A VM whose disks do not match
// is refused, naming the VM and what differs, and left as it was.
func TestVSphereReplicaMapped(t *testing.T) {
	l := newVSLab(t, 3, "auto",
		vsVM{name: "web-01", disks: []int64{8 * mib, 4 * mib}, ip: "10.1.0.11/24"},
		vsVM{name: "db-01", disks: []int64{4 * mib}, ip: "10.1.0.12/24"})
	l.write("web-01", 0, 0, 6*mib)
	l.write("web-01", 1, 0, 3*mib)
	l.write("db-01", 0, 0, 2*mib)

	// The DR site has a copy of web-01 from a while ago: its disks as now,
	// with 8 blocks of 16 KiB per disk different (256 KiB of 12 MiB). It
	// has one of db-01 too, with a disk too many.
	src := l.state()["web-01"]
	var restored [][]byte
	for _, d := range src {
		b := bytes.Clone(d)
		for i := range 8 {
			copy(b[i*len(b)/8:], (&lab{rng: l.rng}).data(16<<10))
		}
		restored = append(restored, b)
	}
	plainVM(t, l.dr, "web-01-restored", restored)
	plainVM(t, l.dr, "db-old", [][]byte{make([]byte, 4*mib), make([]byte, mib)})
	dbBefore, dbFiles := l.dr.VM(t, "db-old"), l.dr.Files(t, "db-old")

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

	first := l.run()
	web, db := first.vm("web-01"), first.vm("db-01")
	if web.Result != "success" || len(web.Disks) != 2 || web.Disks[0].Mode != "digest" || web.Disks[1].Mode != "digest" {
		t.Fatalf("web-01: %+v, want a success compared by digests\n%s", web, first.stderr)
	}
	for _, d := range web.Disks {
		if d.BytesSent > d.Size/8 {
			t.Fatalf("disk %d: the first run onto the mapped VM sent %d bytes for 128 KiB that differ of %d", d.Index, d.BytesSent, d.Size)
		}
	}
	if first.Totals.BytesSent > 2*mib {
		t.Fatalf("the first run onto the mapped VM sent %d bytes for 256 KiB that differ (12 MiB of disks)", first.Totals.BytesSent)
	}
	if db.Result == "success" || !strings.Contains(db.Error, "db-old") || !strings.Contains(db.Error, "it has 2 disks") {
		t.Fatalf("db-01 mapped onto a VM with a disk too many: %+v", db)
	}
	if after := l.dr.VM(t, "db-old"); after.Config.ChangeVersion != dbBefore.Config.ChangeVersion ||
		len(after.Config.ExtraConfig) != len(dbBefore.Config.ExtraConfig) || !slices.Equal(l.dr.Files(t, "db-old"), dbFiles) {
		t.Fatalf("the refused VM changed: files %v, was %v", l.dr.Files(t, "db-old"), dbFiles)
	}

	tgt := l.target()
	rep, err := tgt.GetReplica(context.Background(), "web-01-restored")
	if err != nil {
		t.Fatal(err)
	}
	if rep.SourceVM != "web-01" || len(rep.VM.NICs) != 1 || rep.VM.NICs[0].Network != "DR Network" {
		t.Fatalf("the mapped replica: %+v", rep)
	}
	points := l.points("web-01")
	if len(points) != 1 {
		t.Fatalf("%d restore points, want 1", len(points))
	}
	for d := range src {
		if !bytes.Equal(readPoint(t, tgt, rep.ID, points[0], d), src[d]) {
			t.Fatalf("disk %d of the first restore point differs from the source", d)
		}
	}

	l.scatter("web-01", 0, 5)
	now := l.state()["web-01"]
	second := l.run()
	if w := second.vm("web-01"); w.Result != "success" || w.Disks[0].Mode != "change-tracking" || w.Disks[1].Mode != "change-tracking" {
		t.Fatalf("the second run: %+v, want change tracking\n%s", w, second.stderr)
	}
	points = l.points("web-01")
	if len(points) != 2 {
		t.Fatalf("%d restore points after the second run, want 2", len(points))
	}
	for d := range now {
		if !bytes.Equal(readPoint(t, tgt, rep.ID, points[1], d), now[d]) {
			t.Fatalf("disk %d of the second restore point differs from the source", d)
		}
	}
}
