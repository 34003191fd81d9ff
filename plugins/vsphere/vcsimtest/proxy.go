package vcsimtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"
)

// ProxySpec describes a HotAdd proxy VM: the VM a ferry plugin runs in
// and attaches snapshot disks to.
type ProxySpec struct {
	Name string
	// Host is where it runs; default DC0_C0_H0.
	Host string
	// DeviceDir is the guest's /dev/disk/by-id: the fake udev makes a
	// wwn-0x<disk UUID> link there for every disk attached to the proxy,
	// to the disk's flat file, and removes it when the disk goes. Default:
	// a temporary folder of the test.
	DeviceDir string
	// NoEnableUUID leaves disk.EnableUUID out of the proxy's configuration.
	NoEnableUUID bool
	// DeviceDelay is how long after an attach the link appears, as udev
	// takes a moment on a real guest.
	DeviceDelay time.Duration
	// HideDevices makes the guest never show attached disks, as a proxy
	// whose disk.EnableUUID was set but not yet in effect (it is read at
	// power-on).
	HideDevices bool
	// PoweredOff leaves the proxy powered off.
	PoweredOff bool
}

// Proxy is a proxy VM of a site.
type Proxy struct {
	Name      string
	Ref       types.ManagedObjectReference
	DeviceDir string
	// BIOSUUID is its config.uuid; ProductUUID is that UUID as a Linux
	// guest of recent virtual hardware shows it in
	// /sys/class/dmi/id/product_uuid (the first three fields byte-swapped,
	// upper case).
	BIOSUUID, ProductUUID string
}

// proxyState is what the fake udev knows of one proxy VM.
type proxyState struct {
	name   string
	dir    string
	folder string // "[ds] name/": the proxy's own files
	delay  time.Duration
	hidden bool
	links  map[string]string // link name -> target, as made
	gen    map[string]int    // link name -> generation, for delayed links
}

// CreateProxy creates a powered-on proxy VM with a paravirtual SCSI
// controller, a small disk of its own and disk.EnableUUID = "TRUE", and
// starts the fake udev for it.
func (s *Site) CreateProxy(t testing.TB, spec ProxySpec) *Proxy {
	t.Helper()
	if spec.DeviceDir == "" {
		spec.DeviceDir = t.TempDir()
	}
	extra := map[string]string{"disk.EnableUUID": "TRUE"}
	if spec.NoEnableUUID {
		extra = nil
	}
	ref := s.CreateVM(t, VMSpec{Name: spec.Name, Disks: []int64{1 << 20}, Host: or(spec.Host, "DC0_C0_H0"), PoweredOn: !spec.PoweredOff, ExtraConfig: extra})
	vm := s.reg().Get(ref).(*simulator.VirtualMachine)
	p := &Proxy{Name: spec.Name, Ref: ref, DeviceDir: spec.DeviceDir}
	st := &proxyState{name: spec.Name, dir: spec.DeviceDir, delay: spec.DeviceDelay, hidden: spec.HideDevices,
		links: map[string]string{}, gen: map[string]int{}}
	var devices []types.BaseVirtualDevice
	s.lockCtx().WithLock(vm, func() {
		p.BIOSUUID = vm.Config.Uuid
		st.folder = path.Dir(vm.Config.Files.VmPathName) + "/"
		devices = append(devices, vm.Config.Hardware.Device...)
	})
	p.ProductUUID = productUUID(p.BIOSUUID)
	s.d.mu.Lock()
	s.d.proxies[ref.Value] = st
	s.d.mu.Unlock()
	s.d.syncDevices(st, devices)
	return p
}

// productUUID is a BIOS UUID as SMBIOS 2.6 stores it: the first three
// fields little-endian.
func productUUID(u string) string {
	h := strings.ReplaceAll(u, "-", "")
	if len(h) != 32 {
		return strings.ToUpper(u)
	}
	sw := func(s string) string {
		var b strings.Builder
		for i := len(s) - 2; i >= 0; i -= 2 {
			b.WriteString(s[i : i+2])
		}
		return b.String()
	}
	return strings.ToUpper(fmt.Sprintf("%s-%s-%s-%s-%s", sw(h[0:8]), sw(h[8:12]), sw(h[12:16]), h[16:20], h[20:32]))
}

// HotAdded lists the disk files attached to a proxy VM that are not its
// own (outside its folder), sorted.
func (s *Site) HotAdded(t testing.TB, proxy string) []string {
	t.Helper()
	vm := s.VM(t, proxy)
	own := path.Dir(vm.Config.Files.VmPathName) + "/"
	var out []string
	for _, d := range vm.Config.Hardware.Device {
		if disk, ok := d.(*types.VirtualDisk); ok {
			if fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				if f := fb.GetVirtualDeviceFileBackingInfo().FileName; !strings.HasPrefix(f, own) {
					out = append(out, f)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// ContendProxy makes the next n reconfigures of a VM fail with
// ConcurrentAccess, as vCenter answers when the VM changed since the
// caller read its changeVersion (another process reconfigured it).
func (s *Site) ContendProxy(t testing.TB, name string, n int) {
	t.Helper()
	ref := s.VMRef(t, name)
	s.d.mu.Lock()
	s.d.contend[ref.Value] = n
	s.d.mu.Unlock()
}

func (d *doubles) contended(ref types.ManagedObjectReference) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.contend[ref.Value] > 0 {
		d.contend[ref.Value]--
		return true
	}
	return false
}

// AddHostDatastore creates a datastore mounted by one host only (a local
// disk of that host), and returns its name.
func (s *Site) AddHostDatastore(t testing.TB, host, name string) string {
	t.Helper()
	ctx := context.Background()
	f, err := s.Finder(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h, err := f.HostSystem(ctx, host)
	if err != nil {
		t.Fatalf("vcsimtest: host %s: %v", host, err)
	}
	dss, err := h.ConfigManager().DatastoreSystem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := dss.CreateLocalDatastore(ctx, name, dir); err != nil {
		t.Fatalf("vcsimtest: create datastore %s on %s: %v", name, host, err)
	}
	s.dsMu.Lock()
	s.Datastores[name] = dir
	s.dsMu.Unlock()
	return name
}

// syncDevices makes the proxy's device folder show its disks, as udev in
// the guest would: a wwn-0x<UUID> link per disk with a UUID, to the disk's
// flat file. It is called with the proxy's device list after each change.
func (d *doubles) syncDevices(p *proxyState, devices []types.BaseVirtualDevice) {
	want := map[string]string{}
	for _, dev := range devices {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok || b.Uuid == "" {
			continue
		}
		target, err := d.site.flatPath(disk)
		if err == nil {
			err = d.site.fullSize(b.FileName, target, diskSize(disk))
		}
		if err != nil {
			d.fail(fmt.Errorf("udev of proxy %s: disk %s: %w", p.name, b.FileName, err))
			continue
		}
		want["wwn-0x"+strings.ToLower(strings.ReplaceAll(b.Uuid, "-", ""))] = target
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name := range p.links {
		if _, ok := want[name]; !ok {
			delete(p.links, name)
			p.gen[name]++
			if err := os.Remove(filepath.Join(p.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				d.errs = append(d.errs, err)
			}
		}
	}
	for name, target := range want {
		if p.links[name] == target {
			continue
		}
		p.links[name] = target
		p.gen[name]++
		switch {
		case p.hidden:
		case p.delay > 0:
			gen := p.gen[name]
			time.AfterFunc(p.delay, func() {
				d.mu.Lock()
				defer d.mu.Unlock()
				if p.gen[name] == gen {
					d.link(p, name, target)
				}
			})
		default:
			d.link(p, name, target)
		}
	}
}

// fullSize makes a thin flat file as long as its disk (sparse), as the
// guest's device of a disk is: vcsim leaves new thin files empty. A disk
// attached as it exists shows no capacity on the proxy: its descriptor
// has it.
func (s *Site) fullSize(file, flat string, size int64) error {
	if desc, err := s.localPath(file); err == nil {
		if dd, err := readDescriptor(desc); err == nil {
			size = max(size, dd.Extent[0].Size*vmdk.SectorSize)
		}
	}
	st, err := os.Stat(flat)
	if err != nil || st.Size() >= size {
		return err
	}
	return os.Truncate(flat, size)
}

func diskSize(d *types.VirtualDisk) int64 {
	if d.CapacityInBytes > 0 {
		return d.CapacityInBytes
	}
	return d.CapacityInKB * 1024
}

// link makes one device link; the caller holds d.mu.
func (d *doubles) link(p *proxyState, name, target string) {
	full := filepath.Join(p.dir, name)
	os.Remove(full)
	if err := os.Symlink(target, full); err != nil {
		d.errs = append(d.errs, fmt.Errorf("udev of proxy %s: %w", p.name, err))
	}
}

func (d *doubles) fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.errs = append(d.errs, err)
}

// proxyDestroyed is the tripwire before Destroy_Task of a proxy: destroying
// a VM destroys every disk attached to it, so a proxy destroyed with a
// hot-added disk takes a source VM's disk with it. The harness reports it
// as an error of the site (the test fails).
func (d *doubles) proxyDestroyed(ctx *simulator.Context, ref types.ManagedObjectReference) {
	d.mu.Lock()
	p := d.proxies[ref.Value]
	d.mu.Unlock()
	vm, ok := ctx.Map.Get(ref).(*simulator.VirtualMachine)
	if p == nil || !ok {
		return
	}
	var foreign []string
	ctx.WithLock(vm, func() {
		for _, dev := range vm.Config.Hardware.Device {
			if disk, ok := dev.(*types.VirtualDisk); ok {
				if f := diskFile(disk); f != "" && !strings.HasPrefix(f, p.folder) {
					foreign = append(foreign, f)
				}
			}
		}
	})
	if len(foreign) > 0 {
		d.fail(fmt.Errorf("the proxy VM %s was destroyed with disks of other VMs attached, which destroys them: %s", p.name, strings.Join(foreign, ", ")))
	}
}

// proxyUpdated sees every property change of the simulator; changes of a
// proxy's devices reach the fake udev.
func (d *doubles) proxyUpdated(obj mo.Reference, changes []types.PropertyChange) {
	vm, ok := obj.(*mo.VirtualMachine)
	if !ok {
		return
	}
	d.mu.Lock()
	p := d.proxies[vm.Self.Value]
	d.mu.Unlock()
	if p == nil {
		return
	}
	for _, c := range changes {
		if strings.HasPrefix(c.Name, "config.hardware.device") {
			d.syncDevices(p, vm.Config.Hardware.Device)
			return
		}
	}
}

func diskFile(d *types.VirtualDisk) string {
	if fb, ok := d.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
		return fb.GetVirtualDeviceFileBackingInfo().FileName
	}
	return ""
}
