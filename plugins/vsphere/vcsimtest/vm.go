package vcsimtest

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// VMSpec describes a VM to create on a site.
type VMSpec struct {
	Name      string
	Disks     []int64 // capacities in bytes, multiples of 1 KiB
	NICs      []NICSpec
	CPUs      int32  // default 1
	MemoryMB  int32  // default 256
	GuestID   string // default otherLinux64Guest
	Firmware  string // default bios
	Host      string // a host to run on; default: the cluster picks
	PoweredOn bool
	// Tools makes the guest report VMware Tools running, with the NICs'
	// addresses, gateway and DNS servers, as a real guest would.
	Tools bool
	// Folder is a folder under the datacenter's VM folder to create the
	// VM in ("web/frontend"), created when missing; "" for the VM folder.
	Folder string
	// Datastore holds the VM's files; default the site's datastore.
	Datastore string
	// ExtraConfig is set on the VM at creation (disk.EnableUUID, ...).
	ExtraConfig map[string]string
	// Independent lists the disks (by index) in independent-persistent
	// mode, which VM snapshots do not capture.
	Independent []int
	// SCSIModel is the disks' SCSI controller, by the names of
	// object.VirtualDeviceList.CreateSCSIController ("lsilogic-sas");
	// default pvscsi. NICModel is the NICs' adapter ("e1000e"); default
	// vmxnet3.
	SCSIModel string
	NICModel  string
}

// NICSpec is a NIC of a VMSpec and what the guest says about it.
type NICSpec struct {
	Network   string
	Addresses []string // CIDR, e.g. 10.1.0.5/24
	Gateway   string
	DNS       []string
}

// CreateVM creates a VM with thin disks whose flat files are as long as
// the disks (as on VMFS), and returns its managed object reference.
func (s *Site) CreateVM(t testing.TB, spec VMSpec) types.ManagedObjectReference {
	t.Helper()
	ref, err := s.AddVM(context.Background(), spec)
	if err != nil {
		t.Fatalf("vcsimtest: create vm %s: %v", spec.Name, err)
	}
	return ref
}

// AddVM is CreateVM for code that is not a test (the lab): it returns the
// error instead of failing a test.
func (s *Site) AddVM(ctx context.Context, spec VMSpec) (types.ManagedObjectReference, error) {
	var none types.ManagedObjectReference
	f, err := s.Finder(ctx)
	if err != nil {
		return none, err
	}
	folder, pool := s.folder, s.pool
	if spec.Folder != "" {
		if folder, err = s.folderAt(ctx, spec.Folder); err != nil {
			return none, fmt.Errorf("folder %s: %w", spec.Folder, err)
		}
	}
	var host *object.HostSystem
	if spec.Host != "" {
		if host, err = f.HostSystem(ctx, spec.Host); err != nil {
			return none, err
		}
		if p, err := host.ResourcePool(ctx); err == nil {
			pool = p
		}
	}
	ds := or(spec.Datastore, s.Datastore)
	cfg := types.VirtualMachineConfigSpec{
		Name: spec.Name, GuestId: or(spec.GuestID, "otherLinux64Guest"), NumCPUs: or32(spec.CPUs, 1), MemoryMB: int64(or32(spec.MemoryMB, 256)),
		Firmware: or(spec.Firmware, "bios"), Files: &types.VirtualMachineFileInfo{VmPathName: "[" + ds + "]"},
	}
	keys := make([]string, 0, len(spec.ExtraConfig))
	for k := range spec.ExtraConfig {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cfg.ExtraConfig = append(cfg.ExtraConfig, &types.OptionValue{Key: k, Value: spec.ExtraConfig[k]})
	}
	var devices object.VirtualDeviceList
	scsi, nicModel := cmp.Or(spec.SCSIModel, "pvscsi"), cmp.Or(spec.NICModel, "vmxnet3")
	ctrl, err := devices.CreateSCSIController(scsi)
	if err != nil {
		return none, err
	}
	cfg.DeviceChange = append(cfg.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: ctrl})
	devices = append(devices, ctrl)
	for i, size := range spec.Disks {
		unit := int32(i)
		if unit >= 7 {
			unit++
		}
		mode := types.VirtualDiskModePersistent
		if slices.Contains(spec.Independent, i) {
			mode = types.VirtualDiskModeIndependent_persistent
		}
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key: int32(-200 - i), ControllerKey: ctrl.GetVirtualDevice().Key, UnitNumber: &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					DiskMode: string(mode), ThinProvisioned: types.NewBool(true),
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[" + ds + "]"},
				},
			},
			CapacityInKB: size / 1024, CapacityInBytes: size,
		}
		cfg.DeviceChange = append(cfg.DeviceChange, &types.VirtualDeviceConfigSpec{
			Operation: types.VirtualDeviceConfigSpecOperationAdd, FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate, Device: disk})
	}
	for _, n := range spec.NICs {
		net, err := f.Network(ctx, n.Network)
		if err != nil {
			return none, fmt.Errorf("network %q: %w", n.Network, err)
		}
		backing, err := net.EthernetCardBackingInfo(ctx)
		if err != nil {
			return none, err
		}
		card, err := devices.CreateEthernetCard(nicModel, backing)
		if err != nil {
			return none, err
		}
		cfg.DeviceChange = append(cfg.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: card})
	}
	task, err := folder.CreateVM(ctx, cfg, pool, host)
	if err != nil {
		return none, err
	}
	info, err := task.WaitForResult(ctx)
	if err != nil {
		return none, err
	}
	ref := info.Result.(types.ManagedObjectReference)
	vm := s.reg().Get(ref).(*simulator.VirtualMachine)
	var sizeErr error
	s.lockCtx().WithLock(vm, func() {
		for _, d := range disks(vm) {
			flat, err := s.flatPath(d)
			if err == nil {
				err = os.Truncate(flat, d.CapacityInBytes)
			}
			if err != nil && sizeErr == nil {
				sizeErr = err
			}
		}
	})
	if sizeErr != nil {
		return none, sizeErr
	}
	if spec.PoweredOn {
		obj := object.NewVirtualMachine(s.Client.Client, ref)
		t, err := obj.PowerOn(ctx)
		if err != nil {
			return none, err
		}
		if err := t.Wait(ctx); err != nil {
			return none, err
		}
	}
	if spec.Tools {
		if err := s.setGuest(vm, spec.NICs); err != nil {
			return none, err
		}
	}
	return ref, nil
}

// setGuest makes the VM's guest report running tools and its networks.
func (s *Site) setGuest(vm *simulator.VirtualMachine, nics []NICSpec) error {
	var err error
	s.lockCtx().WithLock(vm, func() {
		g := *vm.Guest
		g.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		g.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
		cards := object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.VirtualEthernetCard)(nil))
		sort.Slice(cards, func(i, j int) bool { return cards[i].GetVirtualDevice().Key < cards[j].GetVirtualDevice().Key })
		g.Net = nil
		var stack types.GuestStackInfo
		stack.IpRouteConfig = &types.NetIpRouteConfigInfo{}
		for i, n := range nics {
			card := cards[i].(types.BaseVirtualEthernetCard).GetVirtualEthernetCard()
			gn := types.GuestNicInfo{Network: n.Network, MacAddress: card.MacAddress, Connected: true, DeviceConfigId: card.Key,
				IpConfig: &types.NetIpConfigInfo{}, DnsConfig: &types.NetDnsConfigInfo{IpAddress: n.DNS}}
			for _, a := range n.Addresses {
				p, perr := netip.ParsePrefix(a)
				if perr != nil {
					err = perr
					return
				}
				gn.IpAddress = append(gn.IpAddress, p.Addr().String())
				gn.IpConfig.IpAddress = append(gn.IpConfig.IpAddress, types.NetIpConfigInfoIpAddress{IpAddress: p.Addr().String(), PrefixLength: int32(p.Bits())})
			}
			g.Net = append(g.Net, gn)
			if n.Gateway != "" {
				network := "0.0.0.0"
				if gw, gerr := netip.ParseAddr(n.Gateway); gerr == nil && gw.Is6() {
					network = "::"
				}
				stack.IpRouteConfig.IpRoute = append(stack.IpRouteConfig.IpRoute, types.NetIpRouteConfigInfoIpRoute{
					Network: network, PrefixLength: 0, Gateway: types.NetIpRouteConfigInfoGateway{IpAddress: n.Gateway, Device: fmt.Sprint(i)}})
			}
			if i == 0 && len(g.Net[0].IpAddress) > 0 {
				g.IpAddress = g.Net[0].IpAddress[0]
			}
		}
		g.IpStack = []types.GuestStackInfo{stack}
		vm.Guest = &g
	})
	return err
}

// disks returns a VM's disks in device key order, the order ferry uses;
// the caller holds the VM's lock.
func disks(vm *simulator.VirtualMachine) []*types.VirtualDisk {
	var out []*types.VirtualDisk
	for _, d := range vm.Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok {
			out = append(out, disk)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// flatPath is the local flat file of a disk as the VM uses it now.
func (s *Site) flatPath(d *types.VirtualDisk) (string, error) {
	b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return "", fmt.Errorf("disk %d: %T backing", d.Key, d.Backing)
	}
	desc, err := s.localPath(b.FileName)
	if err != nil {
		return "", err
	}
	return flatOf(desc)
}

// withDisk finds disk index of a VM (key order) and its flat file, and
// holds the VM's lock while f runs.
func (s *Site) withDisk(name string, index int, f func(vm *simulator.VirtualMachine, d *types.VirtualDisk, flat string) error) error {
	return s.lockedDisk(name, index, func(vm *simulator.VirtualMachine, d *types.VirtualDisk) error {
		flat, err := s.flatPath(d)
		if err != nil {
			return err
		}
		return f(vm, d, flat)
	})
}

// lockedDisk finds disk index of a VM (key order), whatever its backing,
// and holds the VM's lock while f runs.
func (s *Site) lockedDisk(name string, index int, f func(vm *simulator.VirtualMachine, d *types.VirtualDisk) error) error {
	vm, err := s.vm(name)
	if err != nil {
		return err
	}
	s.lockCtx().WithLock(vm, func() {
		ds := disks(vm)
		if index < 0 || index >= len(ds) {
			err = fmt.Errorf("vm %s has %d disks, no disk %d", name, len(ds), index)
			return
		}
		err = f(vm, ds[index])
	})
	return err
}

// Write writes data into a disk of a running VM as its guest would: into
// the disk's current flat file, seen by changed block tracking and by
// snapshots taken afterwards, never by those taken before.
func (s *Site) Write(t testing.TB, vm string, disk int, off int64, data []byte) {
	t.Helper()
	if err := s.GuestWrite(vm, disk, off, data); err != nil {
		t.Fatal(err)
	}
}

// GuestWrite is Write for code that is not a test (the lab): it returns
// the error, which names the VM and the disk.
func (s *Site) GuestWrite(vm string, disk int, off int64, data []byte) error {
	err := s.withDisk(vm, disk, func(v *simulator.VirtualMachine, d *types.VirtualDisk, flat string) error {
		if off < 0 || off+int64(len(data)) > d.CapacityInBytes {
			return fmt.Errorf("write [%d, %d) outside disk %d of %d bytes", off, off+int64(len(data)), disk, d.CapacityInBytes)
		}
		f, err := os.OpenFile(flat, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt(data, off); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		s.d.logWrite(diskID{vm: v.Self.Value, key: d.Key}, off, off+int64(len(data)))
		return nil
	})
	if err != nil {
		return fmt.Errorf("vcsimtest: write vm %s disk %d: %w", vm, disk, err)
	}
	return nil
}

// DiskSizes returns the capacities of a VM's disks in bytes, in the order
// Write and ferry number them (device key order).
func (s *Site) DiskSizes(vm string) ([]int64, error) {
	v, err := s.vm(vm)
	if err != nil {
		return nil, err
	}
	var sizes []int64
	s.lockCtx().WithLock(v, func() {
		for _, d := range disks(v) {
			size := d.CapacityInBytes
			if size == 0 {
				size = d.CapacityInKB * 1024
			}
			sizes = append(sizes, size)
		}
	})
	return sizes, nil
}

// WriteUntracked changes a disk behind change tracking's back, as a restore
// from outside vSphere would; only a tracking reset makes it visible.
func (s *Site) WriteUntracked(t testing.TB, vm string, disk int, off int64, data []byte) {
	t.Helper()
	err := s.withDisk(vm, disk, func(_ *simulator.VirtualMachine, _ *types.VirtualDisk, flat string) error {
		f, err := os.OpenFile(flat, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteAt(data, off)
		return closeWith(f, err)
	})
	if err != nil {
		t.Fatalf("vcsimtest: write vm %s disk %d: %v", vm, disk, err)
	}
}

func closeWith(f *os.File, err error) error {
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Disk reads a disk of a VM as it is now, its full capacity.
func (s *Site) Disk(t testing.TB, vm string, disk int) []byte {
	t.Helper()
	var out []byte
	err := s.withDisk(vm, disk, func(_ *simulator.VirtualMachine, d *types.VirtualDisk, flat string) error {
		size := d.CapacityInBytes
		if size == 0 {
			size = d.CapacityInKB * 1024
		}
		out = make([]byte, size)
		f, err := os.Open(flat)
		if err != nil {
			return err
		}
		_, err = f.ReadAt(out, 0)
		if err == io.EOF {
			err = nil
		}
		return closeWith(f, err)
	})
	if err != nil {
		t.Fatalf("vcsimtest: read vm %s disk %d: %v", vm, disk, err)
	}
	return out
}

// ResetCBT switches changed block tracking of a VM off and on through the
// API, as an administrator resets it: change ids from before are of
// another epoch.
func (s *Site) ResetCBT(t testing.TB, vm string) {
	t.Helper()
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, vm))
	for _, on := range []bool{false, true} {
		task, err := obj.Reconfigure(context.Background(), types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(on)})
		if err == nil {
			err = task.Wait(context.Background())
		}
		if err != nil {
			t.Fatalf("vcsimtest: set change tracking of %s to %v: %v", vm, on, err)
		}
	}
}

// ResizeDisk grows a disk of a VM through the API and its flat file with it.
func (s *Site) ResizeDisk(t testing.TB, vm string, disk int, size int64) {
	t.Helper()
	ctx := context.Background()
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, vm))
	devices, err := obj.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ds []*types.VirtualDisk
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		ds = append(ds, d.(*types.VirtualDisk))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].Key < ds[j].Key })
	d := ds[disk]
	d.CapacityInBytes, d.CapacityInKB = size, size/1024
	// No file operation: govmomi's EditDevice asks for "replace", which
	// makes vcsim create the disk anew, empty.
	task, err := obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationEdit, Device: d}}})
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("vcsimtest: resize vm %s disk %d: %v", vm, disk, err)
	}
	err = s.withDisk(vm, disk, func(_ *simulator.VirtualMachine, _ *types.VirtualDisk, flat string) error {
		st, err := os.Stat(flat)
		if err == nil && st.Size() < size {
			err = os.Truncate(flat, size)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Destroy removes a VM from the inventory and its files.
func (s *Site) Destroy(t testing.TB, vm string) {
	t.Helper()
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, vm))
	ctx := context.Background()
	if st, err := obj.PowerState(ctx); err == nil && st == types.VirtualMachinePowerStatePoweredOn {
		if task, err := obj.PowerOff(ctx); err == nil {
			task.Wait(ctx)
		}
	}
	task, err := obj.Destroy(ctx)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("vcsimtest: destroy %s: %v", vm, err)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func or32(v, def int32) int32 {
	if v == 0 {
		return def
	}
	return v
}
