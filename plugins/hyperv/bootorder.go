package hyperv

import (
	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/internal/bootorder"
	"github.com/ferry-dr/ferry/sdk"
)

// replicaBootOrder is the boot order of a replica VM built as spec from
// want (the source's description, its hardware mapped): the boot disk
// first, then the source's order as far as the replica boots from each
// device. A generation 1 BIOS has one IDE entry, its first IDE disk
// (where the mapping put the boot disk), and boots from legacy adapters;
// generation 2 from any disk or adapter. A replica has no DVD drive.
func replicaBootOrder(want sdk.VM, spec host.VMSpec) []host.BootDevice {
	firstIDE := -1
	for i, d := range spec.Disks {
		if d.Controller == "ide" && (firstIDE < 0 || d.Bus*2+d.Location < spec.Disks[firstIDE].Bus*2+spec.Disks[firstIDE].Location) {
			firstIDE = i
		}
	}
	bootable := func(b sdk.BootDevice) bool {
		switch b.Kind {
		case sdk.BootDisk:
			return b.Index < len(spec.Disks) && (spec.Generation == 2 || b.Index == firstIDE)
		case sdk.BootNetwork:
			return b.Index < len(spec.NICs) && (spec.Generation == 2 || spec.NICs[b.Index].Legacy)
		}
		return false
	}
	order := bootorder.Replica(want, bootable)
	if len(order) == 0 || !bootable(order[0]) {
		// No disk, or a boot disk the firmware cannot boot (a host that
		// did not map the hardware): Hyper-V's default order.
		return nil
	}
	return order
}
