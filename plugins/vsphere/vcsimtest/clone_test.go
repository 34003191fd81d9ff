package vcsimtest

import (
	"bytes"
	"context"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// clone clones a VM into the datacenter's VM folder.
func clone(t *testing.T, s *Site, vm *object.VirtualMachine, name string, snap *types.ManagedObjectReference) {
	t.Helper()
	ctx := context.Background()
	var pool mo.VirtualMachine
	if err := s.Client.RetrieveOne(ctx, vm.Reference(), []string{"resourcePool"}, &pool); err != nil {
		t.Fatal(err)
	}
	task, err := vm.Clone(ctx, s.folder, name, types.VirtualMachineCloneSpec{Snapshot: snap,
		Location: types.VirtualMachineRelocateSpec{Pool: pool.ResourcePool,
			DiskMoveType: string(types.VirtualMachineRelocateDiskMoveOptionsMoveAllDiskBackingsAndDisallowSharing)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.WaitForResult(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCloneCopiesData: a clone's disks hold its source's data (vcsim
// makes them empty): the VM's current disks on a site whose snapshots
// read the current base (direct lane), the snapshot's frozen disks on a
// site with RevertData; the clone's disks are files of its own.
func TestCloneCopiesData(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		revertData bool
		want       string
	}{
		{"current base", false, "after!"},
		{"the snapshot's disks", true, "before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := Start(t, Options{Name: "t", RevertData: tc.revertData})
			vm := object.NewVirtualMachine(s.Client.Client, s.CreateVM(t, VMSpec{Name: "vm", Disks: []int64{1 << 20, 2 << 20}}))
			s.Write(t, "vm", 0, 0, []byte("before"))
			s.Write(t, "vm", 1, 1<<20, []byte("second"))
			ref := snapshot(t, vm, "s1")
			s.Write(t, "vm", 0, 0, []byte("after!"))
			clone(t, s, vm, "copy", &ref)
			d0, d1 := s.Disk(t, "copy", 0), s.Disk(t, "copy", 1)
			if len(d0) != 1<<20 || string(d0[:6]) != tc.want {
				t.Errorf("the clone's disk 0 (%d bytes) starts with %q, want %q", len(d0), d0[:6], tc.want)
			}
			if len(d1) != 2<<20 || string(d1[1<<20:1<<20+6]) != "second" {
				t.Errorf("the clone's disk 1 (%d bytes) does not hold its source's data", len(d1))
			}
			s.Write(t, "copy", 0, 0, []byte("clone!"))
			if src := s.Disk(t, "vm", 0); !bytes.HasPrefix(src, []byte("after!")) {
				t.Errorf("a write to the clone reached its source: %q", src[:6])
			}
		})
	}
}

// TestNetworksOnEveryHost: a port group of Options.Networks is a network
// of every host.
func TestNetworksOnEveryHost(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t", Networks: []string{"isolated"}})
	var hosts []mo.HostSystem
	ctx := context.Background()
	v, err := s.Finder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	net, err := v.Network(ctx, "isolated")
	if err != nil {
		t.Fatal(err)
	}
	list, err := v.HostSystemList(ctx, "*/*")
	if err != nil {
		t.Fatal(err)
	}
	var refs []types.ManagedObjectReference
	for _, h := range list {
		refs = append(refs, h.Reference())
	}
	if err := s.Client.Retrieve(ctx, refs, []string{"name", "network"}, &hosts); err != nil {
		t.Fatal(err)
	}
	if len(hosts) < 2 {
		t.Fatalf("%d hosts", len(hosts))
	}
	for _, h := range hosts {
		found := false
		for _, n := range h.Network {
			found = found || n == net.Reference()
		}
		if !found {
			t.Errorf("host %s is not connected to the port group", h.Name)
		}
	}
}
