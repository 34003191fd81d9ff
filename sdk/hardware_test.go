package sdk

import (
	"reflect"
	"strings"
	"testing"
)

// TestNormalizeHardware: a VM described by a plugin older than minor 8
// gets its model from the older fields, and one that set only the model
// gets the older fields, which older targets read.
func TestNormalizeHardware(t *testing.T) {
	cases := []struct {
		name string
		in   VM
		want VM
	}{
		{
			name: "vSphere VM of an old plugin",
			in: VM{Firmware: "efi", GuestOS: "windows2019srv_64Guest",
				Disks: []Disk{{Controller: "scsi0:0"}, {Controller: "ide1:1"}, {Controller: ""}},
				NICs:  []NIC{{Network: "VM Network"}}},
			want: VM{Firmware: "efi", GuestOS: "windows2019srv_64Guest",
				Hardware: Hardware{Firmware: "efi", GuestFamily: GuestWindows},
				Disks: []Disk{{Controller: "scsi0:0", Bus: BusSCSI}, {Controller: "ide1:1", Bus: BusIDE, ControllerNumber: 1, Unit: 1},
					{Controller: ""}},
				NICs: []NIC{{Network: "VM Network"}}},
		},
		{
			name: "Hyper-V VM of an old plugin",
			in: VM{Firmware: "efi", Attributes: map[string]string{"hyperv.generation": "2", "hyperv.secure_boot": "true", "hyperv.tpm": "true"},
				Disks: []Disk{{Controller: "scsi0:3"}}, NICs: []NIC{{Network: "sw"}}},
			want: VM{Firmware: "efi", Attributes: map[string]string{"hyperv.generation": "2", "hyperv.secure_boot": "true", "hyperv.tpm": "true"},
				Hardware: Hardware{Firmware: "efi", Generation: 2, SecureBoot: true, TPM: true},
				Disks:    []Disk{{Controller: "scsi0:3", Bus: BusSCSI, ControllerModel: ModelHyperVSCSI, Unit: 3}},
				NICs:     []NIC{{Network: "sw", Model: NICHyperVSynthetic}}},
		},
		{
			name: "no firmware at all is BIOS",
			in:   VM{GuestOS: "ubuntu64Guest"},
			want: VM{Firmware: "bios", GuestOS: "ubuntu64Guest", Hardware: Hardware{Firmware: "bios", GuestFamily: GuestLinux}},
		},
		{
			name: "a new plugin's model fills the old fields",
			in: VM{Hardware: Hardware{Firmware: "efi", GuestFamily: GuestOther},
				Disks: []Disk{{Bus: BusNVMe, ControllerNumber: 1, Unit: 2}}},
			want: VM{Firmware: "efi", Hardware: Hardware{Firmware: "efi", GuestFamily: GuestOther},
				Disks: []Disk{{Controller: "nvme1:2", Bus: BusNVMe, ControllerNumber: 1, Unit: 2}}},
		},
		{
			name: "set fields are kept",
			in: VM{Firmware: "bios", Hardware: Hardware{Firmware: "bios", Generation: 1},
				Disks: []Disk{{Controller: "scsi0:0", Bus: BusSCSI, ControllerModel: ModelLSILogic}},
				NICs:  []NIC{{Model: NICHyperVLegacy}}},
			want: VM{Firmware: "bios", Hardware: Hardware{Firmware: "bios", Generation: 1},
				Disks: []Disk{{Controller: "scsi0:0", Bus: BusSCSI, ControllerModel: ModelLSILogic}},
				NICs:  []NIC{{Model: NICHyperVLegacy}}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.in
			NormalizeHardware(&got)
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestGuestFamilyOf(t *testing.T) {
	for in, want := range map[string]GuestFamily{
		"": "", "windows2019srv_64Guest": GuestWindows, "windows9_64Guest": GuestWindows, "Windows Server 2022": GuestWindows,
		"ubuntu64Guest": GuestLinux, "rhel9_64Guest": GuestLinux, "otherLinux64Guest": GuestLinux, "debian12_64Guest": GuestLinux,
		"freebsd13_64Guest": GuestOther, "otherGuest64": GuestOther, "darwin21_64Guest": GuestOther,
	} {
		if got := GuestFamilyOf(in); got != want {
			t.Errorf("GuestFamilyOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHardwareCrossesTheWire: every field of the model survives a trip
// through protocol messages, and a VM whose message has no model (an old
// plugin's) reads with one derived.
func TestHardwareCrossesTheWire(t *testing.T) {
	vm := VM{ID: "vm-1", Name: "web", Firmware: "efi", GuestOS: "ubuntu64Guest",
		Hardware: Hardware{Firmware: "efi", SecureBoot: true, SecureBootTemplate: SecureBootMicrosoftUEFICA, TPM: true, Generation: 2,
			GuestFamily: GuestLinux, BootOrder: []BootDevice{{Kind: BootDisk, Index: 1}, {Kind: BootNetwork, Index: 0}, {Kind: BootCDROM}}},
		Disks: []Disk{{Index: 0, Capacity: 1 << 20, Controller: "scsi1:4", Bus: BusSCSI, ControllerModel: ModelLSILogicSAS, ControllerNumber: 1, Unit: 4},
			{Index: 1, Capacity: 2 << 20, Controller: "sata0:0", Bus: BusSATA}},
		NICs: []NIC{{Index: 0, Network: "n", Model: NICE1000e}}}
	if got := vmFromProto(vmToProto(&vm)); !reflect.DeepEqual(got, vm) {
		t.Fatalf("got  %+v\nwant %+v", got, vm)
	}
	old := vmToProto(&VM{ID: "vm-2", Firmware: "bios", Disks: []Disk{{Controller: "ide0:1"}}})
	old.Hardware = nil
	got := vmFromProto(old)
	if got.Hardware.Firmware != "bios" || got.Disks[0].Bus != BusIDE || got.Disks[0].Unit != 1 {
		t.Fatalf("an old plugin's VM reads as %+v", got)
	}
	for _, hs := range []*HardwareSupport{HyperVHardware(), VSphereHardware(true), {AsGiven: true}} {
		if got := hardwareSupportFromProto(hardwareSupportToProto(hs)); !reflect.DeepEqual(got, hs) {
			t.Fatalf("support got %+v, want %+v", got, hs)
		}
	}
	if hardwareSupportFromProto(hardwareSupportToProto(nil)) != nil {
		t.Fatal("no support declared must stay nil")
	}
}

func TestHardwareSupportValidate(t *testing.T) {
	for _, good := range []*HardwareSupport{HyperVHardware(), VSphereHardware(false), VSphereHardware(true), {AsGiven: true}} {
		if err := good.Validate(); err != nil {
			t.Errorf("%+v: %v", good, err)
		}
	}
	bad := map[string]*HardwareSupport{
		"nothing":               {},
		"as given with profile": {AsGiven: true, Profiles: HyperVHardware().Profiles},
		"firmware":              {Profiles: []HardwareProfile{{Firmware: "uefi", BootBuses: []Bus{}, NICModels: []NICModel{NICE1000}}}},
		"scsi without model": {Profiles: []HardwareProfile{{Firmware: "bios", NICModels: []NICModel{NICE1000},
			Controllers: []ControllerSupport{{Bus: BusSCSI, Controllers: 1, Units: 1}}}}},
		"boots what it lacks": {Profiles: []HardwareProfile{{Firmware: "bios", NICModels: []NICModel{NICE1000},
			Controllers: []ControllerSupport{{Bus: BusSATA, Controllers: 1, Units: 1}}, BootBuses: []Bus{BusIDE}}}},
		"no nic": {Profiles: []HardwareProfile{{Firmware: "bios", Controllers: []ControllerSupport{{Bus: BusSATA, Controllers: 1, Units: 1}}}}},
		"secure boot on bios": {Profiles: []HardwareProfile{{Firmware: "bios", SecureBoot: true, NICModels: []NICModel{NICE1000},
			Controllers: []ControllerSupport{{Bus: BusSATA, Controllers: 1, Units: 1}}}}},
		"unknown nic": {Profiles: []HardwareProfile{{Firmware: "bios", NICModels: []NICModel{"rtl8139"},
			Controllers: []ControllerSupport{{Bus: BusSATA, Controllers: 1, Units: 1}}}}},
	}
	for name, hs := range bad {
		if err := hs.Validate(); err == nil || !strings.Contains(err.Error(), "hardware") {
			t.Errorf("%s: Validate = %v, want an error", name, err)
		}
	}
}
