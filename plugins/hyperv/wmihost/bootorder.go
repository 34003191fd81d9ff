package wmihost

import (
	"slices"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
)

// Boot orders, both kinds Hyper-V has, from its public WMI documentation:
//
//   - generation 1: Msvm_VirtualSystemSettingData.BootOrder, the BIOS's
//     order of device kinds (uint16: 0 floppy, 1 CD-ROM, 2 IDE hard
//     drive, 3 PXE through a legacy adapter), each once;
//   - generation 2: Msvm_VirtualSystemSettingData.BootSourceOrder, the
//     paths of the VM's Msvm_BootSourceSettingData (BootSourceType 1
//     drive, 2 network, 3 file), one per device the firmware can boot.
//
// Both are set with ModifySystemSettings. What maps them to and from
// ferry's devices is here, tested on any OS; bootorder_windows.go reads
// and writes them.

// BIOS boot device kinds (BootOrder values).
const (
	biosFloppy  = 0
	biosCDROM   = 1
	biosIDE     = 2
	biosNetwork = 3
)

// biosDefault is the order Hyper-V gives a new generation 1 VM.
var biosDefault = []int64{biosCDROM, biosIDE, biosNetwork, biosFloppy}

// biosBootOrder is the BootOrder of a boot order: the kinds in the order
// the devices come, each once, then the kinds it does not name in
// Hyper-V's default order (the property lists every kind).
func biosBootOrder(order []host.BootDevice) []int64 {
	var out []int64
	add := func(k int64) {
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	for _, b := range order {
		switch b.Kind {
		case sdk.BootDisk:
			add(biosIDE)
		case sdk.BootNetwork:
			add(biosNetwork)
		case sdk.BootCDROM:
			add(biosCDROM)
		}
	}
	for _, k := range biosDefault {
		add(k)
	}
	return out
}

// biosDevices reads a BootOrder back: the IDE entry is the VM's first IDE
// disk (firstIDE, -1 when none), the network entry its first legacy
// adapter (firstLegacy, -1 when none); floppy is left out (ferry has
// none) and kinds the VM has no device for too, but the CD-ROM, which the
// BIOS tries whether or not there is one.
func biosDevices(codes []int64, firstIDE, firstLegacy int) []host.BootDevice {
	var out []host.BootDevice
	for _, c := range codes {
		switch {
		case c == biosIDE && firstIDE >= 0:
			out = append(out, host.BootDevice{Kind: sdk.BootDisk, Index: firstIDE})
		case c == biosNetwork && firstLegacy >= 0:
			out = append(out, host.BootDevice{Kind: sdk.BootNetwork, Index: firstLegacy})
		case c == biosCDROM:
			out = append(out, host.BootDevice{Kind: sdk.BootCDROM})
		}
	}
	return out
}

// bootSource is an entry of a generation 2 VM's BootSourceOrder: its
// path, and the device it boots (Known false for one ferry cannot name:
// a DVD drive, a file).
type bootSource struct {
	Path   string
	Device host.BootDevice
	Known  bool
}

// sourceOrder is the BootSourceOrder that boots the devices of want
// first, in want's order, then the VM's other boot sources in their
// current order: Hyper-V wants every boot source listed. A device of
// want without a boot source is left out.
func sourceOrder(current []bootSource, want []host.BootDevice) []string {
	var out []string
	used := make([]bool, len(current))
	for _, w := range want {
		for i, s := range current {
			if !used[i] && s.Known && s.Device == w {
				used[i] = true
				out = append(out, s.Path)
				break
			}
		}
	}
	for i, s := range current {
		if !used[i] {
			out = append(out, s.Path)
		}
	}
	return out
}

// sourceDevices reads a BootSourceOrder back: the devices ferry can name,
// in order.
func sourceDevices(sources []bootSource) []host.BootDevice {
	var out []host.BootDevice
	for _, s := range sources {
		if s.Known {
			out = append(out, s.Device)
		}
	}
	return out
}
