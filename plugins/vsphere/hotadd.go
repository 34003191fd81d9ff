package vsphere

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The HotAdd transport reads a snapshot's disk the way VMware's backup
// proxies do: the disk is attached to the proxy VM (the VM this plugin
// runs in) with a reconfigure, the proxy's guest sees a new SCSI disk, the
// plugin reads that block device, and the disk is detached afterwards.
// The snapshot's disk file is never written, and the proxy never loses a
// disk of its own.
//
//   - Disk mode: the disk is attached "independent_nonpersistent". ESXi
//     then opens the snapshot's file read-only and sends whatever the proxy
//     would write (a guest that touches a partition table, an automounter)
//     to a redo log it throws away at the detach. A read-only open is also
//     what lets the proxy share the file with the running source VM, which
//     holds its snapshot chain open read-only; VMware's VDDK documentation
//     describes the same redo log for its hot-added disks. "independent"
//     also keeps the disk out of any snapshot of the proxy. The redo log
//     needs a little free space where the proxy VM lives.
//   - Several disks at once: each gets a free unit of one of the proxy's
//     SCSI controllers (0-15 but the controller's own 7). Reconfigures of
//     one proxy are serialized within this process; across processes the
//     reconfigure carries the proxy's changeVersion and is retried when
//     vSphere refuses it as concurrent or the unit as taken.
//   - The mark: the reconfigure that attaches a disk also writes
//     extraConfig["ferry.hotadd.scsiB:U"] on the proxy, a JSON record of
//     the source VM, snapshot, disk file and owner (machine, boot, process,
//     Source instance). The detach removes the disk and the record in one
//     reconfigure. A disk ferry did not mark is never touched.
//   - Leftovers: a killed run leaves a disk attached with its record. The
//     next CreateSnapshot, ListSnapshots, OpenSnapshotDisk and Stop detach
//     every marked disk whose owner is gone (see owner.judge) before
//     anything else; RemoveSnapshot first detaches every disk of that
//     snapshot, whoever attached it. The detach never sets a file
//     operation: the file stays, and the proxy is never removed by ferry.
//   - Finding the device: see hotadd_device.go.

// hotaddPrefix starts the extraConfig key of every disk ferry attaches.
const hotaddPrefix = "ferry.hotadd."

// hotaddMode is the disk mode of an attached disk: read-only for the file.
const hotaddMode = string(types.VirtualDiskModeIndependent_nonpersistent)

// hotaddUnits is how many units of a SCSI controller ferry uses: 0-15, as
// every controller type VMware offers has them (pvscsi has more on recent
// virtual hardware).
const hotaddUnits = 16

// Defaults of a Source's HotAdd settings.
const (
	defaultProductUUIDFile = "/sys/class/dmi/id/product_uuid"
	defaultDeviceWait      = 60 * time.Second
	reconfigureTimeout     = 10 * time.Minute
	detachTimeout          = 2 * time.Minute
	linkGoneWait           = 5 * time.Second
	reconfigureAttempts    = 4
)

// hotaddRecord is the mark of an attached disk in the proxy's extraConfig.
type hotaddRecord struct {
	VM       string    `json:"vm"`       // the source VM's id
	Snapshot string    `json:"snapshot"` // the snapshot's id
	Disk     int       `json:"disk"`
	File     string    `json:"file"` // the disk file attached, "[ds] dir/file.vmdk"
	Owner    owner     `json:"owner"`
	At       time.Time `json:"at"`
}

// slot is a place on one of the proxy's SCSI controllers.
type slot struct {
	ctrlKey int32
	bus     int32
	unit    int32
}

func (s slot) String() string { return fmt.Sprintf("scsi%d:%d", s.bus, s.unit) }

func (s slot) key() string { return hotaddPrefix + s.String() }

// parseSlotKey reads the bus and unit out of a record's key.
func parseSlotKey(key string) (bus, unit int32, ok bool) {
	rest, found := strings.CutPrefix(key, hotaddPrefix+"scsi")
	if !found {
		return 0, 0, false
	}
	b, u, found := strings.Cut(rest, ":")
	if !found {
		return 0, 0, false
	}
	bi, err1 := strconv.ParseInt(b, 10, 32)
	ui, err2 := strconv.ParseInt(u, 10, 32)
	if err1 != nil || err2 != nil || bi < 0 || ui < 0 {
		return 0, 0, false
	}
	return int32(bi), int32(ui), true
}

// hotadd is the HotAdd transport of a Source (reading snapshot disks) or
// a Target (writing replica disks). It is safe for concurrent use.
type hotadd struct {
	c        *conn
	log      hclog.Logger
	proxyKey string // hotadd_proxy; "" = the VM with this machine's BIOS UUID
	devDir   string
	wait     time.Duration // how long an attached disk may take to appear
	uuidFile string        // where the guest's BIOS UUID is read
	self     owner
	selfErr  error // why this process cannot use HotAdd at all
	stopped  atomic.Bool

	resolveMu sync.Mutex
	resolved  bool
	proxy     types.ManagedObjectReference
	none      string // why there is no proxy VM
}

// newHotAdd makes a HotAdd transport through the proxy VM proxyKey names
// ("" = this machine's), whose guest names disks in devDir; wait and
// uuidFile are zero but in tests.
func newHotAdd(c *conn, proxyKey, devDir string, wait time.Duration, uuidFile string, log hclog.Logger) *hotadd {
	h := &hotadd{c: c, log: log, proxyKey: proxyKey, devDir: devDir, wait: wait, uuidFile: uuidFile}
	if h.devDir == "" {
		h.devDir = DefaultDeviceDir
	}
	if h.wait <= 0 {
		h.wait = defaultDeviceWait
	}
	if h.uuidFile == "" {
		h.uuidFile = defaultProductUUIDFile
	}
	h.self, h.selfErr = selfOwner()
	if h.selfErr == nil {
		liveTokens.Store(h.self.Token, struct{}{})
	}
	return h
}

// proxyLocks serialize the reconfigures of one proxy VM in this process,
// whichever Source makes them.
var proxyLocks sync.Map // vCenter URL + proxy id -> *sync.Mutex

func (h *hotadd) lock(ref types.ManagedObjectReference) func() {
	v, _ := proxyLocks.LoadOrStore(h.c.url.String()+" "+ref.Value, new(sync.Mutex))
	mu := v.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// resolve finds the proxy VM once: the configured one, or the VM whose
// BIOS UUID this machine reports. No proxy is not an error: the reason is
// returned, and the answer is kept for the Source's life.
func (h *hotadd) resolve(ctx context.Context) (types.ManagedObjectReference, string, error) {
	h.resolveMu.Lock()
	defer h.resolveMu.Unlock()
	if h.resolved {
		return h.proxy, h.none, nil
	}
	if h.selfErr != nil {
		h.resolved, h.none = true, h.selfErr.Error()
		return h.proxy, h.none, nil
	}
	if h.proxyKey != "" {
		vm, err := h.c.vmObjectProps(ctx, h.proxyKey, []string{"name", "config"})
		if errors.Is(err, errdefs.ErrNotFound) {
			h.resolved, h.none = true, fmt.Sprintf("hotadd_proxy %q names no VM of datacenter %s", h.proxyKey, h.c.dc.InventoryPath)
			return h.proxy, h.none, nil
		}
		if err != nil {
			return h.proxy, "", err
		}
		if raw, err := os.ReadFile(h.uuidFile); err == nil {
			if ids, err := smbiosUUIDs(string(raw)); err == nil && !containsFold(ids, vm.Config.Uuid) {
				h.log.Warn("hotadd_proxy names a VM this machine does not seem to be: hot-added disks appear only in the proxy's own guest",
					"proxy", vm.Name, "proxy_bios_uuid", vm.Config.Uuid, "this_machine", strings.TrimSpace(string(raw)))
			}
		}
		h.resolved, h.proxy = true, vm.Self
		h.log.Debug("HotAdd proxy VM", "proxy", vm.Name, "id", vm.Self.Value)
		return h.proxy, "", nil
	}
	raw, err := os.ReadFile(h.uuidFile)
	if err != nil {
		h.resolved, h.none = true, fmt.Sprintf("this machine's BIOS UUID cannot be read (%v): run the plugin as root in the proxy VM, or name it with hotadd_proxy", err)
		return h.proxy, h.none, nil
	}
	ids, err := smbiosUUIDs(string(raw))
	if err != nil {
		h.resolved, h.none = true, fmt.Sprintf("%s holds no BIOS UUID: %v", h.uuidFile, err)
		return h.proxy, h.none, nil
	}
	si := object.NewSearchIndex(h.c.client)
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return h.proxy, "", err
		}
		found, err := si.FindByUuid(ctx, h.c.dc, id, true, nil)
		if err != nil {
			if ctx.Err() != nil {
				return h.proxy, "", ctx.Err()
			}
			return h.proxy, "", h.c.classify(err, "find the VM with BIOS UUID "+id)
		}
		if found != nil && found.Reference().Type == "VirtualMachine" {
			h.resolved, h.proxy = true, found.Reference()
			h.log.Debug("HotAdd proxy VM found by this machine's BIOS UUID", "id", h.proxy.Value, "bios_uuid", id)
			return h.proxy, "", nil
		}
	}
	h.resolved, h.none = true, fmt.Sprintf("no VM of datacenter %s has this machine's BIOS UUID %s: this machine is not a VM of this vCenter (or name the proxy with hotadd_proxy)",
		h.c.dc.InventoryPath, ids[0])
	return h.proxy, h.none, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// proxyView is what the transport reads of the proxy VM.
type proxyView struct {
	vm         mo.VirtualMachine
	host       string          // the host it runs on
	datastores map[string]bool // the datastores that host mounts, by name
}

// view reads the proxy VM; with host, also what its host mounts.
func (h *hotadd) view(ctx context.Context, ref types.ManagedObjectReference, host bool) (*proxyView, error) {
	pv := &proxyView{}
	if err := h.c.retrieveOne(ctx, ref, []string{"name", "config", "runtime"}, &pv.vm); err != nil {
		return nil, fmt.Errorf("the HotAdd proxy VM: %w", err)
	}
	if pv.vm.Config == nil {
		return nil, fmt.Errorf("the HotAdd proxy VM %s has no configuration (inaccessible): %w", pv.vm.Name, errdefs.ErrFailedPrecondition)
	}
	if !host || pv.vm.Runtime.Host == nil {
		return pv, nil
	}
	var hs mo.HostSystem
	if err := h.c.retrieveOne(ctx, *pv.vm.Runtime.Host, []string{"name", "datastore"}, &hs); err != nil {
		return nil, fmt.Errorf("the HotAdd proxy's host: %w", err)
	}
	pv.host = hs.Name
	pv.datastores = map[string]bool{}
	if len(hs.Datastore) > 0 {
		var dss []mo.Datastore
		if err := property.DefaultCollector(h.c.client).Retrieve(ctx, hs.Datastore, []string{"name"}, &dss); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, h.c.classify(err, "read the datastores of host "+hs.Name)
		}
		for _, ds := range dss {
			pv.datastores[ds.Name] = true
		}
	}
	return pv, nil
}

// hotaddBlocker says why a disk cannot be hot-added to the proxy, or "".
// src is the VM the disk belongs to and srcDevices its devices.
func hotaddBlocker(p *proxyView, src types.ManagedObjectReference, srcDevices object.VirtualDeviceList, d *types.VirtualDisk) string {
	name := p.vm.Name
	switch {
	case p.vm.Self == src:
		return fmt.Sprintf("the proxy VM %s is the VM being read: a VM cannot hot-add its own disks", name)
	case p.vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn:
		return fmt.Sprintf("the proxy VM %s is %s; HotAdd needs it running", name, p.vm.Runtime.PowerState)
	case !strings.EqualFold(extraConfig(p.vm.Config)["disk.EnableUUID"], "true"):
		return fmt.Sprintf(`the proxy VM %s lacks disk.EnableUUID = "TRUE", without which its guest cannot tell hot-added disks apart (set it, then power the proxy off and on)`, name)
	}
	if len(scsiControllers(p.vm.Config.Hardware.Device)) == 0 {
		return fmt.Sprintf("the proxy VM %s has no SCSI controller to attach disks to", name)
	}
	if ctrl := srcDevices.FindByKey(d.ControllerKey); ctrl != nil {
		if _, ide := ctrl.(*types.VirtualIDEController); ide {
			return "the disk is on an IDE controller, which VMware's HotAdd does not support"
		}
	}
	if attachBacking(d.Backing, "", hotaddMode) == nil {
		return fmt.Sprintf("a disk with a %T backing cannot be hot-added", d.Backing)
	}
	for _, ds := range chainDatastores(d) {
		if !p.datastores[ds] {
			return fmt.Sprintf("the proxy VM %s runs on host %s, which does not mount datastore %q of the disk", name, p.host, ds)
		}
	}
	return ""
}

// scsiControllers returns a VM's SCSI controllers by bus number.
func scsiControllers(devices []types.BaseVirtualDevice) []*types.VirtualController {
	var out []*types.VirtualController
	for _, d := range devices {
		if c, ok := d.(types.BaseVirtualSCSIController); ok {
			out = append(out, c.(types.BaseVirtualController).GetVirtualController())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BusNumber < out[j].BusNumber })
	return out
}

// freeSlot picks the first free unit of the proxy's SCSI controllers,
// skipping each controller's own unit (7).
func freeSlot(devices []types.BaseVirtualDevice) (slot, bool) {
	for _, ctrl := range scsiControllers(devices) {
		used := map[int32]bool{7: true}
		for _, dev := range devices {
			if c, ok := dev.(types.BaseVirtualSCSIController); ok && c.(types.BaseVirtualController).GetVirtualController().Key == ctrl.Key {
				if u := c.GetVirtualSCSIController().ScsiCtlrUnitNumber; u > 0 {
					used[u] = true
				}
			}
			vd := dev.GetVirtualDevice()
			if vd.ControllerKey == ctrl.Key && vd.UnitNumber != nil {
				used[*vd.UnitNumber] = true
			}
		}
		for u := int32(0); u < hotaddUnits; u++ {
			if !used[u] {
				return slot{ctrlKey: ctrl.Key, bus: ctrl.BusNumber, unit: u}, true
			}
		}
	}
	return slot{}, false
}

// diskAt finds the disk at a slot of the proxy.
func diskAt(devices []types.BaseVirtualDevice, bus, unit int32) *types.VirtualDisk {
	for _, ctrl := range scsiControllers(devices) {
		if ctrl.BusNumber != bus {
			continue
		}
		for _, dev := range devices {
			vd := dev.GetVirtualDevice()
			if disk, ok := dev.(*types.VirtualDisk); ok && vd.ControllerKey == ctrl.Key && vd.UnitNumber != nil && *vd.UnitNumber == unit {
				return disk
			}
		}
	}
	return nil
}

// sameFile says whether two datastore paths name the same file, however
// vSphere spaced them.
func sameFile(a, b string) bool {
	pa, errA := parseDSPath(a)
	pb, errB := parseDSPath(b)
	if errA != nil || errB != nil {
		return a == b
	}
	return pa.Datastore == pb.Datastore && path.Clean(pa.Path) == path.Clean(pb.Path)
}

// backingFile and backingUUID read a virtual disk backing's file and UUID.
func backingFile(b types.BaseVirtualDeviceBackingInfo) string {
	if fb, ok := b.(types.BaseVirtualDeviceFileBackingInfo); ok {
		return fb.GetVirtualDeviceFileBackingInfo().FileName
	}
	return ""
}

func backingUUID(b types.BaseVirtualDeviceBackingInfo) string {
	switch b := b.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return b.Uuid
	case *types.VirtualDiskSeSparseBackingInfo:
		return b.Uuid
	case *types.VirtualDiskSparseVer2BackingInfo:
		return b.Uuid
	}
	return ""
}

// attachBacking is the backing that attaches file, of the same format as
// the disk b, in disk mode (hotaddMode for snapshot disks); nil for a
// format HotAdd does not attach.
func attachBacking(b types.BaseVirtualDeviceBackingInfo, file, mode string) types.BaseVirtualDeviceBackingInfo {
	fb := types.VirtualDeviceFileBackingInfo{FileName: file}
	switch b.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		return &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: fb, DiskMode: mode}
	case *types.VirtualDiskSeSparseBackingInfo:
		return &types.VirtualDiskSeSparseBackingInfo{VirtualDeviceFileBackingInfo: fb, DiskMode: mode}
	case *types.VirtualDiskSparseVer2BackingInfo:
		return &types.VirtualDiskSparseVer2BackingInfo{VirtualDeviceFileBackingInfo: fb, DiskMode: mode}
	}
	return nil
}

// deltaBacking says whether a snapshot's disk is a delta (the VM had other
// snapshots): direct and network reads need a flat base disk.
func deltaBacking(d *types.VirtualDisk) (bool, string) {
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		if b.Parent != nil {
			return true, fmt.Sprintf("the snapshot's disk %s is a delta of %s (the VM has snapshots of its own)", b.FileName, b.Parent.FileName)
		}
	case *types.VirtualDiskSeSparseBackingInfo:
		return true, fmt.Sprintf("the snapshot's disk %s is an seSparse delta (the VM has snapshots of its own)", b.FileName)
	case *types.VirtualDiskSparseVer2BackingInfo:
		return true, fmt.Sprintf("the snapshot's disk %s is a sparse disk", b.FileName)
	}
	return false, ""
}

// chainDatastores names the datastores of every file of a disk's chain.
func chainDatastores(d *types.VirtualDisk) []string {
	var files []string
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		for p := b; p != nil; p = p.Parent {
			files = append(files, p.FileName)
		}
	case *types.VirtualDiskSeSparseBackingInfo:
		for p := b; p != nil; p = p.Parent {
			files = append(files, p.FileName)
		}
	case *types.VirtualDiskSparseVer2BackingInfo:
		for p := b; p != nil; p = p.Parent {
			files = append(files, p.FileName)
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		if p, err := parseDSPath(f); err == nil && !seen[p.Datastore] {
			seen[p.Datastore] = true
			out = append(out, p.Datastore)
		}
	}
	return out
}

// records reads the marks of the disks ferry attached to the proxy; nil
// values are marks that cannot be read.
func records(cfg *types.VirtualMachineConfigInfo) map[string]*hotaddRecord {
	out := map[string]*hotaddRecord{}
	for k, v := range extraConfig(cfg) {
		if !strings.HasPrefix(k, hotaddPrefix) {
			continue
		}
		var rec hotaddRecord
		if _, _, ok := parseSlotKey(k); !ok || json.Unmarshal([]byte(v), &rec) != nil || rec.File == "" {
			out[k] = nil
			continue
		}
		out[k] = &rec
	}
	return out
}

// retryable says whether a refused reconfigure is worth another try with
// a fresh view of the proxy: another process changed it in between.
func retryable(err error) bool {
	return fault.Is(err, &types.ConcurrentAccess{}) || fault.Is(err, &types.InvalidDeviceSpec{})
}

// reconfigure reconfigures the proxy and returns vSphere's error as is.
// The task is waited for even when ctx ends meanwhile, so the caller knows
// what happened to the proxy; it is not started when ctx has ended.
func (h *hotadd) reconfigure(ctx context.Context, ref types.ManagedObjectReference, spec types.VirtualMachineConfigSpec) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reconfigureTimeout)
	defer cancel()
	t, err := object.NewVirtualMachine(h.c.client, ref).Reconfigure(wctx, spec)
	if err != nil {
		return err
	}
	_, err = t.WaitForResult(wctx)
	return err
}

// classify classifies a refused reconfigure; one still refused as
// concurrent after the retries is ErrUnavailable (try again later).
func (h *hotadd) classify(ctx context.Context, err error, op string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if fault.Is(err, &types.ConcurrentAccess{}) {
		return fmt.Errorf("vsphere %s: %s: the VM kept changing under the reconfigure (%d tries): %w", h.c.url, op, reconfigureAttempts, errdefs.ErrUnavailable)
	}
	return h.c.classify(err, op)
}

// attachment is a disk this Source attached.
type attachment struct {
	slot   slot
	file   string
	uuid   string
	link   string // its name in the device folder
	proxy  types.ManagedObjectReference
	pname  string
	record hotaddRecord
}

// errNoSlot is a proxy whose controllers are full.
var errNoSlot = errors.New("no free SCSI unit")

// attach attaches a snapshot's disk to the proxy and returns where it is.
// The caller holds the proxy's lock and has checked hotaddBlocker.
func (h *hotadd) attach(ctx context.Context, ref types.ManagedObjectReference, pv *proxyView, rec hotaddRecord, backing types.BaseVirtualDeviceBackingInfo) (*attachment, error) {
	for attempt := 1; ; attempt++ {
		sl, ok := freeSlot(pv.vm.Config.Hardware.Device)
		if !ok {
			return nil, fmt.Errorf("the proxy VM %s has no free unit on its SCSI controllers (add a controller): %w", pv.vm.Name, errNoSlot)
		}
		rec.At = time.Now().UTC()
		val, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		unit := sl.unit
		disk := &types.VirtualDisk{VirtualDevice: types.VirtualDevice{Key: -1, ControllerKey: sl.ctrlKey, UnitNumber: &unit, Backing: backing}}
		spec := types.VirtualMachineConfigSpec{
			ChangeVersion: pv.vm.Config.ChangeVersion,
			// No file operation: the file exists and is attached as it is.
			DeviceChange: []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: disk}},
			ExtraConfig:  []types.BaseOptionValue{&types.OptionValue{Key: sl.key(), Value: string(val)}},
		}
		err = h.reconfigure(ctx, ref, spec)
		if err != nil && retryable(err) && attempt < reconfigureAttempts {
			h.log.Debug("the proxy changed under the reconfigure; trying again", "proxy", pv.vm.Name, "slot", sl, "error", err)
			if pv, err = h.view(ctx, ref, false); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, h.classify(ctx, err, fmt.Sprintf("attach %s to the proxy VM %s", rec.File, pv.vm.Name))
		}
		att := &attachment{slot: sl, file: rec.File, proxy: ref, pname: pv.vm.Name, record: rec}
		after, err := h.view(context.WithoutCancel(ctx), ref, false)
		if err != nil {
			return att, err
		}
		d := diskAt(after.vm.Config.Hardware.Device, sl.bus, sl.unit)
		if d == nil || !sameFile(backingFile(d.Backing), rec.File) {
			return att, fmt.Errorf("the proxy VM %s shows no disk %s at %s after attaching it: %w", pv.vm.Name, rec.File, sl, errdefs.ErrUnavailable)
		}
		att.uuid = backingUUID(d.Backing)
		if att.link, err = wwnName(att.uuid); err != nil {
			return att, fmt.Errorf("the disk attached at %s of the proxy VM %s: %v: %w", sl, pv.vm.Name, err, errdefs.ErrFailedPrecondition)
		}
		for _, other := range virtualDisks(after.vm.Config.Hardware.Device) {
			if other.Key != d.Key && strings.EqualFold(backingUUID(other.Backing), att.uuid) {
				return att, fmt.Errorf("the proxy VM %s already has a disk with UUID %s (%s): its guest could not tell the two apart: %w",
					pv.vm.Name, att.uuid, backingFile(other.Backing), errdefs.ErrFailedPrecondition)
			}
		}
		return att, nil
	}
}

// released is a mark removed from the proxy, and its disk when it was
// there.
type released struct {
	key    string
	rec    *hotaddRecord
	why    string
	disk   bool   // the disk was detached, not only the mark removed
	uuid   string // the detached disk's UUID
	dsFile string
}

// release detaches the disks whose marks pick chooses and removes those
// marks, in one reconfigure of the proxy (retried when another process
// changed the proxy meanwhile). A mark whose slot holds another disk than
// the one it names loses only the mark. The disks' files are never
// deleted: no file operation is set.
func (h *hotadd) release(ctx context.Context, ref types.ManagedObjectReference, pick func(key string, rec *hotaddRecord) (bool, string)) ([]released, error) {
	unlock := h.lock(ref)
	defer unlock()
	for attempt := 1; ; attempt++ {
		pv, err := h.view(ctx, ref, false)
		if err != nil {
			return nil, err
		}
		var out []released
		spec := types.VirtualMachineConfigSpec{ChangeVersion: pv.vm.Config.ChangeVersion}
		recs := records(pv.vm.Config)
		keys := make([]string, 0, len(recs))
		for k := range recs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			rec := recs[k]
			ok, why := pick(k, rec)
			if !ok {
				continue
			}
			r := released{key: k, rec: rec, why: why}
			if rec != nil {
				bus, unit, _ := parseSlotKey(k)
				if d := diskAt(pv.vm.Config.Hardware.Device, bus, unit); d != nil && sameFile(backingFile(d.Backing), rec.File) {
					// FileOperation stays unset: detach, never destroy.
					spec.DeviceChange = append(spec.DeviceChange, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationRemove, Device: d})
					r.disk, r.uuid, r.dsFile = true, backingUUID(d.Backing), rec.File
				}
			}
			spec.ExtraConfig = append(spec.ExtraConfig, &types.OptionValue{Key: k, Value: ""})
			out = append(out, r)
		}
		if len(out) == 0 {
			return nil, nil
		}
		err = h.reconfigure(ctx, ref, spec)
		if err != nil && retryable(err) && attempt < reconfigureAttempts {
			h.log.Debug("the proxy changed under the detach; trying again", "proxy", pv.vm.Name, "error", err)
			continue
		}
		if err != nil {
			return nil, h.classify(ctx, err, "detach disks from the proxy VM "+pv.vm.Name)
		}
		for _, r := range out {
			if r.disk {
				if name, err := wwnName(r.uuid); err == nil && !waitGone(h.devDir, name, linkGoneWait) {
					h.log.Warn("the guest still shows a detached disk", "proxy", pv.vm.Name, "device", name, "file", r.dsFile)
				}
			}
		}
		return out, nil
	}
}

// sweep detaches the disks that runs now gone left on the proxy: marked by
// ferry, owned by a process that no longer runs (or a stopped Source of
// this one). Failures are logged: a leftover does not stop a run, and
// RemoveSnapshot insists on its own disks.
func (h *hotadd) sweep(ctx context.Context) {
	if h == nil || h.stopped.Load() {
		return
	}
	ref, none, err := h.resolve(ctx)
	if err != nil || none != "" {
		if err != nil && ctx.Err() == nil {
			h.log.Warn("cannot find the HotAdd proxy VM to detach leftovers", "error", err)
		}
		return
	}
	h.sweepProxy(ctx, ref)
}

func (h *hotadd) sweepProxy(ctx context.Context, ref types.ManagedObjectReference) {
	out, err := h.release(ctx, ref, func(key string, rec *hotaddRecord) (bool, string) {
		if rec == nil {
			h.log.Warn("the proxy VM has a HotAdd mark ferry cannot read; left alone", "key", key)
			return false, ""
		}
		v, why := rec.Owner.judge(h.self, tokenLive, procStart)
		if v == ownerForeign {
			h.log.Debug("a disk on the proxy VM was attached from another machine; left alone", "key", key, "file", rec.File, "why", why)
		}
		return v == ownerDead, why
	})
	for _, r := range out {
		h.log.Warn("detached a disk ferry left attached to the proxy VM", "proxy", ref.Value, "slot", strings.TrimPrefix(r.key, hotaddPrefix),
			"file", r.rec.File, "source_vm", r.rec.VM, "snapshot", r.rec.Snapshot, "disk", r.rec.Disk, "attached_at", r.rec.At, "why", r.why, "was_attached", r.disk)
	}
	if err != nil && ctx.Err() == nil {
		h.log.Warn("cannot detach the disks left on the HotAdd proxy VM", "proxy", ref.Value, "error", err)
	}
}

// releaseSnapshot detaches every disk of a snapshot from the proxy,
// whoever attached it: the snapshot is about to be removed, and removing
// it under an attached disk would leave its data unconsolidated.
func (h *hotadd) releaseSnapshot(ctx context.Context, vm, snapshot string) error {
	if h == nil {
		return nil
	}
	ref, none, err := h.resolve(ctx)
	if err != nil {
		return err
	}
	if none != "" {
		return nil
	}
	out, err := h.release(ctx, ref, func(_ string, rec *hotaddRecord) (bool, string) {
		return rec != nil && rec.VM == vm && rec.Snapshot == snapshot, "its snapshot is being removed"
	})
	for _, r := range out {
		h.log.Info("detached a snapshot's disk from the proxy VM before removing the snapshot", "proxy", ref.Value, "file", r.rec.File,
			"disk", r.rec.Disk, "snapshot", snapshot, "was_attached", r.disk)
	}
	if err != nil {
		return fmt.Errorf("detach the disks of snapshot %s from the HotAdd proxy VM: %w", snapshot, err)
	}
	return nil
}

// stop ends the Source's use of the proxy: its own disks, still attached
// when a reader was not closed, and leftovers of others are detached.
func (h *hotadd) stop(ctx context.Context) {
	if h == nil || h.stopped.Swap(true) {
		return
	}
	liveTokens.Delete(h.self.Token)
	h.resolveMu.Lock()
	ref, ok := h.proxy, h.resolved && h.none == ""
	h.resolveMu.Unlock()
	if ok {
		h.sweepProxy(ctx, ref)
	}
}

// open attaches a snapshot's disk to the proxy and opens the block device
// its guest shows. why says why HotAdd was chosen (logged). When HotAdd
// cannot be used, it returns the reason and no error; an error means it
// was tried and failed (the disk is detached again).
func (h *hotadd) open(ctx context.Context, vm *mo.VirtualMachine, snapshot string, index int, d *types.VirtualDisk, log hclog.Logger, why string) (sdk.DiskReader, string, error) {
	att, real, n, none, err := h.attachDisk(ctx, vm, snapshot, index, d, hotaddMode)
	if err != nil || none != "" {
		return nil, none, err
	}
	r, err := openFileReader(real, diskCapacity(d))
	if err != nil {
		h.detach(context.WithoutCancel(ctx), att)
		return nil, "", fmt.Errorf("open the hot-added disk %s (%s): %w", real, att.link, err)
	}
	r.fileSize = n
	log.Info("disk transport: hotadd (the disk attached to the proxy VM, read as a block device)", "proxy", att.pname, "slot", att.slot.String(),
		"device", real, "file", att.file, "why", why)
	return &hotaddReader{fileReader: r, h: h, att: att}, "", nil
}

// attachDisk attaches disk d of vm (its index; of a snapshot, or "" for
// the VM's own disk) to the proxy in mode, waits for the block device its
// guest shows and checks the device's size. It returns the attachment, the
// device's path and size. When HotAdd cannot be used it returns the reason
// and no error; an error means it was tried and failed (the disk is
// detached again).
func (h *hotadd) attachDisk(ctx context.Context, vm *mo.VirtualMachine, snapshot string, index int, d *types.VirtualDisk, mode string) (*attachment, string, int64, string, error) {
	if h == nil {
		return nil, "", 0, "HotAdd is not configured", nil
	}
	if h.stopped.Load() {
		return nil, "", 0, "", fmt.Errorf("the component was stopped: %w", errdefs.ErrFailedPrecondition)
	}
	ref, none, err := h.resolve(ctx)
	if err != nil || none != "" {
		return nil, "", 0, none, err
	}
	file := backingFile(d.Backing)
	backing := attachBacking(d.Backing, file, mode)
	unlock := h.lock(ref)
	pv, err := h.view(ctx, ref, true)
	if err != nil {
		unlock()
		return nil, "", 0, "", err
	}
	if blocker := hotaddBlocker(pv, vm.Self, vm.Config.Hardware.Device, d); blocker != "" {
		unlock()
		return nil, "", 0, blocker, nil
	}
	rec := hotaddRecord{VM: vm.Self.Value, Snapshot: snapshot, Disk: index, File: file, Owner: h.self}
	att, err := h.attach(ctx, ref, pv, rec, backing)
	unlock()
	if errors.Is(err, errNoSlot) {
		return nil, "", 0, err.Error(), nil
	}
	if err != nil {
		if att != nil {
			h.detach(context.WithoutCancel(ctx), att)
		}
		return nil, "", 0, "", err
	}
	fail := func(err error) (*attachment, string, int64, string, error) {
		h.detach(context.WithoutCancel(ctx), att)
		return nil, "", 0, "", err
	}
	capacity := diskCapacity(d)
	real, err := waitDevice(ctx, h.devDir, att.link, h.wait)
	switch {
	case errors.Is(err, errNoDevice):
		return fail(fmt.Errorf("attached %s to the proxy VM %s at %s (UUID %s), but no %s appeared in %s within %s; "+
			`is disk.EnableUUID = "TRUE" in effect in the proxy (set before its last power-on), and does this plugin run in that VM?: %w`,
			file, att.pname, att.slot, att.uuid, att.link, h.devDir, h.wait, errdefs.ErrFailedPrecondition))
	case err != nil:
		return fail(err)
	}
	// A block device's size is where its end is.
	n, err := deviceSize(real)
	if err == nil && n < capacity {
		err = fmt.Errorf("it has %d bytes, the disk %d: not the disk attached", n, capacity)
	}
	if err != nil {
		return fail(fmt.Errorf("the hot-added disk %s (%s): %v: %w", real, att.link, err, errdefs.ErrFailedPrecondition))
	}
	return att, real, n, "", nil
}

// deviceSize is the size of a block device (or file): where its end is.
func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// detach detaches a disk this Source attached, with its mark. A disk that
// is gone already (RemoveSnapshot detached it, or Stop) is fine.
func (h *hotadd) detach(ctx context.Context, att *attachment) error {
	ctx, cancel := context.WithTimeout(ctx, detachTimeout)
	defer cancel()
	key := att.slot.key()
	_, err := h.release(ctx, att.proxy, func(k string, rec *hotaddRecord) (bool, string) {
		return k == key && rec != nil && rec.File == att.file && rec.Owner == att.record.Owner, "closed"
	})
	if err != nil {
		h.log.Error("cannot detach a disk from the HotAdd proxy VM", "proxy", att.pname, "slot", att.slot.String(), "file", att.file, "error", err)
		return fmt.Errorf("detach %s from the proxy VM %s: %w", att.file, att.pname, err)
	}
	return nil
}

// hotaddReader reads a hot-added disk's block device. It offers the
// device's path: ferry's data mover, on the same machine, reads it itself.
// Close detaches the disk.
type hotaddReader struct {
	*fileReader
	h    *hotadd
	att  *attachment
	once sync.Once
	err  error
}

var (
	_ sdk.DiskReader  = (*hotaddReader)(nil)
	_ sdk.LocalPather = (*hotaddReader)(nil)
)

func (r *hotaddReader) LocalPath() string { return r.path }

func (r *hotaddReader) Close() error {
	r.once.Do(func() {
		ferr := r.fileReader.Close()
		if r.h.stopped.Load() {
			// Stop detached it.
			r.err = ferr
			return
		}
		r.err = errors.Join(ferr, r.h.detach(context.Background(), r.att))
	})
	return r.err
}
