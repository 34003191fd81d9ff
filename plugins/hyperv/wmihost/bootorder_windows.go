//go:build windows

package wmihost

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
)

// BootSourceType of Msvm_BootSourceSettingData.
const (
	bootSourceDrive   = 1
	bootSourceNetwork = 2
)

// setBootOrder writes a new VM's boot order (spec.BootOrder, by index in
// v.Disks and v.NICs) into its current settings: generation 1's BIOS
// BootOrder, generation 2's BootSourceOrder. An empty order leaves
// Hyper-V's default.
func (h *Host) setBootOrder(ctx context.Context, cs obj, gen int, order []host.BootDevice) error {
	if len(order) == 0 {
		return nil
	}
	vssd, snaps, err := h.settings(cs)
	if err != nil {
		return err
	}
	closeAll(snaps)
	defer vssd.Close()
	if gen == 1 {
		return h.modifySystem(ctx, vssd, []param{{"BootOrder", toUint16s(biosBootOrder(order))}})
	}
	sources, err := h.bootSources(vssd)
	if err != nil {
		return err
	}
	return h.modifySystem(ctx, vssd, []param{{"BootSourceOrder", sourceOrder(sources, order)}})
}

func toUint16s(xs []int64) []uint16 {
	out := make([]uint16, len(xs))
	for i, x := range xs {
		out[i] = uint16(x)
	}
	return out
}

// bootOrder reads a VM's boot order from its current settings, by index
// in the VM's disks and adapters as describe lists them.
func (h *Host) bootOrder(vssd obj, gen int, disks []diskFile, nics []nicInfo) ([]host.BootDevice, error) {
	if gen == 1 {
		codes, err := toInt64s(vssd.get("BootOrder"))
		if err != nil {
			return nil, fmt.Errorf("BootOrder: %w", err)
		}
		firstIDE := -1
		for i, d := range disks {
			if d.slot.Kind == "ide" && (firstIDE < 0 || d.slot.Bus*2+d.slot.Location < disks[firstIDE].slot.Bus*2+disks[firstIDE].slot.Location) {
				firstIDE = i
			}
		}
		// Every adapter describe lists is synthetic: no legacy one to
		// boot from.
		return biosDevices(codes, firstIDE, -1), nil
	}
	sources, err := h.bootSourcesOf(vssd, disks, nics)
	if err != nil {
		return nil, err
	}
	return sourceDevices(sources), nil
}

// bootSources lists a generation 2 VM's boot sources in its current
// BootSourceOrder, each resolved to a disk or adapter of the VM.
func (h *Host) bootSources(vssd obj) ([]bootSource, error) {
	disks, err := h.disks(vssd)
	if err != nil {
		return nil, err
	}
	nics, err := h.nics(vssd)
	if err != nil {
		return nil, err
	}
	defer closeNICs(nics)
	return h.bootSourcesOf(vssd, disks, nics)
}

// bootSourcesOf resolves each boot source through the device settings it
// stands for (the association Hyper-V keeps between a
// Msvm_BootSourceSettingData and the disk drive's
// Msvm_ResourceAllocationSettingData or the adapter's
// Msvm_SyntheticEthernetPortSettingData), matched by InstanceID.
func (h *Host) bootSourcesOf(vssd obj, disks []diskFile, nics []nicInfo) ([]bootSource, error) {
	driveIndex := map[string]int{}
	for i, d := range disks {
		driveIndex[d.drive] = i
	}
	nicIndex := map[string]int{}
	for i, n := range nics {
		nicIndex[n.port.str("InstanceID")] = i
	}
	var out []bootSource
	for _, path := range toStrings(vssd.get("BootSourceOrder")) {
		s := bootSource{Path: path}
		bss, err := h.c.byPath(path)
		if err != nil {
			return nil, fmt.Errorf("boot source: %w", err)
		}
		switch toInt(bss.get("BootSourceType")) {
		case bootSourceDrive:
			if rs, err := h.c.related(bss, "Msvm_ResourceAllocationSettingData"); err == nil {
				for _, r := range rs {
					if i, ok := driveIndex[r.str("InstanceID")]; ok && !s.Known {
						s.Device, s.Known = host.BootDevice{Kind: sdk.BootDisk, Index: i}, true
					}
				}
				closeAll(rs)
			}
		case bootSourceNetwork:
			if ps, err := h.c.related(bss, "Msvm_SyntheticEthernetPortSettingData"); err == nil {
				for _, p := range ps {
					if i, ok := nicIndex[p.str("InstanceID")]; ok && !s.Known {
						s.Device, s.Known = host.BootDevice{Kind: sdk.BootNetwork, Index: i}, true
					}
				}
				closeAll(ps)
			}
		}
		bss.Close()
		out = append(out, s)
	}
	return out, nil
}

// setBootOrderOf gives a VM just furnished as spec its boot order. The
// VM is new: a failure here destroys it with the rest (CreateVM), so a VM
// never exists without the order it was asked for.
func (h *Host) setBootOrderOf(ctx context.Context, cs obj, spec host.VMSpec) error {
	if err := h.setBootOrder(ctx, cs, spec.Generation, spec.BootOrder); err != nil {
		return fmt.Errorf("boot order: %w", err)
	}
	return nil
}
