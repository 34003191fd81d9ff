package hyperv

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// TestReplicaDescribedWhileWritten asks for a replica again and again
// while a writer fills its disk block by block, syncing after each: the
// control plane does so while a proxy writes, and the simulated host reads
// each disk's size from its VHDX file, as Hyper-V does. No answer may fail
// (a reader that took the file's size before a sync and read the block
// table after it took the disk for corrupt), and the writes read back.
func TestReplicaDescribedWhileWritten(t *testing.T) {
	ctx := context.Background()
	tgt := NewTarget(newSim(t), "")
	vm := sdktest.DefaultVM()
	const blocks = 96 // one write into each 1 MiB block of the simulated host's disks
	vm.Disks[0].Capacity = blocks << 20
	r, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "described-while-written", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	w, err := tgt.OpenReplicaDisk(ctx, r.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("written while described")
	var done atomic.Bool
	werr := make(chan error, 1)
	go func() {
		defer done.Store(true)
		for blk := int64(0); blk < blocks; blk++ {
			if _, err := w.WriteAt(data, blk<<20+512); err != nil {
				werr <- err
				return
			}
			if err := w.Sync(); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	asked := 0
	var gerr error
	for !done.Load() && gerr == nil {
		if _, gerr = tgt.GetReplica(ctx, r.ID); gerr == nil {
			asked++
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		w.Close()
		t.Fatalf("GetReplica while disk 0 is written (after %d answers): %v", asked, gerr)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd, err := tgt.OpenRestorePointDisk(ctx, r.ID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := make([]byte, len(data))
	for blk := int64(0); blk < blocks; blk++ {
		if _, err := rd.ReadAt(got, blk<<20+512); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("block %d reads %q, want %q", blk, got, data)
		}
	}
	t.Logf("%d answers while the disk was written", asked)
}
