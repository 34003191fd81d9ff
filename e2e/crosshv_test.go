package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// These tests replicate across hypervisors through the real binaries:
// ferry, ferry-plugin-vsphere against govmomi's simulator and
// ferry-plugin-hyperv against its simulated host (host = "sim:DIR"). The
// data path is the one every job takes; what they prove is the hardware:
// each replica is built as core/hwmap maps its source (and as the job's
// hardware_map overrides it), plan says so, and every restore point holds
// the source's bytes of its run.

// crossConfig makes a configuration folder whose plugins/ holds both
// plugins.
func crossConfig(t *testing.T) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config")
	plugins := filepath.Join(cfg, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	// TestMain builds ferry-plugin-hyperv into bin.
	for name, dir := range map[string]string{"ferry-plugin-vsphere": vspherePluginDir(t), "ferry-plugin-hyperv": bin} {
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(plugins, name)); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// planHardware is what `ferry plan --json` says of each VM's hardware.
type planHardware struct {
	Profile string `json:"profile"`
	Changes []struct {
		Item, From, To, Reason string
	} `json:"changes"`
	Refused string `json:"refused"`
	Kept    []struct {
		Item, From, To, Reason string
	} `json:"kept"`
}

func planHardwareOf(t *testing.T, cfg string) map[string]planHardware {
	t.Helper()
	r := ferry(t, cfg, "plan", "--json")
	if r.code != 0 {
		t.Fatalf("plan: %s", r)
	}
	var plans []struct {
		Decisions struct {
			VMs []struct {
				VM       string        `json:"vm"`
				Hardware *planHardware `json:"hardware"`
			} `json:"vms"`
		} `json:"decisions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plans); err != nil {
		t.Fatalf("plan --json: %v\n%s", err, r.stdout)
	}
	out := map[string]planHardware{}
	for _, p := range plans {
		for _, d := range p.Decisions.VMs {
			if d.Hardware != nil {
				out[d.VM] = *d.Hardware
			}
		}
	}
	return out
}

// changes renders a VM's hardware changes as "item: from -> to".
func (h planHardware) changes() []string {
	var out []string
	for _, c := range h.Changes {
		out = append(out, fmt.Sprintf("%s: %s -> %s", c.Item, c.From, c.To))
	}
	return out
}

func newRand(t *testing.T) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(len(t.Name())), 13))
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// vhdxChain lists a disk file and its parents, top first.
func vhdxChain(t *testing.T, path string) []string {
	t.Helper()
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	var out []string
	for i := img; i != nil; i = i.Parent() {
		out = append(out, i.Path())
	}
	return out
}

// TestVSphereToHyperV replicates two vSphere VMs (simulated) onto a
// Hyper-V host (simulated): a BIOS Linux VM on paravirtual SCSI with a
// vmxnet3 NIC becomes a generation 1 VM booting from IDE, with the
// job's hardware_map asking for a legacy NIC; an EFI Windows VM on LSI
// Logic SAS with an e1000e NIC becomes generation 2 on synthetic SCSI.
// At every restore point libvhdi reads each replica disk's VHDX chain to
// the source's bytes of that run; a failover re-IPs through Hyper-V's
// guest network settings; undo puts the replica back. validate refuses a
// hardware_map that cannot boot at its line, and plan refuses a
// generation 2 replica of the BIOS guest.
func TestVSphereToHyperV(t *testing.T) {
	ctx := context.Background()
	prod := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	t.Setenv(vsPasswordEnv, prod.Password)
	disks := map[string][]int64{"web-01": {4 << 20, 2 << 20}, "app-01": {3 << 20}}
	prod.CreateVM(t, vcsimtest.VMSpec{Name: "web-01", Disks: disks["web-01"], GuestID: "ubuntu64Guest", Firmware: "bios", Tools: true,
		NICs: []vcsimtest.NICSpec{{Network: "VM Network", Addresses: []string{"10.1.0.11/24"}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.53"}}}})
	prod.CreateVM(t, vcsimtest.VMSpec{Name: "app-01", Disks: disks["app-01"], GuestID: "windows2019srv_64Guest", Firmware: "efi", Tools: true,
		SCSIModel: "lsilogic-sas", NICModel: "e1000e",
		NICs: []vcsimtest.NICSpec{{Network: "VM Network", Addresses: []string{"10.1.0.12/24"}, Gateway: "10.1.0.1"}}})
	simDir := filepath.Join(t.TempDir(), "hv-dr")
	dr, err := simhost.Open(simDir, "DR Switch")
	if err != nil {
		t.Fatal(err)
	}
	cfg := crossConfig(t)
	config := func(hardwareMap string) {
		(&lab{t: t, cfg: cfg}).writeConfig(fmt.Sprintf(`
source "vsphere" "prod" {
  url        = %q
  username   = %q
  password   = env(%q)
  ca_file    = %q
  datacenter = "DC0"
  local_datastore_paths = { LocalDS_0 = %q }
}

target "hyperv" "dr" {
  host = "sim:%s"
}

repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.vsphere.prod
  target     = target.hyperv.dr
  repository = repository.local.meta
  vms        = ["web-01", "app-01"]
  retention { restore_points = 3 }
  network_map {
    from = "VM Network"
    to   = "DR Switch"
  }
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    gateway     = "10.2.0.1"
    dns         = ["10.2.0.53"]
  }
%s}
`, prod.URL, prod.Username, vsPasswordEnv, prod.CAFile, prod.Datastores["LocalDS_0"], simDir, hardwareMap))
	}

	// A hardware_map that cannot boot whatever the source is: an error
	// at its line, at validate time.
	config("  hardware_map {\n    generation = 2\n    nic_model  = \"hyperv-legacy\"\n  }\n")
	r := ferry(t, cfg, "validate", "--json")
	var diags []struct {
		Summary, Detail, File string
		Line                  int
	}
	if err := json.Unmarshal([]byte(r.stdout), &diags); err != nil || r.code != 1 || len(diags) != 1 || diags[0].Line != 35 ||
		!strings.HasSuffix(diags[0].File, "main.hcl") || !strings.Contains(diags[0].Detail, "hyperv-legacy NICs, which generation 2 of target.hyperv.dr does not have") {
		t.Fatalf("validate of a legacy NIC on generation 2: %v %+v\n%s", err, diags, r)
	}
	// One that cannot boot this source: plan refuses it with the reason.
	config("  hardware_map {\n    vm \"web-01\" { generation = 2 }\n  }\n")
	if r := ferry(t, cfg, "validate"); r.code != 0 {
		t.Fatalf("validate: %s", r)
	}
	if hw := planHardwareOf(t, cfg)["web-01"]; !strings.Contains(hw.Refused, "finds no boot loader") || !strings.Contains(hw.Refused, "main.hcl:34") {
		t.Fatalf("plan of a generation 2 replica of a BIOS guest: %+v", hw)
	}

	config("  hardware_map {\n    vm \"web-01\" { nic_model = \"hyperv-legacy\" }\n  }\n")
	hw := planHardwareOf(t, cfg)
	wantChanges := map[string]string{
		"web-01": "generation: none -> 1,disk 0: scsi0:0 (pvscsi) -> ide0:0,disk 1: scsi0:1 (pvscsi) -> scsi0:1 (hyperv-synthetic),nic 0: vmxnet3 -> hyperv-legacy",
		"app-01": "generation: none -> 2,disk 0: scsi0:0 (lsilogic-sas) -> scsi0:0 (hyperv-synthetic),nic 0: e1000e -> hyperv-synthetic",
	}
	for vm, want := range wantChanges {
		if got := strings.Join(hw[vm].changes(), ","); got != want {
			t.Fatalf("plan of %s: hardware changes\n  %s\nwant\n  %s", vm, got, want)
		}
	}
	if r := ferry(t, cfg, "plan"); !strings.Contains(r.stdout, "ide0:0 (a generation 1 (bios) VM boots from IDE only)") {
		t.Fatalf("plan does not say why the boot disk moves:\n%s", r.stdout)
	}

	l := &lab{t: t, cfg: cfg}
	rng := newRand(t)
	var states []map[string][][]byte
	for run := range 3 {
		for vm, sizes := range disks {
			for d, size := range sizes {
				for range 4 {
					n := 4096 * (1 + rng.IntN(32))
					prod.Write(t, vm, d, rng.Int64N(size-int64(n))/4096*4096, (&lab{rng: rng}).data(n))
				}
			}
		}
		state := map[string][][]byte{}
		for vm, sizes := range disks {
			for d := range sizes {
				state[vm] = append(state[vm], prod.Disk(t, vm, d))
			}
		}
		states = append(states, state)
		if s := l.run(); s.code != 0 || s.Result != "success" {
			t.Fatalf("run %d: exit %d, %s: %+v\n%s", run+1, s.code, s.Result, s.VMs, s.stderr)
		}
	}

	// The replicas are built as mapped.
	web, err := dr.GetVM(ctx, "web-01_replica")
	if err != nil {
		t.Fatal(err)
	}
	if web.Generation != 1 || web.SecureBoot || len(web.Disks) != 2 || web.Disks[0].Controller != "ide" || web.Disks[0].Bus != 0 || web.Disks[0].Location != 0 ||
		web.Disks[1].Controller != "scsi" || web.Disks[1].Location != 1 || len(web.NICs) != 1 || !web.NICs[0].Legacy || web.NICs[0].Switch != "DR Switch" {
		t.Fatalf("web-01's replica: %+v", web)
	}
	app, err := dr.GetVM(ctx, "app-01_replica")
	if err != nil {
		t.Fatal(err)
	}
	if app.Generation != 2 || len(app.Disks) != 1 || app.Disks[0].Controller != "scsi" || len(app.NICs) != 1 || app.NICs[0].Legacy {
		t.Fatalf("app-01's replica: %+v", app)
	}

	// Every restore point is a checkpoint whose VHDX chain libvhdi reads
	// to the source's bytes of its run.
	judge := func(what string) {
		t.Helper()
		for vm, v := range map[string]*host.VM{"web-01": web, "app-01": app} {
			cps, err := dr.ListCheckpoints(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			var standard []host.Checkpoint
			for _, cp := range cps {
				if cp.Type == host.Standard {
					standard = append(standard, cp)
				}
			}
			if len(standard) != len(states) || len(l.points(vm)) != len(states) {
				t.Fatalf("%s: %s has %d checkpoints and ferry %d points, want %d", what, vm, len(standard), len(l.points(vm)), len(states))
			}
			for i, cp := range standard {
				for d, cd := range cp.Disks {
					if got, want := sdktest.LibvhdiDigest(t, vhdxChain(t, cd.Path)...), digest(states[i][vm][d]); got != want {
						t.Errorf("%s: %s point %d disk %d: libvhdi reads %s, the source held %s", what, vm, i+1, d, got, want)
					}
				}
			}
		}
	}
	judge("after three runs")

	// The replicas are as mapped: the plan says nothing is kept. Without
	// the override, web-01's replica keeps its legacy NIC: the plan and
	// the run say so, and the run changes nothing of it.
	for vm, h := range planHardwareOf(t, cfg) {
		if len(h.Kept) != 0 {
			t.Fatalf("plan of %s, built as mapped: kept %+v", vm, h.Kept)
		}
	}
	config("")
	if h := planHardwareOf(t, cfg)["web-01"]; len(h.Kept) != 1 || h.Kept[0].Item != "nic 0" || h.Kept[0].From != "hyperv-legacy" || h.Kept[0].To != "hyperv-synthetic" {
		t.Fatalf("plan of web-01 without its override: kept %+v", h.Kept)
	}
	if r := ferry(t, cfg, "plan"); !strings.Contains(r.stdout, "the replica keeps nic 0 hyperv-legacy where the mapping now gives hyperv-synthetic") {
		t.Fatalf("plan does not say the replica keeps its NIC:\n%s", r.stdout)
	}
	config("  hardware_map {\n    vm \"web-01\" { nic_model = \"hyperv-legacy\" }\n  }\n")

	// Failover of web-01 to its oldest point: started on DR Switch with the
	// re-IP'd address in the guest's network settings; undo stops it and
	// keeps every point.
	oldest := l.points("web-01")[0].ID
	if r := ferry(t, cfg, "failover", "e2e", "web-01", "--point", oldest); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	failed, err := dr.GetVM(ctx, "web-01_replica")
	if err != nil {
		t.Fatal(err)
	}
	if g := failed.NICs[0].Guest; !failed.Running || strings.Join(g.Addresses, ",") != "10.2.0.11/24" || g.Gateway != "10.2.0.1" || failed.NICs[0].Switch != "DR Switch" {
		t.Fatalf("the failed-over replica: running %v, %+v", failed.Running, failed.NICs)
	}
	if r := ferry(t, cfg, "failover", "undo", "e2e", "web-01"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	if undone, err := dr.GetVM(ctx, "web-01_replica"); err != nil || undone.Running || undone.Generation != 1 || !undone.NICs[0].Legacy {
		t.Fatalf("after undo: %+v, %v", undone, err)
	}
	judge("after the failover's undo")

	// A run without the override says the replica keeps its legacy NIC,
	// and keeps it.
	config("")
	if s := l.run(); s.code != 0 || !strings.Contains(s.stderr, "replica web-01_replica keeps the hardware it was built with: nic 0 hyperv-legacy (the mapping now gives hyperv-synthetic)") {
		t.Fatalf("a run without the override: exit %d\n%s", s.code, s.stderr)
	}
	if after, err := dr.GetVM(ctx, "web-01_replica"); err != nil || !after.NICs[0].Legacy {
		t.Fatalf("web-01's replica after a run without its override: %+v, %v", after, err)
	}
}

// TestHyperVToVSphere replicates a generation 1 Hyper-V VM (simulated)
// onto vSphere (simulated): its IDE boot disk stays on IDE, its synthetic
// SCSI disk goes to LSI Logic and its synthetic NIC to e1000 (a guest of
// unknown family: the adapters with drivers nearly everywhere), with BIOS
// firmware. Every restore point reads back the source's bytes of its run
// through the vSphere plugin; a failover re-IPs the replica and undo
// puts it back.
func TestHyperVToVSphere(t *testing.T) {
	ctx := context.Background()
	srcDir := filepath.Join(t.TempDir(), "hv-prod")
	src, err := simhost.Open(srcDir, "LAN")
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int64{4 << 20, 2 << 20}
	v, err := src.CreateVM(ctx, host.VMSpec{Name: "hv-01", Generation: 1, CPUs: 2, MemoryMiB: 512,
		Disks: []host.DiskSpec{{Controller: "ide", Capacity: sizes[0]}, {Controller: "scsi", Capacity: sizes[1]}},
		NICs:  []host.NICSpec{{Switch: "LAN", Guest: host.GuestNetwork{Addresses: []string{"10.1.0.21/24"}, Gateway: "10.1.0.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	dr := vcsimtest.Start(t, vcsimtest.Options{Name: "dr", Networks: []string{"DR Network"}})
	t.Setenv(vsPasswordEnv, dr.Password)
	cfg := crossConfig(t)
	(&lab{t: t, cfg: cfg}).writeConfig(fmt.Sprintf(`
source "hyperv" "prod" {
  host = "sim:%s"
}

target "vsphere" "dr" {
  url        = %q
  username   = %q
  password   = env(%q)
  thumbprint = %q
  datastore  = "LocalDS_0"
  cluster    = "DC0_C0"
  local_datastore_paths = { LocalDS_0 = %q }
}

repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.hyperv.prod
  target     = target.vsphere.dr
  repository = repository.local.meta
  vms        = ["hv-01"]
  network_map {
    from = "LAN"
    to   = "DR Network"
  }
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    gateway     = "10.2.0.1"
  }
}
`, srcDir, dr.URL, dr.Username, vsPasswordEnv, dr.Thumbprint, dr.Datastores["LocalDS_0"]))

	want := "generation: 1 -> none,disk 1: scsi0:0 (hyperv-synthetic) -> scsi0:0 (lsilogic),nic 0: hyperv-synthetic -> e1000"
	if got := strings.Join(planHardwareOf(t, cfg)["hv-01"].changes(), ","); got != want {
		t.Fatalf("plan: hardware changes\n  %s\nwant\n  %s", got, want)
	}

	l := &lab{t: t, cfg: cfg}
	rng := newRand(t)
	state := [][]byte{make([]byte, sizes[0]), make([]byte, sizes[1])}
	var states [][][]byte
	for run := range 2 {
		for d, size := range sizes {
			for range 4 {
				n := 4096 * (1 + rng.IntN(32))
				off := rng.Int64N(size-int64(n)) / 4096 * 4096
				b := (&lab{rng: rng}).data(n)
				if err := src.GuestWrite(ctx, v.ID, d, off, b); err != nil {
					t.Fatal(err)
				}
				copy(state[d][off:], b)
			}
		}
		states = append(states, [][]byte{append([]byte(nil), state[0]...), append([]byte(nil), state[1]...)})
		if s := l.run(); s.code != 0 || s.Result != "success" {
			t.Fatalf("run %d: exit %d, %s: %+v\n%s", run+1, s.code, s.Result, s.VMs, s.stderr)
		}
	}

	replica := dr.VM(t, "hv-01_replica")
	devices := object.VirtualDeviceList(replica.Config.Hardware.Device)
	var got []string
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		c := devices.FindByKey(d.GetVirtualDevice().ControllerKey)
		got = append(got, fmt.Sprintf("%T", c))
	}
	var nics []string
	for _, n := range devices.SelectByType((*types.VirtualEthernetCard)(nil)) {
		nics = append(nics, fmt.Sprintf("%T", n))
	}
	if replica.Config.Firmware != "bios" || strings.Join(got, ",") != "*types.VirtualIDEController,*types.VirtualLsiLogicController" ||
		strings.Join(nics, ",") != "*types.VirtualE1000" {
		t.Fatalf("the replica: firmware %s, disks on %v, NICs %v", replica.Config.Firmware, got, nics)
	}

	points := l.points("hv-01")
	if len(points) != len(states) {
		t.Fatalf("%d restore points, want %d", len(points), len(states))
	}
	lab := &vsLab{t: t, dr: dr}
	tgt := lab.target()
	for i, p := range points {
		for d := range sizes {
			sameBytes(t, fmt.Sprintf("point %d disk %d", i+1, d), readPoint(t, tgt, "hv-01_replica", p.ID, d), states[i][d])
		}
	}

	if r := ferry(t, cfg, "failover", "e2e", "hv-01"); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	if failed := dr.VM(t, "hv-01_replica"); failed.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || failed.Guest.IpAddress != "10.2.0.21" {
		t.Fatalf("the failed-over replica is %s with address %q", failed.Runtime.PowerState, failed.Guest.IpAddress)
	}
	if r := ferry(t, cfg, "failover", "undo", "e2e", "hv-01"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	if undone := dr.VM(t, "hv-01_replica"); undone.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("after undo the replica is %s", undone.Runtime.PowerState)
	}
	sameBytes(t, "replica disk 0 after undo", dr.Disk(t, "hv-01_replica", 0), states[len(states)-1][0])
}
