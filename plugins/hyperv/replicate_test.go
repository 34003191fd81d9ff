package hyperv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// TestReplicateJudgedByLibvhdi replicates a simulated VM to a simulated
// target run after run, as the engine does (changed areas since the last
// snapshot's change ids, restore points, the snapshot removed), and has
// libvhdi read every restore point's AVHDX chain: it must hold the bytes
// of the source at that run, also after retention deleted the oldest.
func TestReplicateJudgedByLibvhdi(t *testing.T) {
	ctx := context.Background()
	srcHost, dstHost := newSim(t), newSim(t)
	v := sourceVM(t, srcHost, "web")
	src, tgt := NewSource(srcHost), NewTarget(dstHost, "")
	vm, err := src.DescribeVM(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-replica", VM: *vm,
		NetworkMap: []sdk.NetworkMapping{{From: "LAN", To: "LAN-dr"}}})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 5))
	var prev *sdk.Snapshot
	var points []sdk.RestorePoint
	var want [][][]byte // per point, per disk
	for run := range 4 {
		for d, disk := range vm.Disks {
			for range 6 {
				n := 512 * (1 + r.IntN(200))
				off := int64(r.IntN(int(disk.Capacity)-n)/512) * 512
				b := make([]byte, n)
				for i := range b {
					b[i] = byte(r.Uint32())
				}
				if err := srcHost.GuestWrite(ctx, v.ID, d, off, b); err != nil {
					t.Fatal(err)
				}
			}
		}
		snap, err := src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: v.ID, Name: "ferry-run", Quiesce: true})
		if err != nil {
			t.Fatal(err)
		}
		if !snap.Quiesced {
			t.Error("the guest's Backup service is on, and the snapshot is not application-consistent")
		}
		var state [][]byte
		for d := range vm.Disks {
			change := ""
			if prev != nil {
				change = prev.Disks[d].ChangeID
			}
			var areas []sdk.Extent
			if err := src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: v.ID, Snapshot: snap.ID, Disk: d, ChangeID: change}, func(e []sdk.Extent) error {
				areas = append(areas, e...)
				return nil
			}); err != nil {
				t.Fatalf("run %d disk %d: changed areas since %q: %v", run, d, change, err)
			}
			rd, err := src.OpenSnapshotDisk(ctx, v.ID, snap.ID, d)
			if err != nil {
				t.Fatal(err)
			}
			full := make([]byte, rd.Size())
			if _, err := rd.ReadAt(full, 0); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			w, err := tgt.OpenReplicaDisk(ctx, rep.ID, d, rd.Size())
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range areas {
				if _, err := w.WriteAt(full[a.Offset:a.End()], a.Offset); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := rd.Close(); err != nil {
				t.Fatal(err)
			}
			state = append(state, full)
		}
		p, err := tgt.CreateRestorePoint(ctx, rep.ID, map[string]string{"run": string(rune('1' + run))})
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			if err := src.RemoveSnapshot(ctx, v.ID, prev.ID); err != nil {
				t.Fatal(err)
			}
		}
		prev = snap
		points = append(points, *p)
		want = append(want, state)
	}
	judge := func(what string, first int) {
		t.Helper()
		list, err := tgt.ListRestorePoints(ctx, rep.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != len(points)-first {
			t.Fatalf("%s: %d restore points, want %d", what, len(list), len(points)-first)
		}
		cps, _, err := tgt.points(ctx, rep.ID)
		if err != nil {
			t.Fatal(err)
		}
		for i, cp := range cps {
			for d, cd := range cp.Disks {
				if got, w := sdktest.LibvhdiDigest(t, chain(t, cd.Path)...), sha(want[first+i][d]); got != w {
					t.Errorf("%s: point %d disk %d: libvhdi reads sha256 %s, the source held %s", what, first+i+1, d, got, w)
				}
			}
		}
	}
	judge("after four runs", 0)
	if err := tgt.DeleteRestorePoint(ctx, rep.ID, points[0].ID); err != nil {
		t.Fatal(err)
	}
	judge("after deleting the oldest point", 1)
}

func chain(t *testing.T, path string) []string {
	t.Helper()
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	var out []string
	for i := img; i != nil; i = i.Parent() {
		out = append(out, i.Path())
	}
	return out
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
