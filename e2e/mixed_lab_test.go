package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// TestMixedLab drives the mixed lab through the real binaries, as the
// README's quick tour does: ferry lab up --dr hyperv (prod a simulated
// vCenter, dr the simulated Hyper-V host), validate, a plan that shows
// each replica's hardware against its VM's, a full run and an
// incremental one with changed block tracking, lab verify (and libvhdi
// reading each replica disk's VHDX chain to the source's bytes), the
// replicas as built on the host (generation, IDE boot disk, boot order,
// Secure Boot), a failover whose replica the host reports running on the
// DR Switch with the re-IP'd address, undo, a hardware_map that cannot
// boot refused by validate at its line, and down.
func TestMixedLab(t *testing.T) {
	ctx := context.Background()
	plugins := labProgramDir(t) // ferry-plugin-hyperv is in bin, beside ferry
	dir := filepath.Join(t.TempDir(), "lab")
	cfg := filepath.Join(dir, "config")
	env := []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=" + plugins}
	labCmd := func(args ...string) result {
		t.Helper()
		return runEnv(t, nil, env, "ferry", append([]string{"lab"}, append(args, "--dir", dir)...)...)
	}
	ferryLab := func(args ...string) result {
		t.Helper()
		return runEnv(t, nil, env, "ferry", append([]string{"-C", cfg}, args...)...)
	}

	r := labCmd("up", "--dr", "hyperv")
	if r.code != 0 {
		t.Fatalf("lab up --dr hyperv: %s\nlog:\n%s", r, readFile(t, filepath.Join(dir, "lab.log")))
	}
	var state struct {
		PID int    `json:"pid"`
		DR  string `json:"dr"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "lab.json"))), &state); err != nil || state.PID == 0 || state.DR != "hyperv" {
		t.Fatalf("lab.json: %v %+v", err, state)
	}
	t.Cleanup(func() {
		if !gone(state.PID) {
			if p, err := os.FindProcess(state.PID); err == nil {
				p.Kill()
			}
		}
	})
	hvDir := filepath.Join(dir, "sites", "hyperv-dr")
	for _, want := range []string{"The mixed lab is up in " + dir, "sim:" + hvDir + "  a simulated Hyper-V host (not Hyper-V)",
		"-C " + cfg + " plan", "lab verify --dir " + dir + " web-01", "-C " + cfg + " failover lab web-01"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("lab up does not print %q:\n%s", want, r.stdout)
		}
	}
	if r := ferryLab("validate"); r.code != 0 {
		t.Fatalf("validate: %s", r)
	}

	// The plan: every hardware change, the hardware_map's included.
	r = ferryLab("plan", "--json")
	var plans []struct {
		Decisions struct {
			VMs []struct {
				VM       string        `json:"vm"`
				Hardware *planHardware `json:"hardware"`
			} `json:"vms"`
		} `json:"decisions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plans); err != nil || r.code != 0 {
		t.Fatalf("plan --json: %v\n%s", err, r)
	}
	changes := map[string]string{}
	for _, p := range plans {
		for _, d := range p.Decisions.VMs {
			if d.Hardware != nil {
				changes[d.VM] = strings.Join(d.Hardware.changes(), ",")
			}
		}
	}
	for vm, want := range map[string]string{
		"web-01": "generation: none -> 1,disk 0: scsi0:0 (pvscsi) -> ide0:0,disk 1: scsi0:1 (pvscsi) -> scsi0:1 (hyperv-synthetic),nic 0: vmxnet3 -> hyperv-synthetic",
		"app-01": "generation: none -> 2,secure boot: off -> on,secure boot template: none -> microsoft-windows,disk 0: scsi0:0 (lsilogic-sas) -> scsi0:0 (hyperv-synthetic),nic 0: e1000e -> hyperv-synthetic",
	} {
		if changes[vm] != want {
			t.Errorf("plan of %s: hardware changes\n  %s\nwant\n  %s", vm, changes[vm], want)
		}
	}
	if r := ferryLab("plan"); r.code != 0 || !strings.Contains(r.stdout, "secure boot: off -> on (hardware_map sets secure_boot at "+filepath.Join(cfg, "lab.hcl")+":") {
		t.Fatalf("plan does not say the hardware_map asks for Secure Boot:\n%s", r)
	}

	runJSON := func() session {
		t.Helper()
		r := ferryLab("run", "--json", "lab")
		var s session
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || r.code != 0 || s.Result != "success" {
			t.Fatalf("ferry run: %v\n%s", err, r)
		}
		return s
	}
	if first := runJSON(); first.modes() != "full,full,full" {
		t.Fatalf("first run: modes %s", first.modes())
	}
	// Both VMs change, so that each newest restore point is a
	// differencing disk holding writes: libvhdi and the lab then judge
	// blocks the incremental run wrote, not only the full copy's. (An
	// empty one reads as its parent, to libvhdi too, since
	// vhdx.CreateDifferencing gives every chunk a sector bitmap block.)
	for _, vm := range []string{"web-01", "app-01"} {
		if r := labCmd("write", vm, "--count", "8"); r.code != 0 {
			t.Fatalf("lab write: %s", r)
		}
	}
	if second := runJSON(); second.modes() != "change-tracking,change-tracking,change-tracking" {
		t.Fatalf("second run: modes %s", second.modes())
	}

	// Each replica disk's newest restore point holds its VM's bytes: the
	// lab reads it through the VHDX chain, and so does libvhdi.
	verify := func(vm string) {
		t.Helper()
		r := labCmd("verify", vm, "--json")
		var v struct {
			Disks []struct {
				Source string   `json:"source_sha256"`
				Equal  bool     `json:"equal"`
				Chain  []string `json:"chain"`
			} `json:"disks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 || len(v.Disks) == 0 {
			t.Fatalf("lab verify %s: %v\n%s", vm, err, r)
		}
		for d, disk := range v.Disks {
			if !disk.Equal || len(disk.Chain) == 0 {
				t.Fatalf("lab verify %s disk %d: %+v", vm, d, disk)
			}
			if got := sdktest.LibvhdiDigest(t, disk.Chain...); got != disk.Source {
				t.Errorf("%s disk %d: libvhdi reads %s from the replica's chain, the source holds %s", vm, d, got, disk.Source)
			}
		}
	}
	verify("web-01")
	verify("app-01")

	// The replicas as the simulated host built them.
	hv, err := simhost.Open(hvDir)
	if err != nil {
		t.Fatal(err)
	}
	web, err := hv.GetVM(ctx, "web-01_replica")
	if err != nil {
		t.Fatal(err)
	}
	if web.Generation != 1 || web.Disks[0].Controller != "ide" || web.Disks[1].Controller != "scsi" || fmt.Sprint(web.BootOrder) != "[disk 0]" {
		t.Fatalf("web-01's replica: %+v", web)
	}
	app, err := hv.GetVM(ctx, "app-01_replica")
	if err != nil {
		t.Fatal(err)
	}
	if app.Generation != 2 || !app.SecureBoot || app.SecureBootTemplate != "microsoft-windows" || fmt.Sprint(app.BootOrder) != "[disk 0]" {
		t.Fatalf("app-01's replica: %+v", app)
	}

	r = ferryLab("failover", "lab", "web-01")
	if r.code != 0 || !strings.Contains(r.stdout, `network "DR Switch", addresses 10.2.0.11/24, gateway 10.2.0.1`) {
		t.Fatalf("failover: %s", r)
	}
	replica := func() (power, ip string, nics []string) {
		t.Helper()
		r := labCmd("status", "--json")
		var st labStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || len(st.Problems) > 0 {
			t.Fatalf("lab status: %v\n%s", err, r)
		}
		for _, s := range st.Sites {
			for _, vm := range s.VMs {
				if s.Name == "dr" && vm.Name == "web-01_replica" {
					for _, n := range vm.NICs {
						nics = append(nics, n.Network+" "+strings.Join(n.Addresses, " "))
					}
					return vm.PowerState, vm.IPAddress, nics
				}
			}
		}
		t.Fatalf("lab status shows no web-01_replica on dr:\n%s", r.stdout)
		return
	}
	if power, ip, nics := replica(); power != "Running" || ip != "10.2.0.11" || strings.Join(nics, ",") != "DR Switch 10.2.0.11" {
		t.Fatalf("the failed-over replica: %s, guest IP %q, NICs %v", power, ip, nics)
	}
	if r := labCmd("status"); r.code != 0 || !strings.Contains(r.stdout, "web-01_replica  Running  10.2.0.11") {
		t.Fatalf("lab status:\n%s", r)
	}
	if r := ferryLab("failover", "undo", "lab", "web-01"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	if power, ip, _ := replica(); power != "Off" || ip != "" {
		t.Fatalf("after undo the replica is %s with %q", power, ip)
	}
	verify("web-01")
	if third := runJSON(); third.vm("web-01").Disks[0].Mode != "change-tracking" {
		t.Fatalf("the run after undo: %+v", third.vm("web-01"))
	}

	// A hardware_map no VM can boot with is refused at its line.
	hcl := readFile(t, filepath.Join(cfg, "lab.hcl"))
	bad := strings.Replace(hcl, "      secure_boot = true\n", "      secure_boot = true\n      generation  = 2\n      boot_bus    = \"ide\"\n", 1)
	if bad == hcl {
		t.Fatal("the configuration has no secure_boot line for app-01")
	}
	if err := os.WriteFile(filepath.Join(cfg, "lab.hcl"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	line := strings.Count(bad[:strings.Index(bad, "boot_bus    =")], "\n") + 1
	r = ferryLab("validate", "--json")
	var diags []struct {
		Summary, Detail, File string
		Line                  int
	}
	if err := json.Unmarshal([]byte(r.stdout), &diags); err != nil || r.code != 1 || len(diags) != 1 || diags[0].Line != line ||
		!strings.HasSuffix(diags[0].File, "lab.hcl") || diags[0].Summary != "Replica cannot boot" ||
		!strings.Contains(diags[0].Detail, "puts the boot disk on ide, but generation 2 of target.hyperv.dr boots from scsi only") {
		t.Fatalf("validate of generation 2 booting from IDE (line %d): %v %+v\n%s", line, err, diags, r)
	}

	if r := labCmd("down"); r.code != 0 || !strings.Contains(r.stdout, "is stopped") {
		t.Fatalf("lab down: %s", r)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after down %s is still there: %v", dir, err)
	}
}
