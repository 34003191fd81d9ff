package vcsimtest

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func snapshot(t *testing.T, vm *object.VirtualMachine, name string) types.ManagedObjectReference {
	t.Helper()
	task, err := vm.CreateSnapshot(context.Background(), name, "", false, false)
	if err != nil {
		t.Fatal(err)
	}
	info, err := task.WaitForResult(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.Result.(types.ManagedObjectReference)
}

func snapshotDisk(t *testing.T, s *Site, ref types.ManagedObjectReference) *types.VirtualDiskFlatVer2BackingInfo {
	t.Helper()
	var ms mo.VirtualMachineSnapshot
	if err := s.Client.RetrieveOne(context.Background(), ref, []string{"config"}, &ms); err != nil {
		t.Fatal(err)
	}
	for _, d := range ms.Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok {
			return disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		}
	}
	t.Fatal("no disk in the snapshot")
	return nil
}

func removeSnapshot(t *testing.T, s *Site, ref types.ManagedObjectReference) {
	t.Helper()
	res, err := methods.RemoveSnapshot_Task(context.Background(), s.Client.Client, &types.RemoveSnapshot_Task{This: ref})
	if err == nil {
		err = object.NewTask(s.Client.Client, res.Returnval).Wait(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestFrozenSnapshots: a snapshot points at a copy of each disk made when
// it was taken; later writes reach the VM's disk only; the copy goes with
// the snapshot.
func TestFrozenSnapshots(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t"})
	vm := object.NewVirtualMachine(s.Client.Client, s.CreateVM(t, VMSpec{Name: "vm", Disks: []int64{1 << 20}}))
	s.Write(t, "vm", 0, 0, []byte("before"))
	ref := snapshot(t, vm, "s1")
	s.Write(t, "vm", 0, 0, []byte("after!"))
	b := snapshotDisk(t, s, ref)
	desc, err := s.localPath(b.FileName)
	if err != nil {
		t.Fatal(err)
	}
	flat, err := flatOf(desc)
	if err != nil {
		t.Fatal(err)
	}
	frozen, err := os.ReadFile(flat)
	if err != nil {
		t.Fatal(err)
	}
	if len(frozen) != 1<<20 || !bytes.HasPrefix(frozen, []byte("before")) {
		t.Fatalf("the frozen copy (%d bytes) starts with %q", len(frozen), frozen[:6])
	}
	if live := s.Disk(t, "vm", 0); !bytes.HasPrefix(live, []byte("after!")) {
		t.Fatalf("the VM's disk starts with %q", live[:6])
	}
	removeSnapshot(t, s, ref)
	if _, err := os.Stat(flat); !os.IsNotExist(err) {
		t.Fatalf("the frozen copy outlived its snapshot: %v", err)
	}
	if live := s.Disk(t, "vm", 0); !bytes.HasPrefix(live, []byte("after!")) {
		t.Fatal("removing the snapshot lost a write")
	}
}

func query(s *Site, vm, snap types.ManagedObjectReference, key int32, start int64, id string) (types.DiskChangeInfo, error) {
	res, err := methods.QueryChangedDiskAreas(context.Background(), s.Client.Client, &types.QueryChangedDiskAreas{
		This: vm, Snapshot: &snap, DeviceKey: key, StartOffset: start, ChangeId: id})
	if err != nil {
		return types.DiskChangeInfo{}, err
	}
	return res.Returnval, nil
}

// TestCBTDouble: change ids on snapshots of a tracked VM, the logged writes
// between two ids, the non-zero blocks for "*", windows, and a new epoch
// after tracking is switched off and on.
func TestCBTDouble(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t", CBTWindow: 512 << 10})
	ref := s.CreateVM(t, VMSpec{Name: "vm", Disks: []int64{1 << 20}})
	vm := object.NewVirtualMachine(s.Client.Client, ref)
	s.ResetCBT(t, "vm") // switches tracking on
	s.Write(t, "vm", 0, 70000, []byte("x"))
	s1 := snapshot(t, vm, "s1")
	b1 := snapshotDisk(t, s, s1)
	s.Write(t, "vm", 0, 600<<10, []byte("y"))
	s.Write(t, "vm", 0, 0, []byte("z"))
	s2 := snapshot(t, vm, "s2")
	b2 := snapshotDisk(t, s, s2)
	if b1.ChangeId == "" || b2.ChangeId == "" || b1.ChangeId == b2.ChangeId {
		t.Fatalf("change ids %q, %q", b1.ChangeId, b2.ChangeId)
	}
	key := s.VM(t, "vm").Config.Hardware.Device
	var diskKey int32
	for _, d := range key {
		if disk, ok := d.(*types.VirtualDisk); ok {
			diskKey = disk.Key
		}
	}
	info, err := query(s, ref, s2, diskKey, 0, b1.ChangeId)
	if err != nil {
		t.Fatal(err)
	}
	if info.StartOffset != 0 || info.Length != 512<<10 || len(info.ChangedArea) != 1 || info.ChangedArea[0] != (types.DiskChangeExtent{Start: 0, Length: 64 << 10}) {
		t.Fatalf("first window since s1: %+v", info)
	}
	info, err = query(s, ref, s2, diskKey, 512<<10, b1.ChangeId)
	if err != nil || info.Length != 512<<10 || len(info.ChangedArea) != 1 || info.ChangedArea[0].Start != 576<<10 {
		t.Fatalf("second window since s1: %+v, %v", info, err)
	}
	all, err := query(s, ref, s2, diskKey, 0, "*")
	if err != nil || len(all.ChangedArea) != 1 || all.ChangedArea[0] != (types.DiskChangeExtent{Start: 0, Length: 128 << 10}) {
		t.Fatalf(`"*" in the first window: %+v, %v (blocks 0 and 1 hold data)`, all, err)
	}
	if _, err := query(s, ref, s2, diskKey, 0, "bogus/1"); !fault.Is(err, &types.InvalidArgument{}) {
		t.Fatalf("a bogus change id: %v", err)
	}
	s.ResetCBT(t, "vm")
	s3 := snapshot(t, vm, "s3")
	b3 := snapshotDisk(t, s, s3)
	if _, err := query(s, ref, s3, diskKey, 0, b2.ChangeId); !fault.Is(err, &types.InvalidArgument{}) {
		t.Fatalf("an id of the old epoch after a reset: %v", err)
	}
	if b3.ChangeId[:len(b3.ChangeId)-2] == b2.ChangeId[:len(b2.ChangeId)-2] {
		t.Fatalf("the epoch did not change: %q then %q", b2.ChangeId, b3.ChangeId)
	}
}

// TestSnapshotRemovalBugsAvoided runs the two sequences that break stock
// vcsim: removing the newest then the oldest of three snapshots (the base
// disk descriptor would be deleted), and removing the current snapshot
// when it is a root with children (the simulator would panic).
func TestSnapshotRemovalBugsAvoided(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t"})
	vm := object.NewVirtualMachine(s.Client.Client, s.CreateVM(t, VMSpec{Name: "vm", Disks: []int64{1 << 20}}))
	rp1, rp2, rp3 := snapshot(t, vm, "rp1"), snapshot(t, vm, "rp2"), snapshot(t, vm, "rp3")
	removeSnapshot(t, s, rp3)
	removeSnapshot(t, s, rp1)
	removeSnapshot(t, s, rp2)
	desc, err := s.localPath(s.VM(t, "vm").Config.Hardware.Device[len(s.VM(t, "vm").Config.Hardware.Device)-1].(*types.VirtualDisk).Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(desc); err != nil {
		t.Fatalf("the base disk descriptor is gone: %v", err)
	}

	root := snapshot(t, vm, "root")
	snapshot(t, vm, "child")
	res, err := methods.RevertToSnapshot_Task(context.Background(), s.Client.Client, &types.RevertToSnapshot_Task{This: root})
	if err == nil {
		err = object.NewTask(s.Client.Client, res.Returnval).Wait(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	removeSnapshot(t, s, root)
	got := s.VM(t, "vm").Snapshot
	if got == nil || got.CurrentSnapshot != nil || len(got.RootSnapshotList) == 0 {
		t.Fatalf("after removing the current root: %+v", got)
	}
}

// TestResizeDiskKeepsData: growing a disk keeps what it held and adds
// zeros (govmomi's EditDevice would have vcsim create the disk anew).
func TestResizeDiskKeepsData(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t"})
	s.CreateVM(t, VMSpec{Name: "vm", Disks: []int64{1 << 20, 1 << 20}})
	data := bytes.Repeat([]byte("ferry"), 1000)
	s.Write(t, "vm", 1, 4096, data)
	s.ResizeDisk(t, "vm", 1, 3<<20)
	got := s.Disk(t, "vm", 1)
	if len(got) != 3<<20 || !bytes.Equal(got[4096:4096+len(data)], data) {
		t.Fatalf("after growing, the disk has %d bytes and lost its data", len(got))
	}
	if !allZero(got[1<<20:]) {
		t.Fatal("the grown part is not zeros")
	}
}
