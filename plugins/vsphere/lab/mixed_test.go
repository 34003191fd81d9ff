package lab

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestRenderMixedConfig compares the mixed lab's configuration with its
// golden file and parses it as HCL.
func TestRenderMixedConfig(t *testing.T) {
	got := renderMixedConfig(configInput{
		Dir:      "/home/u/.ferry/lab",
		Password: "lab-0123456789abcdef01234567",
		Prod: SiteInfo{Name: "prod", URL: "https://127.0.0.1:41001/sdk", Username: username, CAFile: "prod-ca.pem",
			Datacenter: "DC0", Datastore: "LocalDS_0", DatastorePath: "/home/u/.ferry/lab/sites/govcsim-1/DC0-LocalDS_0"},
		DR:  SiteInfo{Name: "dr", Kind: siteHyperVSim, URL: "sim:/home/u/.ferry/lab/sites/hyperv-dr", DatastorePath: "/home/u/.ferry/lab/sites/hyperv-dr"},
		VMs: vmNames(mixedVMs),
	})
	golden := filepath.Join("testdata", "mixed.hcl.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("the configuration differs from %s (go test -run TestRenderMixedConfig -update):\n%s", golden, got)
	}
	if _, diags := hclsyntax.ParseConfig([]byte(got), "lab.hcl", hclStart()); diags.HasErrors() {
		t.Fatalf("the configuration is not HCL: %v", diags)
	}
}

// TestMixedServer drives an in-process mixed lab: its state and
// configuration name the simulated Hyper-V host; status lists that host's
// VMs as Hyper-V names their state; verify compares a prod VM with its
// replica there byte for byte, through the VHDX chain, and says which
// disk differs.
func TestMixedServer(t *testing.T) {
	ctx := context.Background()
	s, dir := startLabServer(t, drHyperV, smallVMs)
	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	hvDir := filepath.Join(dir, sitesDir, hypervDir)
	if st.DR != drHyperV || len(st.Sites) != 2 || st.Sites[1].Kind != siteHyperVSim || st.Sites[1].URL != "sim:"+hvDir {
		t.Fatalf("state: %+v", st)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, configDir, configFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`target "hyperv" "dr"`, `host = "sim:` + hvDir + `"`, `to   = "DR Switch"`, `target     = target.hyperv.dr`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("the configuration lacks %s:\n%s", want, cfg)
		}
	}

	// verify before any run: no replica yet, and it says what to do.
	if out, err := cli(t, dir, "verify", "app-01"); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "has 'ferry run' replicated app-01 yet?") {
		t.Fatalf("verify without a replica: %v\n%s", err, out)
	}

	// A replica made on the simulated host by hand, holding app-01's
	// bytes: the same; then one block changed: that disk differs.
	hv, err := simhost.Open(hvDir)
	if err != nil {
		t.Fatal(err)
	}
	sizes, err := s.prod.DiskSizes("app-01")
	if err != nil {
		t.Fatal(err)
	}
	spec := host.VMSpec{Name: "app-01_replica", Generation: 2, CPUs: 1, MemoryMiB: 512, NICs: []host.NICSpec{{Switch: drSwitch,
		Guest: host.GuestNetwork{Addresses: []string{"10.2.0.31/24"}}}}}
	for _, size := range sizes {
		spec.Disks = append(spec.Disks, host.DiskSpec{Controller: "scsi", Location: len(spec.Disks), Capacity: size})
	}
	v, err := hv.CreateVM(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	for d := range sizes {
		if err := hv.GuestWrite(ctx, v.ID, d, 0, s.prod.Disk(t, "app-01", d)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hv.CreateCheckpoint(ctx, v.ID, host.CheckpointRequest{Name: "p1", Type: host.Standard}); err != nil {
		t.Fatal(err)
	}
	out, err := cli(t, dir, "verify", "app-01", "--json")
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	var got Verify
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.Replica != "app-01_replica" || got.Point != "p1" || len(got.Disks) != 2 || !got.Disks[0].Equal || !got.Disks[1].Equal || got.Disks[1].Size != sizes[1] ||
		len(got.Disks[0].Chain) != 1 || !strings.HasSuffix(got.Disks[0].Chain[0], "disk0.vhdx") || got.Disks[0].Source != got.Disks[0].Replica {
		t.Fatalf("verify: %+v", got)
	}
	// What is written after the newest restore point is not judged; a
	// newer point holding it differs, read through its chain.
	if err := hv.GuestWrite(ctx, v.ID, 1, 4096, []byte("not the source")); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(t, dir, "verify", "app-01"); err != nil {
		t.Fatalf("verify with writes after the newest point: %v\n%s", err, out)
	}
	if _, err := hv.CreateCheckpoint(ctx, v.ID, host.CheckpointRequest{Name: "p2", Type: host.Standard}); err != nil {
		t.Fatal(err)
	}
	out, err = cli(t, dir, "verify", "app-01")
	if !errors.Is(err, errdefs.ErrDataLoss) || !strings.Contains(err.Error(), "app-01 and app-01_replica differ: disk 1") ||
		!strings.Contains(out, `app-01_replica disk 0 at checkpoint "p2": sha256 `+got.Disks[0].Source+": the same") || !strings.Contains(out, ": DIFFERENT") ||
		!strings.Contains(out, ".avhdx -> disk1.vhdx") {
		t.Fatalf("verify of a changed replica: %v\n%s", err, out)
	}

	// status: the host's VMs, addresses only while running.
	status := func() VMStatus {
		t.Helper()
		out, err := cli(t, dir, "status", "--json")
		if err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		var st Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		dr := st.Sites[1]
		if dr.Kind != siteHyperVSim || len(dr.VMs) != 1 {
			t.Fatalf("status of dr: %+v", dr)
		}
		return dr.VMs[0]
	}
	if vm := status(); vm.PowerState != "Off" || vm.IPAddress != "" || vm.Generation != 2 || vm.Snapshots != 2 || len(vm.Disks) != 2 || vm.NICs[0].Network != drSwitch {
		t.Fatalf("a stopped replica: %+v", vm)
	}
	if err := hv.SetRunning(ctx, v.ID, true); err != nil {
		t.Fatal(err)
	}
	if vm := status(); vm.PowerState != "Running" || vm.IPAddress != "10.2.0.31" {
		t.Fatalf("a running replica: %+v", vm)
	}
	if out, err := cli(t, dir, "status"); err != nil || !strings.Contains(out, "(a simulated Hyper-V host, not Hyper-V)") ||
		!strings.Contains(out, "app-01_replica  Running  10.2.0.31") {
		t.Fatalf("status: %v\n%s", err, out)
	}
}
