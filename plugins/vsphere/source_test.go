package vsphere

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestDescribeVM(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod", Networks: []string{"backup"}})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "web-01", Disks: []int64{8 << 20, 2 << 20}, CPUs: 4, MemoryMB: 2048, GuestID: "centos8_64Guest", Firmware: "efi",
		PoweredOn: true, Tools: true, Independent: []int{1}, SCSIModel: "lsilogic-sas", NICModel: "e1000e", NICs: []vcsimtest.NICSpec{
			{Network: "VM Network", Addresses: []string{"10.1.7.21/24", "fd00:1::21/64"}, Gateway: "10.1.7.1", DNS: []string{"10.1.0.53"}},
			{Network: "backup", Addresses: []string{"172.16.3.7/16"}},
		}})
	src := newTestSource(t, s, false, nil)
	vm, err := src.DescribeVM(t.Context(), "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Name != "web-01" || vm.ID != s.VMRef(t, "web-01").Value || vm.CPUs != 4 || vm.MemoryMiB != 2048 || vm.Firmware != "efi" ||
		vm.GuestOS != "centos8_64Guest" || vm.PowerState != "on" {
		t.Errorf("described as %+v", vm)
	}
	wantDisks := []sdk.Disk{
		{Index: 0, Capacity: 8 << 20, Controller: "scsi0:0", Thin: true, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelLSILogicSAS},
		{Index: 1, Capacity: 2 << 20, Controller: "scsi0:1", Thin: true, Independent: true, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelLSILogicSAS, Unit: 1},
	}
	if hw := vm.Hardware; hw.Firmware != "efi" || hw.GuestFamily != sdk.GuestLinux || hw.Generation != 0 || hw.SecureBoot || hw.TPM {
		t.Errorf("hardware %+v", hw)
	}
	if len(vm.Disks) != 2 {
		t.Fatalf("disks %+v", vm.Disks)
	}
	for i, d := range vm.Disks {
		d.Name = ""
		if d != wantDisks[i] {
			t.Errorf("disk %d: %+v, want %+v", i, d, wantDisks[i])
		}
	}
	if len(vm.NICs) != 2 {
		t.Fatalf("NICs %+v", vm.NICs)
	}
	n0, n1 := vm.NICs[0], vm.NICs[1]
	if n0.Model != sdk.NICE1000e || n1.Model != sdk.NICE1000e {
		t.Errorf("NIC models %q, %q, want e1000e", n0.Model, n1.Model)
	}
	if n0.Network != "VM Network" || n0.MAC == "" || strings.Join(n0.Addresses, ",") != "10.1.7.21/24,fd00:1::21/64" || n0.Gateway != "10.1.7.1" ||
		strings.Join(n0.DNS, ",") != "10.1.0.53" {
		t.Errorf("nic 0: %+v", n0)
	}
	if n1.Network != "backup" || strings.Join(n1.Addresses, ",") != "172.16.3.7/16" || n1.Gateway != "" || n1.MAC == n0.MAC {
		t.Errorf("nic 1: %+v", n1)
	}
	for _, key := range []string{vm.ID, "/DC0/vm/web-01", "vm/web-01"} {
		again, err := src.DescribeVM(t.Context(), key)
		if err != nil || again.ID != vm.ID {
			t.Errorf("DescribeVM(%q) = %v, %v", key, again, err)
		}
	}
	for _, key := range []string{"web-02", "/DC0/vm/web-02", "vm-99999"} {
		if _, err := src.DescribeVM(t.Context(), key); !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("DescribeVM(%q) = %v, want ErrNotFound", key, err)
		}
	}
}

func TestListVMsSkipsTemplatesAndReplicas(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "app", Disks: []int64{1 << 20}})
	tpl := object.NewVirtualMachine(s.Client.Client, s.CreateVM(t, vcsimtest.VMSpec{Name: "golden", Disks: []int64{1 << 20}}))
	if err := tpl.MarkAsTemplate(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep := object.NewVirtualMachine(s.Client.Client, s.CreateVM(t, vcsimtest.VMSpec{Name: "app_replica", Disks: []int64{1 << 20}}))
	task, err := rep.Reconfigure(t.Context(), types.VirtualMachineConfigSpec{ExtraConfig: []types.BaseOptionValue{&types.OptionValue{Key: replicaKey, Value: "app"}}})
	if err == nil {
		err = task.Wait(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}
	vms, err := newTestSource(t, s, false, nil).ListVMs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].Name != "app" {
		t.Fatalf("ListVMs = %+v, want only app", vms)
	}
}

// TestSnapshotEnablesTracking: a snapshot of a VM without changed block
// tracking switches it on first, so the snapshot carries change ids; a
// quiesce request without VMware Tools gives a crash-consistent snapshot.
func TestSnapshotEnablesTracking(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "db", Disks: []int64{1 << 20, 1 << 20}, PoweredOn: true})
	if cbt := s.VM(t, "db").Config.ChangeTrackingEnabled; cbt != nil && *cbt {
		t.Fatal("the VM starts with tracking on")
	}
	src := newTestSource(t, s, false, nil)
	snap, err := src.CreateSnapshot(t.Context(), sdk.SnapshotRequest{VM: "db", Name: "ferry-job-1", Quiesce: true})
	if err != nil {
		t.Fatal(err)
	}
	if cbt := s.VM(t, "db").Config.ChangeTrackingEnabled; cbt == nil || !*cbt {
		t.Fatal("tracking is still off after a snapshot")
	}
	for _, d := range snap.Disks {
		if _, ok := parseChangeID(d.ChangeID); !ok {
			t.Errorf("disk %d has change id %q", d.Index, d.ChangeID)
		}
	}
	if snap.Quiesced {
		t.Error("a VM without VMware Tools running cannot be quiesced")
	}
	snaps, err := src.ListSnapshots(t.Context(), "db")
	if err != nil || len(snaps) != 1 || snaps[0].Name != "ferry-job-1" || snaps[0].ID != snap.ID {
		t.Fatalf("ListSnapshots = %+v, %v", snaps, err)
	}
}

// TestChangedAreasInWindows: vSphere answers QueryChangedDiskAreas for a
// part of the disk at a time; the source asks until the end and reports
// each answer as a batch.
func TestChangedAreasInWindows(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod", CBTWindow: 256 << 10})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20}, PoweredOn: true})
	src := newTestSource(t, s, false, nil)
	first, err := src.CreateSnapshot(t.Context(), sdk.SnapshotRequest{VM: "vm", Name: "one"})
	if err != nil {
		t.Fatal(err)
	}
	s.Write(t, "vm", 0, 10, []byte("a"))                             // window 0
	s.Write(t, "vm", 0, 300<<10, bytes.Repeat([]byte("b"), 100<<10)) // window 1, two blocks
	s.Write(t, "vm", 0, 1<<20-1, []byte("c"))                        // window 3
	second, err := src.CreateSnapshot(t.Context(), sdk.SnapshotRequest{VM: "vm", Name: "two"})
	if err != nil {
		t.Fatal(err)
	}
	collect := func(id string) ([][]sdk.Extent, error) {
		var batches [][]sdk.Extent
		err := src.ChangedAreas(t.Context(), sdk.ChangedAreasRequest{VM: "vm", Snapshot: second.ID, ChangeID: id}, func(b []sdk.Extent) error {
			batches = append(batches, b)
			return nil
		})
		return batches, err
	}
	batches, err := collect(first.Disks[0].ChangeID)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(batches)
	want := fmt.Sprint([][]sdk.Extent{{{Offset: 0, Length: 64 << 10}}, {{Offset: 256 << 10, Length: 192 << 10}}, {{Offset: 1<<20 - 64<<10, Length: 64 << 10}}})
	if got != want {
		t.Fatalf("batches %s, want %s", got, want)
	}
	all, err := collect("")
	if err != nil || fmt.Sprint(all) != want {
		t.Fatalf("every allocated area: %v, %v; want %s", all, err, want)
	}
	s.ResetCBT(t, "vm")
	third, err := src.CreateSnapshot(t.Context(), sdk.SnapshotRequest{VM: "vm", Name: "three"})
	if err != nil {
		t.Fatal(err)
	}
	err = src.ChangedAreas(t.Context(), sdk.ChangedAreasRequest{VM: "vm", Snapshot: third.ID, ChangeID: second.Disks[0].ChangeID}, func([]sdk.Extent) error { return nil })
	if !errors.Is(err, errdefs.ErrChangeIDReset) || !strings.Contains(err.Error(), "epoch") {
		t.Fatalf("after a tracking reset: %v, want ErrChangeIDReset about the epoch", err)
	}
}

// logBuffer collects a component's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestTransportChoice: direct storage access when the datastore is mapped
// (the reader offers the flat file's path), network otherwise or when
// asked; each choice is logged with its reason; "direct" without a mapping
// fails.
func TestTransportChoice(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20}, PoweredOn: true})
	s.Write(t, "vm", 0, 4096, []byte("hello"))
	cases := []struct {
		name      string
		mapped    bool
		transport string
		local     bool
		log       string
		fail      error
	}{
		{"auto, mapped", true, "", true, "direct storage access", nil},
		{"auto, not mapped", false, "", false, `datastore \"LocalDS_0\" is not in local_datastore_paths`, nil},
		{"network, mapped", true, TransportNetwork, false, `transport = \"network\"`, nil},
		{"direct, not mapped", false, TransportDirect, false, "", errdefs.ErrFailedPrecondition},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			extra := map[string]cty.Value{}
			if tc.transport != "" {
				extra["transport"] = cty.StringVal(tc.transport)
			}
			cfg, err := decodeSource(configValue(sourceSchema(), siteConfig(s, tc.mapped, extra)))
			if err != nil {
				t.Fatal(err)
			}
			var logs logBuffer
			src, err := newSource(t.Context(), cfg, hclog.New(&hclog.LoggerOptions{Output: &logs, JSONFormat: true, Level: hclog.Info}))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Stop(context.Background())
			snap, err := src.CreateSnapshot(t.Context(), sdk.SnapshotRequest{VM: "vm", Name: "t"})
			if err != nil {
				t.Fatal(err)
			}
			defer src.RemoveSnapshot(context.Background(), "vm", snap.ID)
			r, err := src.OpenSnapshotDisk(t.Context(), "vm", snap.ID, 0)
			if tc.fail != nil {
				if !errors.Is(err, tc.fail) {
					t.Fatalf("OpenSnapshotDisk: %v, want %v", err, tc.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			lp, isLocal := r.(sdk.LocalPather)
			if isLocal != tc.local {
				t.Fatalf("reader offers a local path: %v, want %v", isLocal, tc.local)
			}
			if isLocal && !strings.HasPrefix(lp.LocalPath(), s.Datastores["LocalDS_0"]) {
				t.Errorf("local path %s is not under the mount", lp.LocalPath())
			}
			buf := make([]byte, 5)
			if _, err := r.ReadAt(buf, 4096); err != nil || string(buf) != "hello" {
				t.Fatalf("read %q, %v", buf, err)
			}
			if l := logs.String(); !strings.Contains(l, "disk transport") || !strings.Contains(l, tc.log) {
				t.Errorf("log does not say the transport and why (%q):\n%s", tc.log, l)
			}
		})
	}
}

func TestSnapshotBackingRefusesDeltas(t *testing.T) {
	t.Parallel()
	base := &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[ds] vm/vm.vmdk"}}
	if f, err := snapshotBacking(&types.VirtualDisk{VirtualDevice: types.VirtualDevice{Backing: base}}); err != nil || f != "[ds] vm/vm.vmdk" {
		t.Fatalf("a flat base: %q, %v", f, err)
	}
	delta := &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: "[ds] vm/vm-000001.vmdk"}, Parent: base}
	_, err := snapshotBacking(&types.VirtualDisk{VirtualDevice: types.VirtualDevice{Backing: delta}})
	if !errors.Is(err, errdefs.ErrUnimplemented) || !strings.Contains(err.Error(), "delta") {
		t.Fatalf("a delta: %v, want ErrUnimplemented", err)
	}
	if f, err := baseBacking(&types.VirtualDisk{VirtualDevice: types.VirtualDevice{Backing: delta}}); err != nil || f != "[ds] vm/vm.vmdk" {
		t.Fatalf("baseBacking of a delta: %q, %v", f, err)
	}
}
