package bootorder

import (
	"fmt"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

func disk(i int) sdk.BootDevice { return sdk.BootDevice{Kind: sdk.BootDisk, Index: i} }
func nic(i int) sdk.BootDevice  { return sdk.BootDevice{Kind: sdk.BootNetwork, Index: i} }

var cdrom = sdk.BootDevice{Kind: sdk.BootCDROM}

// TestReplica: the boot disk comes first, then the source's order, each
// device once, without what the replica lacks or cannot boot from.
func TestReplica(t *testing.T) {
	all := func(sdk.BootDevice) bool { return true }
	noCDROM := func(b sdk.BootDevice) bool { return b.Kind != sdk.BootCDROM }
	onlyDisk0 := func(b sdk.BootDevice) bool { return b == disk(0) || b.Kind == sdk.BootNetwork }
	for _, tc := range []struct {
		name     string
		disks    int
		nics     int
		order    []sdk.BootDevice
		bootable func(sdk.BootDevice) bool
		want     string
	}{
		{"no order: the first disk", 2, 1, nil, all, "[disk 0]"},
		{"no disks: none", 0, 1, []sdk.BootDevice{nic(0)}, all, "[]"},
		{"as the source says", 3, 2, []sdk.BootDevice{disk(1), nic(1), disk(0)}, all, "[disk 1 network 1 disk 0]"},
		{"network first: the disk goes before it", 2, 1, []sdk.BootDevice{nic(0), disk(1)}, all, "[disk 1 network 0]"},
		{"no CD-ROM on the replica", 1, 1, []sdk.BootDevice{cdrom, disk(0), nic(0)}, noCDROM, "[disk 0 network 0]"},
		{"the CD-ROM kept where it can boot", 1, 0, []sdk.BootDevice{disk(0), cdrom}, all, "[disk 0 cdrom]"},
		{"unbootable disks dropped", 3, 1, []sdk.BootDevice{disk(0), disk(2), nic(0)}, onlyDisk0, "[disk 0 network 0]"},
		{"devices the VM does not have dropped", 1, 1, []sdk.BootDevice{disk(5), nic(3), disk(0), {Kind: "floppy"}}, all, "[disk 0]"},
		{"duplicates once", 2, 1, []sdk.BootDevice{disk(0), nic(0), disk(0), nic(0)}, all, "[disk 0 network 0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := sdk.VM{Disks: make([]sdk.Disk, tc.disks), NICs: make([]sdk.NIC, tc.nics), Hardware: sdk.Hardware{BootOrder: tc.order}}
			if got := fmt.Sprint(Replica(vm, tc.bootable)); got != tc.want {
				t.Fatalf("Replica = %s, want %s", got, tc.want)
			}
		})
	}
}
