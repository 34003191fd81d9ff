package plan

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
)

// TestPlanHardware: a plan shows every hardware change each VM's replica
// will have on a Hyper-V target, refuses (and a run would fail) a replica
// to create that cannot boot, and only warns for a replica that exists;
// --json carries the changes, the profile and the replica's hardware.
func TestPlanHardware(t *testing.T) {
	bios := &sdk.VM{Name: "web-01", Firmware: "bios", GuestOS: "ubuntu64Guest",
		Disks: []sdk.Disk{{Index: 0, Capacity: 1 << 30, Controller: "scsi0:0", Bus: sdk.BusSCSI, ControllerModel: sdk.ModelPVSCSI}},
		NICs:  []sdk.NIC{{Network: "VM Network", Model: sdk.NICVmxnet3}}}
	efi := &sdk.VM{Name: "app-01", Firmware: "efi", GuestOS: "windows2019srv_64Guest",
		Disks: []sdk.Disk{{Index: 0, Capacity: 1 << 30, Controller: "sata0:0", Bus: sdk.BusSATA}}}
	old := &sdk.VM{Name: "db-01", Firmware: "bios", Disks: []sdk.Disk{{Index: 0, Capacity: 1 << 30, Controller: "ide0:0", Bus: sdk.BusIDE}}}
	gen2 := config.HardwareOverride{Generation: 2, Ranges: map[string]hcl.Range{"generation": {Filename: "jobs.hcl", Start: hcl.Pos{Line: 12}}}}
	job := &config.Job{
		Name:          "web",
		Source:        &config.PluginBlock{Kind: sdk.KindSource, Type: "vsphere", Name: "prod"},
		Target:        &config.PluginBlock{Kind: sdk.KindTarget, Type: "hyperv", Name: "dr", Info: &sdk.ComponentInfo{Hardware: sdk.HyperVHardware()}},
		VMs:           []string{"web-01", "app-01", "db-01"},
		ReplicaSuffix: "_replica",
		Retention:     config.Retention{RestorePoints: 3},
		HardwareMap:   config.HardwareMap{VMs: map[string]config.HardwareOverride{"db-01": gen2}},
	}
	in := Inputs{Job: job, Replicas: []catalog.Replica{replica("db-01", sdk.ReplicaReady, 1<<30)},
		Points: map[string][]Point{"db-01": points("db-01", 1)},
		Source: map[string]*sdk.VM{"web-01": bios, "app-01": efi, "db-01": old}}
	p := Make(in)
	var text bytes.Buffer
	p.Write(&text)
	for _, want := range []string{
		"web-01: hardware (generation 1 (bios)): generation: none -> 1 (the guest boots with BIOS, which Hyper-V gives generation 1 VMs only)",
		"web-01 disk 0: hardware (generation 1 (bios)): disk 0: scsi0:0 (pvscsi) -> ide0:0 (a generation 1 (bios) VM boots from IDE only)",
		"web-01: hardware (generation 1 (bios)): nic 0: vmxnet3 -> hyperv-synthetic",
		"app-01 disk 0: hardware (generation 2 (efi)): disk 0: sata0:0 -> scsi0:0 (hyperv-synthetic)",
		"db-01: hardware: the replica of VM \"db-01\" cannot boot as mapped: hardware_map sets generation at jobs.hcl:12",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("plan lacks %q:\n%s", want, text.String())
		}
	}
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Decisions struct {
			VMs []struct {
				VM       string `json:"vm"`
				Verdict  string `json:"verdict"`
				Hardware struct {
					Profile string `json:"profile"`
					Changes []struct{ Item, From, To, Reason string }
					Refused string `json:"refused"`
					Replica struct {
						Hardware sdk.Hardware `json:"hardware"`
						Disks    []sdk.Disk   `json:"disks"`
					} `json:"replica"`
				} `json:"hardware"`
			} `json:"vms"`
		} `json:"decisions"`
	}
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	vms := back.Decisions.VMs
	if len(vms) != 3 || vms[0].Hardware.Profile != "generation 1 (bios)" || len(vms[0].Hardware.Changes) != 3 ||
		vms[0].Hardware.Replica.Hardware.Generation != 1 || vms[0].Hardware.Replica.Disks[0].Controller != "ide0:0" ||
		!strings.Contains(vms[2].Hardware.Refused, "finds no boot loader") {
		t.Fatalf("JSON decisions: %+v\n%s", vms, js)
	}

	// The same refusal for a replica still to create fails the VM.
	in.Replicas, in.Points = nil, nil
	d := Make(in).VMs[2]
	if d.Verdict != VerdictFail || d.Refusal != RefusedHardware || !strings.Contains(d.Err().Error(), `create replica "db-01_replica" on target.hyperv.dr: the replica of VM "db-01" cannot boot`) {
		t.Fatalf("decision %+v: %v", d, d.Err())
	}
}

// TestPlanHardwareKept: a replica that exists keeps the hardware it was
// built with; when the mapping now gives other hardware (hardware_map
// changed), the plan warns of each difference and the decision carries
// it, in JSON too. Built as mapped, nothing is said.
func TestPlanHardwareKept(t *testing.T) {
	src := &sdk.VM{ID: "vm-1", Name: "web-01", Firmware: "bios", GuestOS: "ubuntu64Guest",
		Disks: []sdk.Disk{{Index: 0, Capacity: 1 << 30, Controller: "scsi0:0", Bus: sdk.BusSCSI, ControllerModel: sdk.ModelPVSCSI}},
		NICs:  []sdk.NIC{{Network: "VM Network", Model: sdk.NICVmxnet3}}}
	job := &config.Job{
		Name:          "web",
		Source:        &config.PluginBlock{Kind: sdk.KindSource, Type: "vsphere", Name: "prod"},
		Target:        &config.PluginBlock{Kind: sdk.KindTarget, Type: "hyperv", Name: "dr", Info: &sdk.ComponentInfo{Hardware: sdk.HyperVHardware()}},
		VMs:           []string{"web-01"},
		ReplicaSuffix: "_replica",
		Retention:     config.Retention{RestorePoints: 3},
	}
	// The replica as the target describes it: generation 1, the boot
	// disk on IDE, a legacy NIC (built under an override since removed).
	built := sdk.VM{Name: "web-01_replica", Firmware: "bios", Attributes: map[string]string{"hyperv.generation": "1"},
		Disks: []sdk.Disk{{Index: 0, Capacity: 1 << 30, Controller: "ide0:0", Bus: sdk.BusIDE}},
		NICs:  []sdk.NIC{{Network: "DR", Model: sdk.NICHyperVLegacy}}}
	rec := replica("web-01", sdk.ReplicaReady, 1<<30)
	in := Inputs{Job: job, Replicas: []catalog.Replica{rec}, Points: map[string][]Point{"web-01": points("web-01", 1)},
		Source: map[string]*sdk.VM{"web-01": src},
		Target: map[string]*sdk.Replica{"web-01": {ID: rec.ReplicaID, Name: rec.ReplicaName, VM: built, State: sdk.ReplicaReady}}}
	p := Make(in)
	d := p.VMs[0]
	if d.Verdict != VerdictIncremental || len(d.HardwareKept) != 1 || d.HardwareKept[0].Item != "nic 0" || d.HardwareKept[0].From != "hyperv-legacy" || d.HardwareKept[0].To != "hyperv-synthetic" {
		t.Fatalf("decision %s, kept %+v", d.Verdict, d.HardwareKept)
	}
	var text bytes.Buffer
	p.Write(&text)
	if want := "web-01: hardware: the replica keeps nic 0 hyperv-legacy where the mapping now gives hyperv-synthetic (the replica was built so, and ferry never rebuilds"; !strings.Contains(text.String(), want) {
		t.Errorf("plan lacks %q:\n%s", want, text.String())
	}
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"kept":[{"item":"nic 0","from":"hyperv-legacy","to":"hyperv-synthetic"`) {
		t.Errorf("JSON lacks the kept hardware:\n%s", js)
	}
	// Built as mapped: nothing kept, nothing said.
	built.NICs[0].Model = sdk.NICHyperVSynthetic
	in.Target["web-01"].VM = built
	if p := Make(in); len(p.VMs[0].HardwareKept) != 0 {
		t.Fatalf("a replica built as mapped keeps %+v", p.VMs[0].HardwareKept)
	}
}
