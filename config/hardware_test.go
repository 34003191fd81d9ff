package config

import (
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

func hardwareSchemas() StaticComponents {
	path := &schema.Block{Attributes: map[string]*schema.Attribute{"path": {Type: cty.String, Required: true}}}
	return StaticComponents{
		sdk.KindSource: {"vsphere": {Schema: path}},
		sdk.KindTarget: {
			"hyperv":  {Schema: path, Hardware: sdk.HyperVHardware()},
			"vsphere": {Schema: path, Hardware: sdk.VSphereHardware(false)},
			"local":   {Schema: path, Hardware: &sdk.HardwareSupport{AsGiven: true}},
			"old":     {Schema: path},
		},
	}
}

func hardwareJob(target, block string) []byte {
	return []byte(`source "vsphere" "prod" { path = "/p" }
target "` + target + `" "dr" { path = "/d" }
job "web" {
  source = source.vsphere.prod
  target = target.` + target + `.dr
  vms    = ["web-01", "db-01"]
` + block + `}
`)
}

// TestHardwareMap: a hardware_map is read with its per-VM blocks, and
// what the target cannot build or what cannot boot whatever the source is
// an error at the line that asks for it, with the reason.
func TestHardwareMap(t *testing.T) {
	for _, tc := range []struct {
		name, target, block string
		line                int    // of the error; 0 for none
		summary, want       string // the error's summary and a part of its detail
	}{
		{"none", "hyperv", "", 0, "", ""},
		{"generation and legacy NIC", "hyperv", "  hardware_map {\n    generation = 1\n    nic_model = \"hyperv-legacy\"\n  }\n", 0, "", ""},
		{"per VM", "hyperv", "  hardware_map {\n    vm \"db-01\" {\n      generation = 2\n      secure_boot = false\n    }\n  }\n", 0, "", ""},
		{"vSphere models", "vsphere", "  hardware_map {\n    scsi_model = \"lsilogic-sas\"\n    nic_model = \"e1000e\"\n    boot_bus = \"sata\"\n  }\n", 0, "", ""},
		{"as given", "local", "  hardware_map {\n    generation = 2\n    nic_model = \"hyperv-synthetic\"\n  }\n", 0, "", ""},
		{"legacy NIC on generation 2", "hyperv", "  hardware_map {\n    generation = 2\n    nic_model = \"hyperv-legacy\"\n  }\n", 9,
			"Target cannot build it", "asks for hyperv-legacy NICs, which generation 2 of target.hyperv.dr does not have"},
		{"legacy NIC on generation 2 for one VM", "hyperv", "  hardware_map {\n    nic_model = \"hyperv-legacy\"\n    vm \"web-01\" {\n      generation = 2\n    }\n  }\n", 8,
			"Target cannot build it", `for VM "web-01" asks for hyperv-legacy NICs`},
		{"IDE boot on generation 2", "hyperv", "  hardware_map {\n    generation = 2\n    boot_bus = \"ide\"\n  }\n", 9,
			"Replica cannot boot", "puts the boot disk on ide, but generation 2 of target.hyperv.dr boots from scsi only"},
		{"SCSI boot on generation 1", "hyperv", "  hardware_map {\n    vm \"db-01\" {\n      generation = 1\n      boot_bus = \"scsi\"\n    }\n  }\n", 10,
			"Replica cannot boot", "boots from ide only"},
		{"generation 2 with BIOS", "hyperv", "  hardware_map {\n    generation = 2\n    firmware = \"bios\"\n  }\n", 9,
			"Replica cannot boot", "a generation-2 Hyper-V VM has efi firmware only"},
		{"generation 2 with BIOS across blocks", "hyperv", "  hardware_map {\n    firmware = \"bios\"\n    vm \"db-01\" {\n      generation = 2\n    }\n  }\n", 8,
			"Replica cannot boot", `for VM "db-01" asks for generation 2 and firmware "bios"`},
		{"IDE boot on generation 2, reported once", "hyperv", "  hardware_map {\n    generation = 2\n    boot_bus = \"ide\"\n    vm \"db-01\" {\n      nic_model = \"hyperv-synthetic\"\n    }\n  }\n", 9,
			"Replica cannot boot", "puts the boot disk on ide, but generation 2 of target.hyperv.dr boots from scsi only"},
		{"IDE boot with EFI on Hyper-V", "hyperv", "  hardware_map {\n    firmware = \"efi\"\n    boot_bus = \"ide\"\n  }\n", 9,
			"Replica cannot boot", "efi firmware of target.hyperv.dr boots from scsi only"},
		{"IDE boot with EFI on vSphere", "vsphere", "  hardware_map {\n    firmware = \"efi\"\n    boot_bus = \"ide\"\n  }\n", 9,
			"Replica cannot boot", "efi firmware of target.vsphere.dr boots from sata, scsi, nvme only"},
		{"Secure Boot on generation 1", "hyperv", "  hardware_map {\n    generation = 1\n    secure_boot = true\n  }\n", 9,
			"Replica cannot boot", "generation 1 of target.hyperv.dr has no Secure Boot"},
		{"Secure Boot with BIOS", "vsphere", "  hardware_map {\n    firmware = \"bios\"\n    secure_boot = true\n  }\n", 9,
			"Replica cannot boot", "has no Secure Boot"},
		{"generation on vSphere", "vsphere", "  hardware_map {\n    generation = 1\n  }\n", 8,
			"Target cannot build it", "builds efi and bios"},
		{"pvscsi on Hyper-V", "hyperv", "  hardware_map {\n    scsi_model = \"pvscsi\"\n  }\n", 8,
			"Target cannot build it", "asks for pvscsi SCSI controllers, which any VM it builds of target.hyperv.dr does not have"},
		{"unknown model", "vsphere", "  hardware_map {\n    nic_model = \"vmxnet4\"\n  }\n", 8,
			"Invalid nic_model", `Did you mean "vmxnet3"?`},
		{"bad generation", "hyperv", "  hardware_map {\n    generation = 3\n  }\n", 8,
			"Invalid generation", "generation is 3"},
		{"unknown VM", "hyperv", "  hardware_map {\n    vm \"web-1\" { generation = 1 }\n  }\n", 8,
			"Unknown VM", `Did you mean "web-01"?`},
		{"old target", "old", "  hardware_map {\n    generation = 1\n  }\n", 7,
			"Target does not map hardware", "older than protocol 1.8"},
		{"two blocks", "hyperv", "  hardware_map {}\n  hardware_map {}\n", 8,
			"Duplicate hardware_map block", "at most one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": hardwareJob(tc.target, tc.block)}, hardwareSchemas())
			if tc.line == 0 {
				if len(diags) > 0 {
					t.Fatalf("unexpected diagnostics: %s", diags)
				}
				return
			}
			if len(diags) != 1 || diags[0].Summary != tc.summary || diags[0].Subject == nil ||
				diags[0].Subject.Start.Line != tc.line || !strings.Contains(diags[0].Detail, tc.want) {
				t.Fatalf("diagnostics %s; want one %q at line %d saying %q", diags, tc.summary, tc.line, tc.want)
			}
			_ = cfg
		})
	}
}

// TestHardwareMapFor: a VM's override is the job-wide one with its own
// block over it, found by entry or name, with the lines of each.
func TestHardwareMapFor(t *testing.T) {
	block := "  hardware_map {\n    generation = 1\n    nic_model = \"hyperv-legacy\"\n    vm \"db-01\" {\n      generation = 2\n      nic_model = \"hyperv-synthetic\"\n      secure_boot = false\n    }\n  }\n"
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": hardwareJob("hyperv", block)}, hardwareSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	m := cfg.Jobs["web"].HardwareMap
	web := m.For("web-01", "web-01")
	if web.Generation != 1 || web.NICModel != sdk.NICHyperVLegacy || web.SecureBoot != nil || web.Where("generation") != "main.hcl:8" {
		t.Fatalf("web-01: %+v at %q", web, web.Where("generation"))
	}
	db := m.For("vm-42", "db-01")
	if db.Generation != 2 || db.NICModel != sdk.NICHyperVSynthetic || db.SecureBoot == nil || *db.SecureBoot || db.Where("generation") != "main.hcl:11" {
		t.Fatalf("db-01: %+v at %q", db, db.Where("generation"))
	}
	if !(HardwareMap{}).For("x", "x").IsZero() {
		t.Fatal("no hardware_map overrides nothing")
	}
}
