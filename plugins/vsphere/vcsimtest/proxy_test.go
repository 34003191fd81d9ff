package vcsimtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

// attach attaches an existing disk file to a VM as a HotAdd proxy does:
// no file operation, independent_nonpersistent.
func attach(t *testing.T, s *Site, vm *object.VirtualMachine, file string, unit int32) error {
	t.Helper()
	u := unit
	disk := &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: -1, ControllerKey: 1000, UnitNumber: &u,
		Backing: &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: file},
			DiskMode: string(types.VirtualDiskModeIndependent_nonpersistent)}}}
	task, err := vm.Reconfigure(context.Background(), types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: disk}}})
	if err != nil {
		return err
	}
	return task.Wait(context.Background())
}

func links(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = target
	}
	return out
}

// TestProxyUdev: what vcsim does with a HotAdd attach (it keeps the file,
// gives the disk a UUID) and what the fake udev makes of it: a
// wwn-0x<UUID> link to the disk's flat file while attached, none after;
// the file survives the detach.
func TestProxyUdev(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t"})
	s.CreateVM(t, VMSpec{Name: "src", Disks: []int64{1 << 20}})
	s.Write(t, "src", 0, 0, []byte("source data"))
	p := s.CreateProxy(t, ProxySpec{Name: "proxy"})
	if p.BIOSUUID == "" || !strings.EqualFold(productUUID(productUUID(p.BIOSUUID)), p.BIOSUUID) {
		t.Fatalf("BIOS UUID %q, product UUID %q", p.BIOSUUID, p.ProductUUID)
	}
	own := links(t, p.DeviceDir)
	if len(own) != 1 {
		t.Fatalf("the proxy's own disk: links %v", own)
	}
	proxy := object.NewVirtualMachine(s.Client.Client, p.Ref)
	file := s.VM(t, "src").Config.Hardware.Device
	var srcFile, srcUUID string
	for _, d := range file {
		if disk, ok := d.(*types.VirtualDisk); ok {
			b := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			srcFile, srcUUID = b.FileName, b.Uuid
		}
	}
	if err := attach(t, s, proxy, "[LocalDS_0] nothing/here.vmdk", 1); !fault.Is(err, &types.FileNotFound{}) {
		t.Errorf("attaching a file that does not exist: %v, want FileNotFound", err)
	}
	if err := attach(t, s, proxy, srcFile, 1); err != nil {
		t.Fatal(err)
	}
	if err := attach(t, s, proxy, srcFile, 1); !fault.Is(err, &types.InvalidDeviceSpec{}) {
		t.Errorf("a second disk on a taken unit: %v, want InvalidDeviceSpec", err)
	}
	if got := s.HotAdded(t, "proxy"); len(got) != 1 || got[0] != srcFile {
		t.Fatalf("HotAdded = %v", got)
	}
	var attached *types.VirtualDisk
	for _, d := range s.VM(t, "proxy").Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok && diskFile(disk) == srcFile {
			attached = disk
		}
	}
	uuid := attached.Backing.(*types.VirtualDiskFlatVer2BackingInfo).Uuid
	if uuid == "" || !strings.EqualFold(uuid, srcUUID) {
		t.Errorf("the attached disk has UUID %q, the source's %q: vcsim derives both from the file name", uuid, srcUUID)
	}
	name := "wwn-0x" + strings.ToLower(strings.ReplaceAll(uuid, "-", ""))
	got := links(t, p.DeviceDir)
	if len(got) != 2 || got[name] == "" {
		t.Fatalf("links %v, want %s", got, name)
	}
	data, err := os.ReadFile(filepath.Join(p.DeviceDir, name))
	if err != nil || !strings.HasPrefix(string(data), "source data") {
		t.Fatalf("the device reads %q, %v", data[:min(len(data), 11)], err)
	}
	// Detach without a file operation: the link goes, the file stays.
	if err := proxy.RemoveDevice(context.Background(), true, attached); err != nil {
		t.Fatal(err)
	}
	if got := links(t, p.DeviceDir); len(got) != 1 || got[name] != "" {
		t.Errorf("links after the detach: %v", got)
	}
	if d := s.Disk(t, "src", 0); !strings.HasPrefix(string(d), "source data") {
		t.Error("the detach changed the source disk")
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}

	// The tripwire: destroying the proxy with the disk attached destroys
	// the source's disk, and the site says so.
	if err := attach(t, s, proxy, srcFile, 2); err != nil {
		t.Fatal(err)
	}
	s.Destroy(t, "proxy")
	err = s.Err()
	if err == nil || !strings.Contains(err.Error(), "destroyed with disks of other VMs attached") {
		t.Fatalf("site error %v, want the tripwire", err)
	}
	s.d.mu.Lock()
	s.d.errs = nil // this test wanted it
	s.d.mu.Unlock()
	if got := links(t, p.DeviceDir); len(got) != 0 {
		t.Errorf("links after the proxy went: %v", got)
	}
}

// TestProxyHiddenAndFound: a proxy whose guest shows nothing gets no
// links; FindByUuid finds a proxy by its BIOS UUID (the harness's own
// registry object must not break the simulator's walk over all objects).
func TestProxyHiddenAndFound(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t"})
	p := s.CreateProxy(t, ProxySpec{Name: "proxy", HideDevices: true, NoEnableUUID: true})
	if got := links(t, p.DeviceDir); len(got) != 0 {
		t.Errorf("a hidden guest shows %v", got)
	}
	if v := s.VM(t, "proxy").Config.ExtraConfig; hasKey(v, "disk.EnableUUID") {
		t.Error("NoEnableUUID still set disk.EnableUUID")
	}
	f, err := s.Finder(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dc, err := f.Datacenter(context.Background(), "DC0")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := object.NewSearchIndex(s.Client.Client).FindByUuid(context.Background(), dc, p.BIOSUUID, true, nil)
	if err != nil || ref == nil || ref.Reference() != p.Ref {
		t.Fatalf("FindByUuid(%s) = %v, %v", p.BIOSUUID, ref, err)
	}
}

func hasKey(opts []types.BaseOptionValue, key string) bool {
	for _, o := range opts {
		if o.GetOptionValue().Key == key {
			return true
		}
	}
	return false
}

// TestDeltaChains: with the option, a snapshot taken while the VM has
// another names that one's disk as its parent; the first has none.
func TestDeltaChains(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Name: "t", DeltaChains: true})
	vm := object.NewVirtualMachine(s.Client.Client, s.CreateVM(t, VMSpec{Name: "vm", Disks: []int64{1 << 20}}))
	s.Write(t, "vm", 0, 0, []byte("one"))
	first := snapshot(t, vm, "s1")
	s.Write(t, "vm", 0, 0, []byte("two"))
	second := snapshot(t, vm, "s2")
	b1, b2 := snapshotDisk(t, s, first), snapshotDisk(t, s, second)
	if b1.Parent != nil {
		t.Errorf("the first snapshot's disk has a parent: %s", b1.Parent.FileName)
	}
	if b2.Parent == nil || b2.Parent.FileName != b1.FileName {
		t.Fatalf("the second snapshot's disk: parent %v, want %s", b2.Parent, b1.FileName)
	}
	removeSnapshot(t, s, first)
	removeSnapshot(t, s, second)
	third := snapshot(t, vm, "s3")
	if b := snapshotDisk(t, s, third); b.Parent != nil {
		t.Errorf("a snapshot of a VM without others has a parent: %s", b.Parent.FileName)
	}
}
