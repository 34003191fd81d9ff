package vsphere

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// mapSource is the source VM the mapping tests map: two disks, one NIC.
func mapSource() sdk.VM {
	vm := sourceVM()
	vm.Disks = []sdk.Disk{{Index: 0, Capacity: 2 << 20, Controller: "scsi0:0"}, {Index: 1, Capacity: 1 << 20, Controller: "scsi0:1"}}
	return vm
}

var mapOwner = sdk.ReplicaOwner{Job: "web", Source: "source.vsphere.prod", SourceVM: "vm-42"}

// restoredVM makes a powered-off VM on s shaped like mapSource, with two
// NICs and data on its disks, as a restore from a backup leaves it; it
// returns the disks' content.
func restoredVM(t *testing.T, s *vcsimtest.Site, spec vcsimtest.VMSpec) [][]byte {
	t.Helper()
	if spec.Disks == nil {
		spec.Disks = []int64{2 << 20, 1 << 20}
	}
	if spec.NICs == nil {
		spec.NICs = []vcsimtest.NICSpec{{Network: "VM Network"}, {Network: "prod-lan"}}
	}
	s.CreateVM(t, spec)
	var out [][]byte
	for i, size := range spec.Disks {
		data := bytes.Repeat([]byte{byte('a' + i)}, int(size)/2)
		s.WriteUntracked(t, spec.Name, i, size/4, data)
		out = append(out, s.Disk(t, spec.Name, i))
	}
	return out
}

// TestMapReplicaShape: a mapped VM keeps its disks' content and becomes a
// replica as CreateReplica makes them: marked with its source and owner,
// the source's CPUs, memory, firmware and guest, one NIC per source NIC on
// the mapped network (the VM's extra NIC removed), the state with the
// source's and the mapped NICs, flat files as long as the disks.
func TestMapReplicaShape(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	disks := restoredVM(t, s, vcsimtest.VMSpec{Name: "web-01-restored"})
	req := sdk.ReplicaRequest{Name: "web-01-restored", VM: mapSource(), Owner: mapOwner,
		NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: "DR Network"}}}
	r, err := tgt.MapReplica(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != req.Name || r.SourceVM != "web-01" || r.Owner != mapOwner || r.State != sdk.ReplicaReady {
		t.Errorf("mapped replica %+v", r)
	}
	if len(r.VM.NICs) != 1 || r.VM.NICs[0].Network != "DR Network" || !slices.Equal(r.VM.NICs[0].Addresses, []string{"10.1.0.5/24"}) {
		t.Errorf("mapped replica's NICs %+v, want one on DR Network with the source's address", r.VM.NICs)
	}
	vm := s.VM(t, req.Name)
	cfg := vm.Config
	if cfg.Hardware.NumCPU != 2 || cfg.Hardware.MemoryMB != 1024 || cfg.Firmware != "efi" || cfg.GuestId != "centos8_64Guest" {
		t.Errorf("hardware %+v firmware %s guest %s", cfg.Hardware, cfg.Firmware, cfg.GuestId)
	}
	if cards := ethernetCards(cfg.Hardware.Device); len(cards) != 1 || !startsConnected(cards[0]) {
		t.Errorf("the mapped VM has %d NICs (want 1, connected at power-on)", len(cards))
	}
	x := extraConfig(cfg)
	if x[replicaKey] != "web-01" || ownerOf(cfg) != mapOwner || x[replicaWritesKey] != "" || !strings.Contains(cfg.Annotation, "web-01") {
		t.Errorf("marks: extraConfig %v, annotation %q", x, cfg.Annotation)
	}
	for i, want := range disks {
		if got := s.Disk(t, req.Name, i); !bytes.Equal(got, want) {
			t.Errorf("disk %d changed by the mapping", i)
		}
	}
	dir, err := tgt.ferryFolder(&vm)
	if err != nil {
		t.Fatal(err)
	}
	st, err := readState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Source != "web-01" || len(st.SourceNICs) != 1 || st.SourceNICs[0].Network != "VM Network" || len(st.NICs) != 1 || st.NICs[0].Network != "DR Network" {
		t.Errorf("state %+v", st)
	}
	tr := tgt.cached(r.ID)
	tr.mu.Lock()
	err = tgt.refresh(t.Context(), tr)
	tr.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range tr.disks {
		if fi, err := os.Stat(d.file); err != nil || fi.Size() != d.capacity {
			t.Errorf("disk %d's flat file: %v, %v; want %d bytes", i, fi, err, d.capacity)
		}
	}
	again, err := tgt.MapReplica(t.Context(), req)
	if err != nil || again.ID != r.ID {
		t.Fatalf("MapReplica again = %+v, %v", again, err)
	}
	other := req
	other.Owner.Job = "another-job"
	if _, err := tgt.MapReplica(t.Context(), other); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("MapReplica for another job = %v, want ErrAlreadyExists", err)
	}
}

// snapshotVM takes a snapshot of a VM of the site.
func snapshotVM(t *testing.T, s *vcsimtest.Site, name string) {
	t.Helper()
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, name))
	task, err := obj.CreateSnapshot(t.Context(), "before-restore", "", false, false)
	if err == nil {
		err = task.Wait(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}
}

// vmLook is what a refusal must leave as it was.
type vmLook struct {
	extra   map[string]string
	devices int
	nets    []string
	power   types.VirtualMachinePowerState
	cpus    int32
	files   []string
}

func lookOf(t *testing.T, s *vcsimtest.Site, name string) vmLook {
	vm := s.VM(t, name)
	l := vmLook{extra: extraConfig(vm.Config), devices: len(vm.Config.Hardware.Device), power: vm.Runtime.PowerState,
		cpus: vm.Config.Hardware.NumCPU, files: s.Files(t, name)}
	for _, c := range ethernetCards(vm.Config.Hardware.Device) {
		if b, ok := c.GetVirtualEthernetCard().Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
			l.nets = append(l.nets, b.DeviceName)
		}
	}
	return l
}

func (l vmLook) equal(o vmLook) bool {
	return len(l.extra) == len(o.extra) && l.devices == o.devices && slices.Equal(l.nets, o.nets) && l.power == o.power &&
		l.cpus == o.cpus && slices.Equal(l.files, o.files) && func() bool {
		for k, v := range l.extra {
			if o.extra[k] != v {
				return false
			}
		}
		return true
	}()
}

// TestMapReplicaRefusals: a VM that cannot be the replica is refused with
// ErrFailedPrecondition naming it and what differs, and is left exactly
// as it was; it is no replica afterwards.
func TestMapReplicaRefusals(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	other := s.AddHostDatastore(t, "DC0_C0_H1", "h1-local")
	// Only the site's main datastore is mounted here.
	tgt := newTestTarget(t, s, map[string]cty.Value{"local_datastore_paths": cty.MapVal(map[string]cty.Value{s.Datastore: cty.StringVal(s.Datastores[s.Datastore])})})
	cases := []struct {
		name  string
		spec  vcsimtest.VMSpec
		after func(t *testing.T, name string)
		req   func(r *sdk.ReplicaRequest)
		want  string
	}{
		{name: "powered-on", spec: vcsimtest.VMSpec{PoweredOn: true}, want: "power it off"},
		{name: "snapshots", after: func(t *testing.T, name string) { snapshotVM(t, s, name) }, want: "it has 1 snapshots"},
		{name: "disk-fewer", spec: vcsimtest.VMSpec{Disks: []int64{2 << 20}}, want: `it has 1 disks, source VM "web-01" has 2`},
		{name: "disk-larger", spec: vcsimtest.VMSpec{Disks: []int64{2 << 20, 2 << 20}}, want: "its disk 1 holds 2097152 bytes"},
		{name: "independent", spec: vcsimtest.VMSpec{Independent: []int{1}}, want: "its disk 1 is in mode independent_persistent"},
		{name: "unmounted-datastore", spec: vcsimtest.VMSpec{Datastore: other, Host: "DC0_C0_H1"}, want: "cannot be reached for ferry's state"},
		{name: "unknown-network", req: func(r *sdk.ReplicaRequest) { r.NetworkMap = nil; r.VM.NICs[0].Network = "nowhere" },
			want: `network "nowhere" does not exist`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := "refused-" + c.name
			c.spec.Name = name
			restoredVM(t, s, c.spec)
			if c.after != nil {
				c.after(t, name)
			}
			before := lookOf(t, s, name)
			req := sdk.ReplicaRequest{Name: name, VM: mapSource(), Owner: mapOwner, NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: "DR Network"}}}
			if c.req != nil {
				c.req(&req)
			}
			_, err := tgt.MapReplica(t.Context(), req)
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), name) {
				t.Fatalf("MapReplica = %v; want ErrFailedPrecondition naming %s and saying %q", err, name, c.want)
			}
			if after := lookOf(t, s, name); !before.equal(after) {
				t.Errorf("the refused VM changed:\nbefore %+v\nafter  %+v", before, after)
			}
			if _, err := tgt.GetReplica(t.Context(), name); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("GetReplica of a refused VM = %v, want ErrNotFound", err)
			}
		})
	}
	if _, err := tgt.MapReplica(t.Context(), sdk.ReplicaRequest{Name: "no-such-vm", VM: mapSource()}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("MapReplica onto no VM = %v, want ErrNotFound", err)
	}
}

// TestMapReplicaRefusedByHotAdd: a HotAdd target refuses a VM whose disk
// its proxy cannot attach (on a datastore the proxy's host does not
// mount), and maps one it can, its state in the state folder.
func TestMapReplicaRefusedByHotAdd(t *testing.T) {
	t.Parallel()
	s := hotaddDRSite(t)
	other := s.AddHostDatastore(t, "DC0_C0_H1", "h1-local")
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "dr-proxy", Host: "DC0_C0_H0"})
	dir := t.TempDir()
	tgt := hotaddTarget(t, s, p, dir)
	restoredVM(t, s, vcsimtest.VMSpec{Name: "far", Datastore: other, Host: "DC0_C0_H1"})
	before := lookOf(t, s, "far")
	_, err := tgt.MapReplica(t.Context(), sdk.ReplicaRequest{Name: "far", VM: mapSource(), Owner: mapOwner, NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: "DR Network"}}})
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "does not mount datastore") {
		t.Fatalf("MapReplica onto a disk the proxy cannot reach = %v", err)
	}
	if after := lookOf(t, s, "far"); !before.equal(after) {
		t.Errorf("the refused VM changed:\nbefore %+v\nafter  %+v", before, after)
	}
	restoredVM(t, s, vcsimtest.VMSpec{Name: "near"})
	r, err := tgt.MapReplica(t.Context(), sdk.ReplicaRequest{Name: "near", VM: mapSource(), Owner: mapOwner, NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: "DR Network"}}})
	if err != nil {
		t.Fatal(err)
	}
	vm := s.VM(t, "near")
	if extraConfig(vm.Config)[replicaWritesKey] != TransportHotAdd {
		t.Errorf("a replica mapped by a HotAdd target is not marked as written through HotAdd: %v", extraConfig(vm.Config))
	}
	if st, err := readState(filepath.Join(dir, vm.Config.InstanceUuid)); err != nil || st.Source != "web-01" || len(st.NICs) != 1 {
		t.Errorf("state in the state folder: %+v, %v", st, err)
	}
	if slices.Contains(s.Files(t, "near"), filepath.Join(ferryDir, "replica.json")) {
		t.Error("a HotAdd replica's state is beside the VM")
	}
	if err := tgt.DeleteReplica(t.Context(), r.ID); err != nil {
		t.Fatal(err)
	}
}

// TestMapReplicaInterrupted: a mapping whose last step (the Reconfigure
// that marks the VM) never happened leaves a VM that is no replica, for
// this target and another; the next MapReplica, of another process,
// finishes it. What an earlier life of the VM left in its ferry folder
// does not survive the mapping.
func TestMapReplicaInterrupted(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	tgt := newTestTarget(t, s, nil)
	disks := restoredVM(t, s, vcsimtest.VMSpec{Name: "cut"})
	vm := s.VM(t, "cut")
	dir, err := tgt.ferryFolder(&vm)
	if err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, "points", "old", undoName(0))
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("an older life"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: "ReconfigVM_Task", ObjectType: "VirtualMachine", ObjectName: "cut",
		Probability: 1, FaultType: simulator.FaultTypeGeneric, MaxCount: 1, Enabled: true})
	req := sdk.ReplicaRequest{Name: "cut", VM: mapSource(), Owner: mapOwner, NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: "DR Network"}}}
	if _, err := tgt.MapReplica(t.Context(), req); err == nil {
		t.Fatal("MapReplica succeeded with its Reconfigure refused")
	}
	if _, err := os.Stat(statePath(dir)); err != nil {
		t.Fatalf("the first step left no state: %v", err)
	}
	tgt.crashed()
	next := newTestTarget(t, s, nil)
	if _, err := next.GetReplica(t.Context(), "cut"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("GetReplica of a half-mapped VM = %v, want ErrNotFound", err)
	}
	if l, err := next.ListReplicas(t.Context()); err != nil || len(l) != 0 {
		t.Errorf("ListReplicas with a half-mapped VM = %+v, %v; want none", l, err)
	}
	r, err := next.MapReplica(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.VM.NICs) != 1 || r.VM.NICs[0].Network != "DR Network" || r.Owner != mapOwner {
		t.Errorf("replica after the finished mapping: %+v", r)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a stale undo store survived the mapping: %v", err)
	}
	for i, want := range disks {
		if !bytes.Equal(s.Disk(t, "cut", i), want) {
			t.Errorf("disk %d changed by the mapping", i)
		}
	}
	if ps, err := next.ListRestorePoints(t.Context(), r.ID); err != nil || len(ps) != 0 {
		t.Errorf("points of the mapped replica: %v, %v", ps, err)
	}
	if got := s.VM(t, "cut"); !isReplica(got.Config) {
		t.Error("the VM is no replica after the finished mapping")
	}
}
