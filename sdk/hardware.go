package sdk

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The hardware model (protocol minor 8). A VM's description says what
// virtual hardware the guest boots on: firmware, Secure Boot and TPM, the
// Hyper-V generation, each disk's controller (its bus, the model of a SCSI
// adapter, its number and the disk's unit on it), each NIC's model, the
// boot order and the guest's OS family. A target that builds replicas
// declares what it can build (HardwareSupport), and the core maps a
// source VM onto it before it asks for a replica (core/hwmap).
//
// A plugin older than minor 8 fills none of it: NormalizeHardware derives
// what it can from the older fields (Firmware, Disk.Controller, the
// hyperv.* attributes, GuestOS), and the wire does so for every VM it
// carries, so a host or a target always sees a filled model.

// Firmware kinds.
const (
	FirmwareBIOS = "bios"
	FirmwareEFI  = "efi"
)

// Bus is the kind of controller a disk hangs on.
type Bus string

const (
	BusIDE  Bus = "ide"
	BusSATA Bus = "sata"
	BusSCSI Bus = "scsi"
	BusNVMe Bus = "nvme"
)

// Buses lists the buses in a stable order.
var Buses = []Bus{BusIDE, BusSATA, BusSCSI, BusNVMe}

// ControllerModel is the adapter the guest sees on a SCSI bus; the other
// buses have one model each and leave it empty. An empty model on a SCSI
// bus means the source did not say.
type ControllerModel string

const (
	ModelPVSCSI      ControllerModel = "pvscsi"           // VMware Paravirtual SCSI
	ModelLSILogic    ControllerModel = "lsilogic"         // LSI Logic Parallel
	ModelLSILogicSAS ControllerModel = "lsilogic-sas"     // LSI Logic SAS
	ModelBusLogic    ControllerModel = "buslogic"         // BusLogic Parallel
	ModelHyperVSCSI  ControllerModel = "hyperv-synthetic" // Hyper-V's synthetic SCSI controller
)

// SCSIModels lists the SCSI models in a stable order.
var SCSIModels = []ControllerModel{ModelPVSCSI, ModelLSILogic, ModelLSILogicSAS, ModelBusLogic, ModelHyperVSCSI}

// NICModel is the network adapter the guest sees. Empty means the source
// did not say.
type NICModel string

const (
	NICVmxnet3         NICModel = "vmxnet3"
	NICVmxnet2         NICModel = "vmxnet2"
	NICE1000           NICModel = "e1000"
	NICE1000e          NICModel = "e1000e"
	NICPCNet32         NICModel = "pcnet32"
	NICHyperVSynthetic NICModel = "hyperv-synthetic" // Hyper-V's network adapter
	NICHyperVLegacy    NICModel = "hyperv-legacy"    // Hyper-V's legacy (emulated DEC 21140) adapter, generation 1 only
)

// NICModels lists the NIC models in a stable order.
var NICModels = []NICModel{NICVmxnet3, NICVmxnet2, NICE1000, NICE1000e, NICPCNet32, NICHyperVSynthetic, NICHyperVLegacy}

// GuestFamily is the guest's operating system family, normalized across
// hypervisors (vSphere's guest ids, Hyper-V's free text).
type GuestFamily string

const (
	GuestWindows GuestFamily = "windows"
	GuestLinux   GuestFamily = "linux"
	GuestOther   GuestFamily = "other" // known not to be one of the above, or unknown
)

// Hyper-V's Secure Boot templates: which certificate authority the
// firmware trusts. Windows boots with the first; Linux distributions sign
// their shim with the second.
const (
	SecureBootMicrosoftWindows = "microsoft-windows"
	SecureBootMicrosoftUEFICA  = "microsoft-uefi-ca"
)

// Boot device kinds of a boot order.
const (
	BootDisk    = "disk"
	BootNetwork = "network"
	BootCDROM   = "cdrom"
)

// BootDevice is one entry of a boot order: a disk or a NIC by its index
// in VM.Disks or VM.NICs, or the CD-ROM drive (Index unused).
type BootDevice struct {
	Kind  string `json:"kind"`
	Index int    `json:"index"`
}

// String names the device: "disk 0", "network 1", "cdrom".
func (b BootDevice) String() string {
	if b.Kind == BootCDROM {
		return b.Kind
	}
	return fmt.Sprintf("%s %d", b.Kind, b.Index)
}

// Hardware is what a VM's guest boots on besides its disks and NICs.
type Hardware struct {
	// Firmware is FirmwareBIOS or FirmwareEFI.
	Firmware   string `json:"firmware,omitempty"`
	SecureBoot bool   `json:"secure_boot,omitempty"`
	// SecureBootTemplate is the Hyper-V Secure Boot template
	// (SecureBootMicrosoftWindows, SecureBootMicrosoftUEFICA); empty on
	// other hypervisors, whose firmware has one set of keys.
	SecureBootTemplate string `json:"secure_boot_template,omitempty"`
	TPM                bool   `json:"tpm,omitempty"`
	// Generation is the Hyper-V generation, 1 (BIOS) or 2 (UEFI); 0 for a
	// VM of another hypervisor.
	Generation  int         `json:"generation,omitempty"`
	GuestFamily GuestFamily `json:"guest_family,omitempty"`
	// BootOrder lists the devices the firmware tries, first first. Empty
	// means the hypervisor's default: the first disk.
	BootOrder []BootDevice `json:"boot_order,omitempty"`
}

// BootDiskIndex is the index of the disk the guest boots from: the first
// disk of the boot order, else the first disk; -1 when the VM has none.
func (v *VM) BootDiskIndex() int {
	for _, b := range v.Hardware.BootOrder {
		if b.Kind == BootDisk && b.Index >= 0 && b.Index < len(v.Disks) {
			return b.Index
		}
	}
	if len(v.Disks) > 0 {
		return 0
	}
	return -1
}

// Slot names a disk's controller and position: "scsi0:1 (pvscsi)".
func (d Disk) Slot() string {
	s := d.Controller
	if s == "" {
		s = "no controller"
	}
	if d.ControllerModel != "" {
		s += " (" + string(d.ControllerModel) + ")"
	}
	return s
}

// ControllerSupport is one kind of controller a target builds.
type ControllerSupport struct {
	Bus   Bus             `json:"bus"`
	Model ControllerModel `json:"model,omitempty"` // SCSI only
	// Controllers is how many of them a VM may have, numbered from 0;
	// Units how many disks each holds, numbered from 0, less the units in
	// Reserved (the SCSI adapter's own unit 7 on vSphere).
	Controllers int   `json:"controllers"`
	Units       int   `json:"units"`
	Reserved    []int `json:"reserved,omitempty"`
}

// HardwareProfile is one kind of VM a target builds: a firmware (and on
// Hyper-V a generation) with the devices it may have.
type HardwareProfile struct {
	Firmware   string `json:"firmware"`
	Generation int    `json:"generation,omitempty"` // Hyper-V; 0 elsewhere
	SecureBoot bool   `json:"secure_boot,omitempty"`
	// SecureBootTemplates are the templates the target can give a VM with
	// Secure Boot (Hyper-V); empty where there is no choice.
	SecureBootTemplates []string            `json:"secure_boot_templates,omitempty"`
	TPM                 bool                `json:"tpm,omitempty"`
	Controllers         []ControllerSupport `json:"controllers"`
	// BootBuses are the buses the firmware boots a disk from.
	BootBuses []Bus `json:"boot_buses"`
	// NICModels are the NIC models it builds.
	NICModels []NICModel `json:"nic_models"`
}

// Controller returns what the profile says of a bus and model, if it
// builds them.
func (p *HardwareProfile) Controller(bus Bus, model ControllerModel) (ControllerSupport, bool) {
	for _, c := range p.Controllers {
		if c.Bus == bus && (bus != BusSCSI || c.Model == model) {
			return c, true
		}
	}
	return ControllerSupport{}, false
}

// Boots reports whether the firmware boots a disk on bus.
func (p *HardwareProfile) Boots(bus Bus) bool { return slices.Contains(p.BootBuses, bus) }

// Name names the profile for messages: "generation 2 (efi)", "bios".
func (p *HardwareProfile) Name() string {
	if p.Generation > 0 {
		return fmt.Sprintf("generation %d (%s)", p.Generation, p.Firmware)
	}
	return p.Firmware
}

// HardwareSupport is what virtual hardware a Target builds, declared in
// its Component (protocol minor 8). A target that declares none is asked
// for replicas as before: the core does not map the source's hardware.
type HardwareSupport struct {
	// AsGiven says the target builds any hardware exactly as described
	// (the local plugin, which records it): the core maps nothing.
	AsGiven bool `json:"as_given,omitempty"`
	// Profiles are the kinds of VM it builds, the preferred first.
	Profiles []HardwareProfile `json:"profiles,omitempty"`
}

// controllerPosition reads a controller position such as scsi0:1.
var controllerPosition = regexp.MustCompile(`^(ide|sata|scsi|nvme)([0-9]{1,3}):([0-9]{1,4})$`)

// ParseControllerPosition reads a position such as "scsi0:1" into its
// bus, controller number and unit.
func ParseControllerPosition(s string) (Bus, int, int, bool) {
	m := controllerPosition.FindStringSubmatch(s)
	if m == nil {
		return "", 0, 0, false
	}
	n, _ := strconv.Atoi(m[2])
	u, _ := strconv.Atoi(m[3])
	return Bus(m[1]), n, u, true
}

// ControllerPosition names a disk's position as a .vmx does: "scsi0:1".
func ControllerPosition(bus Bus, number, unit int) string {
	return fmt.Sprintf("%s%d:%d", bus, number, unit)
}

// GuestFamilyOf normalizes a guest OS as hypervisors name it (vSphere's
// "windows2019srv_64Guest", "ubuntu64Guest", Hyper-V's "Windows Server
// 2022 Datacenter") to its family.
func GuestFamilyOf(guestOS string) GuestFamily {
	g := strings.ToLower(guestOS)
	switch {
	case g == "":
		return ""
	case strings.HasPrefix(g, "win") || strings.Contains(g, "windows"):
		return GuestWindows
	}
	for _, l := range []string{"linux", "ubuntu", "debian", "rhel", "centos", "sles", "suse", "fedora", "oracle", "rocky", "alma", "photon", "coreos", "amazonlinux", "asianux", "mandriva", "turbolinux", "redhat"} {
		if strings.Contains(g, l) {
			return GuestLinux
		}
	}
	return GuestOther
}

// NormalizeHardware fills the hardware model from the older fields where
// a plugin older than protocol minor 8 left it empty, and the older
// fields from the model where a newer plugin set only the model, so that
// code reading either sees the same VM:
//   - Hardware.Firmware from Firmware ("bios" when neither says);
//   - Hardware.Generation, SecureBoot and TPM from the Hyper-V plugin's
//     attributes hyperv.generation, hyperv.secure_boot and hyperv.tpm;
//   - Hardware.GuestFamily from GuestOS;
//   - each disk's Bus, ControllerNumber and Unit from its Controller
//     position ("scsi0:1"), and Controller from them;
//   - a Hyper-V VM's SCSI disks without a model get the synthetic one.
//
// It changes nothing that is set.
func NormalizeHardware(v *VM) {
	hw := &v.Hardware
	if hw.Firmware == "" {
		hw.Firmware = v.Firmware
	}
	if hw.Firmware == "" {
		hw.Firmware = FirmwareBIOS
	}
	if v.Firmware == "" {
		v.Firmware = hw.Firmware
	}
	if hw.Generation == 0 {
		if g, err := strconv.Atoi(v.Attributes["hyperv.generation"]); err == nil && (g == 1 || g == 2) {
			hw.Generation = g
		}
	}
	if v.Attributes["hyperv.secure_boot"] == "true" {
		hw.SecureBoot = true
	}
	if v.Attributes["hyperv.tpm"] == "true" {
		hw.TPM = true
	}
	if hw.GuestFamily == "" {
		hw.GuestFamily = GuestFamilyOf(v.GuestOS)
	}
	for i := range v.Disks {
		d := &v.Disks[i]
		if d.Bus == "" {
			if bus, n, u, ok := ParseControllerPosition(d.Controller); ok {
				d.Bus, d.ControllerNumber, d.Unit = bus, n, u
			}
		} else if d.Controller == "" {
			d.Controller = ControllerPosition(d.Bus, d.ControllerNumber, d.Unit)
		}
		if d.Bus == BusSCSI && d.ControllerModel == "" && hw.Generation > 0 {
			d.ControllerModel = ModelHyperVSCSI
		}
	}
	if hw.Generation > 0 {
		for i := range v.NICs {
			if v.NICs[i].Model == "" {
				v.NICs[i].Model = NICHyperVSynthetic
			}
		}
	}
}

// Validate checks a declaration: known firmware, buses, models and boot
// buses; a profile that can build a disk on each of its boot buses and
// at least one NIC model.
func (h *HardwareSupport) Validate() error {
	if h.AsGiven && len(h.Profiles) > 0 {
		return fmt.Errorf("hardware: AsGiven builds anything; it takes no profiles")
	}
	if !h.AsGiven && len(h.Profiles) == 0 {
		return fmt.Errorf("hardware: no profiles")
	}
	for i, p := range h.Profiles {
		if p.Firmware != FirmwareBIOS && p.Firmware != FirmwareEFI {
			return fmt.Errorf("hardware profile %d: firmware %q is neither bios nor efi", i, p.Firmware)
		}
		if p.Generation < 0 || p.Generation > 2 {
			return fmt.Errorf("hardware profile %d: generation %d", i, p.Generation)
		}
		for _, c := range p.Controllers {
			if !slices.Contains(Buses, c.Bus) {
				return fmt.Errorf("hardware profile %d: unknown bus %q", i, c.Bus)
			}
			if (c.Bus == BusSCSI) != (c.Model != "") || (c.Model != "" && !slices.Contains(SCSIModels, c.Model)) {
				return fmt.Errorf("hardware profile %d: bus %q with model %q: a SCSI bus has one of %v, other buses none", i, c.Bus, c.Model, SCSIModels)
			}
			if c.Controllers < 1 || c.Units < 1 {
				return fmt.Errorf("hardware profile %d: %s %s holds no disks", i, c.Bus, c.Model)
			}
		}
		for _, b := range p.BootBuses {
			found := false
			for _, c := range p.Controllers {
				found = found || c.Bus == b
			}
			if !found {
				return fmt.Errorf("hardware profile %d: boots from %s, which it does not build", i, b)
			}
		}
		if len(p.NICModels) == 0 {
			return fmt.Errorf("hardware profile %d: no NIC models", i)
		}
		for _, m := range p.NICModels {
			if !slices.Contains(NICModels, m) {
				return fmt.Errorf("hardware profile %d: unknown NIC model %q", i, m)
			}
		}
		if p.SecureBoot && p.Firmware != FirmwareEFI {
			return fmt.Errorf("hardware profile %d: Secure Boot needs EFI firmware", i)
		}
	}
	return nil
}

// HyperVHardware is what a Hyper-V host builds: generation 1 (BIOS,
// booting from IDE, two IDE controllers of two disks and four synthetic
// SCSI controllers of 64, synthetic or legacy NICs, no Secure Boot or
// TPM) and generation 2 (UEFI, synthetic SCSI only, booting from it,
// synthetic NICs, Secure Boot with either template, TPM).
func HyperVHardware() *HardwareSupport {
	scsi := ControllerSupport{Bus: BusSCSI, Model: ModelHyperVSCSI, Controllers: 4, Units: 64}
	return &HardwareSupport{Profiles: []HardwareProfile{
		{Firmware: FirmwareEFI, Generation: 2, SecureBoot: true, TPM: true,
			SecureBootTemplates: []string{SecureBootMicrosoftWindows, SecureBootMicrosoftUEFICA},
			Controllers:         []ControllerSupport{scsi}, BootBuses: []Bus{BusSCSI},
			NICModels: []NICModel{NICHyperVSynthetic}},
		{Firmware: FirmwareBIOS, Generation: 1,
			Controllers: []ControllerSupport{{Bus: BusIDE, Controllers: 2, Units: 2}, scsi}, BootBuses: []Bus{BusIDE},
			NICModels: []NICModel{NICHyperVSynthetic, NICHyperVLegacy}},
	}}
}

// VSphereHardware is what a vSphere host builds: BIOS and EFI VMs with
// IDE (two controllers of two), SATA (four of 30), SCSI of each model
// (four of 15, unit 7 being the adapter's) and NVMe (four of 15); BIOS
// boots from IDE, SATA and SCSI, EFI from SATA, SCSI and NVMe (VMware's
// EFI does not boot IDE, and BusLogic has no EFI driver). tpm says
// whether the target adds a virtual TPM (it needs a key provider).
func VSphereHardware(tpm bool) *HardwareSupport {
	scsi := func(m ControllerModel) ControllerSupport {
		return ControllerSupport{Bus: BusSCSI, Model: m, Controllers: 4, Units: 16, Reserved: []int{7}}
	}
	ide := ControllerSupport{Bus: BusIDE, Controllers: 2, Units: 2}
	sata := ControllerSupport{Bus: BusSATA, Controllers: 4, Units: 30}
	nvme := ControllerSupport{Bus: BusNVMe, Controllers: 4, Units: 15}
	nics := []NICModel{NICVmxnet3, NICE1000e, NICE1000, NICVmxnet2, NICPCNet32}
	return &HardwareSupport{Profiles: []HardwareProfile{
		{Firmware: FirmwareEFI, SecureBoot: true, TPM: tpm,
			Controllers: []ControllerSupport{ide, sata, scsi(ModelPVSCSI), scsi(ModelLSILogicSAS), scsi(ModelLSILogic), nvme},
			BootBuses:   []Bus{BusSATA, BusSCSI, BusNVMe}, NICModels: nics},
		{Firmware: FirmwareBIOS,
			Controllers: []ControllerSupport{ide, sata, scsi(ModelPVSCSI), scsi(ModelLSILogicSAS), scsi(ModelLSILogic), scsi(ModelBusLogic), nvme},
			BootBuses:   []Bus{BusIDE, BusSATA, BusSCSI}, NICModels: nics},
	}}
}
