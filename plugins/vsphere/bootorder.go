package vsphere

import (
	"context"
	"fmt"
	"sort"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/plugins/internal/bootorder"
	"github.com/ferry-dr/ferry/sdk"
)

// replicaBootOptions are the boot options of a replica built from vm (its
// hardware mapped): its current options with the boot order
// plugins/internal/bootorder decides, the boot disk first, by the
// replica's device keys (disks in the replica's order, NICs in key
// order). A replica has no CD-ROM drive. Nil when there is nothing to
// boot from.
func replicaBootOptions(vm sdk.VM, current *types.VirtualMachineBootOptions, disks []replicaDisk, devices []types.BaseVirtualDevice) *types.VirtualMachineBootOptions {
	var cards []int32
	for _, d := range devices {
		if c, ok := d.(types.BaseVirtualEthernetCard); ok {
			cards = append(cards, c.GetVirtualEthernetCard().Key)
		}
	}
	sort.Slice(cards, func(i, j int) bool { return cards[i] < cards[j] })
	order := bootorder.Replica(vm, func(b sdk.BootDevice) bool {
		switch b.Kind {
		case sdk.BootDisk:
			return b.Index < len(disks)
		case sdk.BootNetwork:
			return b.Index < len(cards)
		}
		return false
	})
	if len(order) == 0 || order[0].Index >= len(disks) {
		return nil
	}
	out := types.VirtualMachineBootOptions{}
	if current != nil {
		// vSphere replaces the boot options whole: keep what creation set
		// (EFI Secure Boot).
		out = *current
	}
	out.BootOrder = nil
	for _, b := range order {
		switch b.Kind {
		case sdk.BootDisk:
			out.BootOrder = append(out.BootOrder, &types.VirtualMachineBootOptionsBootableDiskDevice{DeviceKey: disks[b.Index].key})
		case sdk.BootNetwork:
			out.BootOrder = append(out.BootOrder, &types.VirtualMachineBootOptionsBootableEthernetDevice{DeviceKey: cards[b.Index]})
		}
	}
	return &out
}

// setBootOrder gives a replica the boot order of vm. The caller holds
// r.mu and has entered r (its VM and disks are loaded).
func (t *Target) setBootOrder(ctx context.Context, r *replica, vm sdk.VM) error {
	if r.vm == nil || r.vm.Config == nil {
		return nil
	}
	bo := replicaBootOptions(vm, r.vm.Config.BootOptions, r.disks, r.vm.Config.Hardware.Device)
	if bo == nil {
		return nil
	}
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	_, err := t.c.call(ctx, "set the boot order of replica "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.Reconfigure(ctx, types.VirtualMachineConfigSpec{BootOptions: bo})
	})
	if err != nil {
		return fmt.Errorf("replica %q: boot order: %w", r.vm.Name, err)
	}
	return t.refresh(ctx, r)
}

// repairBootOrder gives a replica found at creation (an earlier creation
// stopped after vSphere made the VM) the boot order it would have had,
// when it has none: a replica ferry finished always has one, so one
// without was never given it.
func (t *Target) repairBootOrder(ctx context.Context, existing *sdk.Replica, vm sdk.VM) error {
	if len(existing.VM.Hardware.BootOrder) > 0 || len(existing.VM.Disks) == 0 {
		return nil
	}
	r, unlock, err := t.lockReplica(ctx, existing.ID)
	if err != nil {
		return err
	}
	defer unlock()
	return t.setBootOrder(ctx, r, vm)
}
