package hyperv

import (
	"context"
	"errors"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestSourceDescribesHardware: a Hyper-V VM's description carries its
// generation, firmware, Secure Boot and template, each disk's IDE or
// synthetic SCSI place, generation 1's boot disk (the first on IDE) and
// each NIC's model.
func TestSourceDescribesHardware(t *testing.T) {
	ctx := context.Background()
	h := newSim(t)
	g1, err := h.CreateVM(ctx, host.VMSpec{Name: "g1", Generation: 1, CPUs: 1, MemoryMiB: 256,
		Disks: []host.DiskSpec{{Controller: "scsi", Bus: 1, Location: 5, Capacity: 1 << 20}, {Controller: "ide", Bus: 0, Location: 1, Capacity: 1 << 20}},
		NICs:  []host.NICSpec{{Switch: "LAN", Legacy: true}, {Switch: "LAN"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.CreateVM(ctx, host.VMSpec{Name: "g2", Generation: 2, CPUs: 1, MemoryMiB: 256, SecureBoot: true, SecureBootTemplate: sdk.SecureBootMicrosoftUEFICA, TPM: true,
		Disks: []host.DiskSpec{{Controller: "scsi", Capacity: 1 << 20}}}); err != nil {
		t.Fatal(err)
	}
	src := NewSource(h)
	v1, err := src.DescribeVM(ctx, g1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if hw := v1.Hardware; hw.Firmware != "bios" || hw.Generation != 1 || hw.SecureBoot || len(hw.BootOrder) != 1 || hw.BootOrder[0] != (sdk.BootDevice{Kind: sdk.BootDisk, Index: 1}) {
		t.Errorf("generation 1: %+v", hw)
	}
	if d := v1.Disks[0]; d.Slot() != "scsi1:5 (hyperv-synthetic)" || d.Bus != sdk.BusSCSI || d.ControllerNumber != 1 || d.Unit != 5 {
		t.Errorf("disk 0: %+v", d)
	}
	if d := v1.Disks[1]; d.Slot() != "ide0:1" {
		t.Errorf("disk 1: %+v", d)
	}
	if v1.NICs[0].Model != sdk.NICHyperVLegacy || v1.NICs[1].Model != sdk.NICHyperVSynthetic {
		t.Errorf("NICs %+v", v1.NICs)
	}
	v2, err := src.DescribeVM(ctx, "g2")
	if err != nil {
		t.Fatal(err)
	}
	if hw := v2.Hardware; hw.Firmware != "efi" || hw.Generation != 2 || !hw.SecureBoot || hw.SecureBootTemplate != sdk.SecureBootMicrosoftUEFICA || !hw.TPM || len(hw.BootOrder) != 0 {
		t.Errorf("generation 2: %+v", hw)
	}
}

// TestTargetBuildsMappedHardware: the target builds the generation, the
// IDE and SCSI places, the legacy NIC, Secure Boot's template and the TPM
// it is given; what Hyper-V cannot build is refused, not substituted.
func TestTargetBuildsMappedHardware(t *testing.T) {
	ctx := context.Background()
	h := newSim(t)
	tgt := NewTarget(h, "")
	gen1 := sdk.VM{ID: "vm-1", Name: "web", CPUs: 1, MemoryMiB: 256, Firmware: "bios",
		Hardware: sdk.Hardware{Firmware: "bios", Generation: 1},
		Disks: []sdk.Disk{
			{Index: 0, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelHyperVSCSI, ControllerNumber: 0, Unit: 3},
			{Index: 1, Capacity: 1 << 20, Bus: sdk.BusIDE, ControllerNumber: 1, Unit: 0},
		},
		NICs: []sdk.NIC{{Index: 0, Network: "LAN", Model: sdk.NICHyperVLegacy}}}
	r, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web_replica", VM: gen1})
	if err != nil {
		t.Fatal(err)
	}
	v, err := h.GetVM(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if v.Generation != 1 || v.Disks[0].Controller != "scsi" || v.Disks[0].Location != 3 || v.Disks[1].Controller != "ide" || v.Disks[1].Bus != 1 || !v.NICs[0].Legacy {
		t.Errorf("generation 1 replica: %+v", v)
	}
	if r.VM.Hardware.Generation != 1 || r.VM.Disks[1].Slot() != "ide1:0" || r.VM.NICs[0].Model != sdk.NICHyperVLegacy {
		t.Errorf("described as %+v", r.VM)
	}

	gen2 := sdk.VM{ID: "vm-2", Name: "app", CPUs: 1, MemoryMiB: 256, Firmware: "efi",
		Hardware: sdk.Hardware{Firmware: "efi", Generation: 2, SecureBoot: true, SecureBootTemplate: sdk.SecureBootMicrosoftUEFICA, TPM: true},
		Disks:    []sdk.Disk{{Index: 0, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelHyperVSCSI}}}
	r2, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "app_replica", VM: gen2})
	if err != nil {
		t.Fatal(err)
	}
	if hw := r2.VM.Hardware; hw.Generation != 2 || !hw.SecureBoot || hw.SecureBootTemplate != sdk.SecureBootMicrosoftUEFICA || !hw.TPM {
		t.Errorf("generation 2 replica: %+v", hw)
	}

	for name, bad := range map[string]sdk.VM{
		"legacy NIC on generation 2": {Name: "b1", Firmware: "efi", Hardware: sdk.Hardware{Firmware: "efi", Generation: 2},
			Disks: gen2.Disks, NICs: []sdk.NIC{{Network: "LAN", Model: sdk.NICHyperVLegacy}}},
		"IDE on generation 2": {Name: "b2", Firmware: "efi", Hardware: sdk.Hardware{Firmware: "efi", Generation: 2},
			Disks: []sdk.Disk{{Capacity: 1 << 20, Bus: sdk.BusIDE}}},
		"a vmxnet3": {Name: "b3", Firmware: "efi", Hardware: sdk.Hardware{Firmware: "efi", Generation: 2},
			Disks: gen2.Disks, NICs: []sdk.NIC{{Network: "LAN", Model: sdk.NICVmxnet3}}},
		"TPM on generation 1": {Name: "b4", Firmware: "bios", Hardware: sdk.Hardware{Firmware: "bios", Generation: 1, TPM: true},
			Disks: gen1.Disks[1:]},
	} {
		if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: bad.Name + "_replica", VM: bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
		if _, err := h.GetVM(ctx, bad.Name+"_replica"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("%s: a refused replica was left: %v", name, err)
		}
	}
}
