package vcsimtest

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	vdisk "github.com/ferry-dr/ferry/sdk/disk/vmdk"
	"github.com/ferry-dr/ferry/sdk/disk/vmdk/vmdktest"
)

// ESXi's delta disks, as far as a test that builds a chain needs them.
// vcsim makes none: a snapshot's disk is the VM's (the doubles freeze a
// flat copy instead). A test writes a chain's files (vmdktest) and points
// a VM's disk at it with SetDiskChain; from then on a snapshot of the VM
// keeps the chain as its disk, which nothing writes any more, and the VM
// goes on in a new, empty vmfsSparse delta above it, as on ESXi. Removing
// the snapshot consolidates that delta away; the simulator does not merge
// data, so a delta that holds some when its snapshot goes is an error of
// the site (Site.Err).

// deltaChild is a delta a snapshot put a VM's disk on.
type deltaChild struct {
	vm     string // VM moref
	key    int32  // device key
	child  string // its descriptor, "[ds] dir/file.vmdk"
	files  []string
	parent *types.VirtualDiskFlatVer2BackingInfo
}

// SetDiskChain points disk index of VM vm (key order) at a chain of VMDK
// descriptors, datastore paths ("[ds] dir/file.vmdk") with the top first,
// as vSphere shows a VM that runs on a delta disk: a flat backing whose
// Parent names the next file.
func (s *Site) SetDiskChain(t testing.TB, vm string, disk int, chain []string) {
	t.Helper()
	var b *types.VirtualDiskFlatVer2BackingInfo
	for i := len(chain) - 1; i >= 0; i-- {
		b = &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: chain[i]},
			DiskMode: string(types.VirtualDiskModePersistent), Parent: b}
	}
	s.setBacking(t, vm, disk, b)
}

// SetSeSparseChain is SetDiskChain with the backing vSphere gives a disk
// whose deltas are seSparse: every link a VirtualDiskSeSparseBackingInfo.
// The doubles make no new delta above such a chain when it is snapshotted
// (the snapshot and the VM share it) and track no changes on it: a test of
// how the chain is read, not of a failback's syncs.
func (s *Site) SetSeSparseChain(t testing.TB, vm string, disk int, chain []string) {
	t.Helper()
	var b *types.VirtualDiskSeSparseBackingInfo
	for i := len(chain) - 1; i >= 0; i-- {
		b = &types.VirtualDiskSeSparseBackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: chain[i]},
			DiskMode: string(types.VirtualDiskModePersistent), Parent: b}
	}
	s.setBacking(t, vm, disk, b)
}

// setBacking sets the backing of disk index of vm (key order).
func (s *Site) setBacking(t testing.TB, vm string, disk int, b types.BaseVirtualDeviceBackingInfo) {
	t.Helper()
	if err := s.lockedDisk(vm, disk, func(_ *simulator.VirtualMachine, d *types.VirtualDisk) error {
		d.Backing = b
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// newDelta puts the disk of key of vm, which runs on the delta chain top,
// on a new empty delta above it, for snapshot snap. The caller holds vm's
// lock.
func (d *doubles) newDelta(vm *simulator.VirtualMachine, key int32, top *types.VirtualDiskFlatVer2BackingInfo, capacity int64, snap string) error {
	topLocal, err := d.site.localPath(top.FileName)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(topLocal)
	if err != nil {
		return err
	}
	desc, err := vdisk.ParseDescriptor(b)
	if err != nil {
		return fmt.Errorf("%s: %w", topLocal, err)
	}
	name := strings.TrimSuffix(filepath.Base(topLocal), ".vmdk") + "-ferrysim-" + snap
	local, err := vmdktest.WriteCOWD(filepath.Dir(topLocal), name, filepath.Base(topLocal), desc.CID, rand.Uint32()&0x7fffffff, capacity, 1, vmdktest.Layer{})
	if err != nil {
		return err
	}
	i := strings.LastIndex(top.FileName, "/")
	if i < 0 {
		i = strings.Index(top.FileName, "] ") + 1
	}
	c := deltaChild{vm: vm.Self.Value, key: key, child: top.FileName[:i+1] + name + ".vmdk",
		files: []string{local, strings.TrimSuffix(local, ".vmdk") + "-delta.vmdk"}}
	for _, dev := range vm.Config.Hardware.Device {
		if disk, ok := dev.(*types.VirtualDisk); ok && disk.Key == key {
			parent, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				return fmt.Errorf("disk %d: %T backing", key, disk.Backing)
			}
			c.parent = parent
			disk.Backing = &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: c.child},
				DiskMode: parent.DiskMode, Parent: parent}
		}
	}
	d.deltas[snap] = append(d.deltas[snap], c)
	return nil
}

// consolidate takes the deltas snapshot snap put vm's disks on away again
// (removing the snapshot): the disks go back to the snapshot's. The
// caller holds vm's lock.
func (d *doubles) consolidate(vm *simulator.VirtualMachine, snap string) {
	d.mu.Lock()
	children := d.deltas[snap]
	delete(d.deltas, snap)
	d.mu.Unlock()
	for _, c := range children {
		for _, dev := range vm.Config.Hardware.Device {
			disk, ok := dev.(*types.VirtualDisk)
			if !ok || disk.Key != c.key {
				continue
			}
			if b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); !ok || b.FileName != c.child {
				d.fail(fmt.Errorf("remove snapshot %s: disk %d no longer runs on its delta %s; the simulator consolidates only the newest", snap, c.key, c.child))
				continue
			}
			if err := emptyDelta(c.files[0]); err != nil {
				d.fail(fmt.Errorf("remove snapshot %s: %w", snap, err))
				continue
			}
			disk.Backing = c.parent
			for _, f := range c.files {
				os.Remove(f)
			}
		}
	}
}

// emptyDelta checks that the COWD delta file of descriptor desc (one
// newDelta wrote) holds no grain table: the guest wrote nothing into it.
// Only the file is read, not its chain, which a test may have broken.
func emptyDelta(desc string) error {
	file := strings.TrimSuffix(desc, ".vmdk") + "-delta.vmdk"
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if len(b) < 32 || string(b[:4]) != "COWD" {
		return fmt.Errorf("%s is not a COWD delta", file)
	}
	le := binary.LittleEndian
	gd, n := int64(le.Uint32(b[20:]))*512, int64(le.Uint32(b[24:]))
	if gd+n*4 > int64(len(b)) {
		return fmt.Errorf("%s: the grain directory is past the end", file)
	}
	for i := range n {
		if le.Uint32(b[gd+i*4:]) != 0 {
			return fmt.Errorf("the delta %s holds data; the simulator cannot merge it into its parent", file)
		}
	}
	return nil
}

// LocalPath is where a datastore file ("[ds] dir/file") is on this
// machine.
func (s *Site) LocalPath(t testing.TB, file string) string {
	t.Helper()
	p, err := s.localPath(file)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TrackWrite tells changed block tracking that the guest of vm wrote
// [off, off+n) of disk index (key order): a test that writes a delta
// chain's files itself (SetDiskChain) says so here.
func (s *Site) TrackWrite(t testing.TB, vm string, disk int, off, n int64) {
	t.Helper()
	if err := s.lockedDisk(vm, disk, func(v *simulator.VirtualMachine, d *types.VirtualDisk) error {
		s.d.logWrite(diskID{vm: v.Self.Value, key: d.Key}, off, off+n)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// ChainGrains is the grain size of each delta ChainAbove writes of kind:
// vmfsSparse as ESXi makes it (one sector) and with 4 KiB grains,
// seSparse's 4 KiB.
func ChainGrains(kind string) [2]int64 {
	if kind == "vmfsSparse" {
		return [2]int64{512, 4096}
	}
	return [2]int64{4096, 4096}
}

// ChainAbove puts disk 0 (key order) of vm on a chain of two deltas of
// kind ("vmfsSparse" or "seSparse") over its flat base, as ESXi keeps what
// a VM writes after two snapshots: layers gives what each delta holds,
// for the grain sizes of ChainGrains and the disk's size. It returns the
// top descriptor's local path and the disk as the chain holds it.
func (s *Site) ChainAbove(t testing.TB, vm, kind string, layers func(grains [2]int64, size int64) [2]vmdktest.Layer) (string, []byte) {
	t.Helper()
	var disk *types.VirtualDisk
	for _, d := range s.VM(t, vm).Config.Hardware.Device {
		if vd, ok := d.(*types.VirtualDisk); ok && (disk == nil || vd.Key < disk.Key) {
			disk = vd
		}
	}
	if disk == nil {
		t.Fatalf("vcsimtest: vm %s has no disk", vm)
	}
	baseDS := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).FileName
	baseLocal := s.LocalPath(t, baseDS)
	text, err := os.ReadFile(baseLocal)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := vdisk.ParseDescriptor(text)
	if err != nil {
		t.Fatal(err)
	}
	base, err := vdisk.Open(baseLocal)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, max(base.Size(), disk.CapacityInBytes))
	if _, err := base.ReadAt(want[:base.Size()], 0); err != nil {
		t.Fatal(err)
	}
	base.Close()

	size, grains := int64(len(want)), ChainGrains(kind)
	ls := layers(grains, size)
	dir, name := filepath.Dir(baseLocal), strings.TrimSuffix(filepath.Base(baseLocal), ".vmdk")
	var top string
	switch kind {
	case "vmfsSparse":
		if _, err = vmdktest.WriteCOWD(dir, name+"-000001", name+".vmdk", desc.CID, 0x100, size, grains[0]/512, ls[0]); err == nil {
			top, err = vmdktest.WriteCOWD(dir, name+"-000002", name+"-000001.vmdk", 0x100, 0x200, size, grains[1]/512, ls[1])
		}
	case "seSparse":
		if _, err = vmdktest.WriteSESparse(dir, name+"-000001", name+".vmdk", desc.CID, 0x100, size, ls[0], 0); err == nil {
			top, err = vmdktest.WriteSESparse(dir, name+"-000002", name+"-000001.vmdk", 0x100, 0x200, size, ls[1], 0)
		}
	default:
		err = fmt.Errorf("no delta kind %q (vmfsSparse, seSparse)", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range ls {
		l.Apply(want, grains[i])
	}
	sibling := func(n string) string { return baseDS[:strings.LastIndex(baseDS, "/")+1] + n }
	s.SetDiskChain(t, vm, 0, []string{sibling(name + "-000002.vmdk"), sibling(name + "-000001.vmdk"), baseDS})
	return top, want
}
