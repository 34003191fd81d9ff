//go:build windows

package wmihost

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Host is the Hyper-V host the plugin runs on, through WMI.
type Host struct {
	c    *conn
	name string
}

var _ host.Host = (*Host)(nil)

// Connect opens a WMI session to this machine's Hyper-V.
func Connect(ctx context.Context) (*Host, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := dial()
	if err != nil {
		return nil, err
	}
	name, _ := os.Hostname()
	return &Host{c: c, name: name}, nil
}

// Name is the machine's host name.
func (h *Host) Name() string { return h.name }

// Local is true: the VMs' files are on this machine.
func (h *Host) Local() bool { return true }

// vmObj finds a VM's Msvm_ComputerSystem by id (its GUID) or name. The
// host's own Msvm_ComputerSystem is named by the host's name, not a GUID.
func (h *Host) vmObj(vm string) (obj, error) {
	all, err := h.c.query(fmt.Sprintf("SELECT * FROM Msvm_ComputerSystem WHERE Name = %s OR ElementName = %s", wqlString(vm), wqlString(vm)))
	if err != nil {
		return obj{}, err
	}
	var found obj
	for _, o := range all {
		switch {
		case found.WmiInstance != nil || !isGUID(o.str("Name")):
			o.Close()
		case strings.EqualFold(o.str("Name"), vm) || o.str("ElementName") == vm:
			found = o
		default:
			o.Close()
		}
	}
	if found.WmiInstance == nil {
		return obj{}, fmt.Errorf("vm %q: %w", vm, errdefs.ErrNotFound)
	}
	return found, nil
}

// settings returns the VM's settings: its current ones (realized) and
// its checkpoints'.
func (h *Host) settings(cs obj) (current obj, snaps []obj, err error) {
	all, err := h.c.related(cs, "Msvm_VirtualSystemSettingData")
	if err != nil {
		return obj{}, nil, err
	}
	for _, o := range all {
		t := o.str("VirtualSystemType")
		switch {
		case t == vsTypeRealized && current.WmiInstance == nil:
			current = o
		case strings.HasPrefix(t, "Microsoft:Hyper-V:Snapshot:"):
			snaps = append(snaps, o)
		default:
			o.Close()
		}
	}
	if current.WmiInstance == nil {
		closeAll(snaps)
		return obj{}, nil, fmt.Errorf("vm %s has no current settings: %w", cs.str("Name"), errdefs.ErrNotFound)
	}
	return current, snaps, nil
}

// ListVMs lists the host's VMs, by creation time.
func (h *Host) ListVMs(ctx context.Context) ([]host.VM, error) {
	var out []host.VM
	err := h.c.do(ctx, func() error {
		all, err := h.c.query("SELECT * FROM Msvm_ComputerSystem")
		if err != nil {
			return err
		}
		defer closeAll(all)
		for _, cs := range all {
			if !isGUID(cs.str("Name")) {
				continue
			}
			v, err := h.describe(cs)
			if err != nil {
				return err
			}
			out = append(out, *v)
		}
		return nil
	})
	return out, err
}

// GetVM returns one VM by id or name.
func (h *Host) GetVM(ctx context.Context, vm string) (*host.VM, error) {
	var out *host.VM
	err := h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		out, err = h.describe(cs)
		return err
	})
	return out, err
}

func (h *Host) describe(cs obj) (*host.VM, error) {
	vssd, snaps, err := h.settings(cs)
	if err != nil {
		return nil, err
	}
	closeAll(snaps)
	defer vssd.Close()
	id := cs.str("Name")
	v := &host.VM{ID: strings.ToUpper(id), Name: cs.str("ElementName"), Generation: generationOf(vssd.str("VirtualSystemSubType")),
		SecureBoot: toBool(vssd.get("SecureBootEnabled")), SecureBootTemplate: templateName(vssd.str("SecureBootTemplateId")), Running: running(toInt(cs.get("EnabledState"))),
		Notes: joinNotes(vssd.get("Notes")), Dir: vssd.str("ConfigurationDataRoot")}
	if ps, err := h.c.related(vssd, "Msvm_ProcessorSettingData"); err == nil && len(ps) > 0 {
		v.CPUs = toInt(ps[0].get("VirtualQuantity"))
		closeAll(ps)
	}
	if ms, err := h.c.related(vssd, "Msvm_MemorySettingData"); err == nil && len(ms) > 0 {
		n, _ := toInt64(ms[0].get("VirtualQuantity"))
		v.MemoryMiB = n
		closeAll(ms)
	}
	if ss, err := h.c.related(vssd, "Msvm_SecuritySettingData"); err == nil && len(ss) > 0 {
		v.TPM = toBool(ss[0].get("TpmEnabled"))
		closeAll(ss)
	}
	if vss, err := h.c.query("SELECT * FROM Msvm_VssComponent WHERE SystemName = " + wqlString(id)); err == nil {
		for _, o := range vss {
			st, _ := toInt64s(o.get("OperationalStatus"))
			v.GuestBackup = v.GuestBackup || guestBackup(toInt(o.get("EnabledState")), st)
		}
		closeAll(vss)
	}
	disks, err := h.disks(vssd)
	if err != nil {
		return nil, err
	}
	for _, d := range disks {
		v.Disks = append(v.Disks, host.Disk{Controller: d.slot.Kind, Bus: d.slot.Bus, Location: d.slot.Location, Path: d.path, Capacity: d.capacity})
	}
	nics, err := h.nics(vssd)
	if err != nil {
		return nil, err
	}
	for _, n := range nics {
		v.NICs = append(v.NICs, n.nic)
	}
	v.BootOrder, err = h.bootOrder(vssd, v.Generation, disks, nics)
	closeNICs(nics)
	if err != nil {
		return nil, fmt.Errorf("vm %s: %w", v.Name, err)
	}
	return v, nil
}

// diskFile is a virtual hard disk of a VM's (or a checkpoint's) settings.
type diskFile struct {
	slot     slot
	path     string
	capacity int64
	drive    string // the InstanceID of its disk drive's settings
}

// disks lists the virtual hard disks of a settings object (current or a
// checkpoint's) in the plugin's order (sortSlots).
func (h *Host) disks(vssd obj) ([]diskFile, error) {
	rasds, err := h.c.related(vssd, "Msvm_ResourceAllocationSettingData")
	if err != nil {
		return nil, err
	}
	defer closeAll(rasds)
	sasds, err := h.c.related(vssd, "Msvm_StorageAllocationSettingData")
	if err != nil {
		return nil, err
	}
	defer closeAll(sasds)
	var ctrls []controller
	drives := map[string]slot{} // by the drive's InstanceID
	driveParent := map[string]string{}
	driveLoc := map[string]int{}
	for _, r := range rasds {
		switch r.str("ResourceSubType") {
		case subIDE:
			ctrls = append(ctrls, controller{InstanceID: r.str("InstanceID"), Kind: "ide", Address: r.str("Address")})
		case subSCSI:
			ctrls = append(ctrls, controller{InstanceID: r.str("InstanceID"), Kind: "scsi"})
		case subDiskDrive:
			id := r.str("InstanceID")
			driveParent[id] = pathKey(r.str("Parent"), "InstanceID")
			driveLoc[id], _ = strconv.Atoi(r.str("AddressOnParent"))
		}
	}
	numberControllers(ctrls)
	byCtrl := map[string]controller{}
	for _, c := range ctrls {
		byCtrl[c.InstanceID] = c
	}
	for id, parent := range driveParent {
		c, ok := byCtrl[parent]
		if !ok {
			continue
		}
		drives[id] = slot{Kind: c.Kind, Bus: c.Bus, Location: driveLoc[id]}
	}
	var out []diskFile
	for _, s := range sasds {
		if s.str("ResourceSubType") != subVHD {
			continue
		}
		sl, ok := drives[pathKey(s.str("Parent"), "InstanceID")]
		files := toStrings(s.get("HostResource"))
		if !ok || len(files) == 0 {
			continue
		}
		out = append(out, diskFile{slot: sl, path: files[0], drive: pathKey(s.str("Parent"), "InstanceID")})
	}
	sortSlots(out, func(d diskFile) slot { return d.slot })
	for i := range out {
		size, err := h.capacity(out[i].path)
		if err != nil {
			return nil, err
		}
		out[i].capacity = size
	}
	return out, nil
}

// capacity asks Msvm_ImageManagementService.GetVirtualHardDiskSettingData
// for a disk file's virtual size.
func (h *Host) capacity(path string) (int64, error) {
	ims, err := h.c.service("Msvm_ImageManagementService")
	if err != nil {
		return 0, err
	}
	defer ims.Close()
	out, err := h.c.call(context.Background(), ims, "GetVirtualHardDiskSettingData", []param{{"Path", path}}, "SettingData")
	if err != nil {
		return 0, fmt.Errorf("disk %s: %w", path, err)
	}
	_, props, err := embedded(toString(out["SettingData"]))
	if err != nil {
		return 0, fmt.Errorf("disk %s: %w", path, err)
	}
	if v := props["MaxInternalSize"]; len(v) == 1 {
		return toInt64(v[0])
	}
	return 0, fmt.Errorf("disk %s: no MaxInternalSize: %w", path, errdefs.ErrDataLoss)
}

// nicInfo is a synthetic adapter of a VM's settings.
type nicInfo struct {
	nic  host.NIC
	port obj // its Msvm_SyntheticEthernetPortSettingData
	conn obj // its Msvm_EthernetPortAllocationSettingData; nil when none
}

// nics lists the VM's synthetic adapters in the order of their
// InstanceIDs; the caller closes port and conn.
func (h *Host) nics(vssd obj) ([]nicInfo, error) {
	ports, err := h.c.related(vssd, "Msvm_SyntheticEthernetPortSettingData")
	if err != nil {
		return nil, err
	}
	conns, err := h.c.related(vssd, "Msvm_EthernetPortAllocationSettingData")
	if err != nil {
		closeAll(ports)
		return nil, err
	}
	names, err := h.switchNames()
	if err != nil {
		closeAll(ports)
		closeAll(conns)
		return nil, err
	}
	sort.SliceStable(ports, func(i, j int) bool { return ports[i].str("InstanceID") < ports[j].str("InstanceID") })
	byParent := map[string]obj{}
	for _, c := range conns {
		byParent[pathKey(c.str("Parent"), "InstanceID")] = c
	}
	var out []nicInfo
	for _, p := range ports {
		n := nicInfo{port: p, nic: host.NIC{MAC: macOf(p.str("Address"))}}
		if c, ok := byParent[p.str("InstanceID")]; ok {
			n.conn = c
			delete(byParent, p.str("InstanceID"))
			if sw := toStrings(c.get("HostResource")); len(sw) > 0 && toInt(c.get("EnabledState")) != stateOff {
				n.nic.Switch = names[strings.ToUpper(pathKey(sw[0], "Name"))]
			}
		}
		if gs, err := h.c.related(p, "Msvm_GuestNetworkAdapterConfiguration"); err == nil && len(gs) > 0 {
			g := gs[0]
			n.nic.Guest = guestOf(toStrings(g.get("IPAddresses")), toStrings(g.get("Subnets")), toStrings(g.get("DefaultGateways")), toStrings(g.get("DNSServers")))
			closeAll(gs)
		}
		out = append(out, n)
	}
	for _, c := range byParent {
		c.Close()
	}
	return out, nil
}

// switchNames maps the switches' Names (GUIDs, upper case) to their
// ElementNames.
func (h *Host) switchNames() (map[string]string, error) {
	all, err := h.c.query("SELECT * FROM Msvm_VirtualEthernetSwitch")
	if err != nil {
		return nil, err
	}
	defer closeAll(all)
	m := map[string]string{}
	for _, s := range all {
		m[strings.ToUpper(s.str("Name"))] = s.str("ElementName")
	}
	return m, nil
}

// Switches lists the virtual switches by name.
func (h *Host) Switches(ctx context.Context) ([]string, error) {
	var out []string
	err := h.c.do(ctx, func() error {
		m, err := h.switchNames()
		for _, n := range m {
			out = append(out, n)
		}
		sort.Strings(out)
		return err
	})
	return out, err
}

// switchObj finds a virtual switch by name.
func (h *Host) switchObj(name string) (obj, error) {
	return h.c.one("SELECT * FROM Msvm_VirtualEthernetSwitch WHERE ElementName = "+wqlString(name), fmt.Sprintf("virtual switch %q", name))
}

// modifySystem applies props to a settings object (the VM's current one
// or a checkpoint's) with ModifySystemSettings.
func (h *Host) modifySystem(ctx context.Context, vssd obj, props []param) error {
	text, err := embedObj(vssd, props)
	if err != nil {
		return err
	}
	vsms, err := h.c.service("Msvm_VirtualSystemManagementService")
	if err != nil {
		return err
	}
	defer vsms.Close()
	_, err = h.c.call(ctx, vsms, "ModifySystemSettings", []param{{"SystemSettings", text}})
	return err
}

// modifyResources applies a RASD's changes with ModifyResourceSettings.
func (h *Host) modifyResources(ctx context.Context, texts []string) error {
	vsms, err := h.c.service("Msvm_VirtualSystemManagementService")
	if err != nil {
		return err
	}
	defer vsms.Close()
	_, err = h.c.call(ctx, vsms, "ModifyResourceSettings", []param{{"ResourceSettings", texts}})
	return err
}

// SetNotes replaces the VM's notes.
func (h *Host) SetNotes(ctx context.Context, vm, notes string) error {
	return h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		vssd, snaps, err := h.settings(cs)
		if err != nil {
			return err
		}
		closeAll(snaps)
		defer vssd.Close()
		return h.modifySystem(ctx, vssd, []param{{"Notes", []string{notes}}})
	})
}

// SetRunning starts the VM or turns it off (not a guest shutdown: a
// replica's guest has nothing to save).
func (h *Host) SetRunning(ctx context.Context, vm string, on bool) error {
	return h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		return h.setRunning(ctx, cs, on)
	})
}

func (h *Host) setRunning(ctx context.Context, cs obj, on bool) error {
	if running(toInt(cs.get("EnabledState"))) == on {
		return nil
	}
	want := stateOff
	if on {
		want = stateRunning
	}
	_, err := h.c.call(ctx, cs, "RequestStateChange", []param{{"RequestedState", int32(want)}})
	if err != nil {
		return fmt.Errorf("vm %s: %w", cs.str("ElementName"), err)
	}
	return nil
}

// ConnectNIC connects adapter nic to a virtual switch ("" disconnects it).
func (h *Host) ConnectNIC(ctx context.Context, vm string, nic int, vswitch string) error {
	return h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		vssd, n, release, err := h.adapter(cs, vm, nic)
		if err != nil {
			return err
		}
		defer release()
		return h.connect(ctx, vssd, n, vswitch)
	})
}

// adapter returns network adapter nic of the VM whose system is cs, and
// the VM's current settings it belongs to; release closes them.
func (h *Host) adapter(cs obj, vm string, nic int) (vssd obj, n nicInfo, release func(), err error) {
	vssd, snaps, err := h.settings(cs)
	if err != nil {
		return vssd, n, nil, err
	}
	closeAll(snaps)
	nics, err := h.nics(vssd)
	if err != nil {
		vssd.Close()
		return vssd, n, nil, err
	}
	release = func() { closeNICs(nics); vssd.Close() }
	if nic < 0 || nic >= len(nics) {
		release()
		return vssd, n, nil, fmt.Errorf("vm %q has no network adapter %d: %w", vm, nic, errdefs.ErrNotFound)
	}
	return vssd, nics[nic], release, nil
}

func closeNICs(ns []nicInfo) {
	for _, n := range ns {
		n.port.Close()
		if n.conn.WmiInstance != nil {
			n.conn.Close()
		}
	}
}

// connect points an adapter's connection at a switch: a new connection
// (AddResourceSettings), a changed one (ModifyResourceSettings), or none
// (RemoveResourceSettings) for "".
func (h *Host) connect(ctx context.Context, vssd obj, n nicInfo, vswitch string) error {
	vsms, err := h.c.service("Msvm_VirtualSystemManagementService")
	if err != nil {
		return err
	}
	defer vsms.Close()
	if vswitch == "" {
		if n.conn.WmiInstance == nil {
			return nil
		}
		_, err := h.c.call(ctx, vsms, "RemoveResourceSettings", []param{{"ResourceSettings", []string{n.conn.path()}}})
		return err
	}
	sw, err := h.switchObj(vswitch)
	if err != nil {
		return err
	}
	defer sw.Close()
	props := []param{{"HostResource", []string{sw.path()}}, {"EnabledState", int32(stateRunning)}}
	if n.conn.WmiInstance != nil {
		text, err := embedObj(n.conn, props)
		if err != nil {
			return err
		}
		return h.modifyResources(ctx, []string{text})
	}
	def, err := h.c.defaults("Msvm_EthernetPortAllocationSettingData", subEthConn)
	if err != nil {
		return err
	}
	defer def.Close()
	text, err := embedObj(def, append(props, param{"Parent", n.port.path()}))
	if err != nil {
		return err
	}
	_, err = h.c.call(ctx, vsms, "AddResourceSettings", []param{{"AffectedConfiguration", vssd.path()}, {"ResourceSettings", []string{text}}})
	return err
}

// SetGuestNetwork gives adapter nic a static configuration in the guest
// (SetGuestNetworkAdapterConfiguration), which Hyper-V applies through the
// guest's integration services.
func (h *Host) SetGuestNetwork(ctx context.Context, vm string, nic int, g host.GuestNetwork) error {
	if _, err := guestConfigOf(g); err != nil {
		return err
	}
	return h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		return h.setGuest(ctx, cs, nic, g)
	})
}

func (h *Host) setGuest(ctx context.Context, cs obj, nic int, g host.GuestNetwork) error {
	gc, err := guestConfigOf(g)
	if err != nil {
		return err
	}
	vm := cs.str("ElementName")
	_, n, release, err := h.adapter(cs, vm, nic)
	if err != nil {
		return err
	}
	defer release()
	gs, err := h.c.related(n.port, "Msvm_GuestNetworkAdapterConfiguration")
	if err != nil {
		return err
	}
	defer closeAll(gs)
	if len(gs) == 0 {
		return fmt.Errorf("vm %q adapter %d has no guest network configuration: %w", vm, nic, errdefs.ErrNotFound)
	}
	text, err := embedObj(gs[0], []param{{"DHCPEnabled", gc.DHCPEnabled}, {"ProtocolIFType", int32(gc.ProtocolIFType)},
		{"IPAddresses", gc.IPAddresses}, {"Subnets", gc.Subnets}, {"DefaultGateways", gc.Gateways}, {"DNSServers", gc.DNSServers}})
	if err != nil {
		return err
	}
	vsms, err := h.c.service("Msvm_VirtualSystemManagementService")
	if err != nil {
		return err
	}
	defer vsms.Close()
	_, err = h.c.call(ctx, vsms, "SetGuestNetworkAdapterConfiguration", []param{{"ComputerSystem", cs.path()}, {"NetworkConfiguration", []string{text}}})
	return err
}

// created reads a settings object's CreationTime (zero when it has none).
func created(o obj) time.Time {
	t, err := cimTime(o.str("CreationTime"))
	if err != nil {
		return time.Time{}
	}
	return t
}
