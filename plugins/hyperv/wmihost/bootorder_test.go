package wmihost

import (
	"fmt"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
)

var (
	bootDisk0 = host.BootDevice{Kind: sdk.BootDisk, Index: 0}
	bootDisk1 = host.BootDevice{Kind: sdk.BootDisk, Index: 1}
	bootNIC0  = host.BootDevice{Kind: sdk.BootNetwork, Index: 0}
	bootCD    = host.BootDevice{Kind: sdk.BootCDROM}
)

// TestBIOSBootOrder: generation 1's BootOrder lists every kind once, the
// ones the order names first, and reads back as the VM's devices.
func TestBIOSBootOrder(t *testing.T) {
	for _, tc := range []struct {
		order []host.BootDevice
		want  string
	}{
		{nil, "[1 2 3 0]"},
		{[]host.BootDevice{bootDisk0}, "[2 1 3 0]"},
		{[]host.BootDevice{bootDisk0, bootNIC0, bootCD}, "[2 3 1 0]"},
		{[]host.BootDevice{bootNIC0, bootDisk0, bootDisk1}, "[3 2 1 0]"},
	} {
		if got := fmt.Sprint(biosBootOrder(tc.order)); got != tc.want {
			t.Errorf("biosBootOrder(%v) = %s, want %s", tc.order, got, tc.want)
		}
	}
	if got := fmt.Sprint(biosDevices([]int64{2, 3, 1, 0}, 1, 0)); got != "[disk 1 network 0 cdrom]" {
		t.Errorf("biosDevices = %s", got)
	}
	if got := fmt.Sprint(biosDevices([]int64{1, 2, 3, 0}, -1, -1)); got != "[cdrom]" {
		t.Errorf("biosDevices of a VM without IDE disk or legacy adapter = %s", got)
	}
}

// TestBootSourceOrder: generation 2's BootSourceOrder puts the boot
// sources of the order's devices first, in its order, keeps every other
// source after them, and reads back as the devices ferry can name.
func TestBootSourceOrder(t *testing.T) {
	current := []bootSource{
		{Path: "dvd"},
		{Path: "nic0", Device: bootNIC0, Known: true},
		{Path: "disk0", Device: bootDisk0, Known: true},
		{Path: "disk1", Device: bootDisk1, Known: true},
	}
	for _, tc := range []struct {
		want []host.BootDevice
		got  string
	}{
		{[]host.BootDevice{bootDisk1, bootNIC0}, "[disk1 nic0 dvd disk0]"},
		{[]host.BootDevice{bootDisk0}, "[disk0 dvd nic0 disk1]"},
		{[]host.BootDevice{bootDisk0, {Kind: sdk.BootNetwork, Index: 4}}, "[disk0 dvd nic0 disk1]"},
		{nil, "[dvd nic0 disk0 disk1]"},
	} {
		if got := fmt.Sprint(sourceOrder(current, tc.want)); got != tc.got {
			t.Errorf("sourceOrder(%v) = %s, want %s", tc.want, got, tc.got)
		}
	}
	if got := fmt.Sprint(sourceDevices(current)); got != "[network 0 disk 0 disk 1]" {
		t.Errorf("sourceDevices = %s", got)
	}
}
