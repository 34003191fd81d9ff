package vsphere

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// hotaddSource connects a source to a site with HotAdd settings: attrs are
// HCL attributes; uuidFile (when not "") is where the source reads this
// machine's BIOS UUID, and wait how long it waits for a device.
func hotaddSource(t testing.TB, s *vcsimtest.Site, mapped bool, attrs map[string]cty.Value, uuidFile string, wait time.Duration, logs io.Writer) *Source {
	t.Helper()
	cfg, err := decodeSource(configValue(sourceSchema(), siteConfig(s, mapped, attrs)))
	if err != nil {
		t.Fatal(err)
	}
	cfg.productUUIDFile = uuidFile
	if uuidFile == "" {
		cfg.productUUIDFile = filepath.Join(t.TempDir(), "no-product-uuid")
	}
	cfg.deviceWait = wait
	var log hclog.Logger
	if logs != nil {
		log = hclog.New(&hclog.LoggerOptions{Output: logs, JSONFormat: true, Level: hclog.Debug})
	} else {
		log = testLogger(t)
	}
	src, err := newSource(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Stop(context.Background()) })
	return src
}

// pinned is the configuration of a source pinned to HotAdd through proxy p.
func pinned(p *vcsimtest.Proxy) map[string]cty.Value {
	return map[string]cty.Value{"transport": cty.StringVal(TransportHotAdd), "hotadd_proxy": cty.StringVal(p.Name), "hotadd_device_dir": cty.StringVal(p.DeviceDir)}
}

// productUUIDFile writes a BIOS UUID as a Linux guest shows it.
func productUUIDFile(t testing.TB, uuid string) string {
	f := filepath.Join(t.TempDir(), "product_uuid")
	if err := os.WriteFile(f, []byte(uuid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// marks lists the HotAdd marks on a proxy VM.
func marks(t testing.TB, s *vcsimtest.Site, proxy string) map[string]hotaddRecord {
	t.Helper()
	cfg := s.VM(t, proxy).Config
	out := map[string]hotaddRecord{}
	for k, rec := range records(cfg) {
		if rec == nil {
			t.Fatalf("proxy %s has an unreadable mark %s", proxy, k)
		}
		out[k] = *rec
	}
	return out
}

// noneAttached checks that nothing of ferry is left on the proxy: no disk
// of another VM, no mark, no device link but the proxy's own disk's.
func noneAttached(t testing.TB, s *vcsimtest.Site, p *vcsimtest.Proxy) {
	t.Helper()
	if got := s.HotAdded(t, p.Name); len(got) != 0 {
		t.Errorf("disks left attached to proxy %s: %v", p.Name, got)
	}
	if m := marks(t, s, p.Name); len(m) != 0 {
		t.Errorf("marks left on proxy %s: %v", p.Name, m)
	}
	entries, _ := os.ReadDir(p.DeviceDir)
	if len(entries) > 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("device links left in %s: %v (only the proxy's own disk should be there)", p.DeviceDir, names)
	}
}

func readDisk(t testing.TB, r sdk.DiskReader) []byte {
	t.Helper()
	buf := make([]byte, r.Size())
	if n, err := r.ReadAt(buf, 0); n != len(buf) || (err != nil && err != io.EOF) {
		t.Fatalf("read the disk: %d of %d bytes: %v", n, len(buf), err)
	}
	return buf
}

func snapshot(t testing.TB, src *Source, vm, name string) *sdk.Snapshot {
	t.Helper()
	snap, err := src.CreateSnapshot(t.Context(), sdk.SnapshotRequest{VM: vm, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.RemoveSnapshot(context.Background(), vm, snap.ID) })
	return snap
}

// TestHotAddTransportChoice: the automatic order (direct when mapped,
// HotAdd through the proxy VM found by this machine's BIOS UUID, network)
// with the reason of each choice in the log; transport = "hotadd" fails
// with ErrFailedPrecondition saying why when HotAdd cannot be used.
func TestHotAddTransportChoice(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	// A datastore only host H0 mounts: a proxy elsewhere cannot reach it.
	local := s.AddHostDatastore(t, "DC0_C0_H0", "LocalH0")
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20}, Host: "DC0_C0_H0", Datastore: local, PoweredOn: true})
	data := bytes.Repeat([]byte("hotadd!"), 1000)
	s.Write(t, "vm", 0, 8192, data)
	near := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy-near", Host: "DC0_C0_H0"})
	far := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy-far", Host: "DC0_C0_H1"})
	noUUID := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy-no-uuid", Host: "DC0_C0_H0", NoEnableUUID: true})
	off := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy-off", Host: "DC0_C0_H0", PoweredOff: true})
	stranger := "12345678-9ABC-DEF0-1234-56789ABCDEF0"

	cases := []struct {
		name      string
		mapped    bool
		transport string
		proxy     *vcsimtest.Proxy // found by its BIOS UUID; nil = this machine is no VM of the site
		lane      string           // direct, hotadd, network
		log       string           // in the log line of the choice
		fail      error
	}{
		{"auto, mapped", true, "", near, "direct", "the datastore is mapped", nil},
		{"auto, not mapped, proxy", false, "", near, "hotadd", `datastore \"LocalH0\" is not in local_datastore_paths; the proxy VM's host mounts it`, nil},
		{"auto, not mapped, no proxy", false, "", nil, "network", "no HotAdd: no VM of datacenter /DC0 has this machine's BIOS UUID", nil},
		{"auto, proxy on a host without the datastore", false, "", far, "network", `which does not mount datastore \"LocalH0\"`, nil},
		{"auto, proxy without disk.EnableUUID", false, "", noUUID, "network", "lacks disk.EnableUUID", nil},
		{"auto, proxy powered off", false, "", off, "network", "is poweredOff", nil},
		{"hotadd, mapped", true, TransportHotAdd, near, "hotadd", `transport = \"hotadd\"`, nil},
		{"hotadd, no proxy", true, TransportHotAdd, nil, "", "", errdefs.ErrFailedPrecondition},
		{"hotadd, proxy on a host without the datastore", true, TransportHotAdd, far, "", "", errdefs.ErrFailedPrecondition},
		{"network, with proxy", false, TransportNetwork, near, "network", `transport = \"network\"`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			attrs := map[string]cty.Value{}
			if tc.transport != "" {
				attrs["transport"] = cty.StringVal(tc.transport)
			}
			dir, uuid := t.TempDir(), stranger
			if tc.proxy != nil {
				dir, uuid = tc.proxy.DeviceDir, tc.proxy.ProductUUID
			}
			attrs["hotadd_device_dir"] = cty.StringVal(dir)
			var logs logBuffer
			src := hotaddSource(t, s, tc.mapped, attrs, productUUIDFile(t, uuid), 5*time.Second, &logs)
			snap := snapshot(t, src, "vm", "t")
			r, err := src.OpenSnapshotDisk(t.Context(), "vm", snap.ID, 0)
			if tc.fail != nil {
				if !errors.Is(err, tc.fail) || !strings.Contains(err.Error(), "transport is hotadd but") {
					t.Fatalf("OpenSnapshotDisk: %v, want %v saying why", err, tc.fail)
				}
				t.Logf("refused as expected: %v", err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lp, local := r.(sdk.LocalPather)
			switch tc.lane {
			case "direct":
				if _, ok := r.(*localFileReader); !ok {
					t.Errorf("reader %T, want direct storage access", r)
				}
			case "hotadd":
				if _, ok := r.(*hotaddReader); !ok || !local {
					t.Fatalf("reader %T, want HotAdd with a local path", r)
				}
				if got := s.HotAdded(t, tc.proxy.Name); len(got) != 1 {
					t.Errorf("proxy %s has %v attached, want the snapshot's disk", tc.proxy.Name, got)
				}
				if m := marks(t, s, tc.proxy.Name); len(m) != 1 {
					t.Errorf("proxy %s has marks %v, want one", tc.proxy.Name, m)
				}
			case "network":
				if local {
					t.Errorf("reader %T offers %s, want network", r, lp.LocalPath())
				}
			}
			got := readDisk(t, r)
			if !bytes.Equal(got[8192:8192+len(data)], data) {
				t.Error("the disk does not hold what the guest wrote")
			}
			if local {
				file, err := os.ReadFile(lp.LocalPath())
				if err != nil || !bytes.Equal(file[:len(got)], got) {
					t.Errorf("the local path %s disagrees with ReadAt: %v", lp.LocalPath(), err)
				}
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if l := logs.String(); !strings.Contains(l, "disk transport: "+map[string]string{"direct": "direct", "hotadd": "hotadd", "network": "network"}[tc.lane]) || !strings.Contains(l, tc.log) {
				t.Errorf("the log does not say %s and why (%q):\n%s", tc.lane, tc.log, l)
			}
			// The reader tells ferry the same, for the session.
			if tr, ok := r.(sdk.TransportReporter); !ok {
				t.Errorf("reader %T does not report its transport", r)
			} else if mode, why := tr.Transport(); mode != tc.lane || !strings.Contains(why, strings.ReplaceAll(tc.log, `\"`, `"`)) {
				t.Errorf("reader reports transport %q (%q), want %q with %q", mode, why, tc.lane, tc.log)
			}
			if tc.proxy != nil {
				noneAttached(t, s, tc.proxy)
			}
		})
	}
}

// TestHotAddSeveralDisksAtOnce: disks of two snapshots opened concurrently
// land on distinct units of the proxy, each reads its own data, and
// closing them leaves the proxy as it was.
func TestHotAddSeveralDisksAtOnce(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	sizes := []int64{1 << 20, 2 << 20, 1<<20 + 4096}
	s.CreateVM(t, vcsimtest.VMSpec{Name: "db", Disks: sizes, PoweredOn: true})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "web", Disks: []int64{1 << 20, 1 << 20}, PoweredOn: true})
	for d := range sizes {
		s.Write(t, "db", d, int64(d)*4096, []byte(fmt.Sprintf("db disk %d", d)))
	}
	for d := range 2 {
		s.Write(t, "web", d, 100, []byte(fmt.Sprintf("web disk %d", d)))
	}
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy", DeviceDelay: 150 * time.Millisecond})
	src := hotaddSource(t, s, true, pinned(p), "", 10*time.Second, nil)
	snaps := map[string]*sdk.Snapshot{"db": snapshot(t, src, "db", "many"), "web": snapshot(t, src, "web", "many")}
	want := map[string][][]byte{"db": {}, "web": {}}
	for vm := range want {
		for d := range snaps[vm].Disks {
			want[vm] = append(want[vm], s.Disk(t, vm, d))
		}
	}

	type opened struct {
		vm   string
		disk int
		r    sdk.DiskReader
	}
	var mu sync.Mutex
	var all []opened
	var wg sync.WaitGroup
	for vm, snap := range snaps {
		for d := range snap.Disks {
			wg.Go(func() {
				r, err := src.OpenSnapshotDisk(t.Context(), vm, snap.ID, d)
				if err != nil {
					t.Errorf("open %s disk %d: %v", vm, d, err)
					return
				}
				mu.Lock()
				all = append(all, opened{vm, d, r})
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if got := s.HotAdded(t, p.Name); len(got) != 5 {
		t.Fatalf("the proxy has %d disks attached, want 5: %v", len(got), got)
	}
	slots := map[string]bool{}
	for k, rec := range marks(t, s, p.Name) {
		if slots[k] || rec.Owner.PID != os.Getpid() {
			t.Errorf("mark %s: %+v", k, rec)
		}
		slots[k] = true
	}
	if len(slots) != 5 {
		t.Errorf("%d marks for 5 disks", len(slots))
	}
	for _, o := range all {
		if got := readDisk(t, o.r); !bytes.Equal(got, want[o.vm][o.disk]) {
			t.Errorf("%s disk %d reads other data than the disk holds", o.vm, o.disk)
		}
	}
	for _, o := range all {
		wg.Go(func() {
			if err := o.r.Close(); err != nil {
				t.Errorf("close %s disk %d: %v", o.vm, o.disk, err)
			}
		})
	}
	wg.Wait()
	noneAttached(t, s, p)
	// The proxy's own disk is untouched, the source disks' files remain.
	if own := s.Files(t, p.Name); !contains(own, "proxy.vmdk") {
		t.Errorf("the proxy's files: %v", own)
	}
	for vm := range want {
		for d := range want[vm] {
			if !bytes.Equal(s.Disk(t, vm, d), want[vm][d]) {
				t.Errorf("%s disk %d changed", vm, d)
			}
		}
	}
}

// TestHotAddRetriesAConcurrentChange: reconfigures refused because the
// proxy changed meanwhile (another process attached a disk) are tried
// again with a fresh view, for the attach and for the detach.
func TestHotAddRetriesAConcurrentChange(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20}, PoweredOn: true})
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy"})
	var logs logBuffer
	src := hotaddSource(t, s, false, pinned(p), "", 5*time.Second, &logs)
	snap := snapshot(t, src, "vm", "t")
	s.ContendProxy(t, p.Name, 2)
	r, err := src.OpenSnapshotDisk(t.Context(), "vm", snap.ID, 0)
	if err != nil {
		t.Fatalf("after one refused reconfigure: %v", err)
	}
	s.ContendProxy(t, p.Name, 1)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); strings.Count(l, "the proxy changed under the reconfigure; trying again") != 2 || !strings.Contains(l, "the proxy changed under the detach; trying again") {
		t.Errorf("no retry in the log:\n%s", logs.String())
	}
	noneAttached(t, s, p)

	// A proxy that keeps changing: the open gives up, nothing attached.
	s.ContendProxy(t, p.Name, reconfigureAttempts)
	if _, err := src.OpenSnapshotDisk(t.Context(), "vm", snap.ID, 0); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("OpenSnapshotDisk on a proxy that keeps changing: %v, want ErrUnavailable", err)
	}
	noneAttached(t, s, p)
}

// TestHotAddDeviceNeverAppears: a disk the guest never shows (here:
// disk.EnableUUID set but not in effect) fails with a clear error naming
// the disk when HotAdd is pinned, falls back to the network under auto,
// and is detached either way.
func TestHotAddDeviceNeverAppears(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "app", Disks: []int64{1 << 20, 1 << 20}, PoweredOn: true})
	s.Write(t, "app", 1, 0, []byte("second disk"))
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy", HideDevices: true})

	src := hotaddSource(t, s, false, pinned(p), "", 300*time.Millisecond, nil)
	snap := snapshot(t, src, "app", "t")
	_, err := src.OpenSnapshotDisk(t.Context(), "app", snap.ID, 1)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("OpenSnapshotDisk: %v, want ErrFailedPrecondition", err)
	}
	for _, want := range []string{`vm "app"`, "disk 1", "wwn-0x", p.DeviceDir, "disk.EnableUUID"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	noneAttached(t, s, p)

	var logs logBuffer
	auto := hotaddSource(t, s, false, map[string]cty.Value{"hotadd_device_dir": cty.StringVal(p.DeviceDir)}, productUUIDFile(t, p.ProductUUID), 300*time.Millisecond, &logs)
	r, err := auto.OpenSnapshotDisk(t.Context(), "app", snap.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*httpReader); !ok {
		t.Errorf("reader %T, want network after HotAdd failed", r)
	}
	if got := readDisk(t, r); !bytes.HasPrefix(got, []byte("second disk")) {
		t.Error("the fallback reads other data")
	}
	r.Close()
	if l := logs.String(); !strings.Contains(l, "HotAdd failed; reading over the network") || !strings.Contains(l, "no HotAdd: HotAdd failed") {
		t.Errorf("the fallback is not logged:\n%s", l)
	}
	noneAttached(t, s, p)
}

// TestHotAddReadsDeltaChains: a VM with a snapshot of its own has delta
// disks in ferry's snapshot; auto picks HotAdd for them (even with the
// datastore mapped), which reads the whole chain. The simulator's deltas
// are whole copies whose descriptors name no parent: direct reads of the
// chain through the mount refuse them (the descriptors' chain is not
// vSphere's), and with no proxy the error says both why.
// TestSourceReadsDeltaChain reads real chains.
func TestHotAddReadsDeltaChains(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod", DeltaChains: true})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "app", Disks: []int64{2 << 20}, PoweredOn: true})
	s.Write(t, "app", 0, 0, []byte("before the user's snapshot"))
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, "app"))
	task, err := obj.CreateSnapshot(t.Context(), "before-upgrade", "the administrator's", false, false)
	if err == nil {
		err = task.Wait(t.Context())
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Write(t, "app", 0, 1<<20, []byte("after it"))
	want := s.Disk(t, "app", 0)
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy"})

	var logs logBuffer
	src := hotaddSource(t, s, true, map[string]cty.Value{"hotadd_device_dir": cty.StringVal(p.DeviceDir)}, productUUIDFile(t, p.ProductUUID), 5*time.Second, &logs)
	snap := snapshot(t, src, "app", "ferry")
	r, err := src.OpenSnapshotDisk(t.Context(), "app", snap.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*hotaddReader); !ok {
		t.Fatalf("reader %T, want HotAdd for a delta", r)
	}
	if !bytes.Equal(readDisk(t, r), want) {
		t.Error("HotAdd of the delta does not read the whole disk")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if l := logs.String(); !strings.Contains(l, "disk transport: hotadd") || !strings.Contains(l, "is a delta of") || !strings.Contains(l, "HotAdd presents the whole chain") {
		t.Errorf("the log does not say why HotAdd:\n%s", l)
	}
	noneAttached(t, s, p)

	direct := hotaddSource(t, s, true, map[string]cty.Value{"transport": cty.StringVal(TransportDirect)}, "", time.Second, nil)
	if _, err := direct.OpenSnapshotDisk(t.Context(), "app", snap.ID, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "the descriptors name a chain of 1 files") {
		t.Errorf("direct on a simulated delta: %v, want ErrFailedPrecondition: the descriptors' chain is not vSphere's", err)
	}
	noProxy := hotaddSource(t, s, true, nil, "", time.Second, nil)
	_, err = noProxy.OpenSnapshotDisk(t.Context(), "app", snap.ID, 0)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "delta") || !strings.Contains(err.Error(), "BIOS UUID cannot be read") || !strings.Contains(err.Error(), "the descriptors name") {
		t.Errorf("auto on a delta without a proxy: %v, want ErrFailedPrecondition with both reasons", err)
	}
}

// TestHotAddRemoveSnapshotDetachesFirst: removing a snapshot whose disk is
// still attached (a reader not closed) detaches it first; the reader's
// Close is then harmless.
func TestHotAddRemoveSnapshotDetachesFirst(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20, 1 << 20}, PoweredOn: true})
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy"})
	var logs logBuffer
	src := hotaddSource(t, s, false, pinned(p), "", 5*time.Second, &logs)
	keep := snapshot(t, src, "vm", "keep")
	gone := snapshot(t, src, "vm", "gone")
	kept, err := src.OpenSnapshotDisk(t.Context(), "vm", keep.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	var open []sdk.DiskReader
	for d := range 2 {
		r, err := src.OpenSnapshotDisk(t.Context(), "vm", gone.ID, d)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, r)
	}
	if got := s.HotAdded(t, p.Name); len(got) != 3 {
		t.Fatalf("attached: %v", got)
	}
	if err := src.RemoveSnapshot(t.Context(), "vm", gone.ID); err != nil {
		t.Fatal(err)
	}
	if got := s.HotAdded(t, p.Name); len(got) != 1 {
		t.Fatalf("after removing the snapshot, attached: %v, want only the other snapshot's disk", got)
	}
	for _, r := range open {
		if err := r.Close(); err != nil {
			t.Errorf("Close after the snapshot's removal: %v", err)
		}
	}
	if snaps, _ := src.ListSnapshots(t.Context(), "vm"); len(snaps) != 1 || snaps[0].ID != keep.ID {
		t.Errorf("snapshots: %+v", snaps)
	}
	if !strings.Contains(logs.String(), "detached a snapshot's disk from the proxy VM before removing the snapshot") {
		t.Errorf("not logged:\n%s", logs.String())
	}
}

// TestHotAddStopDetachesAndTheProxySurvives: a Source stopped with a
// reader still open detaches the disk; the proxy VM can then be destroyed
// without taking any source disk with it (the harness reports a proxy
// destroyed with a foreign disk as a failure), and ferry never destroys it.
func TestHotAddStopDetachesAndTheProxySurvives(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20}, PoweredOn: true})
	s.Write(t, "vm", 0, 0, []byte("precious"))
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy"})
	src := hotaddSource(t, s, false, pinned(p), "", 5*time.Second, nil)
	snap, err := src.CreateSnapshot(t.Context(), sdk.SnapshotRequest{VM: "vm", Name: "t"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := src.OpenSnapshotDisk(t.Context(), "vm", snap.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	noneAttached(t, s, p)
	if err := r.Close(); err != nil {
		t.Errorf("Close after Stop: %v", err)
	}
	if _, err := src.OpenSnapshotDisk(t.Context(), "vm", snap.ID, 0); err == nil {
		t.Error("a stopped source opened a disk")
	}
	if st := s.VM(t, p.Name).Runtime.PowerState; st != types.VirtualMachinePowerStatePoweredOn {
		t.Errorf("the proxy is %s", st)
	}
	s.Destroy(t, p.Name)
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	again := newTestSource(t, s, true, nil)
	if err := again.RemoveSnapshot(t.Context(), "vm", snap.ID); err != nil {
		t.Fatal(err)
	}
	if got := s.Disk(t, "vm", 0); !bytes.HasPrefix(got, []byte("precious")) {
		t.Error("the source disk lost its data")
	}
}

// helperEnv carries what the helper process needs to open a disk.
const helperEnv = "FERRY_VSPHERE_HOTADD_HELPER"

type helperJob struct {
	Attrs    map[string]string
	VM, Snap string
	Disk     int
}

// TestHotAddHelperProcess is not a test: run as a child by
// TestHotAddLeftovers, it opens a snapshot disk through HotAdd, says so,
// and waits to be killed.
func TestHotAddHelperProcess(t *testing.T) {
	raw := os.Getenv(helperEnv)
	if raw == "" {
		t.Skip("only run as the helper process of TestHotAddLeftovers")
	}
	var job helperJob
	if err := json.Unmarshal([]byte(raw), &job); err != nil {
		t.Fatal(err)
	}
	attrs := map[string]cty.Value{}
	for k, v := range job.Attrs {
		attrs[k] = cty.StringVal(v)
	}
	cfg, err := decodeSource(configValue(sourceSchema(), attrs))
	if err != nil {
		t.Fatal(err)
	}
	src, err := newSource(context.Background(), cfg, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	r, err := src.OpenSnapshotDisk(context.Background(), job.VM, job.Snap, job.Disk)
	if err != nil {
		fmt.Printf("FAILED %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("ATTACHED %s\n", r.(sdk.LocalPather).LocalPath())
	time.Sleep(10 * time.Minute)
	os.Exit(2)
}

// attachInChild opens a disk through HotAdd in a child process and returns
// it once the disk is attached.
func attachInChild(t *testing.T, s *vcsimtest.Site, p *vcsimtest.Proxy, vm, snap string, disk int) *exec.Cmd {
	t.Helper()
	attrs := s.Attributes()
	attrs["transport"], attrs["hotadd_proxy"], attrs["hotadd_device_dir"] = TransportHotAdd, p.Name, p.DeviceDir
	job, _ := json.Marshal(helperJob{Attrs: attrs, VM: vm, Snap: snap, Disk: disk})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHotAddHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(job))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ATTACHED") || strings.HasPrefix(sc.Text(), "FAILED") {
				line <- sc.Text()
				break
			}
		}
		io.Copy(io.Discard, out)
		close(line)
	}()
	select {
	case l := <-line:
		if !strings.HasPrefix(l, "ATTACHED") {
			t.Fatalf("the helper process: %q", l)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the helper process did not attach the disk")
	}
	return cmd
}

// TestHotAddLeftovers: a process killed while it holds a disk on the proxy
// leaves the disk attached with its mark; the next snapshot, list or open
// of another source detaches it, while a disk of a process that still runs
// is left alone; the disk's file stays.
func TestHotAddLeftovers(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20, 1 << 20}, PoweredOn: true})
	s.Write(t, "vm", 0, 0, []byte("disk zero"))
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "proxy"})
	var logs logBuffer
	src := hotaddSource(t, s, false, pinned(p), "", 5*time.Second, &logs)
	snap := snapshot(t, src, "vm", "t")

	killed := attachInChild(t, s, p, "vm", snap.ID, 0)
	alive := attachInChild(t, s, p, "vm", snap.ID, 1)
	if got := s.HotAdded(t, p.Name); len(got) != 2 {
		t.Fatalf("attached by the children: %v", got)
	}
	killed.Process.Kill()
	killed.Wait()
	if got := s.HotAdded(t, p.Name); len(got) != 2 {
		t.Fatalf("a kill detached something: %v", got)
	}

	// The next list detaches the dead process's disk, not the live one's.
	if _, err := src.ListSnapshots(t.Context(), "vm"); err != nil {
		t.Fatal(err)
	}
	left := marks(t, s, p.Name)
	if len(left) != 1 {
		t.Fatalf("marks after the sweep: %v", left)
	}
	for _, rec := range left {
		if rec.Disk != 1 || rec.Owner.PID != alive.Process.Pid {
			t.Fatalf("the sweep kept %+v, want the live process's disk 1", rec)
		}
	}
	if got := s.HotAdded(t, p.Name); len(got) != 1 {
		t.Fatalf("attached after the sweep: %v", got)
	}
	if l := logs.String(); !strings.Contains(l, "detached a disk ferry left attached to the proxy VM") || !strings.Contains(l, fmt.Sprintf("process %d is gone", killed.Process.Pid)) {
		t.Errorf("the sweep is not logged with its reason:\n%s", l)
	}

	// Once that one dies too, the next snapshot detaches its disk.
	alive.Process.Kill()
	alive.Wait()
	snapshot(t, src, "vm", "next")
	noneAttached(t, s, p)
	if got := s.Disk(t, "vm", 0); !bytes.HasPrefix(got, []byte("disk zero")) {
		t.Error("the source disk changed")
	}
	r, err := src.OpenSnapshotDisk(t.Context(), "vm", snap.ID, 0)
	if err != nil {
		t.Fatalf("the snapshot's disk after the leftovers went: %v", err)
	}
	if !bytes.HasPrefix(readDisk(t, r), []byte("disk zero")) {
		t.Error("the snapshot's disk lost its data")
	}
	r.Close()
}
