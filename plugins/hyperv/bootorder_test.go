package hyperv

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestReplicaBootOrder: the target gives each replica the boot disk
// first, then the source's order as far as its generation boots from
// each device; the simulated host records it, and the source reports it
// back.
func TestReplicaBootOrder(t *testing.T) {
	ctx := context.Background()
	h := newSim(t)
	tgt := NewTarget(h, "")
	scsi := func(unit int) sdk.Disk {
		return sdk.Disk{Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelHyperVSCSI, Unit: unit}
	}
	disk := func(i int) sdk.BootDevice { return sdk.BootDevice{Kind: sdk.BootDisk, Index: i} }
	nic := func(i int) sdk.BootDevice { return sdk.BootDevice{Kind: sdk.BootNetwork, Index: i} }
	cdrom := sdk.BootDevice{Kind: sdk.BootCDROM}
	for _, tc := range []struct {
		name string
		vm   sdk.VM
		want string
		// described is what the source reports of the replica when it is
		// not want: generation 1 without a recorded order derives it.
		described string
	}{
		{"generation 2: boot disk first, then the source's order", sdk.VM{Name: "g2",
			Hardware: sdk.Hardware{Firmware: "efi", Generation: 2, BootOrder: []sdk.BootDevice{nic(0), cdrom, disk(1), disk(0)}},
			Disks:    []sdk.Disk{scsi(0), scsi(1)}, NICs: []sdk.NIC{{Network: "LAN", Model: sdk.NICHyperVSynthetic}}},
			"[disk 1 network 0 disk 0]", ""},
		{"generation 1: the IDE disk, then legacy adapters", sdk.VM{Name: "g1",
			Hardware: sdk.Hardware{Firmware: "bios", Generation: 1, BootOrder: []sdk.BootDevice{disk(0), nic(1), nic(0), disk(1), cdrom}},
			Disks:    []sdk.Disk{{Capacity: 1 << 20, Bus: sdk.BusIDE}, scsi(0)},
			NICs:     []sdk.NIC{{Network: "LAN", Model: sdk.NICHyperVSynthetic}, {Network: "LAN", Model: sdk.NICHyperVLegacy}}},
			"[disk 0 network 1]", ""},
		{"no order: the first disk", sdk.VM{Name: "plain",
			Hardware: sdk.Hardware{Firmware: "efi", Generation: 2}, Disks: []sdk.Disk{scsi(0), scsi(1)}},
			"[disk 0]", ""},
		{"generation 1 booting from a SCSI disk it cannot boot: Hyper-V's default", sdk.VM{Name: "odd",
			Hardware: sdk.Hardware{Firmware: "bios", Generation: 1, BootOrder: []sdk.BootDevice{disk(1)}},
			Disks:    []sdk.Disk{{Capacity: 1 << 20, Bus: sdk.BusIDE}, scsi(0)}},
			"[]", "[disk 0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: tc.vm.Name + "_replica", VM: tc.vm})
			if err != nil {
				t.Fatal(err)
			}
			v, err := h.GetVM(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(v.BootOrder); got != tc.want {
				t.Fatalf("the host records boot order %s, want %s", got, tc.want)
			}
			d, err := NewSource(h).DescribeVM(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if tc.described != "" {
				want = tc.described
			}
			if got := fmt.Sprint(d.Hardware.BootOrder); got != want {
				t.Fatalf("the source describes boot order %s, want %s", got, want)
			}
		})
	}
}

// TestSimulatedHostRefusesBootOrders: the simulated host refuses a boot
// order Hyper-V could not set, and makes no VM.
func TestSimulatedHostRefusesBootOrders(t *testing.T) {
	ctx := context.Background()
	h := newSim(t)
	ide := host.DiskSpec{Controller: "ide", Capacity: 1 << 20}
	scsi := host.DiskSpec{Controller: "scsi", Capacity: 1 << 20}
	disk := func(i int) host.BootDevice { return host.BootDevice{Kind: sdk.BootDisk, Index: i} }
	nic := func(i int) host.BootDevice { return host.BootDevice{Kind: sdk.BootNetwork, Index: i} }
	for name, spec := range map[string]host.VMSpec{
		"generation 1 from SCSI":       {Generation: 1, Disks: []host.DiskSpec{ide, scsi}, BootOrder: []host.BootDevice{disk(1)}},
		"generation 1 from IDE 0:1":    {Generation: 1, Disks: []host.DiskSpec{ide, {Controller: "ide", Location: 1, Capacity: 1 << 20}}, BootOrder: []host.BootDevice{disk(1)}},
		"generation 1 from synthetic":  {Generation: 1, Disks: []host.DiskSpec{ide}, NICs: []host.NICSpec{{Switch: "LAN"}}, BootOrder: []host.BootDevice{disk(0), nic(0)}},
		"generation 2 from a DVD":      {Generation: 2, Disks: []host.DiskSpec{scsi}, BootOrder: []host.BootDevice{disk(0), {Kind: sdk.BootCDROM}}},
		"a disk the VM lacks":          {Generation: 2, Disks: []host.DiskSpec{scsi}, BootOrder: []host.BootDevice{disk(1)}},
		"an adapter the VM lacks":      {Generation: 2, Disks: []host.DiskSpec{scsi}, BootOrder: []host.BootDevice{nic(0)}},
		"a device twice":               {Generation: 2, Disks: []host.DiskSpec{scsi}, BootOrder: []host.BootDevice{disk(0), disk(0)}},
		"a kind Hyper-V does not know": {Generation: 2, Disks: []host.DiskSpec{scsi}, BootOrder: []host.BootDevice{{Kind: "floppy"}}},
	} {
		spec.Name, spec.CPUs, spec.MemoryMiB = "bad", 1, 256
		if _, err := h.CreateVM(ctx, spec); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
		if _, err := h.GetVM(ctx, "bad"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("%s: a refused VM was made: %v", name, err)
		}
	}
	// And accepts what Hyper-V sets: generation 1's BIOS lists a DVD
	// drive whether or not the VM has one.
	if _, err := h.CreateVM(ctx, host.VMSpec{Name: "ok", Generation: 1, CPUs: 1, MemoryMiB: 256, Disks: []host.DiskSpec{ide},
		NICs: []host.NICSpec{{Switch: "LAN", Legacy: true}}, BootOrder: []host.BootDevice{{Kind: sdk.BootCDROM}, disk(0), nic(0)}}); err != nil {
		t.Fatal(err)
	}
}
