// Package bootorder decides the boot order a target writes on a replica,
// for every target plugin alike: the replica's boot disk first, then the
// rest of the source's boot order as far as the replica can boot from
// each device. It is a pure function; the plugins turn its answer into
// their hypervisor's settings (vSphere's VirtualMachineBootOptions,
// Hyper-V's boot source order or BIOS boot order).
package bootorder

import "github.com/ferry-dr/ferry/sdk"

// Replica is the boot order of a replica built from vm (the description
// the replica is built from, its hardware mapped): vm's boot disk
// (sdk.VM.BootDiskIndex) first, then the devices of vm's boot order in
// their order, each once, where bootable says the replica can boot from
// it (it has the device, and its firmware boots from it). A replica
// whose source boots from the network first still boots from its disk
// first: a replica fails over to run the source's disks, not to install
// itself anew. Nil when vm has no disk.
func Replica(vm sdk.VM, bootable func(sdk.BootDevice) bool) []sdk.BootDevice {
	boot := vm.BootDiskIndex()
	if boot < 0 {
		return nil
	}
	first := sdk.BootDevice{Kind: sdk.BootDisk, Index: boot}
	out := []sdk.BootDevice{first}
	seen := map[sdk.BootDevice]bool{first: true}
	for _, b := range vm.Hardware.BootOrder {
		if b.Kind == sdk.BootCDROM {
			b.Index = 0
		}
		if seen[b] || !valid(vm, b) || !bootable(b) {
			continue
		}
		seen[b] = true
		out = append(out, b)
	}
	return out
}

// valid reports whether b names a device vm has (or is the CD-ROM drive,
// which a description does not list).
func valid(vm sdk.VM, b sdk.BootDevice) bool {
	switch b.Kind {
	case sdk.BootDisk:
		return b.Index >= 0 && b.Index < len(vm.Disks)
	case sdk.BootNetwork:
		return b.Index >= 0 && b.Index < len(vm.NICs)
	case sdk.BootCDROM:
		return true
	}
	return false
}
