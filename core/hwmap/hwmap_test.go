package hwmap

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// disk and nic build source devices tersely.
func disk(bus sdk.Bus, model sdk.ControllerModel, n, u int) sdk.Disk {
	return sdk.Disk{Capacity: 1 << 20, Bus: bus, ControllerModel: model, ControllerNumber: n, Unit: u, Controller: sdk.ControllerPosition(bus, n, u)}
}

func nic(m sdk.NICModel) sdk.NIC { return sdk.NIC{Network: "VM Network", Model: m} }

func vsphereVM(fw, guest string, disks []sdk.Disk, nics ...sdk.NIC) sdk.VM {
	for i := range disks {
		disks[i].Index = i
	}
	for i := range nics {
		nics[i].Index = i
	}
	return sdk.VM{Name: "vm", Firmware: fw, GuestOS: guest, Disks: disks, NICs: nics,
		Hardware: sdk.Hardware{Firmware: fw, GuestFamily: sdk.GuestFamilyOf(guest)}}
}

func hypervVM(gen int, guest string, disks []sdk.Disk, nics ...sdk.NIC) sdk.VM {
	fw := sdk.FirmwareBIOS
	if gen == 2 {
		fw = sdk.FirmwareEFI
	}
	v := vsphereVM(fw, guest, disks, nics...)
	v.Hardware.Generation = gen
	v.Attributes = map[string]string{"hyperv.generation": fmt.Sprint(gen)}
	return v
}

func withSB(v sdk.VM, tmpl string, tpm bool) sdk.VM {
	v.Hardware.SecureBoot, v.Hardware.SecureBootTemplate, v.Hardware.TPM = true, tmpl, tpm
	return v
}

func at(attr string) map[string]hcl.Range {
	return map[string]hcl.Range{attr: {Filename: "jobs.hcl", Start: hcl.Pos{Line: 7}}}
}

var (
	hyperv  = sdk.HyperVHardware()
	vsphere = sdk.VSphereHardware(false)
	asGiven = &sdk.HardwareSupport{AsGiven: true}
	no      = false
)

// want is what a case expects of the replica: its firmware and
// generation, each disk's slot, each NIC's model, Secure Boot, template
// and TPM, and the changes as "item: from -> to" each with a word of its
// reason.
type want struct {
	firmware   string
	generation int
	disks      []string
	nics       []sdk.NICModel
	secureBoot bool
	template   string
	tpm        bool
	changes    map[string]string // "item: from -> to" -> a word of the reason
}

func TestMap(t *testing.T) {
	cases := []struct {
		name   string
		src    sdk.VM
		hw     *sdk.HardwareSupport
		o      config.HardwareOverride
		want   want
		refuse string // a word of the refusal's reason
	}{
		// vSphere to Hyper-V
		{
			name: "vSphere BIOS Linux to generation 1: boot disk on IDE, data on synthetic SCSI, synthetic NIC",
			src:  vsphereVM("bios", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0), disk("scsi", "pvscsi", 0, 1)}, nic("vmxnet3")),
			hw:   hyperv,
			want: want{firmware: "bios", generation: 1, disks: []string{"ide0:0", "scsi0:1 (hyperv-synthetic)"}, nics: []sdk.NICModel{"hyperv-synthetic"},
				changes: map[string]string{
					"generation: none -> 1":                                  "BIOS",
					"disk 0: scsi0:0 (pvscsi) -> ide0:0":                     "IDE only",
					"disk 1: scsi0:1 (pvscsi) -> scsi0:1 (hyperv-synthetic)": "synthetic",
					"nic 0: vmxnet3 -> hyperv-synthetic":                     "synthetic",
				}},
		},
		{
			name: "vSphere EFI Windows with Secure Boot to generation 2 with the Windows template",
			src:  withSB(vsphereVM("efi", "windows2019srv_64Guest", []sdk.Disk{disk("scsi", "lsilogic-sas", 0, 0)}, nic("e1000e")), "", false),
			hw:   hyperv,
			want: want{firmware: "efi", generation: 2, disks: []string{"scsi0:0 (hyperv-synthetic)"}, nics: []sdk.NICModel{"hyperv-synthetic"},
				secureBoot: true, template: "microsoft-windows",
				changes: map[string]string{
					"generation: none -> 2":                                        "UEFI",
					"secure boot template: none -> microsoft-windows":              "Windows",
					"disk 0: scsi0:0 (lsilogic-sas) -> scsi0:0 (hyperv-synthetic)": "synthetic",
					"nic 0: e1000e -> hyperv-synthetic":                            "synthetic",
				}},
		},
		{
			name: "vSphere EFI Linux with Secure Boot and TPM to generation 2 with the UEFI CA template, TPM kept",
			src:  withSB(vsphereVM("efi", "rhel9_64Guest", []sdk.Disk{disk("nvme", "", 0, 0), disk("sata", "", 0, 0)}, nic("vmxnet3"), nic("e1000")), "", true),
			hw:   hyperv,
			want: want{firmware: "efi", generation: 2, disks: []string{"scsi0:0 (hyperv-synthetic)", "scsi0:1 (hyperv-synthetic)"},
				nics: []sdk.NICModel{"hyperv-synthetic", "hyperv-synthetic"}, secureBoot: true, template: "microsoft-uefi-ca", tpm: true,
				changes: map[string]string{
					"generation: none -> 2":                           "UEFI",
					"secure boot template: none -> microsoft-uefi-ca": "UEFI CA",
					"disk 0: nvme0:0 -> scsi0:0 (hyperv-synthetic)":   "boots from SCSI only",
					"disk 1: sata0:0 -> scsi0:1 (hyperv-synthetic)":   "no sata controller",
					"nic 0: vmxnet3 -> hyperv-synthetic":              "synthetic",
					"nic 1: e1000 -> hyperv-synthetic":                "synthetic",
				}},
		},
		{
			name: "vSphere BIOS with IDE boot and SATA data: IDE kept, SATA to the next IDE slot",
			src:  vsphereVM("bios", "windows9Server64Guest", []sdk.Disk{disk("ide", "", 0, 0), disk("sata", "", 0, 0)}, nic("e1000")),
			hw:   hyperv,
			want: want{firmware: "bios", generation: 1, disks: []string{"ide0:0", "ide0:1"}, nics: []sdk.NICModel{"hyperv-synthetic"},
				changes: map[string]string{
					"generation: none -> 1":            "BIOS",
					"disk 1: sata0:0 -> ide0:1":        "no sata controller",
					"nic 0: e1000 -> hyperv-synthetic": "synthetic",
				}},
		},
		{
			name: "generation 1 fills its four IDE slots, the fifth IDE disk goes to SCSI",
			src: vsphereVM("bios", "otherGuest64", []sdk.Disk{disk("ide", "", 0, 0), disk("ide", "", 0, 1), disk("ide", "", 1, 0), disk("ide", "", 1, 1),
				disk("sata", "", 0, 0)}),
			hw: hyperv,
			want: want{firmware: "bios", generation: 1, disks: []string{"ide0:0", "ide0:1", "ide1:0", "ide1:1", "scsi0:0 (hyperv-synthetic)"},
				changes: map[string]string{
					"generation: none -> 1":                         "BIOS",
					"disk 4: sata0:0 -> scsi0:0 (hyperv-synthetic)": "no sata controller",
				}},
		},
		{
			name: "a boot order naming disk 1 puts disk 1 on IDE",
			src: func() sdk.VM {
				v := vsphereVM("bios", "ubuntu64Guest", []sdk.Disk{disk("scsi", "lsilogic", 0, 0), disk("scsi", "lsilogic", 0, 1)})
				v.Hardware.BootOrder = []sdk.BootDevice{{Kind: sdk.BootCDROM}, {Kind: sdk.BootDisk, Index: 1}}
				return v
			}(),
			hw: hyperv,
			want: want{firmware: "bios", generation: 1, disks: []string{"scsi0:0 (hyperv-synthetic)", "ide0:0"},
				changes: map[string]string{
					"generation: none -> 1": "BIOS",
					"disk 0: scsi0:0 (lsilogic) -> scsi0:0 (hyperv-synthetic)": "synthetic",
					"disk 1: scsi0:1 (lsilogic) -> ide0:0":                     "IDE only",
				}},
		},
		{
			name: "buslogic and a controller number Hyper-V has go to synthetic SCSI at the same place",
			src:  vsphereVM("bios", "otherGuest", []sdk.Disk{disk("ide", "", 0, 0), disk("scsi", "buslogic", 2, 3)}),
			hw:   hyperv,
			want: want{firmware: "bios", generation: 1, disks: []string{"ide0:0", "scsi2:3 (hyperv-synthetic)"},
				changes: map[string]string{
					"generation: none -> 1": "BIOS",
					"disk 1: scsi2:3 (buslogic) -> scsi2:3 (hyperv-synthetic)": "synthetic",
				}},
		},
		{
			name: "hardware_map asks for the legacy NIC on generation 1",
			src:  vsphereVM("bios", "otherGuest", []sdk.Disk{disk("ide", "", 0, 0)}, nic("e1000")),
			hw:   hyperv,
			o:    config.HardwareOverride{NICModel: "hyperv-legacy", Ranges: at("nic_model")},
			want: want{firmware: "bios", generation: 1, disks: []string{"ide0:0"}, nics: []sdk.NICModel{"hyperv-legacy"},
				changes: map[string]string{
					"generation: none -> 1":         "BIOS",
					"nic 0: e1000 -> hyperv-legacy": "jobs.hcl:7",
				}},
		},
		{
			name: "hardware_map turns Secure Boot off",
			src:  withSB(vsphereVM("efi", "windows2019srv_64Guest", []sdk.Disk{disk("sata", "", 0, 0)}), "", false),
			hw:   hyperv,
			o:    config.HardwareOverride{SecureBoot: &no, Ranges: at("secure_boot")},
			want: want{firmware: "efi", generation: 2, disks: []string{"scsi0:0 (hyperv-synthetic)"},
				changes: map[string]string{
					"generation: none -> 2":                         "UEFI",
					"secure boot: on -> off":                        "secure_boot",
					"disk 0: sata0:0 -> scsi0:0 (hyperv-synthetic)": "boots from SCSI only",
				}},
		},
		{
			name:   "a generation 2 replica of a BIOS guest is refused",
			src:    vsphereVM("bios", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0)}),
			hw:     hyperv,
			o:      config.HardwareOverride{Generation: 2, Ranges: at("generation")},
			refuse: "finds no boot loader",
		},
		{
			name:   "a generation 1 replica of an EFI guest is refused",
			src:    vsphereVM("efi", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0)}),
			hw:     hyperv,
			o:      config.HardwareOverride{Generation: 1, Ranges: at("generation")},
			refuse: "jobs.hcl:7",
		},
		{
			name:   "the legacy NIC on generation 2 is refused",
			src:    vsphereVM("efi", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0)}, nic("vmxnet3")),
			hw:     hyperv,
			o:      config.HardwareOverride{NICModel: "hyperv-legacy"},
			refuse: "hyperv-legacy",
		},
		{
			name:   "booting generation 1 from SCSI is refused",
			src:    vsphereVM("bios", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0)}),
			hw:     hyperv,
			o:      config.HardwareOverride{BootBus: "scsi"},
			refuse: "boots from IDE only",
		},
		{
			name:   "pvscsi on Hyper-V is refused",
			src:    vsphereVM("efi", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0)}),
			hw:     hyperv,
			o:      config.HardwareOverride{SCSIModel: "pvscsi"},
			refuse: "pvscsi",
		},
		{
			name:   "more disks than generation 2 holds are refused",
			src:    vsphereVM("efi", "ubuntu64Guest", manyDisks(257)),
			hw:     hyperv,
			refuse: "disk 256 fits on no controller",
		},

		// Hyper-V to vSphere
		{
			name: "generation 1 Windows to BIOS: the IDE boot disk stays IDE, synthetic SCSI to LSI Logic SAS, e1000e",
			src:  hypervVM(1, "Windows Server 2022", []sdk.Disk{disk("ide", "", 0, 0), disk("scsi", "hyperv-synthetic", 0, 0)}, nic("hyperv-synthetic")),
			hw:   vsphere,
			want: want{firmware: "bios", disks: []string{"ide0:0", "scsi0:0 (lsilogic-sas)"}, nics: []sdk.NICModel{"e1000e"},
				changes: map[string]string{
					"generation: 1 -> none": "no generations",
					"disk 1: scsi0:0 (hyperv-synthetic) -> scsi0:0 (lsilogic-sas)": "Windows",
					"nic 0: hyperv-synthetic -> e1000e":                            "Windows",
				}},
		},
		{
			name: "generation 1 Linux with a legacy NIC to BIOS: vmxnet3",
			src:  hypervVM(1, "Ubuntu 22.04", []sdk.Disk{disk("ide", "", 0, 0), disk("ide", "", 1, 1)}, nic("hyperv-legacy")),
			hw:   vsphere,
			want: want{firmware: "bios", disks: []string{"ide0:0", "ide1:1"}, nics: []sdk.NICModel{"vmxnet3"},
				changes: map[string]string{
					"generation: 1 -> none":           "no generations",
					"nic 0: hyperv-legacy -> vmxnet3": "Linux",
				}},
		},
		{
			name: "generation 2 Linux with Secure Boot and TPM to EFI: pvscsi, vmxnet3, one set of keys, no TPM",
			src: withSB(hypervVM(2, "Debian 12", []sdk.Disk{disk("scsi", "hyperv-synthetic", 0, 0), disk("scsi", "hyperv-synthetic", 0, 20)},
				nic("hyperv-synthetic")), "microsoft-uefi-ca", true),
			hw: vsphere,
			want: want{firmware: "efi", disks: []string{"scsi0:0 (pvscsi)", "scsi0:1 (pvscsi)"}, nics: []sdk.NICModel{"vmxnet3"}, secureBoot: true,
				changes: map[string]string{
					"generation: 1 -> none": "", // not expected: replaced below
				}},
		},
		{
			name: "generation 2 of another OS to EFI: LSI Logic and e1000",
			src:  hypervVM(2, "FreeBSD 14", []sdk.Disk{disk("scsi", "hyperv-synthetic", 1, 0)}, nic("hyperv-synthetic")),
			hw:   vsphere,
			want: want{firmware: "efi", disks: []string{"scsi1:0 (lsilogic)"}, nics: []sdk.NICModel{"e1000"},
				changes: map[string]string{
					"generation: 2 -> none": "no generations",
					"disk 0: scsi1:0 (hyperv-synthetic) -> scsi1:0 (lsilogic)": "its guests",
					"nic 0: hyperv-synthetic -> e1000":                         "its guests",
				}},
		},
		{
			name: "hardware_map picks pvscsi and vmxnet3 for a Windows guest",
			src:  hypervVM(2, "Windows 11", []sdk.Disk{disk("scsi", "hyperv-synthetic", 0, 0)}, nic("hyperv-synthetic")),
			hw:   vsphere,
			o:    config.HardwareOverride{SCSIModel: "pvscsi", NICModel: "vmxnet3", Ranges: at("scsi_model")},
			want: want{firmware: "efi", disks: []string{"scsi0:0 (pvscsi)"}, nics: []sdk.NICModel{"vmxnet3"},
				changes: map[string]string{
					"generation: 2 -> none":                                  "no generations",
					"disk 0: scsi0:0 (hyperv-synthetic) -> scsi0:0 (pvscsi)": "jobs.hcl:7",
					"nic 0: hyperv-synthetic -> vmxnet3":                     "nic_model",
				}},
		},
		{
			name: "hardware_map puts a generation 1 boot disk on SATA",
			src:  hypervVM(1, "Windows Server 2019", []sdk.Disk{disk("ide", "", 0, 0)}),
			hw:   vsphere,
			o:    config.HardwareOverride{BootBus: "sata"},
			want: want{firmware: "bios", disks: []string{"sata0:0"},
				changes: map[string]string{
					"generation: 1 -> none":     "no generations",
					"disk 0: ide0:0 -> sata0:0": "boot_bus",
				}},
		},

		// vSphere to vSphere
		{
			name: "vSphere to vSphere keeps every controller and NIC model",
			src: vsphereVM("bios", "windows2019srv_64Guest", []sdk.Disk{disk("ide", "", 0, 0), disk("sata", "", 1, 4), disk("scsi", "lsilogic-sas", 0, 0),
				disk("scsi", "buslogic", 1, 2), disk("nvme", "", 0, 1)}, nic("e1000e"), nic("vmxnet3"), nic("e1000")),
			hw: vsphere,
			want: want{firmware: "bios", disks: []string{"ide0:0", "sata1:4", "scsi0:0 (lsilogic-sas)", "scsi1:2 (buslogic)", "nvme0:1"},
				nics: []sdk.NICModel{"e1000e", "vmxnet3", "e1000"}, changes: map[string]string{}},
		},
		{
			name: "vSphere EFI does not boot IDE: the boot disk goes to SATA, BusLogic to LSI Logic SAS",
			src:  vsphereVM("efi", "windows2019srv_64Guest", []sdk.Disk{disk("ide", "", 0, 0), disk("scsi", "buslogic", 0, 0)}),
			hw:   vsphere,
			want: want{firmware: "efi", disks: []string{"sata0:0", "scsi0:0 (lsilogic-sas)"},
				changes: map[string]string{
					"disk 0: ide0:0 -> sata0:0":                            "boots from SATA, SCSI, NVME only",
					"disk 1: scsi0:0 (buslogic) -> scsi0:0 (lsilogic-sas)": "no buslogic",
				}},
		},
		{
			name: "an old source that gives no SCSI model nor NIC model: the guest family decides, and says so",
			src: func() sdk.VM {
				v := sdk.VM{Name: "old", Firmware: "bios", GuestOS: "ubuntu64Guest",
					Disks: []sdk.Disk{{Controller: "scsi0:0"}, {Controller: "scsi5:0"}, {Controller: "scsi0:7"}}, NICs: []sdk.NIC{{Network: "n"}}}
				return v
			}(),
			hw: vsphere,
			want: want{firmware: "bios", disks: []string{"scsi0:0 (pvscsi)", "scsi0:1 (pvscsi)", "scsi0:2 (pvscsi)"}, nics: []sdk.NICModel{"vmxnet3"},
				changes: map[string]string{
					"disk 0: scsi0:0 -> scsi0:0 (pvscsi)": "does not say",
					"disk 1: scsi5:0 -> scsi0:1 (pvscsi)": "does not say",
					"disk 2: scsi0:7 -> scsi0:2 (pvscsi)": "does not say",
					"nic 0: none -> vmxnet3":              "does not say",
				}},
		},
		{
			name:   "vSphere without a TPM keeps the VM, drops the TPM and says why",
			src:    withSB(vsphereVM("efi", "windows2019srv_64Guest", []sdk.Disk{disk("nvme", "", 0, 0)}), "", true),
			hw:     sdk.VSphereHardware(false),
			want:   want{firmware: "efi", disks: []string{"nvme0:0"}, secureBoot: true, changes: map[string]string{"tpm: present -> none": "BitLocker"}},
			refuse: "",
		},
		{
			name:   "Secure Boot asked for a BIOS guest is refused on vSphere",
			src:    vsphereVM("bios", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0)}),
			hw:     vsphere,
			o:      config.HardwareOverride{Firmware: "efi"},
			refuse: "finds no boot loader",
		},

		// Hyper-V to Hyper-V
		{
			name: "Hyper-V to Hyper-V keeps generation 1 with its legacy NIC",
			src:  hypervVM(1, "", []sdk.Disk{disk("ide", "", 0, 0), disk("scsi", "hyperv-synthetic", 0, 3)}, nic("hyperv-legacy")),
			hw:   hyperv,
			want: want{firmware: "bios", generation: 1, disks: []string{"ide0:0", "scsi0:3 (hyperv-synthetic)"}, nics: []sdk.NICModel{"hyperv-legacy"},
				changes: map[string]string{}},
		},
		{
			name: "Hyper-V to Hyper-V keeps generation 2 with Secure Boot and TPM",
			src:  withSB(hypervVM(2, "Windows 11", []sdk.Disk{disk("scsi", "hyperv-synthetic", 0, 0)}, nic("hyperv-synthetic")), "microsoft-windows", true),
			hw:   hyperv,
			want: want{firmware: "efi", generation: 2, disks: []string{"scsi0:0 (hyperv-synthetic)"}, nics: []sdk.NICModel{"hyperv-synthetic"},
				secureBoot: true, template: "microsoft-windows", tpm: true, changes: map[string]string{}},
		},

		// A target that builds anything as given (the local plugin)
		{
			name: "as given keeps everything, a disk without a controller included",
			src:  withSB(hypervVM(2, "Debian", []sdk.Disk{disk("scsi", "hyperv-synthetic", 0, 0), {Capacity: 1}}, nic("hyperv-synthetic"), sdk.NIC{}), "microsoft-uefi-ca", true),
			hw:   asGiven,
			want: want{firmware: "efi", generation: 2, disks: []string{"scsi0:0 (hyperv-synthetic)", "no controller"}, nics: []sdk.NICModel{"hyperv-synthetic", "hyperv-synthetic"},
				secureBoot: true, template: "microsoft-uefi-ca", tpm: true, changes: map[string]string{}},
		},
		{
			name: "as given with a generation asked for",
			src:  vsphereVM("bios", "", []sdk.Disk{disk("scsi", "lsilogic", 0, 0)}, nic("vmxnet3")),
			hw:   asGiven,
			o:    config.HardwareOverride{Generation: 1, NICModel: "hyperv-legacy"},
			want: want{firmware: "bios", generation: 1, disks: []string{"scsi0:0 (lsilogic)"}, nics: []sdk.NICModel{"hyperv-legacy"},
				changes: map[string]string{"generation: none -> 1": "generation", "nic 0: vmxnet3 -> hyperv-legacy": "nic_model"}},
		},
		{
			name:   "as given still refuses a generation 2 replica of a BIOS guest",
			src:    vsphereVM("bios", "", []sdk.Disk{disk("scsi", "lsilogic", 0, 0)}),
			hw:     asGiven,
			o:      config.HardwareOverride{Generation: 2},
			refuse: "finds no boot loader",
		},
	}
	// The Linux generation 2 case's changes are many; spelled out here.
	for i := range cases {
		if strings.HasPrefix(cases[i].name, "generation 2 Linux with Secure Boot") {
			cases[i].want.changes = map[string]string{
				"generation: 2 -> none":                                   "no generations",
				"secure boot template: microsoft-uefi-ca -> none":         "one set of Secure Boot keys",
				"tpm: present -> none":                                    "no TPM",
				"disk 0: scsi0:0 (hyperv-synthetic) -> scsi0:0 (pvscsi)":  "Linux",
				"disk 1: scsi0:20 (hyperv-synthetic) -> scsi0:1 (pvscsi)": "beyond",
				"nic 0: hyperv-synthetic -> vmxnet3":                      "Linux",
			}
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := clone(c.src)
			res, err := Map(c.src, c.hw, c.o)
			if !reflect.DeepEqual(before, c.src) {
				t.Fatal("Map changed the source's description")
			}
			if c.refuse != "" {
				var r *Refusal
				if !errors.As(err, &r) || !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), c.refuse) {
					t.Fatalf("err = %v, want a refusal saying %q", err, c.refuse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, res, c.want)
		})
	}
}

func checkResult(t *testing.T, res Result, w want) {
	t.Helper()
	hw := res.VM.Hardware
	if !res.Mapped || hw.Firmware != w.firmware || res.VM.Firmware != w.firmware || hw.Generation != w.generation ||
		hw.SecureBoot != w.secureBoot || hw.SecureBootTemplate != w.template || hw.TPM != w.tpm {
		t.Errorf("hardware = %+v (firmware %q), want %+v", hw, res.VM.Firmware, w)
	}
	var disks []string
	for _, d := range res.VM.Disks {
		disks = append(disks, d.Slot())
	}
	if strings.Join(disks, ",") != strings.Join(w.disks, ",") {
		t.Errorf("disks = %q, want %q", disks, w.disks)
	}
	var nics []sdk.NICModel
	for _, n := range res.VM.NICs {
		nics = append(nics, n.Model)
	}
	if fmt.Sprint(nics) != fmt.Sprint(w.nics) {
		t.Errorf("nics = %q, want %q", nics, w.nics)
	}
	got := map[string]string{}
	for _, ch := range res.Changes {
		key := fmt.Sprintf("%s: %s -> %s", ch.Item, ch.From, ch.To)
		if _, dup := got[key]; dup {
			t.Errorf("change %q twice", key)
		}
		got[key] = ch.Reason
		if ch.Reason == "" {
			t.Errorf("change %q has no reason", key)
		}
	}
	for key, word := range w.changes {
		reason, ok := got[key]
		if !ok {
			t.Errorf("missing change %q; got %q", key, keys(got))
			continue
		}
		if !strings.Contains(reason, word) {
			t.Errorf("change %q: reason %q does not say %q", key, reason, word)
		}
	}
	for key := range got {
		if _, ok := w.changes[key]; !ok {
			t.Errorf("unexpected change %q (%s)", key, got[key])
		}
	}
	// What travels to the target must read the same after the wire's
	// normalization: the Hyper-V attributes agree with the model.
	again := clone(res.VM)
	sdk.NormalizeHardware(&again)
	if !reflect.DeepEqual(again.Hardware, res.VM.Hardware) {
		t.Errorf("normalizing the result changes it: %+v -> %+v", res.VM.Hardware, again.Hardware)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func manyDisks(n int) []sdk.Disk {
	out := make([]sdk.Disk, n)
	for i := range out {
		out[i] = disk("scsi", "pvscsi", i/15, i%15)
	}
	return out
}

// TestMapWithoutDeclaration: a target that declares nothing it builds (a
// plugin older than 1.8) gets the source's description, unmapped.
func TestMapWithoutDeclaration(t *testing.T) {
	src := vsphereVM("bios", "ubuntu64Guest", []sdk.Disk{disk("scsi", "pvscsi", 0, 0)}, nic("vmxnet3"))
	res, err := Map(src, nil, config.HardwareOverride{Generation: 2})
	if err != nil || res.Mapped || len(res.Changes) != 0 || !reflect.DeepEqual(res.VM.Disks, src.Disks) {
		t.Fatalf("Map = %+v, %v", res, err)
	}
}

// TestMapIsDeterministic: the same inputs give the same changes in the
// same order (plans are compared with golden files).
func TestMapIsDeterministic(t *testing.T) {
	src := vsphereVM("bios", "ubuntu64Guest", manyDisks(12), nic("vmxnet3"), nic("e1000"))
	first, err := Map(src, hyperv, config.HardwareOverride{})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		again, _ := Map(src, hyperv, config.HardwareOverride{})
		if !reflect.DeepEqual(again, first) {
			t.Fatal("two mappings of one VM differ")
		}
	}
}

// TestEveryBusAndModelMapsOntoEveryPlatform runs every source bus, SCSI
// model, NIC model, firmware and guest family onto each platform's
// declaration and checks that the result is something the target builds:
// the boot disk on a bus its firmware boots, every controller and NIC
// model in the profile, Secure Boot only with EFI.
func TestEveryBusAndModelMapsOntoEveryPlatform(t *testing.T) {
	type slot struct {
		bus   sdk.Bus
		model sdk.ControllerModel
	}
	var slotsAll []slot
	for _, b := range sdk.Buses {
		if b != sdk.BusSCSI {
			slotsAll = append(slotsAll, slot{b, ""})
		}
	}
	for _, m := range append(sdk.SCSIModels, "") {
		slotsAll = append(slotsAll, slot{sdk.BusSCSI, m})
	}
	targets := map[string]*sdk.HardwareSupport{"hyperv": hyperv, "vsphere": vsphere, "vsphere-tpm": sdk.VSphereHardware(true)}
	n := 0
	for tname, hw := range targets {
		for _, fw := range []string{"bios", "efi"} {
			for _, guest := range []string{"windows2019srv_64Guest", "ubuntu64Guest", "freebsd13_64Guest", ""} {
				for _, boot := range slotsAll {
					for _, data := range slotsAll {
						for _, nm := range append(sdk.NICModels, "") {
							src := vsphereVM(fw, guest, []sdk.Disk{disk(boot.bus, boot.model, 0, 0), disk(data.bus, data.model, 1, 1)}, nic(nm))
							src.Hardware.SecureBoot = fw == "efi"
							res, err := Map(src, hw, config.HardwareOverride{})
							if err != nil {
								t.Fatalf("%s %s %s boot %v data %v nic %q: %v", tname, fw, guest, boot, data, nm, err)
							}
							checkBuildable(t, res, hw)
							n++
						}
					}
				}
			}
		}
	}
	t.Logf("%d mappings checked", n)
}

func checkBuildable(t *testing.T, res Result, hw *sdk.HardwareSupport) {
	t.Helper()
	var p *sdk.HardwareProfile
	for i := range hw.Profiles {
		if hw.Profiles[i].Name() == res.Profile {
			p = &hw.Profiles[i]
		}
	}
	if p == nil {
		t.Fatalf("profile %q is not the target's", res.Profile)
	}
	vm := res.VM
	if vm.Hardware.Firmware != p.Firmware || vm.Hardware.Generation != p.Generation || vm.Hardware.SecureBoot && !p.SecureBoot || vm.Hardware.TPM && !p.TPM {
		t.Fatalf("hardware %+v outside profile %s", vm.Hardware, p.Name())
	}
	seen := map[string]bool{}
	for i, d := range vm.Disks {
		if _, ok := p.Controller(d.Bus, d.ControllerModel); !ok {
			t.Fatalf("disk %d on %s, which %s lacks", i, d.Slot(), p.Name())
		}
		if i == vm.BootDiskIndex() && !p.Boots(d.Bus) {
			t.Fatalf("boot disk on %s, which %s does not boot", d.Bus, p.Name())
		}
		if seen[d.Controller] {
			t.Fatalf("two disks at %s", d.Controller)
		}
		seen[d.Controller] = true
	}
	for i, nc := range vm.NICs {
		found := false
		for _, m := range p.NICModels {
			found = found || m == nc.Model
		}
		if !found {
			t.Fatalf("nic %d is %s, which %s lacks", i, nc.Model, p.Name())
		}
	}
}

// TestKept: a replica built under another mapping keeps its hardware,
// and Kept names each difference from what the mapping gives now; a
// replica built as mapped, or described without hardware, has none.
func TestKept(t *testing.T) {
	src := vsphereVM(sdk.FirmwareBIOS, "ubuntu64Guest", []sdk.Disk{disk(sdk.BusSCSI, sdk.ModelPVSCSI, 0, 0), disk(sdk.BusSCSI, sdk.ModelPVSCSI, 0, 1)}, nic(sdk.NICVmxnet3))
	legacy, err := Map(src, hyperv, config.HardwareOverride{NICModel: sdk.NICHyperVLegacy})
	if err != nil {
		t.Fatal(err)
	}
	now, err := Map(src, hyperv, config.HardwareOverride{})
	if err != nil {
		t.Fatal(err)
	}
	if got := Kept(now.VM, now.VM); len(got) != 0 {
		t.Errorf("a replica built as mapped keeps %v", got)
	}
	// Described as a Hyper-V host would: the generation in attributes,
	// no SCSI model (synthetic is the only one).
	built := legacy.VM
	built.Disks = append([]sdk.Disk(nil), built.Disks...)
	for i := range built.Disks {
		built.Disks[i].ControllerModel = ""
	}
	got := Kept(built, now.VM)
	if len(got) != 1 || got[0].Item != "nic 0" || got[0].From != "hyperv-legacy" || got[0].To != "hyperv-synthetic" || !strings.Contains(got[0].Reason, "never rebuilds") {
		t.Fatalf("kept %v, want nic 0 hyperv-legacy -> hyperv-synthetic", got)
	}
	gen2 := hypervVM(2, "ubuntu64Guest", []sdk.Disk{disk(sdk.BusSCSI, sdk.ModelHyperVSCSI, 0, 0), disk(sdk.BusSCSI, sdk.ModelHyperVSCSI, 0, 1)}, nic(sdk.NICHyperVSynthetic))
	var items []string
	for _, c := range Kept(gen2, now.VM) {
		items = append(items, c.String())
	}
	want := []string{
		"firmware: efi -> bios (" + keptReason + ")",
		"generation: 2 -> 1 (" + keptReason + ")",
		"disk 0: scsi0:0 (hyperv-synthetic) -> ide0:0 (" + keptReason + ")",
	}
	if !reflect.DeepEqual(items, want) {
		t.Fatalf("kept\n  %s\nwant\n  %s", strings.Join(items, "\n  "), strings.Join(want, "\n  "))
	}
	// An older target that describes no hardware: nothing to say.
	if got := Kept(sdk.VM{Disks: []sdk.Disk{{Capacity: 1 << 20}}, NICs: []sdk.NIC{{Network: "x"}}}, now.VM); len(got) != 0 {
		t.Fatalf("a replica described without hardware keeps %v", got)
	}
}
