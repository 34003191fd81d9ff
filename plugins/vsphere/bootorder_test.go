package vsphere

import (
	"fmt"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
)

// TestReplicaBootOrder: the target gives a replica its boot disk first,
// then the source's boot order by the replica's own device keys (no
// CD-ROM: a replica has none), keeping Secure Boot; the simulator holds
// it and the target's inventory reads it back. A replica found without
// one at creation (an earlier creation stopped after vSphere made the
// VM) is given it.
func TestReplicaBootOrder(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	disk := func(i int) sdk.BootDevice { return sdk.BootDevice{Kind: sdk.BootDisk, Index: i} }
	nic := func(i int) sdk.BootDevice { return sdk.BootDevice{Kind: sdk.BootNetwork, Index: i} }
	vm := sdk.VM{ID: "vm-9", Name: "app-02", CPUs: 1, MemoryMiB: 256, Firmware: "efi", GuestOS: "windows2019srv_64Guest",
		Hardware: sdk.Hardware{Firmware: "efi", SecureBoot: true, GuestFamily: sdk.GuestWindows,
			BootOrder: []sdk.BootDevice{nic(1), {Kind: sdk.BootCDROM}, disk(2), disk(0)}},
		Disks: []sdk.Disk{
			{Index: 0, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelLSILogicSAS, Unit: 0},
			{Index: 1, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelLSILogicSAS, Unit: 1},
			{Index: 2, Capacity: 1 << 20, Bus: sdk.BusSATA},
		},
		NICs: []sdk.NIC{{Index: 0, Network: "DR Network", Model: sdk.NICE1000e}, {Index: 1, Network: "DR Network", Model: sdk.NICVmxnet3}}}
	r, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "app-02_replica", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		mvm := s.VM(t, "app-02_replica")
		devices := object.VirtualDeviceList(mvm.Config.Hardware.Device)
		var disks, cards []int32
		for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
			disks = append(disks, d.GetVirtualDevice().Key)
		}
		for _, d := range devices.SelectByType((*types.VirtualEthernetCard)(nil)) {
			cards = append(cards, d.GetVirtualDevice().Key)
		}
		want := fmt.Sprintf("[disk %d ethernet %d disk %d]", disks[2], cards[1], disks[0])
		bo := mvm.Config.BootOptions
		var got []string
		for _, b := range bo.BootOrder {
			switch b := b.(type) {
			case *types.VirtualMachineBootOptionsBootableDiskDevice:
				got = append(got, fmt.Sprintf("disk %d", b.DeviceKey))
			case *types.VirtualMachineBootOptionsBootableEthernetDevice:
				got = append(got, fmt.Sprintf("ethernet %d", b.DeviceKey))
			default:
				got = append(got, fmt.Sprintf("%T", b))
			}
		}
		if fmt.Sprint(got) != want {
			t.Errorf("%s: the simulator holds boot order %v, want %s", what, got, want)
		}
		if bo.EfiSecureBootEnabled == nil || !*bo.EfiSecureBootEnabled {
			t.Errorf("%s: the boot order turned Secure Boot off", what)
		}
		d, err := tgt.GetReplica(t.Context(), "app-02_replica")
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(d.VM.Hardware.BootOrder); got != "[disk 2 network 1 disk 0]" {
			t.Errorf("%s: the target reads boot order %s back", what, got)
		}
	}
	if got := fmt.Sprint(r.VM.Hardware.BootOrder); got != "[disk 2 network 1 disk 0]" {
		t.Errorf("CreateReplica describes boot order %s", got)
	}
	check("created")

	// A creation that stopped before the boot order: the next one sets it.
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, "app-02_replica"))
	task, err := obj.Reconfigure(t.Context(), types.VirtualMachineConfigSpec{BootOptions: &types.VirtualMachineBootOptions{EfiSecureBootEnabled: types.NewBool(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "app-02_replica", VM: vm}); err != nil {
		t.Fatal(err)
	}
	check("created again after a stop")
}
