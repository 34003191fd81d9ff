package vsphere

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// vmProps are the properties ferry reads of a VM.
var vmProps = []string{"name", "config", "runtime.powerState", "runtime.host", "guest", "snapshot", "resourcePool", "parent", "parentVApp"}

// replicaProps are those the target reads of a replica: not the guest's
// view, which ferry keeps itself for replicas.
var replicaProps = []string{"name", "config", "runtime.powerState", "runtime.host", "snapshot"}

// replicaKey is the extraConfig key that marks a VM as a ferry replica; its
// value is the name of the source VM.
const replicaKey = "ferry.replica"

// morefPattern matches a VM's managed object id, which ferry uses as its ID.
var morefPattern = regexp.MustCompile(`^vm-[0-9]+$`)

// vmRef returns the managed object reference of a VM given by id, inventory
// path or name; errdefs.ErrNotFound when there is none.
func (c *conn) vmRef(ctx context.Context, key string) (types.ManagedObjectReference, error) {
	if morefPattern.MatchString(key) {
		ref := types.ManagedObjectReference{Type: "VirtualMachine", Value: key}
		var vm mo.VirtualMachine
		err := c.retrieveOne(ctx, ref, []string{"name"}, &vm)
		if err == nil {
			return ref, nil
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			return ref, err
		}
	}
	if strings.Contains(key, "/") {
		vm, err := c.finder.VirtualMachine(ctx, key)
		if err == nil {
			return vm.Reference(), nil
		}
		var nf *find.NotFoundError
		if !errors.As(err, &nf) {
			return types.ManagedObjectReference{}, c.classify(err, "find vm "+key)
		}
	}
	var vms []mo.VirtualMachine
	if err := c.retrieveAll(ctx, c.dc.Reference(), "VirtualMachine", []string{"name"}, &vms); err != nil {
		return types.ManagedObjectReference{}, err
	}
	var found []types.ManagedObjectReference
	for _, vm := range vms {
		if vm.Name == key {
			found = append(found, vm.Self)
		}
	}
	switch len(found) {
	case 0:
		return types.ManagedObjectReference{}, fmt.Errorf("vm %q in %s: %w", key, c.url, errdefs.ErrNotFound)
	case 1:
		return found[0], nil
	}
	return types.ManagedObjectReference{}, fmt.Errorf("vm %q: %d VMs have that name in %s; name it by inventory path or id: %w", key, len(found), c.url, errdefs.ErrInvalidArgument)
}

// retrieveOne reads properties of one object; ErrNotFound when it is gone.
func (c *conn) retrieveOne(ctx context.Context, ref types.ManagedObjectReference, props []string, dst any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := property.DefaultCollector(c.client).RetrieveOne(ctx, ref, props, dst)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.classify(err, fmt.Sprintf("read %s %s", ref.Type, ref.Value))
	}
	return nil
}

// retrieveAll reads properties of every object of a kind under root.
func (c *conn) retrieveAll(ctx context.Context, root types.ManagedObjectReference, kind string, props []string, dst any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := view.NewManager(c.client)
	v, err := m.CreateContainerView(ctx, root, []string{kind}, true)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.classify(err, "list "+kind)
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	if err := v.Retrieve(ctx, []string{kind}, props, dst); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.classify(err, "list "+kind)
	}
	return nil
}

// vmObject reads the properties ferry needs of a VM given by id, path or name.
func (c *conn) vmObject(ctx context.Context, key string) (*mo.VirtualMachine, error) {
	return c.vmObjectProps(ctx, key, vmProps)
}

// vmObjectProps reads some properties of a VM given by id, path or name;
// they must include "config".
func (c *conn) vmObjectProps(ctx context.Context, key string, props []string) (*mo.VirtualMachine, error) {
	var vm mo.VirtualMachine
	if morefPattern.MatchString(key) {
		// The common case, by id: one round trip.
		err := c.retrieveOne(ctx, types.ManagedObjectReference{Type: "VirtualMachine", Value: key}, props, &vm)
		if err == nil && vm.Config != nil {
			return &vm, nil
		}
		if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return nil, err
		}
	}
	ref, err := c.vmRef(ctx, key)
	if err != nil {
		return nil, err
	}
	if err := c.retrieveOne(ctx, ref, props, &vm); err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("vm %q in %s: %w", key, c.url, errdefs.ErrNotFound)
		}
		return nil, err
	}
	if vm.Config == nil {
		return nil, fmt.Errorf("vm %q in %s has no configuration (inaccessible): %w", key, c.url, errdefs.ErrFailedPrecondition)
	}
	return &vm, nil
}

// netNames resolves the names of distributed port groups by key, read only
// when a VM uses one.
type netNames struct {
	c     *conn
	byKey map[string]string // portgroup key -> name
}

func (n *netNames) portgroup(ctx context.Context, key string) string {
	if n.byKey == nil {
		n.byKey = map[string]string{}
		var pgs []mo.DistributedVirtualPortgroup
		if err := n.c.retrieveAll(ctx, n.c.dc.Reference(), "DistributedVirtualPortgroup", []string{"name", "key"}, &pgs); err == nil {
			for _, pg := range pgs {
				n.byKey[pg.Key] = pg.Name
			}
		}
	}
	if name, ok := n.byKey[key]; ok {
		return name
	}
	return key
}

// ethernetCards returns a VM's NICs in device key order.
func ethernetCards(devices object.VirtualDeviceList) []types.BaseVirtualEthernetCard {
	var cards []types.BaseVirtualEthernetCard
	for _, d := range devices {
		if c, ok := d.(types.BaseVirtualEthernetCard); ok {
			cards = append(cards, c)
		}
	}
	sort.SliceStable(cards, func(i, j int) bool {
		return cards[i].GetVirtualEthernetCard().Key < cards[j].GetVirtualEthernetCard().Key
	})
	return cards
}

// virtualDisks returns a VM's disks in device key order: the order of
// sdk.VM.Disks, stable across snapshots, which keep the keys.
func virtualDisks(devices []types.BaseVirtualDevice) []*types.VirtualDisk {
	var disks []*types.VirtualDisk
	for _, d := range devices {
		if disk, ok := d.(*types.VirtualDisk); ok {
			disks = append(disks, disk)
		}
	}
	sort.SliceStable(disks, func(i, j int) bool { return disks[i].Key < disks[j].Key })
	return disks
}

// diskCapacity is a disk's size in bytes.
func diskCapacity(d *types.VirtualDisk) int64 {
	if d.CapacityInBytes > 0 {
		return d.CapacityInBytes
	}
	return d.CapacityInKB * 1024
}

// controllerName names a disk's place as the .vmx does: scsi0:1, nvme0:0.
func controllerName(devices object.VirtualDeviceList, d types.BaseVirtualDevice) string {
	bus, _, n, u, ok := diskSlot(devices, d)
	if !ok {
		return ""
	}
	return sdk.ControllerPosition(bus, n, u)
}

// diskSlot says where a disk hangs: the controller's bus, its model for
// SCSI, its bus number and the disk's unit.
func diskSlot(devices object.VirtualDeviceList, d types.BaseVirtualDevice) (sdk.Bus, sdk.ControllerModel, int, int, bool) {
	vd := d.GetVirtualDevice()
	ctrl := devices.FindByKey(vd.ControllerKey)
	if ctrl == nil || vd.UnitNumber == nil {
		return "", "", 0, 0, false
	}
	var bus sdk.Bus
	var model sdk.ControllerModel
	switch ctrl.(type) {
	case *types.ParaVirtualSCSIController:
		bus, model = sdk.BusSCSI, sdk.ModelPVSCSI
	case *types.VirtualLsiLogicController:
		bus, model = sdk.BusSCSI, sdk.ModelLSILogic
	case *types.VirtualLsiLogicSASController:
		bus, model = sdk.BusSCSI, sdk.ModelLSILogicSAS
	case *types.VirtualBusLogicController:
		bus, model = sdk.BusSCSI, sdk.ModelBusLogic
	case types.BaseVirtualSCSIController:
		bus = sdk.BusSCSI
	case *types.VirtualIDEController:
		bus = sdk.BusIDE
	case *types.VirtualNVMEController:
		bus = sdk.BusNVMe
	case types.BaseVirtualSATAController:
		bus = sdk.BusSATA
	default:
		return "", "", 0, 0, false
	}
	n := ctrl.(types.BaseVirtualController).GetVirtualController().BusNumber
	return bus, model, int(n), int(*vd.UnitNumber), true
}

// nicModel names the adapter a NIC is; "" for one ferry does not know.
func nicModel(card types.BaseVirtualEthernetCard) sdk.NICModel {
	switch card.(type) {
	case *types.VirtualVmxnet3:
		return sdk.NICVmxnet3
	case *types.VirtualVmxnet2:
		return sdk.NICVmxnet2
	case *types.VirtualE1000:
		return sdk.NICE1000
	case *types.VirtualE1000e:
		return sdk.NICE1000e
	case *types.VirtualPCNet32:
		return sdk.NICPCNet32
	}
	return ""
}

// hardware reads what the guest boots on: firmware, Secure Boot, a
// virtual TPM, the guest's family and the boot order, whose devices are
// named by their index among the VM's disks and NICs.
func hardware(cfg *types.VirtualMachineConfigInfo, disks []*types.VirtualDisk, cards []types.BaseVirtualEthernetCard) sdk.Hardware {
	hw := sdk.Hardware{Firmware: cfg.Firmware, GuestFamily: sdk.GuestFamilyOf(cfg.GuestId)}
	if hw.Firmware == "" {
		hw.Firmware = sdk.FirmwareBIOS
	}
	for _, d := range cfg.Hardware.Device {
		if _, ok := d.(*types.VirtualTPM); ok {
			hw.TPM = true
		}
	}
	bo := cfg.BootOptions
	if bo == nil {
		return hw
	}
	if bo.EfiSecureBootEnabled != nil && *bo.EfiSecureBootEnabled && hw.Firmware == sdk.FirmwareEFI {
		hw.SecureBoot = true
	}
	for _, b := range bo.BootOrder {
		switch dev := b.(type) {
		case *types.VirtualMachineBootOptionsBootableDiskDevice:
			for i, d := range disks {
				if d.Key == dev.DeviceKey {
					hw.BootOrder = append(hw.BootOrder, sdk.BootDevice{Kind: sdk.BootDisk, Index: i})
				}
			}
		case *types.VirtualMachineBootOptionsBootableEthernetDevice:
			for i, c := range cards {
				if c.GetVirtualEthernetCard().Key == dev.DeviceKey {
					hw.BootOrder = append(hw.BootOrder, sdk.BootDevice{Kind: sdk.BootNetwork, Index: i})
				}
			}
		case *types.VirtualMachineBootOptionsBootableCdromDevice:
			hw.BootOrder = append(hw.BootOrder, sdk.BootDevice{Kind: sdk.BootCDROM})
		}
	}
	return hw
}

// diskThin says whether a disk is thin provisioned.
func diskThin(d *types.VirtualDisk) bool {
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return b.ThinProvisioned != nil && *b.ThinProvisioned
	case *types.VirtualDiskSeSparseBackingInfo, *types.VirtualDiskSparseVer2BackingInfo:
		return true
	}
	return false
}

// diskIndependent says whether a disk is in an independent mode, which VM
// snapshots do not capture.
func diskIndependent(d *types.VirtualDisk) bool {
	var mode string
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		mode = b.DiskMode
	case *types.VirtualDiskSparseVer2BackingInfo:
		mode = b.DiskMode
	case *types.VirtualDiskSeSparseBackingInfo:
		mode = b.DiskMode
	case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
		mode = b.DiskMode
	}
	return strings.HasPrefix(mode, "independent")
}

// nicNetwork names the network a NIC's backing connects it to.
func nicNetwork(ctx context.Context, names *netNames, card types.BaseVirtualEthernetCard) string {
	switch b := card.GetVirtualEthernetCard().Backing.(type) {
	case *types.VirtualEthernetCardNetworkBackingInfo:
		return b.DeviceName
	case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
		return names.portgroup(ctx, b.Port.PortgroupKey)
	case *types.VirtualEthernetCardOpaqueNetworkBackingInfo:
		return b.OpaqueNetworkId
	}
	return ""
}

// powerState maps vSphere's power states to ferry's words.
func powerState(s types.VirtualMachinePowerState) string {
	switch s {
	case types.VirtualMachinePowerStatePoweredOn:
		return "on"
	case types.VirtualMachinePowerStatePoweredOff:
		return "off"
	case types.VirtualMachinePowerStateSuspended:
		return "suspended"
	}
	return string(s)
}

// describe turns a VM's properties into an sdk.VM. Addresses, gateways and
// DNS servers come from what VMware Tools report in the guest.
func describe(ctx context.Context, names *netNames, vm *mo.VirtualMachine) sdk.VM {
	cfg := vm.Config
	devices := object.VirtualDeviceList(cfg.Hardware.Device)
	out := sdk.VM{
		ID:         vm.Self.Value,
		Name:       vm.Name,
		CPUs:       int(cfg.Hardware.NumCPU),
		MemoryMiB:  int64(cfg.Hardware.MemoryMB),
		Firmware:   cfg.Firmware,
		GuestOS:    cfg.GuestId,
		PowerState: powerState(vm.Runtime.PowerState),
		Disks:      []sdk.Disk{},
		Attributes: map[string]string{"vsphere.moref": vm.Self.Value},
	}
	if out.Firmware == "" {
		out.Firmware = "bios"
	}
	if cfg.InstanceUuid != "" {
		out.Attributes["vsphere.instance_uuid"] = cfg.InstanceUuid
	}
	if cfg.Version != "" {
		out.Attributes["vsphere.hardware_version"] = cfg.Version
	}
	disks, cards := virtualDisks(cfg.Hardware.Device), ethernetCards(devices)
	out.Hardware = hardware(cfg, disks, cards)
	for i, d := range disks {
		name := fmt.Sprintf("disk-%d", d.Key)
		if info := d.DeviceInfo; info != nil && info.GetDescription().Label != "" {
			name = info.GetDescription().Label
		}
		disk := sdk.Disk{Index: i, Name: name, Capacity: diskCapacity(d), Thin: diskThin(d), Independent: diskIndependent(d)}
		if bus, model, n, u, ok := diskSlot(devices, d); ok {
			disk.Controller, disk.Bus, disk.ControllerModel, disk.ControllerNumber, disk.Unit = sdk.ControllerPosition(bus, n, u), bus, model, n, u
		}
		out.Disks = append(out.Disks, disk)
	}
	for i, card := range cards {
		ec := card.GetVirtualEthernetCard()
		nic := sdk.NIC{Index: i, Network: nicNetwork(ctx, names, card), MAC: ec.MacAddress, Model: nicModel(card)}
		guestNIC(vm.Guest, ec.Key, &nic)
		out.NICs = append(out.NICs, nic)
	}
	return out
}

// guestNIC fills a NIC's addresses, gateway and DNS servers from the
// guest information of the NIC whose device key is key.
func guestNIC(g *types.GuestInfo, key int32, nic *sdk.NIC) {
	if g == nil {
		return
	}
	pos := -1
	for i, n := range g.Net {
		if n.DeviceConfigId == key {
			pos = i
			break
		}
	}
	if pos < 0 {
		return
	}
	gn := g.Net[pos]
	if gn.IpConfig != nil {
		for _, a := range gn.IpConfig.IpAddress {
			if p, ok := guestPrefix(a.IpAddress, int(a.PrefixLength)); ok {
				nic.Addresses = append(nic.Addresses, p)
			}
		}
	} else {
		for _, a := range gn.IpAddress {
			if ip, err := netip.ParseAddr(a); err == nil {
				if p, ok := guestPrefix(a, ip.BitLen()); ok {
					nic.Addresses = append(nic.Addresses, p)
				}
			}
		}
	}
	if gn.DnsConfig != nil {
		nic.DNS = append(nic.DNS, gn.DnsConfig.IpAddress...)
	}
	for _, st := range g.IpStack {
		if len(nic.DNS) == 0 && st.DnsConfig != nil {
			nic.DNS = append(nic.DNS, st.DnsConfig.IpAddress...)
		}
		if nic.Gateway == "" && st.IpRouteConfig != nil {
			nic.Gateway = defaultGateway(st.IpRouteConfig.IpRoute, strconv.Itoa(pos))
		}
	}
}

// guestPrefix writes an address and prefix length as CIDR, skipping
// link-local addresses, which the guest makes up on its own.
func guestPrefix(addr string, bits int) (string, bool) {
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.IsLinkLocalUnicast() {
		return "", false
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return "", false
	}
	return netip.PrefixFrom(ip, p.Bits()).String(), true
}

// defaultGateway finds the gateway of the default route through a device,
// IPv4 first.
func defaultGateway(routes []types.NetIpRouteConfigInfoIpRoute, device string) string {
	var v6 string
	for _, r := range routes {
		if r.PrefixLength != 0 || r.Gateway.IpAddress == "" || (r.Gateway.Device != "" && r.Gateway.Device != device) {
			continue
		}
		ip, err := netip.ParseAddr(r.Gateway.IpAddress)
		if err != nil {
			continue
		}
		if ip.Is4() {
			return ip.String()
		}
		if v6 == "" {
			v6 = ip.String()
		}
	}
	return v6
}

// extraConfig returns a VM's extraConfig as a map.
func extraConfig(cfg *types.VirtualMachineConfigInfo) map[string]string {
	out := map[string]string{}
	if cfg == nil {
		return out
	}
	for _, o := range cfg.ExtraConfig {
		if ov := o.GetOptionValue(); ov != nil {
			if s, ok := ov.Value.(string); ok {
				out[ov.Key] = s
			}
		}
	}
	return out
}

// setPower powers vm on or off unless its loaded state is that already
// (a VM found off meanwhile counts as powered off), and records the state
// in vm.
func (c *conn) setPower(ctx context.Context, vm *mo.VirtualMachine, on bool) error {
	obj := object.NewVirtualMachine(c.client, vm.Self)
	switch state := vm.Runtime.PowerState; {
	case on && state != types.VirtualMachinePowerStatePoweredOn:
		if _, err := c.call(ctx, "power on "+vm.Name, obj.PowerOn); err != nil {
			return err
		}
		vm.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOn
	case !on && state != types.VirtualMachinePowerStatePoweredOff:
		if _, err := c.call(ctx, "power off "+vm.Name, obj.PowerOff); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			return err
		}
		vm.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOff
	}
	return nil
}
