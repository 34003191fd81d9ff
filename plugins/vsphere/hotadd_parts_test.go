package vsphere

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
)

func TestOwnerJudge(t *testing.T) {
	t.Parallel()
	self := owner{Machine: "m1", Boot: "b1", PID: 100, Start: 5000, Token: "mine"}
	procs := map[int]uint64{100: 5000, 200: 7000}
	probe := func(pid int) (uint64, bool) { s, ok := procs[pid]; return s, ok }
	live := func(tok string) bool { return tok == "mine" || tok == "sibling" }
	cases := []struct {
		name string
		o    owner
		want verdict
		why  string
	}{
		{"this source", owner{"m1", "b1", 100, 5000, "mine"}, ownerAlive, "this process"},
		{"another running source of this process", owner{"m1", "b1", 100, 5000, "sibling"}, ownerAlive, "this process"},
		{"a stopped source of this process", owner{"m1", "b1", 100, 5000, "stopped"}, ownerDead, "stopped"},
		{"another process that runs", owner{"m1", "b1", 200, 7000, "x"}, ownerAlive, "process 200 runs"},
		{"a process that is gone", owner{"m1", "b1", 300, 9000, "x"}, ownerDead, "process 300 is gone"},
		{"a reused pid", owner{"m1", "b1", 200, 6999, "x"}, ownerDead, "another process"},
		{"a previous process with this pid", owner{"m1", "b1", 100, 4000, "x"}, ownerDead, "another process"},
		{"before a reboot", owner{"m1", "b0", 100, 5000, "mine"}, ownerDead, "restarted"},
		{"another machine", owner{"m2", "b9", 200, 7000, "x"}, ownerForeign, "machine m2"},
		{"no owner", owner{}, ownerDead, "no owner"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, why := tc.o.judge(self, live, probe)
			if got != tc.want || !strings.Contains(why, tc.why) {
				t.Errorf("judge = %v %q, want %v with %q", got, why, tc.want, tc.why)
			}
		})
	}
}

func TestProcStart(t *testing.T) {
	t.Parallel()
	line := "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615"
	if v, ok := parseProcStart(line); !ok || v != 987654 {
		t.Errorf("parseProcStart = %d, %v; want 987654", v, ok)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 x S"} {
		if _, ok := parseProcStart(bad); ok {
			t.Errorf("parseProcStart(%q) succeeded", bad)
		}
	}
	self, err := selfOwner()
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if self.PID != os.Getpid() || self.Boot == "" || self.Machine == "" || len(self.Token) != 24 {
		t.Errorf("selfOwner = %+v", self)
	}
	if s, ok := procStart(os.Getpid()); !ok || s != self.Start {
		t.Errorf("procStart(self) = %d, %v; want %d", s, ok, self.Start)
	}
	if v, _ := self.judge(self, func(string) bool { return false }, procStart); v != ownerDead {
		t.Error("a token that is not live is judged alive")
	}
}

func TestWWNName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"6000C290-7159-c105-7f11-1400f66d4642":            "wwn-0x6000c2907159c1057f111400f66d4642",
		"60 00 C2 9d 11 22 33 44-55 66 77 88 99 aa bb cc": "wwn-0x6000c29d112233445566778899aabbcc",
	} {
		if got, err := wwnName(in); err != nil || got != want {
			t.Errorf("wwnName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "6000C290", "zz00C290-7159-c105-7f11-1400f66d4642"} {
		if _, err := wwnName(bad); err == nil {
			t.Errorf("wwnName(%q) succeeded", bad)
		}
	}
}

func TestSMBIOSUUIDs(t *testing.T) {
	t.Parallel()
	got, err := smbiosUUIDs("6B8C2042-0DD1-D037-156F-435F999D94C1\n")
	if err != nil || len(got) != 2 || got[0] != "6b8c2042-0dd1-d037-156f-435f999d94c1" || got[1] != "42208c6b-d10d-37d0-156f-435f999d94c1" {
		t.Errorf("smbiosUUIDs = %q, %v", got, err)
	}
	if _, err := smbiosUUIDs("Not Settable"); err == nil {
		t.Error("a non-UUID was accepted")
	}
}

func TestWaitDevice(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "sdq")
	os.WriteFile(target, []byte("x"), 0o644)
	time.AfterFunc(100*time.Millisecond, func() { os.Symlink(target, filepath.Join(dir, "wwn-0xabc")) })
	got, err := waitDevice(t.Context(), dir, "wwn-0xabc", 5*time.Second)
	if err != nil || got != target {
		t.Fatalf("waitDevice = %q, %v; want %q", got, err, target)
	}
	if _, err := waitDevice(t.Context(), dir, "wwn-0xdef", 100*time.Millisecond); !errors.Is(err, errNoDevice) {
		t.Errorf("a device that never comes: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := waitDevice(ctx, dir, "wwn-0xdef", time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled wait: %v", err)
	}
}

// scsi builds a SCSI controller with devices at units.
func scsi(key, bus int32, units ...int32) []types.BaseVirtualDevice {
	ctrl := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
		VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: key}, BusNumber: bus}, ScsiCtlrUnitNumber: 7}}
	out := []types.BaseVirtualDevice{ctrl}
	for i, u := range units {
		u := u
		out = append(out, &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: key*10 + int32(i), ControllerKey: key, UnitNumber: &u,
			Backing: &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[ds] p/p.vmdk"}}}})
	}
	return out
}

func TestFreeSlot(t *testing.T) {
	t.Parallel()
	full := []int32{0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15}
	cases := []struct {
		name    string
		devices []types.BaseVirtualDevice
		want    string
	}{
		{"empty controller", scsi(1000, 0), "scsi0:0"},
		{"the proxy's own disk", scsi(1000, 0, 0), "scsi0:1"},
		{"a hole", scsi(1000, 0, 0, 1, 3), "scsi0:2"},
		{"unit 7 is the controller's", scsi(1000, 0, 0, 1, 2, 3, 4, 5, 6), "scsi0:8"},
		{"first controller full", append(scsi(1000, 0, full...), scsi(1001, 1, 0)...), "scsi1:1"},
		{"controllers by bus number", append(scsi(1001, 1), scsi(1000, 0, full...)...), "scsi1:0"},
		{"all full", scsi(1000, 0, full...), ""},
		{"no SCSI controller", []types.BaseVirtualDevice{&types.VirtualIDEController{}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := freeSlot(tc.devices)
			s := ""
			if ok {
				s = got.String()
				if bus, unit, ok := parseSlotKey(got.key()); !ok || bus != got.bus || unit != got.unit {
					t.Errorf("the key %q does not read back", got.key())
				}
			}
			if s != tc.want {
				t.Errorf("freeSlot = %q, want %q", s, tc.want)
			}
		})
	}
	for _, bad := range []string{"ferry.hotadd.", "ferry.hotadd.scsi0", "ferry.hotadd.scsiX:1", "ferry.hotadd.scsi0:-1", "ferry.replica"} {
		if _, _, ok := parseSlotKey(bad); ok {
			t.Errorf("parseSlotKey(%q) succeeded", bad)
		}
	}
}

func TestHotAddBlocker(t *testing.T) {
	t.Parallel()
	src := types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-1"}
	proxy := func(edit func(p *proxyView)) *proxyView {
		p := &proxyView{host: "esx-1", datastores: map[string]bool{"ds": true}}
		p.vm.Self = types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-9"}
		p.vm.Name = "proxy"
		p.vm.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOn
		p.vm.Config = &types.VirtualMachineConfigInfo{ExtraConfig: []types.BaseOptionValue{&types.OptionValue{Key: "disk.EnableUUID", Value: "TRUE"}}}
		p.vm.Config.Hardware.Device = scsi(1000, 0, 0)
		if edit != nil {
			edit(p)
		}
		return p
	}
	flat := func(file string, parent *types.VirtualDiskFlatVer2BackingInfo) *types.VirtualDiskFlatVer2BackingInfo {
		return &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: file}, Parent: parent}
	}
	disk := func(ctrl int32, b types.BaseVirtualDeviceBackingInfo) *types.VirtualDisk {
		return &types.VirtualDisk{VirtualDevice: types.VirtualDevice{ControllerKey: ctrl, Backing: b}}
	}
	srcDevices := object.VirtualDeviceList{&types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 1000}}}},
		&types.VirtualIDEController{VirtualController: types.VirtualController{VirtualDevice: types.VirtualDevice{Key: 200}}}}
	cases := []struct {
		name string
		p    *proxyView
		src  types.ManagedObjectReference
		d    *types.VirtualDisk
		want string
	}{
		{"usable", proxy(nil), src, disk(1000, flat("[ds] vm/vm.vmdk", nil)), ""},
		{"a delta on the same datastore", proxy(nil), src, disk(1000, flat("[ds] vm/vm-000001.vmdk", flat("[ds] vm/vm.vmdk", nil))), ""},
		{"itself", proxy(nil), types.ManagedObjectReference{Type: "VirtualMachine", Value: "vm-9"}, disk(1000, flat("[ds] vm/vm.vmdk", nil)), "its own disks"},
		{"powered off", proxy(func(p *proxyView) { p.vm.Runtime.PowerState = types.VirtualMachinePowerStatePoweredOff }), src, disk(1000, flat("[ds] vm/vm.vmdk", nil)), "is poweredOff"},
		{"no disk.EnableUUID", proxy(func(p *proxyView) { p.vm.Config.ExtraConfig = nil }), src, disk(1000, flat("[ds] vm/vm.vmdk", nil)), "disk.EnableUUID"},
		{"disk.EnableUUID false", proxy(func(p *proxyView) {
			p.vm.Config.ExtraConfig = []types.BaseOptionValue{&types.OptionValue{Key: "disk.EnableUUID", Value: "FALSE"}}
		}), src, disk(1000, flat("[ds] vm/vm.vmdk", nil)), "disk.EnableUUID"},
		{"no SCSI controller", proxy(func(p *proxyView) { p.vm.Config.Hardware.Device = nil }), src, disk(1000, flat("[ds] vm/vm.vmdk", nil)), "no SCSI controller"},
		{"an IDE disk", proxy(nil), src, disk(200, flat("[ds] vm/vm.vmdk", nil)), "IDE"},
		{"a raw device mapping", proxy(nil), src, disk(1000, &types.VirtualDiskRawDiskMappingVer1BackingInfo{}), "cannot be hot-added"},
		{"the datastore is not mounted", proxy(nil), src, disk(1000, flat("[other] vm/vm.vmdk", nil)), `does not mount datastore "other"`},
		{"the parent's datastore is not mounted", proxy(nil), src, disk(1000, flat("[ds] vm/vm-000001.vmdk", flat("[other] vm/vm.vmdk", nil))), `datastore "other"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := hotaddBlocker(tc.p, tc.src, srcDevices, tc.d)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("hotaddBlocker = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestHotAddRecords(t *testing.T) {
	t.Parallel()
	cfg := &types.VirtualMachineConfigInfo{ExtraConfig: []types.BaseOptionValue{
		&types.OptionValue{Key: "ferry.hotadd.scsi0:1", Value: `{"vm":"vm-1","snapshot":"snapshot-2","disk":0,"file":"[ds] vm/vm.vmdk","owner":{"machine":"m","boot":"b","pid":7,"start":9,"token":"t"}}`},
		&types.OptionValue{Key: "ferry.hotadd.scsi0:2", Value: `not json`},
		&types.OptionValue{Key: "ferry.hotadd.weird", Value: `{"file":"[ds] x.vmdk"}`},
		&types.OptionValue{Key: "disk.EnableUUID", Value: "TRUE"},
	}}
	got := records(cfg)
	if len(got) != 3 || got["ferry.hotadd.scsi0:2"] != nil || got["ferry.hotadd.weird"] != nil {
		t.Fatalf("records = %v", got)
	}
	r := got["ferry.hotadd.scsi0:1"]
	if r == nil || r.VM != "vm-1" || r.Snapshot != "snapshot-2" || r.File != "[ds] vm/vm.vmdk" || r.Owner.PID != 7 || r.Owner.Token != "t" {
		t.Errorf("record %+v", r)
	}
	if d := diskAt(scsi(1000, 0, 0, 1), 0, 1); d == nil || backingFile(d.Backing) != "[ds] p/p.vmdk" {
		t.Errorf("diskAt(scsi0:1) = %v", d)
	}
	if d := diskAt(scsi(1000, 0, 0, 1), 1, 1); d != nil {
		t.Errorf("diskAt on a bus without controller = %v", d)
	}
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"[ds] vm/vm.vmdk", "[ds] vm/vm.vmdk", true},
		{"[ds]  vm//vm.vmdk", "[ds] vm/vm.vmdk", true},
		{"[ds] vm/vm.vmdk", "[ds2] vm/vm.vmdk", false},
		{"[ds] vm/vm.vmdk", "[ds] vm/vm_1.vmdk", false},
	} {
		if sameFile(c.a, c.b) != c.same {
			t.Errorf("sameFile(%q, %q) = %v", c.a, c.b, !c.same)
		}
	}
}
