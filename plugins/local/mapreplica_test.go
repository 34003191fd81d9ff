//go:build unix

package local

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// mapRequest maps the source VM of the mapping tests onto VM "plain".
func mapRequest() sdk.ReplicaRequest {
	return sdk.ReplicaRequest{Name: "plain", VM: sdk.VM{ID: "src-vm", Name: "src", Disks: []sdk.Disk{
		{Index: 0, Capacity: 1 << 20}, {Index: 1, Capacity: 256 << 10}}},
		Owner: sdk.ReplicaOwner{Job: "j", Source: "source.local.prod", SourceVM: "src-vm"}}
}

// TestKillMapReplicaAtEachStep kills a mapping at each of its steps: the
// next MapReplica finishes it, the disks keep the VM's content, and a
// CreateReplica in between refuses to make an empty replica over it.
func TestKillMapReplicaAtEachStep(t *testing.T) {
	ctx := context.Background()
	for _, spec := range []string{"map mapping-journalled 1", "map mapping-moved-disk 1", "map mapping-moved-disk 2", "map mapping-described 1"} {
		t.Run(spec, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "target")
			rng := rand.New(rand.NewPCG(3, uint64(len(spec))))
			req := mapRequest()
			var want [][]byte
			for _, d := range req.VM.Disks {
				b := make([]byte, d.Capacity)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				want = append(want, b)
			}
			makePlainVM(root)(t, "plain", want)
			runStepChild(t, dir, spec)

			tgt, err := NewTarget(root)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(mappingPath(filepath.Join(root, "plain"))); err != nil {
				t.Fatalf("killed at %s, the mapping left no journal (%v)", spec, err)
			}
			if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "plain", VM: req.VM}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
				t.Fatalf("CreateReplica over an interrupted mapping = %v, want a refusal", err)
			}
			r, err := tgt.MapReplica(ctx, req)
			if err != nil {
				t.Fatalf("MapReplica after the kill: %v", err)
			}
			for d := range want {
				rd, err := tgt.OpenRestorePointDisk(ctx, r.ID, "", d)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(want[d]))
				_, err = rd.ReadAt(got, 0)
				rd.Close()
				if err != nil || !bytes.Equal(got, want[d]) {
					t.Fatalf("disk %d of the mapped replica differs from the VM's (%v)", d, err)
				}
			}
			if _, err := os.Stat(mappingPath(filepath.Join(root, "plain"))); err == nil {
				t.Error("the mapping's journal is still there")
			}
		})
	}
}
