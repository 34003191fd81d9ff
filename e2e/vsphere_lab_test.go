package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/core/catalog"
)

// labBuild builds ferry-lab-vsphere once, beside ferry-plugin-vsphere.
var labBuild struct {
	once sync.Once
	err  error
}

func labProgramDir(t *testing.T) string {
	t.Helper()
	dir := vspherePluginDir(t)
	labBuild.once.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "ferry-lab-vsphere"), "../plugins/vsphere/cmd/ferry-lab-vsphere").CombinedOutput()
		if err != nil {
			labBuild.err = fmt.Errorf("build ferry-lab-vsphere: %v\n%s", err, out)
		}
	})
	if labBuild.err != nil {
		t.Fatal(labBuild.err)
	}
	return dir
}

// labStatus is the part of `ferry lab status --json` the test reads.
type labStatus struct {
	Sites []struct {
		Name string `json:"name"`
		VMs  []struct {
			Name       string `json:"name"`
			PowerState string `json:"power_state"`
			IPAddress  string `json:"ip_address"`
			NICs       []struct {
				Network   string   `json:"network"`
				Addresses []string `json:"addresses"`
			} `json:"nics"`
			Snapshots int `json:"snapshots"`
		} `json:"vms"`
	} `json:"sites"`
	Problems []string `json:"problems"`
}

// gone reports whether a process has exited (a zombie nobody reaped yet
// counts as exited).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) {
		return b[i+2] == 'Z'
	}
	return false
}

// TestVSphereLab drives `ferry lab` through the real binaries, as the
// README's quick start does: up (and a second up refused), validate, a
// full run, a guest write through the lab, an incremental run with
// changed block tracking that sends little, restore points, a failover
// whose replica the simulator reports with the re-IP'd address, undo, and
// down (the server gone, the folder removed, a second down refused).
func TestVSphereLab(t *testing.T) {
	plugins := labProgramDir(t)
	dir := filepath.Join(t.TempDir(), "lab")
	cfg := filepath.Join(dir, "config")

	// Without ferry-plugin-vsphere where ferry looks, up refuses before
	// starting anything.
	only := t.TempDir()
	if err := os.Symlink(filepath.Join(plugins, "ferry-lab-vsphere"), filepath.Join(only, "ferry-lab-vsphere")); err != nil {
		t.Fatal(err)
	}
	r := runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=" + only}, "ferry", "lab", "up", "--dir", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "finds no ferry-plugin-vsphere") {
		t.Fatalf("up without the vsphere plugin: %s", r)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused up made %s: %v", dir, err)
	}

	env := []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=" + plugins}
	labCmd := func(args ...string) result {
		t.Helper()
		return runEnv(t, nil, env, "ferry", append([]string{"lab"}, append(args, "--dir", dir)...)...)
	}
	ferryLab := func(args ...string) result {
		t.Helper()
		return runEnv(t, nil, env, "ferry", append([]string{"-C", cfg}, args...)...)
	}

	r = labCmd("up")
	if r.code != 0 {
		t.Fatalf("lab up: %s\nlog:\n%s", r, readFile(t, filepath.Join(dir, "lab.log")))
	}
	var state struct {
		PID    int    `json:"pid"`
		Socket string `json:"socket"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "lab.json"))), &state); err != nil || state.PID == 0 {
		t.Fatalf("lab.json: %v %+v", err, state)
	}
	t.Cleanup(func() {
		// A failed test must not leave the server running.
		if !gone(state.PID) {
			if p, err := os.FindProcess(state.PID); err == nil {
				p.Kill()
			}
		}
	})
	for _, want := range []string{"The lab is up in " + dir, "-C " + cfg + " run lab", "lab write --dir " + dir + " web-01", "lab down --dir " + dir} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("lab up does not print %q:\n%s", want, r.stdout)
		}
	}
	if r := labCmd("up"); r.code != 1 || !strings.Contains(r.stderr, "a lab is already running in "+dir) {
		t.Fatalf("a second up: %s", r)
	}
	if r := ferryLab("validate"); r.code != 0 {
		t.Fatalf("validate: %s", r)
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
	first := runJSON()
	if first.modes() != "full,full,full,full" || first.Totals.BytesSent < 64<<20 {
		t.Fatalf("first run: modes %s, %d bytes sent", first.modes(), first.Totals.BytesSent)
	}

	r = labCmd("write", "web-01", "--count", "8", "--json")
	var writes []struct{ Disk, Offset, Length int64 }
	if err := json.Unmarshal([]byte(r.stdout), &writes); err != nil || r.code != 0 || len(writes) != 8 {
		t.Fatalf("lab write: %v\n%s", err, r)
	}
	var written int64
	for _, w := range writes {
		written += w.Length
	}
	second := runJSON()
	if second.modes() != "change-tracking,change-tracking,change-tracking,change-tracking" {
		t.Fatalf("second run: modes %s", second.modes())
	}
	// Changed block tracking reports 64 KiB blocks: a write of up to 64
	// KiB touches at most two.
	web := second.vm("web-01")
	var sent int64
	for _, d := range web.Disks {
		sent += d.BytesSent
	}
	if sent == 0 || sent > int64(len(writes))*128<<10 || second.Totals.BytesSent != sent {
		t.Fatalf("second run sent %d bytes for web-01 (%d written by the guest), %d in all", sent, written, second.Totals.BytesSent)
	}

	r = ferryLab("points", "--json", "lab", "web-01")
	var points []catalog.RestorePoint
	if err := json.Unmarshal([]byte(r.stdout), &points); err != nil || r.code != 0 || len(points) != 2 {
		t.Fatalf("ferry points: %v, %d restore points of web-01, want 2\n%s", err, len(points), r)
	}

	r = ferryLab("failover", "lab", "web-01", "--point", points[0].ID)
	if r.code != 0 || !strings.Contains(r.stdout, `network "DR Network", addresses 10.2.0.11/24, gateway 10.2.0.1`) {
		t.Fatalf("failover: %s", r)
	}
	replica := func() (power, ip, network string, addrs []string) {
		t.Helper()
		r := labCmd("status", "--json")
		var st labStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || len(st.Problems) > 0 {
			t.Fatalf("lab status: %v\n%s", err, r)
		}
		for _, s := range st.Sites {
			for _, vm := range s.VMs {
				if s.Name == "dr" && vm.Name == "web-01_replica" && len(vm.NICs) == 1 {
					return vm.PowerState, vm.IPAddress, vm.NICs[0].Network, vm.NICs[0].Addresses
				}
			}
		}
		t.Fatalf("lab status shows no web-01_replica with one NIC on dr:\n%s", r.stdout)
		return
	}
	if power, ip, network, addrs := replica(); power != "poweredOn" || ip != "10.2.0.11" || network != "DR Network" || strings.Join(addrs, ",") != "10.2.0.11" {
		t.Fatalf("the failed-over replica: %s, guest IP %q, NIC on %q with %v", power, ip, network, addrs)
	}
	if r := labCmd("status"); r.code != 0 || !strings.Contains(r.stdout, "web-01_replica  poweredOn   10.2.0.11") {
		t.Fatalf("lab status:\n%s", r)
	}
	if r := ferryLab("failover", "undo", "lab", "web-01"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	if power, _, _, _ := replica(); power != "poweredOff" {
		t.Fatalf("after undo the replica is %s", power)
	}
	third := runJSON()
	if third.vm("web-01").Disks[0].Mode != "change-tracking" {
		t.Fatalf("the run after undo: %+v", third.vm("web-01"))
	}

	r = labCmd("down")
	if r.code != 0 || !strings.Contains(r.stdout, "is stopped") {
		t.Fatalf("lab down: %s", r)
	}
	if !gone(state.PID) {
		t.Fatalf("the lab's server (pid %d) is still running after down", state.PID)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after down %s is still there: %v", dir, err)
	}
	if _, err := os.Stat(state.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after down the socket %s is still there: %v", state.Socket, err)
	}
	if r := labCmd("down"); r.code != 1 || !strings.Contains(r.stderr, "no lab in "+dir) {
		t.Fatalf("a second down: %s", r)
	}
}
