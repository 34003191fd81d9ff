package vsphere

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func sourceVM() sdk.VM {
	return sdk.VM{ID: "vm-42", Name: "web-01", CPUs: 2, MemoryMiB: 1024, Firmware: "efi", GuestOS: "centos8_64Guest",
		Disks: []sdk.Disk{
			{Index: 0, Capacity: 2 << 20, Controller: "scsi0:0"},
			{Index: 1, Capacity: 1 << 20, Controller: "scsi1:3"},
			{Index: 2, Capacity: 1 << 20, Controller: "nvme0:0"},
			{Index: 3, Capacity: 1 << 20, Controller: "ide0:0"},
		},
		NICs: []sdk.NIC{{Index: 0, Network: "VM Network", Addresses: []string{"10.1.0.5/24"}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.53"}}},
	}
}

func TestCreateReplicaShape(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	req := sdk.ReplicaRequest{Name: "web-01_replica", VM: sourceVM(), NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: "DR Network"}}}
	r, err := tgt.CreateReplica(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	vm := s.VM(t, "web-01_replica")
	cfg := vm.Config
	if cfg.Hardware.NumCPU != 2 || cfg.Hardware.MemoryMB != 1024 || cfg.Firmware != "efi" || cfg.GuestId != "centos8_64Guest" {
		t.Errorf("hardware %+v firmware %s guest %s", cfg.Hardware, cfg.Firmware, cfg.GuestId)
	}
	if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Errorf("a new replica is %s", vm.Runtime.PowerState)
	}
	if extraConfig(cfg)[replicaKey] != "web-01" || !strings.Contains(cfg.Annotation, "web-01") {
		t.Errorf("marks: extraConfig %v, annotation %q", extraConfig(cfg), cfg.Annotation)
	}
	devices := object.VirtualDeviceList(cfg.Hardware.Device)
	disks := virtualDisks(cfg.Hardware.Device)
	// A description without SCSI models (a host older than protocol 1.7)
	// gets paravirtual SCSI; every other bus is built as named, IDE too.
	wantPlaces := []string{"scsi0:0", "scsi1:3", "nvme0:0", "ide0:0"}
	wantModels := []sdk.ControllerModel{sdk.ModelPVSCSI, sdk.ModelPVSCSI, "", ""}
	for i, d := range disks {
		_, model, _, _, _ := diskSlot(devices, d)
		if got := controllerName(devices, d); got != wantPlaces[i] || model != wantModels[i] || diskCapacity(d) != req.VM.Disks[i].Capacity || !diskThin(d) {
			t.Errorf("disk %d at %s (%s), %d bytes, thin %v; want %s (%s), %d, thin", i, got, model, diskCapacity(d), diskThin(d), wantPlaces[i], wantModels[i], req.VM.Disks[i].Capacity)
		}
	}
	if cards := ethernetCards(devices); len(cards) != 1 || nicModel(cards[0]) != sdk.NICVmxnet3 {
		t.Errorf("NICs %v, want one vmxnet3", cards)
	}
	if len(r.VM.NICs) != 1 || r.VM.NICs[0].Network != "DR Network" || r.VM.NICs[0].Addresses[0] != "10.1.0.5/24" || r.VM.NICs[0].MAC == "" {
		t.Errorf("replica NICs %+v", r.VM.NICs)
	}
	if r.SourceVM != "web-01" || r.State != sdk.ReplicaReady || r.ID != vm.Self.Value {
		t.Errorf("replica %+v", r)
	}
	if files := s.Files(t, "web-01_replica"); !contains(files, "ferry/replica.json") {
		t.Errorf("no state file among %v", files)
	}

	again, err := tgt.CreateReplica(t.Context(), req)
	if err != nil || again.ID != r.ID {
		t.Fatalf("CreateReplica again: %v, %v", again, err)
	}
	// A network the target lacks and the map does not name: nothing is made.
	bad := sourceVM()
	bad.NICs[0].Network = "prod-only"
	if _, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "bad_replica", VM: bad}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "network_map") {
		t.Fatalf("an unmapped network: %v", err)
	}
	if _, err := tgt.GetReplica(t.Context(), "bad_replica"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("a failed CreateReplica left a replica: %v", err)
	}
	// A VM of that name that is not a replica is not taken over.
	s.CreateVM(t, vcsimtest.VMSpec{Name: "someone-elses", Disks: []int64{1 << 20}})
	if _, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "someone-elses", VM: sourceVM()}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("a VM that is not a replica: %v", err)
	}
	if _, err := tgt.GetReplica(t.Context(), "someone-elses"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetReplica of a VM that is not a replica: %v", err)
	}
}

// TestCreateReplicaBuildsTheHardwareGiven: the target builds each
// controller model, bus and NIC model it is given, Secure Boot included,
// and its own source reads them back the same; no silent paravirtual SCSI
// or vmxnet3.
func TestCreateReplicaBuildsTheHardwareGiven(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	vm := sdk.VM{ID: "vm-7", Name: "app-01", CPUs: 1, MemoryMiB: 256, Firmware: "efi", GuestOS: "windows2019srv_64Guest",
		Hardware: sdk.Hardware{Firmware: "efi", SecureBoot: true, GuestFamily: sdk.GuestWindows},
		Disks: []sdk.Disk{
			{Index: 0, Capacity: 1 << 20, Bus: sdk.BusSATA, ControllerNumber: 0, Unit: 0},
			{Index: 1, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelLSILogicSAS, ControllerNumber: 0, Unit: 1},
			{Index: 2, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelLSILogic, ControllerNumber: 1, Unit: 0},
			{Index: 3, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelBusLogic, ControllerNumber: 2, Unit: 8},
			{Index: 4, Capacity: 1 << 20, Bus: sdk.BusIDE, ControllerNumber: 1, Unit: 1},
		},
		NICs: []sdk.NIC{{Index: 0, Network: "DR Network", Model: sdk.NICE1000e}, {Index: 1, Network: "DR Network", Model: sdk.NICE1000}}}
	r, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "app-01_replica", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	got := r.VM
	want := []string{"sata0:0", "scsi0:1 (lsilogic-sas)", "scsi1:0 (lsilogic)", "scsi2:8 (buslogic)", "ide1:1"}
	for i, d := range got.Disks {
		if d.Slot() != want[i] {
			t.Errorf("disk %d at %s, want %s", i, d.Slot(), want[i])
		}
	}
	if len(got.NICs) != 2 || got.NICs[0].Model != sdk.NICE1000e || got.NICs[1].Model != sdk.NICE1000 {
		t.Errorf("NICs %+v", got.NICs)
	}
	if got.Hardware.Firmware != "efi" || !got.Hardware.SecureBoot || got.Hardware.GuestFamily != sdk.GuestWindows {
		t.Errorf("hardware %+v", got.Hardware)
	}
	// A model vSphere lacks is an error, not a substitution.
	bad := vm
	bad.Disks = []sdk.Disk{{Index: 0, Capacity: 1 << 20, Bus: sdk.BusSCSI, ControllerModel: sdk.ModelHyperVSCSI}}
	bad.NICs = nil
	if _, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "bad_replica", VM: bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("a Hyper-V SCSI controller on vSphere: %v", err)
	}
	bad.Disks, bad.NICs = vm.Disks[:1], []sdk.NIC{{Network: "DR Network", Model: sdk.NICHyperVLegacy}}
	if _, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "bad2_replica", VM: bad}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("a Hyper-V legacy NIC on vSphere: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestReplicaPlacement: in a cluster, each replica goes to the connected
// host with the fewest VMs; a configured host pins it.
func TestReplicaPlacement(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	for i, host := range []string{"DC0_C0_H0", "DC0_C0_H0", "DC0_C0_H1"} {
		s.CreateVM(t, vcsimtest.VMSpec{Name: "busy-" + string(rune('a'+i)), Disks: []int64{1 << 20}, Host: host})
	}
	tgt := newTestTarget(t, s, nil)
	vm := sourceVM()
	vm.Disks = vm.Disks[:1]
	for _, want := range []struct{ name, host string }{{"r1", "DC0_C0_H2"}, {"r2", "DC0_C0_H1"}, {"r3", "DC0_C0_H2"}} {
		if _, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: want.name, VM: vm}); err != nil {
			t.Fatal(err)
		}
		if got := s.VMHost(t, want.name); got != want.host {
			t.Fatalf("replica %s is on %s, want %s (VMs per host before: %v)", want.name, got, want.host, s.HostVMs(t))
		}
	}
	pinned := newTestTarget(t, s, map[string]cty.Value{"cluster": cty.NullVal(cty.String), "host": cty.StringVal("DC0_H0")})
	if _, err := pinned.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "r4", VM: vm}); err != nil {
		t.Fatal(err)
	}
	if got := s.VMHost(t, "r4"); got != "DC0_H0" {
		t.Fatalf("pinned replica is on %s", got)
	}
	p, err := tgt.GetPlacement(t.Context())
	if err != nil || !contains(p.Hosts, "DC0_C0_H2") || !contains(p.Datastores, "LocalDS_0") || !contains(p.Networks, "DR Network") || len(p.Folders) == 0 {
		t.Fatalf("placement %+v, %v", p, err)
	}
}

// TestRestorePointsAreSnapshots: a point is a snapshot of the replica
// whose description holds the labels as JSON; the data it needs beyond the
// working image sits in its undo stores.
func TestRestorePointsAreSnapshots(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	r := oneDiskReplica(t, tgt, "rp")
	write := func(data string) { t.Helper(); writeReplica(t, tgt, r.ID, 0, 100, data) }
	// The first copy goes straight to the flat file: the direct lane.
	w, err := tgt.OpenReplicaDisk(t.Context(), r.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	lp, ok := w.(sdk.LocalPather)
	if !ok || !strings.HasPrefix(lp.LocalPath(), s.Datastores["LocalDS_0"]) {
		t.Fatalf("the first writer offers no path under the mount (%T)", w)
	}
	if _, err := tgt.CreateRestorePoint(t.Context(), r.ID, nil); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a point while a direct writer is open: %v", err)
	}
	w.Close()
	write("first")
	p1, err := tgt.CreateRestorePoint(t.Context(), r.ID, map[string]string{"ferry.job": "web", "note": "é = ok"})
	if err != nil {
		t.Fatal(err)
	}
	w, err = tgt.OpenReplicaDisk(t.Context(), r.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := w.(sdk.LocalPather); ok {
		t.Fatal("a writer offers its path although a restore point needs its old blocks")
	}
	w.Close()
	write("second")
	if _, err := tgt.CreateRestorePoint(t.Context(), r.ID, nil); err != nil {
		t.Fatal(err)
	}
	mvm := s.VM(t, "rp")
	snaps := flattenSnapshots(mvm.Snapshot.RootSnapshotList)
	if len(snaps) != 2 || snaps[0].Name != pointPrefix+p1.ID {
		t.Fatalf("snapshots %+v", snaps)
	}
	var desc pointDesc
	if err := json.Unmarshal([]byte(snaps[0].Description), &desc); err != nil || desc.Labels["note"] != "é = ok" || desc.Disks[0] != 2<<20 {
		t.Fatalf("description %q: %+v, %v", snaps[0].Description, desc, err)
	}
	points, err := tgt.ListRestorePoints(t.Context(), "rp")
	if err != nil || len(points) != 2 || points[0].ID != p1.ID || points[0].Labels["ferry.job"] != "web" {
		t.Fatalf("ListRestorePoints = %+v, %v", points, err)
	}
	if points[0].Size == 0 || points[1].Size != 0 {
		t.Errorf("sizes %d and %d: the older point holds the overwritten block, the newest nothing yet", points[0].Size, points[1].Size)
	}
	rd, err := tgt.OpenRestorePointDisk(t.Context(), r.ID, p1.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := rd.ReadAt(buf, 100); err != nil || string(buf[:5]) != "first" {
		t.Fatalf("point 1 reads %q, %v", buf, err)
	}
	rd.Close()
}

// TestFailoverReIP: failing over maps the NIC, re-IPs through guest
// customization and powers on; the simulator then reports the new address
// as a guest would. Undo powers off and puts the NIC back.
func TestFailoverReIP(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	vm := sourceVM()
	vm.Disks = vm.Disks[:1]
	r, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "web-01_replica", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.CreateRestorePoint(t.Context(), r.ID, nil); err != nil {
		t.Fatal(err)
	}
	net := sdk.NetworkConfig{
		NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: "DR Network"}},
		ReIP:       []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/16", Gateway: "10.2.0.1", DNS: []string{"10.2.0.53"}}},
	}
	got, err := tgt.Failover(t.Context(), sdk.FailoverRequest{Replica: r.ID, Network: net})
	if err != nil {
		t.Fatal(err)
	}
	if got.State != sdk.ReplicaFailedOver || got.VM.NICs[0].Network != "DR Network" || got.VM.NICs[0].Addresses[0] != "10.2.0.5/24" || got.VM.PowerState != "on" {
		t.Fatalf("after failover %+v", got)
	}
	mvm := s.VM(t, "web-01_replica")
	if mvm.Guest.IpAddress != "10.2.0.5" || mvm.Guest.HostName != "web-01" {
		t.Fatalf("the guest reports %q, host name %q; want the re-IP'd 10.2.0.5 from customization", mvm.Guest.IpAddress, mvm.Guest.HostName)
	}
	if _, err := tgt.ApplyNetwork(t.Context(), r.ID, sdk.NetworkConfig{}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("re-IP of a running guest: %v", err)
	}
	back, err := tgt.UndoFailover(t.Context(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.State != sdk.ReplicaReady || back.VM.NICs[0].Network != "VM Network" || back.VM.NICs[0].Addresses[0] != "10.1.0.5/24" || back.VM.PowerState != "off" {
		t.Fatalf("after undo %+v", back)
	}
	if _, err := os.Stat(filepath.Join(s.Datastores["LocalDS_0"], "web-01_replica", "ferry", "failover")); !os.IsNotExist(err) {
		t.Fatalf("failover stores left after undo: %v", err)
	}
}

// TestCommitFailover: the replica becomes a production VM: running, no
// restore points left, still known as committed; deleting the replica then
// only removes ferry's mark. Failing over to the oldest point (the root
// snapshot, with children) and removing it exercises the simulator's
// snapshot bugs the harness works around.
func TestCommitFailover(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	vm := sourceVM()
	vm.Disks = vm.Disks[:1]
	r, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "app_replica", VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	var first *sdk.RestorePoint
	for i := range 3 {
		w, err := tgt.OpenReplicaDisk(t.Context(), r.ID, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.WriteAt([]byte{byte(i + 1)}, 0)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		p, err := tgt.CreateRestorePoint(t.Context(), r.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = p
		}
	}
	if _, err := tgt.Failover(t.Context(), sdk.FailoverRequest{Replica: r.ID, Point: first.ID}); err != nil {
		t.Fatal(err)
	}
	if b := s.Disk(t, "app_replica", 0)[0]; b != 1 {
		t.Fatalf("failed over to the first point, the disk holds %d", b)
	}
	c, err := tgt.CommitFailover(t.Context(), r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != sdk.ReplicaCommitted || c.VM.PowerState != "on" {
		t.Fatalf("after commit %+v", c)
	}
	mvm := s.VM(t, "app_replica")
	if mvm.Snapshot != nil && len(mvm.Snapshot.RootSnapshotList) > 0 {
		t.Fatalf("snapshots left: %+v", mvm.Snapshot.RootSnapshotList)
	}
	if points, err := tgt.ListRestorePoints(t.Context(), r.ID); err != nil || len(points) != 0 {
		t.Fatalf("points after commit: %v, %v", points, err)
	}
	if _, err := tgt.OpenReplicaDisk(t.Context(), r.ID, 0, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("writing a committed replica: %v", err)
	}
	if err := tgt.DeleteReplica(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tgt.GetReplica(t.Context(), r.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetReplica after deleting a committed replica: %v", err)
	}
	if mvm := s.VM(t, "app_replica"); mvm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
		t.Fatal("deleting a committed replica touched the production VM")
	}
	if b := s.Disk(t, "app_replica", 0)[0]; b != 1 {
		t.Fatalf("the production VM's disk holds %d, want the committed point's 1", b)
	}
}

// TestReplicaFolderAndPool: replicas go into the configured VM folder and
// resource pool, on a host of the pool's owner (here a standalone host).
func TestReplicaFolderAndPool(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	f, err := s.Finder(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	vmFolder, err := f.Folder(t.Context(), "/DC0/vm")
	if err != nil {
		t.Fatal(err)
	}
	folder, err := vmFolder.CreateFolder(t.Context(), "replicas")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := f.ResourcePool(t.Context(), "/DC0/host/DC0_H0/Resources")
	if err != nil {
		t.Fatal(err)
	}
	tgt := newTestTarget(t, s, map[string]cty.Value{"cluster": cty.NullVal(cty.String),
		"folder": cty.StringVal("/DC0/vm/replicas"), "resource_pool": cty.StringVal("/DC0/host/DC0_H0/Resources")})
	vm := sourceVM()
	vm.Disks = vm.Disks[:1]
	if _, err := tgt.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "placed", VM: vm}); err != nil {
		t.Fatal(err)
	}
	got := s.VM(t, "placed")
	if *got.Parent != folder.Reference() || *got.ResourcePool != pool.Reference() {
		t.Fatalf("replica in folder %v and pool %v, want %v and %v", got.Parent, got.ResourcePool, folder.Reference(), pool.Reference())
	}
	if h := s.VMHost(t, "placed"); h != "DC0_H0" {
		t.Fatalf("replica on %s, want DC0_H0, the pool's host", h)
	}
	// Without a cluster, host or pool, a datacenter with several compute
	// resources is ambiguous.
	plain := newTestTarget(t, s, map[string]cty.Value{"cluster": cty.NullVal(cty.String)})
	if _, err := plain.CreateReplica(t.Context(), sdk.ReplicaRequest{Name: "unplaced", VM: vm}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("placement without cluster, host or pool: %v", err)
	}
}

// TestNewerWriterSupersedes: a writer opened while an older one of the
// same disk is open supersedes it: the older one's writes are refused, so
// that an abandoned writer's writes still on their way never land after
// the newer writer's.
func TestNewerWriterSupersedes(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	r := oneDiskReplica(t, tgt, "sup")
	writeReplica(t, tgt, r.ID, 0, 100, "first")
	if _, err := tgt.CreateRestorePoint(t.Context(), r.ID, nil); err != nil {
		t.Fatal(err)
	}
	old, err := tgt.OpenReplicaDisk(t.Context(), r.ID, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, err := old.WriteAt([]byte("older"), 100); err != nil {
		t.Fatal(err)
	}
	writeReplica(t, tgt, r.ID, 0, 100, "newer")
	if _, err := old.WriteAt([]byte("stale"), 100); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("a superseded writer's write = %v, want ErrFailedPrecondition", err)
	}
	rd, err := tgt.OpenRestorePointDisk(t.Context(), r.ID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	buf := make([]byte, 5)
	if _, err := rd.ReadAt(buf, 100); err != nil || string(buf) != "newer" {
		t.Fatalf("the working state reads %q, %v; want the newer writer's", buf, err)
	}
}
