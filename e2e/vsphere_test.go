package e2e

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmware/govmomi/vim25/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/plugins/vsphere"
	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// vsLab is a two-site vSphere lab on the simulator, running in this test
// process: prod (the source) and dr (the target) are two simulated
// vCenters; ferry and ferry-plugin-vsphere run as subprocesses against
// their URLs, over verified TLS (a CA file for prod, a pinned thumbprint
// for dr).
type vsLab struct {
	t        *testing.T
	prod, dr *vcsimtest.Site
	dir, cfg string
	rng      *rand.Rand
	disks    map[string][]int64
	// tgtAttrs, when set, replace the target's local_datastore_paths in
	// target(): the attributes of a target that writes through HotAdd.
	tgtAttrs map[string]cty.Value
}

type vsVM struct {
	name  string
	disks []int64
	ip    string // CIDR on "VM Network"
}

const vsPasswordEnv = "FERRY_E2E_VSPHERE_PASSWORD"

// vsBuild builds ferry-plugin-vsphere once, into a folder of its own under
// bin: ferry finds it in each lab's configuration folder (plugins/), and
// the tests that list bin's plugins see only the local one.
var vsBuild struct {
	once sync.Once
	dir  string
	err  error
}

func vspherePluginDir(t *testing.T) string {
	t.Helper()
	vsBuild.once.Do(func() {
		vsBuild.dir = filepath.Join(bin, "vsphere")
		out, err := exec.Command("go", "build", "-o", filepath.Join(vsBuild.dir, "ferry-plugin-vsphere"), "../plugins/vsphere/cmd/ferry-plugin-vsphere").CombinedOutput()
		if err != nil {
			vsBuild.err = fmt.Errorf("build ferry-plugin-vsphere: %v\n%s", err, out)
		}
	})
	if vsBuild.err != nil {
		t.Fatal(vsBuild.err)
	}
	return vsBuild.dir
}

func newVSLab(t *testing.T, retention int, transport string, vms ...vsVM) *vsLab {
	t.Helper()
	return newVSLabDR(t, retention, transport, vcsimtest.Options{}, vms...)
}

// newVSLabDR is newVSLab with options for the dr site (its name and
// networks are set here).
func newVSLabDR(t *testing.T, retention int, transport string, dr vcsimtest.Options, vms ...vsVM) *vsLab {
	t.Helper()
	l := &vsLab{t: t, dir: t.TempDir(), rng: rand.New(rand.NewPCG(uint64(len(t.Name())), 11)), disks: map[string][]int64{}}
	l.prod = vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	dr.Name, dr.Networks = "dr", []string{"DR Network"}
	l.dr = vcsimtest.Start(t, dr)
	if l.prod.Password != l.dr.Password {
		t.Fatal("the sites have different passwords")
	}
	t.Setenv(vsPasswordEnv, l.prod.Password)
	var names []string
	for _, vm := range vms {
		l.prod.CreateVM(t, vcsimtest.VMSpec{Name: vm.name, Disks: vm.disks, CPUs: 2, MemoryMB: 1024, PoweredOn: true, Tools: true,
			NICs: []vcsimtest.NICSpec{{Network: "VM Network", Addresses: []string{vm.ip}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.53"}}}})
		l.disks[vm.name] = vm.disks
		names = append(names, fmt.Sprintf("%q", vm.name))
	}
	l.cfg = filepath.Join(l.dir, "config")
	plugins := filepath.Join(l.cfg, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(vspherePluginDir(t), "ferry-plugin-vsphere"), filepath.Join(plugins, "ferry-plugin-vsphere")); err != nil {
		t.Fatal(err)
	}
	l.writeConfig(fmt.Sprintf(`
source "vsphere" "prod" {
  url        = %q
  username   = %q
  password   = env(%q)
  ca_file    = %q
  datacenter = "DC0"
  transport  = %q
  local_datastore_paths = { LocalDS_0 = %q }
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
  source     = source.vsphere.prod
  target     = target.vsphere.dr
  repository = repository.local.meta
  vms        = [%s]
  quiesce    = true
  retention { restore_points = %d }
  network_map {
    from = "VM Network"
    to   = "DR Network"
  }
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    gateway     = "10.2.0.1"
    dns         = ["10.2.0.53"]
  }
}
`, l.prod.URL, l.prod.Username, vsPasswordEnv, l.prod.CAFile, transport, l.prod.Datastores["LocalDS_0"],
		l.dr.URL, l.dr.Username, vsPasswordEnv, l.dr.Thumbprint, l.dr.Datastores["LocalDS_0"],
		strings.Join(names, ", "), retention))
	return l
}

func (l *vsLab) writeConfig(hcl string) {
	(&lab{t: l.t, cfg: l.cfg}).writeConfig(hcl)
}

// write writes n bytes of disk-like data at off, as the guest would.
func (l *vsLab) write(vm string, disk int, off int64, n int) {
	l.t.Helper()
	l.prod.Write(l.t, vm, disk, off, (&lab{rng: l.rng}).data(n))
}

// scatter makes count writes of 4-64 KiB at random places.
func (l *vsLab) scatter(vm string, disk int, count int) {
	l.t.Helper()
	size := l.disks[vm][disk]
	for range count {
		n := 4096 * (1 + l.rng.IntN(16))
		l.write(vm, disk, l.rng.Int64N(size-int64(n)), n)
	}
}

// state is every source disk as it is now.
func (l *vsLab) state() map[string][][]byte {
	s := map[string][][]byte{}
	for vm, disks := range l.disks {
		for d := range disks {
			s[vm] = append(s[vm], l.prod.Disk(l.t, vm, d))
		}
	}
	return s
}

func (l *vsLab) run() session {
	l.t.Helper()
	return (&lab{t: l.t, cfg: l.cfg}).run()
}

func (l *vsLab) points(vm string) []string {
	l.t.Helper()
	var ids []string
	for _, p := range (&lab{t: l.t, cfg: l.cfg}).points(vm) {
		ids = append(ids, p.ID)
	}
	return ids
}

// configValue is a block's value as the host decodes it: the attributes
// given, the others null.
func configValue(kind sdk.Kind, attrs map[string]cty.Value) cty.Value {
	p := vsphere.Plugin()
	b := p.Sources["vsphere"].Schema
	if kind == sdk.KindTarget {
		b = p.Targets["vsphere"].Schema
	}
	vals := map[string]cty.Value{}
	for name, a := range b.Attributes {
		vals[name] = cty.NullVal(a.Type)
		if v, ok := attrs[name]; ok {
			vals[name] = v
		}
	}
	return cty.ObjectVal(vals)
}

// target connects to the dr site through the real plugin binary.
func (l *vsLab) target() sdk.Target {
	l.t.Helper()
	h := pluginhost.New(pluginhost.Options{Dirs: []string{vspherePluginDir(l.t)}})
	l.t.Cleanup(func() { h.Close() })
	attrs := map[string]cty.Value{
		"url": cty.StringVal(l.dr.URL), "username": cty.StringVal(l.dr.Username), "password": cty.StringVal(l.dr.Password),
		"ca_file": cty.StringVal(l.dr.CAFile), "datastore": cty.StringVal("LocalDS_0"), "cluster": cty.StringVal("DC0_C0"),
		"local_datastore_paths": cty.MapVal(map[string]cty.Value{"LocalDS_0": cty.StringVal(l.dr.Datastores["LocalDS_0"])}),
	}
	if l.tgtAttrs != nil {
		delete(attrs, "local_datastore_paths")
		maps.Copy(attrs, l.tgtAttrs)
	}
	tgt, _, err := h.Target(context.Background(), "vsphere", configValue(sdk.KindTarget, attrs))
	if err != nil {
		l.t.Fatal(err)
	}
	return tgt
}

// readPoint reads a disk of a replica's restore point through the plugin.
func readPoint(t *testing.T, tgt sdk.Target, replica, point string, disk int) []byte {
	t.Helper()
	r, err := tgt.OpenRestorePointDisk(context.Background(), replica, point, disk)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, r.Size())
	if n, err := r.ReadAt(buf, 0); n != len(buf) {
		t.Fatalf("read point %s disk %d: %d of %d bytes: %v", point, disk, n, len(buf), err)
	}
	return buf
}

// TestVSphereEndToEnd drives ferry through the real vSphere plugin binary
// against two simulated vCenters: a full first run over the direct lane,
// incremental runs with changed block tracking, a tracking reset (digests),
// retention, failover with network map and re-IP (the simulator reports
// the new address after power-on), undo, replication after it, and a
// commit. Every kept restore point reads back byte for byte the source
// state it froze.
func TestVSphereEndToEnd(t *testing.T) {
	l := newVSLab(t, 3, "auto",
		vsVM{name: "web-01", disks: []int64{16 << 20, 4 << 20}, ip: "10.1.0.11/24"},
		vsVM{name: "db-01", disks: []int64{12 << 20}, ip: "10.1.7.21/24"},
	)
	l.write("web-01", 0, 0, 3*mib)
	l.write("web-01", 1, mib, mib)
	l.write("db-01", 0, 2*mib, 4*mib)

	var states []map[string][][]byte
	runOK := func(want map[string]string) session {
		t.Helper()
		states = append(states, l.state())
		s := l.run()
		if s.code != 0 || s.Result != "success" {
			t.Fatalf("run %d: exit %d, %s: %+v\n%s", len(states), s.code, s.Result, s.VMs, s.stderr)
		}
		for vm, modes := range want {
			var got []string
			for _, d := range s.vm(vm).Disks {
				got = append(got, string(d.Mode)+"/"+string(d.Lane))
			}
			if strings.Join(got, ",") != modes {
				t.Fatalf("run %d, %s: disks %s, want %s", len(states), vm, strings.Join(got, ","), modes)
			}
		}
		return s
	}

	// 1: the first copy: all allocated data, read and written directly
	// (the datastores are mapped on both sides).
	first := runOK(map[string]string{"web-01": "full/direct,full/direct", "db-01": "full/direct"})
	if first.Totals.BytesSent > 10*mib {
		t.Fatalf("the first run sent %d bytes for 8 MiB of data", first.Totals.BytesSent)
	}
	replica := l.dr.VM(t, "web-01_replica")
	if replica.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff || replica.Config.Hardware.NumCPU != 2 {
		t.Fatalf("replica %s: %s, %d CPUs", replica.Name, replica.Runtime.PowerState, replica.Config.Hardware.NumCPU)
	}

	// 2: guest writes; changed block tracking finds them.
	l.scatter("web-01", 0, 20)
	l.scatter("db-01", 0, 5)
	second := runOK(map[string]string{"web-01": "change-tracking/direct,change-tracking/direct", "db-01": "change-tracking/direct"})
	if second.Totals.BytesSent > 2*mib {
		t.Fatalf("an incremental run sent %d bytes for 25 small writes", second.Totals.BytesSent)
	}

	// 3: tracking of db-01 is reset (switched off and on) and its disk
	// changed behind tracking's back: the run compares digests.
	l.prod.ResetCBT(t, "db-01")
	l.prod.WriteUntracked(t, "db-01", 0, 9*mib, make([]byte, 64<<10))
	l.write("db-01", 0, 10*mib, 64<<10)
	l.scatter("web-01", 1, 3)
	third := runOK(map[string]string{"web-01": "change-tracking/direct,change-tracking/direct", "db-01": "digest/direct"})
	if d := third.vm("db-01").Disks[0]; d.BytesSent > 2*mib {
		t.Fatalf("the digest path sent %d bytes", d.BytesSent)
	}

	// 4: more writes, and web-01's second disk grows from 4 to 6 MiB with
	// data past its old end: the replica disk grows although it has
	// restore points (vSphere, and the simulator's double, refuse to
	// extend a disk with snapshots; the target takes them away and back).
	// Retention keeps the newest 3 points of 4.
	l.scatter("web-01", 0, 5)
	l.scatter("db-01", 0, 5)
	l.prod.ResizeDisk(t, "web-01", 1, 6*mib)
	l.write("web-01", 1, 5*mib, mib/2)
	grown := runOK(map[string]string{"web-01": "change-tracking/direct,change-tracking/direct", "db-01": "change-tracking/direct"})
	if d := grown.vm("web-01").Disks[1]; d.Size != 6*mib || d.BytesSent > 2*mib {
		t.Fatalf("the grown disk: %d bytes, %d sent", d.Size, d.BytesSent)
	}

	tgt := l.target()
	for vm, n := range map[string]int{"web-01": 2, "db-01": 1} {
		points := l.points(vm)
		if len(points) != 3 {
			t.Fatalf("%s has %d restore points, want 3", vm, len(points))
		}
		for i, p := range points {
			for d := range n {
				sameBytes(t, fmt.Sprintf("%s point %d (%s) disk %d", vm, i+2, p, d), readPoint(t, tgt, vm+"_replica", p, d), states[i+1][vm][d])
			}
		}
		// The replica's working images are the newest state.
		for d := range n {
			sameBytes(t, fmt.Sprintf("%s replica disk %d", vm, d), l.dr.Disk(t, vm+"_replica", d), states[3][vm][d])
		}
		// No ferry snapshot is left at the source.
		if snap := l.prod.VM(t, vm).Snapshot; snap != nil && len(snap.RootSnapshotList) > 0 {
			t.Fatalf("%s: snapshots left at the source: %+v", vm, snap.RootSnapshotList)
		}
		if rs := l.dr.VM(t, vm+"_replica").Snapshot; rs == nil || len(rs.RootSnapshotList) == 0 {
			t.Fatalf("%s: the replica has no snapshots for its restore points", vm)
		}
	}

	// Failover of db-01 to its oldest kept point: NIC mapped, re-IP'd by
	// guest customization, powered on.
	oldest := l.points("db-01")[0]
	r := ferry(t, l.cfg, "failover", "e2e", "db-01", "--point", oldest)
	if r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	if !strings.Contains(r.stdout, `network "DR Network", addresses 10.2.7.21/24, gateway 10.2.0.1`) {
		t.Fatalf("failover output does not show the mapped network and new address:\n%s", r.stdout)
	}
	failed := l.dr.VM(t, "db-01_replica")
	if failed.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || failed.Guest.IpAddress != "10.2.7.21" {
		t.Fatalf("the failed-over VM is %s and its guest reports %q, want on and 10.2.7.21", failed.Runtime.PowerState, failed.Guest.IpAddress)
	}
	sameBytes(t, "failed-over db-01 disk 0", l.dr.Disk(t, "db-01_replica", 0), states[1]["db-01"][0])

	// A run skips the failed-over VM, without failing, and goes on with
	// the other.
	s := l.run()
	if s.code != 0 || s.vm("web-01").Result != "success" || s.vm("db-01").Result != "skipped" || !strings.Contains(s.vm("db-01").Error, "is failed over") {
		t.Fatalf("run during a failover: exit %d, %+v", s.code, s.VMs)
	}

	// Undo: powered off, the working state and every point as they were,
	// replication goes on incrementally.
	if r := ferry(t, l.cfg, "failover", "undo", "e2e", "db-01"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	undone := l.dr.VM(t, "db-01_replica")
	if undone.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOff {
		t.Fatalf("after undo the replica is %s", undone.Runtime.PowerState)
	}
	sameBytes(t, "db-01 replica disk after undo", l.dr.Disk(t, "db-01_replica", 0), states[3]["db-01"][0])
	points := l.points("db-01")
	if len(points) != 3 {
		t.Fatalf("after undo db-01 has %d points", len(points))
	}
	for i, p := range points {
		sameBytes(t, fmt.Sprintf("db-01 point %s after undo", p), readPoint(t, tgt, "db-01_replica", p, 0), states[i+1]["db-01"][0])
	}
	l.scatter("db-01", 0, 3)
	runOK(map[string]string{"db-01": "change-tracking/direct"})
	newest := l.points("db-01")
	sameBytes(t, "db-01 newest point after undo", readPoint(t, tgt, "db-01_replica", newest[len(newest)-1], 0), states[len(states)-1]["db-01"][0])

	// Commit web-01: its replica becomes the production VM, running from
	// the newest point with no restore point left, and leaves the job.
	if r := ferry(t, l.cfg, "failover", "e2e", "web-01"); r.code != 0 {
		t.Fatalf("failover web-01: %s", r)
	}
	if r := ferry(t, l.cfg, "failover", "commit", "e2e", "web-01"); r.code != 0 || !strings.Contains(r.stdout, "committed") {
		t.Fatalf("commit: %s", r)
	}
	prod := l.dr.VM(t, "web-01_replica")
	if prod.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn || (prod.Snapshot != nil && len(prod.Snapshot.RootSnapshotList) > 0) {
		t.Fatalf("the committed VM is %s with snapshots %+v", prod.Runtime.PowerState, prod.Snapshot)
	}
	for d := range 2 {
		sameBytes(t, fmt.Sprintf("committed web-01 disk %d", d), l.dr.Disk(t, "web-01_replica", d), states[len(states)-1]["web-01"][d])
	}
	if s := l.run(); s.vm("web-01").Result != "failed" || !strings.Contains(s.vm("web-01").Error, "remove the VM from the job") {
		t.Fatalf("run after commit: %+v", s.vm("web-01"))
	}
}

// TestVSphereNetworkTransport replicates with the network transport: the
// plugin reads snapshot disks with ranged GETs on the datastore HTTP
// interface and streams them; the first run and an incremental one.
func TestVSphereNetworkTransport(t *testing.T) {
	l := newVSLab(t, 2, "network", vsVM{name: "app-01", disks: []int64{8 << 20}, ip: "10.1.3.3/24"})
	l.write("app-01", 0, 0, 2*mib)
	want := l.state()
	s := l.run()
	if s.code != 0 || len(s.vm("app-01").Disks) != 1 || s.vm("app-01").Disks[0].Lane != "stream" || s.vm("app-01").Disks[0].Mode != "full" {
		t.Fatalf("first run: exit %d %+v\n%s", s.code, s.VMs, s.stderr)
	}
	l.scatter("app-01", 0, 4)
	want2 := l.state()
	s = l.run()
	if s.code != 0 || s.vm("app-01").Disks[0].Mode != "change-tracking" {
		t.Fatalf("second run: exit %d %+v\n%s", s.code, s.VMs, s.stderr)
	}
	tgt := l.target()
	points := l.points("app-01")
	if len(points) != 2 {
		t.Fatalf("points %v", points)
	}
	sameBytes(t, "point 1", readPoint(t, tgt, "app-01_replica", points[0], 0), want["app-01"][0])
	sameBytes(t, "point 2", readPoint(t, tgt, "app-01_replica", points[1], 0), want2["app-01"][0])

	// An admin deletes the replica at dr ("Delete from disk"): the next
	// run creates it anew and fills it; the repository's digests of the
	// old one are not trusted.
	l.dr.Destroy(t, "app-01_replica")
	l.scatter("app-01", 0, 2)
	want3 := l.state()
	s = l.run()
	if s.code != 0 || s.vm("app-01").Disks[0].Mode != "full" || s.Totals.BytesSent < mib {
		t.Fatalf("run after the replica was deleted: exit %d, %d bytes sent, %+v\n%s", s.code, s.Totals.BytesSent, s.VMs, s.stderr)
	}
	points = l.points("app-01")
	if len(points) != 1 {
		t.Fatalf("points after the replica was deleted: %v", points)
	}
	sameBytes(t, "the new replica's point", readPoint(t, l.target(), "app-01_replica", points[0], 0), want3["app-01"][0])
}

// TestVSphereBadEndpoints: wrong credentials, an unreachable vCenter and a
// VM that disappeared are reported with what went wrong and where.
func TestVSphereBadEndpoints(t *testing.T) {
	l := newVSLab(t, 2, "auto", vsVM{name: "web-01", disks: []int64{4 << 20}, ip: "10.1.0.11/24"}, vsVM{name: "gone-01", disks: []int64{4 << 20}, ip: "10.1.0.12/24"})
	good := readFile(t, filepath.Join(l.cfg, "main.hcl"))

	// A VM that disappears from the source fails alone.
	l.prod.Destroy(t, "gone-01")
	s := l.run()
	if s.code != 1 || s.vm("web-01").Result != "success" || !strings.Contains(s.vm("gone-01").Error, `vm "gone-01"`) ||
		!strings.Contains(s.vm("gone-01").Error, "not found") {
		t.Fatalf("a VM that disappeared: exit %d, %+v", s.code, s.VMs)
	}

	t.Setenv(vsPasswordEnv, "not-the-password")
	r := ferry(t, l.cfg, "run", "e2e")
	if r.code == 0 || !strings.Contains(r.stderr, l.prod.URL) || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("wrong credentials: %s", r)
	}
	t.Setenv(vsPasswordEnv, l.prod.Password)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "https://" + ln.Addr().String() + "/sdk"
	ln.Close()
	l.writeConfig(strings.Replace(good, fmt.Sprintf("url        = %q", l.prod.URL), fmt.Sprintf("url        = %q", closed), 1))
	r = ferry(t, l.cfg, "run", "e2e")
	if r.code == 0 || !strings.Contains(r.stderr, closed) || !strings.Contains(r.stderr, "cannot be reached") {
		t.Fatalf("unreachable vCenter: %s", r)
	}
}

// TestVSpherePluginConformance runs the sdk's conformance suites on the
// vSphere plugin through its real binary (go-plugin handshake, gRPC, a
// separate process) against simulated vCenters: the source reading over
// the datastore HTTP interface, the target writing through its mount.
func TestVSpherePluginConformance(t *testing.T) {
	h := pluginhost.New(pluginhost.Options{Dirs: []string{vspherePluginDir(t)}})
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("stop the plugin: %v", err)
		}
	})
	ctx := context.Background()
	t.Run("source", func(t *testing.T) {
		t.Parallel()
		s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod", CBTWindow: 1 << 20})
		s.CreateVM(t, vcsimtest.VMSpec{Name: "conform", Disks: []int64{4 << 20, 1<<20 + 8<<10}, PoweredOn: true, Tools: true, Folder: "web"})
		s.Tag(t, "conform", "tier", "gold")
		src, caps, err := h.Source(ctx, "vsphere", configValue(sdk.KindSource, map[string]cty.Value{
			"url": cty.StringVal(s.URL), "username": cty.StringVal(s.Username), "password": cty.StringVal(s.Password),
			"thumbprint": cty.StringVal(s.Thumbprint),
			// Failback writes production through the mount.
			"local_datastore_paths": cty.MapVal(map[string]cty.Value{"LocalDS_0": cty.StringVal(s.Datastores["LocalDS_0"])}),
		}))
		if err != nil {
			t.Fatal(err)
		}
		sdktest.RunSource(t, sdktest.SourceFixture{
			New:                 func(*testing.T) sdk.Source { return src },
			Capabilities:        caps,
			VM:                  "conform",
			Folder:              "/DC0/vm/web",
			Tags:                []string{"tier/gold"},
			Write:               func(t *testing.T, vm string, disk int, off int64, data []byte) { s.Write(t, vm, disk, off, data) },
			ResetChangeTracking: func(t *testing.T, vm string, _ int) { s.ResetCBT(t, vm) },
		})
	})
	t.Run("target", func(t *testing.T) {
		t.Parallel()
		// "sdktest-lab" is where the suite's test failovers map a NIC;
		// "dr-isolated" the target's isolated network for the others.
		s := vcsimtest.Start(t, vcsimtest.Options{Name: "dr", Networks: []string{"prod-lan", "prod-backup", "prod-lan-dr", "prod-backup-dr", "sdktest-lab", "dr-isolated"}})
		tgt, caps, err := h.Target(ctx, "vsphere", configValue(sdk.KindTarget, map[string]cty.Value{
			"url": cty.StringVal(s.URL), "username": cty.StringVal(s.Username), "password": cty.StringVal(s.Password),
			"ca_file": cty.StringVal(s.CAFile), "datastore": cty.StringVal("LocalDS_0"), "cluster": cty.StringVal("DC0_C0"),
			"local_datastore_paths": cty.MapVal(map[string]cty.Value{"LocalDS_0": cty.StringVal(s.Datastores["LocalDS_0"])}),
			"isolated_network":      cty.StringVal("dr-isolated"),
		}))
		if err != nil {
			t.Fatal(err)
		}
		if !caps.TestFailover {
			t.Fatal("the vsphere target does not declare TestFailover")
		}
		sdktest.RunTarget(t, sdktest.TargetFixture{New: func(*testing.T) sdk.Target { return tgt }, Capabilities: caps,
			IsolatedNetwork: "dr-isolated",
			WriteTest: func(t *testing.T, id string, disk int, off int64, data []byte) {
				s.Write(t, "ferry-test-"+id, disk, off, data)
			},
			WriteFailedOver: func(t *testing.T, replica string, disk int, off int64, data []byte) {
				s.Write(t, replica, disk, off, data)
			},
			MakeVM: func(t *testing.T, name string, disks [][]byte) { plainVM(t, s, name, disks) },
		})
	})
}

// TestVSphereSelection selects VMs of a simulated vCenter by folder and by
// tag (the simulator's Automation API) through the real plugin binary: each
// picked VM is replicated once and reads back byte for byte, the excluded
// one never; a VM moved out of the folder keeps its replica and leaves the
// job. A tag selector on an ESXi host fails the run, saying why.
func TestVSphereSelection(t *testing.T) {
	l := newVSLab(t, 3, "auto",
		vsVM{name: "web-01", disks: []int64{4 << 20}, ip: "10.1.0.11/24"},
		vsVM{name: "web-02", disks: []int64{4 << 20}, ip: "10.1.0.12/24"},
		vsVM{name: "web-test", disks: []int64{4 << 20}, ip: "10.1.0.13/24"},
		vsVM{name: "db-01", disks: []int64{4 << 20}, ip: "10.1.7.21/24"},
	)
	l.prod.MoveVM(t, "web-01", "web")
	l.prod.MoveVM(t, "web-02", "web/frontend")
	l.prod.MoveVM(t, "web-test", "web")
	l.prod.Tag(t, "web-test", "ferry", "no-dr")
	l.prod.Tag(t, "db-01", "tier", "gold")
	l.prod.Tag(t, "web-01", "tier", "gold")
	for _, vm := range []string{"web-01", "web-02", "web-test", "db-01"} {
		l.write(vm, 0, 0, mib)
	}
	good := readFile(t, filepath.Join(l.cfg, "main.hcl"))
	vmsLine := `vms        = ["web-01", "web-02", "web-test", "db-01"]`
	selecting := strings.Replace(good, vmsLine, `vms        = ["folder:/DC0/vm/web", "tag:tier/gold"]
  exclude    = ["tag:ferry/no-dr"]`, 1)
	if selecting == good {
		t.Fatal("the lab's vms line changed; update the test")
	}
	l.writeConfig(selecting)

	r := ferry(t, l.cfg, "plan", "e2e")
	for _, want := range []string{
		"    selects folder:/DC0/vm/web: web-01, web-02, web-test\n",
		"    selects tag:tier/gold: db-01, web-01\n",
		"    excludes tag:ferry/no-dr: web-test\n",
		"  + web-02: create replica web-02_replica on target.vsphere.dr (new in folder:/DC0/vm/web)",
	} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("plan lacks %q: %s", want, r)
		}
	}
	want := l.state()
	s := l.run()
	if s.code != 0 || s.Result != "success" || len(s.VMs) != 3 {
		t.Fatalf("run: exit %d, %s: %+v\n%s", s.code, s.Result, s.VMs, s.stderr)
	}
	tgt := l.target()
	for _, vm := range []string{"web-01", "web-02", "db-01"} {
		points := l.points(vm)
		if len(points) != 1 {
			t.Fatalf("%s has %d points", vm, len(points))
		}
		sameBytes(t, vm+" point", readPoint(t, tgt, vm+"_replica", points[0], 0), want[vm][0])
	}
	if _, err := tgt.GetReplica(context.Background(), "web-test_replica"); err == nil {
		t.Fatal("the excluded VM was replicated")
	}

	// web-02 moves out of the folder: it leaves the job, its replica stays.
	l.prod.MoveVM(t, "web-02", "archive")
	l.scatter("web-01", 0, 3)
	s = l.run()
	if s.code != 0 || len(s.VMs) != 2 || s.Selection == nil || strings.Join(s.Selection.Left, ",") != "web-02" {
		t.Fatalf("run after a move: exit %d, %+v, selection %+v\n%s", s.code, s.VMs, s.Selection, s.stderr)
	}
	if n := len(l.points("web-02")); n != 1 {
		t.Fatalf("web-02 has %d points after it left", n)
	}

	// An ESXi host has no tags: a tag selector on it fails the run.
	e := vcsimtest.StartESX(t)
	esx := fmt.Sprintf(`
source "vsphere" "esx" {
  url      = %q
  username = %q
  password = %q
  ca_file  = %q
}
`, e.URL, e.Username, e.Password, e.CAFile)
	l.writeConfig(esx + strings.Replace(selecting, "source     = source.vsphere.prod", "source     = source.vsphere.esx", 1))
	r = ferry(t, l.cfg, "run", "e2e")
	if r.code != 1 || !strings.Contains(r.stderr, "ESXi host") || !strings.Contains(r.stderr, "tag:tier/gold") || !strings.Contains(r.stderr, e.URL) {
		t.Fatalf("a tag selector on ESXi: %s", r)
	}
	r = ferry(t, l.cfg, "plan", "e2e")
	if !strings.Contains(r.stdout, "! job: the run will fail") || !strings.Contains(r.stdout, "tag:tier/gold: ") || !strings.Contains(r.stdout, "ESXi host") {
		t.Fatalf("plan of a tag selector on ESXi: %s", r)
	}
}

// TestVSphereRetentionLimit: the vSphere target declares that it keeps at
// most 28 restore points; a job asking for more is a configuration error at
// its restore_points line, found without reaching vCenter.
func TestVSphereRetentionLimit(t *testing.T) {
	l := newVSLab(t, 40, "auto", vsVM{name: "web-01", disks: []int64{1 << 20}, ip: "10.1.0.11/24"})
	r := ferry(t, l.cfg, "validate")
	r.stderr = strings.Join(strings.Fields(r.stderr), " ") // undo the wrapping of diagnostics
	line := 0
	for i, s := range strings.Split(readFile(t, filepath.Join(l.cfg, "main.hcl")), "\n") {
		if strings.Contains(s, "restore_points = 40") {
			line = i + 1
		}
	}
	for _, want := range []string{
		fmt.Sprintf("main.hcl line %d", line), "Too many restore points",
		`keeps 40 restore points per replica, but target.vsphere.dr (type "vsphere") keeps at most 28`,
		"VMware supports at most 32 snapshots in a chain", "Set retention { restore_points = 28 } or fewer.",
	} {
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("validate lacks %q: %s", want, r)
		}
	}
	if r := ferry(t, l.cfg, "run", "e2e"); r.code != 1 || !strings.Contains(r.stderr, "Too many restore points") {
		t.Fatalf("run with 40 restore points: %s", r)
	}
	plugins := ferry(t, l.cfg, "plugins")
	if !strings.Contains(plugins.stdout, `target "vsphere" (direct-data, re-ip, test-failover, failback, map-replicas, at most 28 restore points, builds efi and bios VMs)`) ||
		!strings.Contains(plugins.stdout, `source "vsphere" (change-tracking, direct-data, quiesce, folders, tags, failback)`) {
		t.Fatalf("ferry plugins: %s", plugins)
	}
	l.writeConfig(strings.Replace(readFile(t, filepath.Join(l.cfg, "main.hcl")), "restore_points = 40", "restore_points = 28", 1))
	if r := ferry(t, l.cfg, "validate"); r.code != 0 {
		t.Fatalf("validate with 28: %s", r)
	}
}

// hotaddLab is a lab whose source reads and whose target writes through
// HotAdd: a proxy VM on each site (their guests' udev is the harness's
// fake, see vcsimtest), the plugin pinned to them and to their device
// folders; the target's datastore is not mapped, its ferry state goes to
// a state folder.
func hotaddLab(t *testing.T, vms ...vsVM) (l *vsLab, prod, dr *vcsimtest.Proxy) {
	t.Helper()
	// What ESXi writes for the DR proxy, a revert puts back.
	l = newVSLabDR(t, 3, "hotadd", vcsimtest.Options{RevertData: true}, vms...)
	prod = l.prod.CreateProxy(t, vcsimtest.ProxySpec{Name: "ferry-proxy"})
	dr = l.dr.CreateProxy(t, vcsimtest.ProxySpec{Name: "ferry-dr-proxy"})
	hcl := readFile(t, filepath.Join(l.cfg, "main.hcl"))
	pinned := fmt.Sprintf("transport  = \"hotadd\"\n  hotadd_proxy = %q\n  hotadd_device_dir = %q", prod.Name, prod.DeviceDir)
	hcl = strings.Replace(hcl, `transport  = "hotadd"`, pinned, 1)
	state := filepath.Join(l.dir, "dr-state")
	mapped := fmt.Sprintf("local_datastore_paths = { LocalDS_0 = %q }", l.dr.Datastores["LocalDS_0"])
	hot := fmt.Sprintf("transport  = \"hotadd\"\n  hotadd_proxy = %q\n  hotadd_device_dir = %q\n  state_dir = %q", dr.Name, dr.DeviceDir, state)
	if i := strings.LastIndex(hcl, mapped); i >= 0 {
		hcl = hcl[:i] + hot + hcl[i+len(mapped):]
	}
	l.writeConfig(hcl)
	l.tgtAttrs = map[string]cty.Value{"transport": cty.StringVal("hotadd"), "hotadd_proxy": cty.StringVal(dr.Name),
		"hotadd_device_dir": cty.StringVal(dr.DeviceDir), "state_dir": cty.StringVal(state)}
	return l, prod, dr
}

// TestVSphereHotAddTransport replicates through HotAdd on both sides with
// the real binaries: each snapshot disk is attached to the prod proxy VM,
// ferry's data mover reads the device the guest shows (the direct lane),
// the disk is detached; each replica disk is attached to the DR proxy VM
// and written as its device. A run killed while it holds disks leaves them
// attached on both sides, and the next run detaches them and finishes
// incrementally. Every point reads back; failover and undo work through
// the DR proxy.
func TestVSphereHotAddTransport(t *testing.T) {
	l, p, dp := hotaddLab(t, vsVM{name: "app-01", disks: []int64{16 << 20, 4 << 20}, ip: "10.1.3.3/24"})
	l.write("app-01", 0, 0, 6*mib)
	l.write("app-01", 1, mib, mib)
	clean := func(when string) {
		t.Helper()
		for _, site := range []struct {
			s *vcsimtest.Site
			p *vcsimtest.Proxy
		}{{l.prod, p}, {l.dr, dp}} {
			if got := site.s.HotAdded(t, site.p.Name); len(got) != 0 {
				t.Fatalf("%s: disks attached to the proxy %s: %v", when, site.p.Name, got)
			}
			for _, o := range site.s.VM(t, site.p.Name).Config.ExtraConfig {
				if strings.HasPrefix(o.GetOptionValue().Key, "ferry.hotadd.") {
					t.Fatalf("%s: a HotAdd mark is left on the proxy %s: %s", when, site.p.Name, o.GetOptionValue().Key)
				}
			}
		}
	}
	var states []map[string][][]byte
	runOK := func(modes string) session {
		t.Helper()
		states = append(states, l.state())
		s := l.run()
		if s.code != 0 || s.Result != "success" {
			t.Fatalf("run %d: exit %d, %s: %+v\n%s", len(states), s.code, s.Result, s.VMs, s.stderr)
		}
		var got []string
		for _, d := range s.vm("app-01").Disks {
			got = append(got, string(d.Mode)+"/"+string(d.Lane))
			// The session says which transport read each disk, and why.
			if d.Transport != "hotadd" || !strings.Contains(d.TransportWhy, "the configuration sets transport") {
				t.Errorf("run %d disk %d: transport %q (%q) in the session, want hotadd and why", len(states)+1, d.Index, d.Transport, d.TransportWhy)
			}
		}
		if strings.Join(got, ",") != modes {
			t.Fatalf("run %d: disks %s, want %s", len(states), strings.Join(got, ","), modes)
		}
		clean(fmt.Sprintf("after run %d", len(states)))
		return s
	}
	// The plugin says which transport each disk used, and why, at info.
	t.Setenv("FERRY_LOG", "info")
	first := runOK("full/direct,full/direct")
	if n := strings.Count(first.stderr, "disk transport: hotadd"); n != 2 || !strings.Contains(first.stderr, "proxy=ferry-proxy") {
		t.Fatalf("the run does not say each disk went through HotAdd (%d times):\n%s", n, first.stderr)
	}
	l.scatter("app-01", 0, 10)
	runOK("change-tracking/direct,change-tracking/direct")

	// A run whose plugin is killed while the data mover reads a disk.
	l.scatter("app-01", 0, 30)
	l.scatter("app-01", 1, 5)
	cmd := exec.Command(crashrun(t), "-config", l.cfg, "-job", "e2e", "-at", "moving", "-kill", "plugin")
	cmd.Env = append(os.Environ(), "FERRY_PLUGIN_PATH="+bin)
	out, _ := cmd.CombinedOutput()
	t.Logf("killed run said: %s", out)
	if left := l.prod.HotAdded(t, p.Name); len(left) == 0 {
		t.Fatal("the killed plugin left no disk attached to the proxy: the kill came too late to test anything")
	}
	if left := l.dr.HotAdded(t, dp.Name); len(left) == 0 {
		t.Fatal("the killed plugin left no replica disk attached to the DR proxy: the kill came too late to test anything")
	}

	third := runOK("change-tracking/direct,change-tracking/direct")
	if !strings.Contains(third.stderr, "detached a disk ferry left attached to the proxy VM") {
		t.Fatalf("the next run does not say it detached the leftovers:\n%s", third.stderr)
	}
	tgt := l.target()
	points := l.points("app-01")
	if len(points) != 3 {
		t.Fatalf("points %v", points)
	}
	for i, pt := range points {
		for d := range 2 {
			sameBytes(t, fmt.Sprintf("point %d disk %d", i+1, d), readPoint(t, tgt, "app-01_replica", pt, d), states[i]["app-01"][d])
		}
	}
	if snap := l.prod.VM(t, "app-01").Snapshot; snap != nil && len(snap.RootSnapshotList) > 0 {
		t.Fatalf("snapshots left at the source: %+v", snap.RootSnapshotList)
	}
	if st := l.prod.VM(t, p.Name).Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOn {
		t.Fatalf("the proxy VM is %s", st)
	}

	// The replica's ferry state is in the state folder, none on the DR
	// datastore; failover to the oldest point rolls the replica's disks
	// back through the DR proxy, undo puts the newest data back.
	if st, _ := filepath.Glob(filepath.Join(l.dir, "dr-state", "*", "replica.json")); len(st) != 1 {
		t.Fatalf("replica state files in the state folder: %v", st)
	}
	if onDS, _ := filepath.Glob(filepath.Join(l.dr.Datastores["LocalDS_0"], "*", "ferry")); len(onDS) > 0 {
		t.Fatalf("ferry folders on the DR datastore: %v", onDS)
	}
	if r := ferry(t, l.cfg, "failover", "e2e", "app-01", "--point", points[0]); r.code != 0 {
		t.Fatalf("failover: %s", r)
	}
	for d := range 2 {
		sameBytes(t, fmt.Sprintf("failed-over disk %d", d), l.dr.Disk(t, "app-01_replica", d), states[0]["app-01"][d])
	}
	if r := ferry(t, l.cfg, "failover", "undo", "e2e", "app-01"); r.code != 0 {
		t.Fatalf("undo: %s", r)
	}
	for d := range 2 {
		sameBytes(t, fmt.Sprintf("disk %d after undo", d), l.dr.Disk(t, "app-01_replica", d), states[len(states)-1]["app-01"][d])
	}
	clean("after failover and undo")
}

// TestTheServerKeepsItsVCenterLogins: ferry server runs a vSphere job's
// sessions on the logins its first session made, one per vCenter, where
// it used to configure the job's source and target anew for every session
// and leave each earlier instance logged in (a real vCenter caps its
// sessions).
func TestTheServerKeepsItsVCenterLogins(t *testing.T) {
	l := newVSLab(t, 2, "auto", vsVM{name: "web-01", disks: []int64{4 << 20}, ip: "10.1.0.11/24"})
	l.write("web-01", 0, 0, mib)
	operator := strings.TrimSpace(ferry(t, l.cfg, "token", "create", "ops", "--role", "operator").stdout)
	s := (&lab{t: t, cfg: l.cfg}).startServer()
	run := func() {
		t.Helper()
		r := runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=", "FERRY_ADDR=" + s.url, "FERRY_TOKEN=" + operator},
			"ferry", "-C", t.TempDir(), "run", "e2e")
		if r.code != 0 {
			t.Fatalf("ferry run through the server: %s\nserver:\n%s", r, s.stderr)
		}
	}
	run()
	prod, dr := l.prod.Sessions(t), l.dr.Sessions(t)
	for range 3 {
		l.scatter("web-01", 0, 4)
		run()
	}
	if p, d := l.prod.Sessions(t), l.dr.Sessions(t); p != prod || d != dr {
		t.Fatalf("after three more sessions prod has %d logins (%d after the first) and dr %d (%d)", p, prod, d, dr)
	}
	want := l.state()
	if got := readPoint(t, l.target(), "web-01_replica", l.points("web-01")[1], 0); !bytes.Equal(got, want["web-01"][0]) {
		t.Fatal("the newest restore point differs from the source")
	}
}
