//go:build windows

package wmihost

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// add adds one resource to a VM's settings (AddResourceSettings) and
// returns the path of the resource made.
func (h *Host) add(ctx context.Context, vssd obj, text string) (string, error) {
	vsms, err := h.c.service("Msvm_VirtualSystemManagementService")
	if err != nil {
		return "", err
	}
	defer vsms.Close()
	out, err := h.c.call(ctx, vsms, "AddResourceSettings", []param{{"AffectedConfiguration", vssd.path()}, {"ResourceSettings", []string{text}}}, "ResultingResourceSettings")
	if err != nil {
		return "", err
	}
	made := toStrings(out["ResultingResourceSettings"])
	if len(made) == 0 {
		return "", fmt.Errorf("AddResourceSettings: %w", errNoOut)
	}
	return made[0], nil
}

// controllers lists the disk controllers of a VM's settings, numbered.
func (h *Host) controllers(vssd obj) ([]controller, error) {
	rasds, err := h.c.related(vssd, "Msvm_ResourceAllocationSettingData")
	if err != nil {
		return nil, err
	}
	defer closeAll(rasds)
	var cs []controller
	for _, r := range rasds {
		switch r.str("ResourceSubType") {
		case subIDE:
			cs = append(cs, controller{Path: r.path(), InstanceID: r.str("InstanceID"), Kind: "ide", Address: r.str("Address")})
		case subSCSI:
			cs = append(cs, controller{Path: r.path(), InstanceID: r.str("InstanceID"), Kind: "scsi"})
		}
	}
	numberControllers(cs)
	return cs, nil
}

// CreateVM defines a VM (DefineSystem) in a new folder of its own, sets
// its processors and memory (ModifyResourceSettings), adds SCSI
// controllers, new dynamic VHDX disks (CreateVirtualHardDisk, then a disk
// drive and its Msvm_StorageAllocationSettingData) and adapters, and sets
// the adapters' guest networks. A failure removes the VM and its folder.
func (h *Host) CreateVM(ctx context.Context, spec host.VMSpec) (*host.VM, error) {
	sub, err := subType(spec.Generation)
	if err != nil {
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	if spec.Name == "" {
		return nil, fmt.Errorf("create vm: no name: %w", errdefs.ErrInvalidArgument)
	}
	if spec.TPM {
		return nil, fmt.Errorf("create vm %q: a virtual TPM needs a key protector (Msvm_SecurityService.SetKeyProtector with one made by the Host Guardian client), which this backend does not make yet: %w", spec.Name, errdefs.ErrUnimplemented)
	}
	for i, n := range spec.NICs {
		if n.Legacy {
			return nil, fmt.Errorf("create vm %q adapter %d: a legacy network adapter (Msvm_EmulatedEthernetPortSettingData) is not written in this backend yet: %w", spec.Name, i, errdefs.ErrUnimplemented)
		}
	}
	tmpl, err := templateID(spec.SecureBootTemplate)
	if err != nil {
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	for i, d := range spec.Disks {
		if d.Controller == "ide" && spec.Generation == 2 {
			return nil, fmt.Errorf("create vm %q disk %d: a generation 2 VM has no IDE controller: %w", spec.Name, i, errdefs.ErrInvalidArgument)
		}
		if d.Controller != "ide" && d.Controller != "scsi" {
			return nil, fmt.Errorf("create vm %q disk %d: controller %q: %w", spec.Name, i, d.Controller, errdefs.ErrInvalidArgument)
		}
		if d.Capacity <= 0 || d.Capacity%512 != 0 {
			return nil, fmt.Errorf("create vm %q disk %d: capacity %d: %w", spec.Name, i, d.Capacity, errdefs.ErrInvalidArgument)
		}
	}
	var out *host.VM
	err = h.c.do(ctx, func() error {
		for i, n := range spec.NICs {
			if n.Switch == "" {
				continue
			}
			sw, err := h.switchObj(n.Switch)
			if err != nil {
				return fmt.Errorf("create vm %q adapter %d: %w", spec.Name, i, err)
			}
			sw.Close()
		}
		base := spec.Dir
		if base == "" {
			s, err := h.c.one("SELECT * FROM Msvm_VirtualSystemManagementServiceSettingData", "virtual system management settings")
			if err != nil {
				return err
			}
			base = s.str("DefaultVirtualHardDiskPath")
			s.Close()
		}
		folder := filepath.Join(base, spec.Name+"-"+randHex(4))
		if err := os.MkdirAll(folder, 0o755); err != nil {
			return fmt.Errorf("create vm %q: %w", spec.Name, err)
		}
		cs, err := h.define(ctx, spec, sub, tmpl, folder)
		if err != nil {
			os.RemoveAll(folder)
			return fmt.Errorf("create vm %q: %w", spec.Name, err)
		}
		defer cs.Close()
		err = h.furnish(ctx, cs, spec, folder)
		if err == nil {
			err = h.setBootOrderOf(ctx, cs, spec)
		}
		if err != nil {
			cleanup := h.destroy(context.WithoutCancel(ctx), cs)
			os.RemoveAll(folder)
			return errors.Join(fmt.Errorf("create vm %q: %w", spec.Name, err), cleanup)
		}
		if err := cs.Refresh(); err != nil {
			return fmt.Errorf("create vm %q: %v: %w", spec.Name, err, errdefs.ErrUnavailable)
		}
		out, err = h.describe(cs)
		return err
	})
	return out, err
}

func (h *Host) define(ctx context.Context, spec host.VMSpec, sub, template, folder string) (obj, error) {
	props := []param{{"ElementName", spec.Name}, {"VirtualSystemSubType", sub}, {"ConfigurationDataRoot", folder},
		{"SnapshotDataRoot", folder}, {"SwapFileDataRoot", folder}}
	if spec.Notes != "" {
		props = append(props, param{"Notes", []string{spec.Notes}})
	}
	if spec.Generation == 2 {
		props = append(props, param{"SecureBootEnabled", spec.SecureBoot})
		if spec.SecureBoot && template != "" {
			props = append(props, param{"SecureBootTemplateId", template})
		}
	}
	text, err := h.c.embed("Msvm_VirtualSystemSettingData", props)
	if err != nil {
		return obj{}, err
	}
	vsms, err := h.c.service("Msvm_VirtualSystemManagementService")
	if err != nil {
		return obj{}, err
	}
	defer vsms.Close()
	res, err := h.c.call(ctx, vsms, "DefineSystem", []param{{"SystemSettings", text}}, "ResultingSystem")
	if err != nil {
		return obj{}, err
	}
	path := toString(res["ResultingSystem"])
	if path == "" {
		return obj{}, fmt.Errorf("DefineSystem: %w", errNoOut)
	}
	return h.c.byPath(path)
}

// furnish gives a newly defined VM its processors, memory, disks and
// adapters.
func (h *Host) furnish(ctx context.Context, cs obj, spec host.VMSpec, folder string) error {
	vssd, snaps, err := h.settings(cs)
	if err != nil {
		return err
	}
	closeAll(snaps)
	defer vssd.Close()
	var texts []string
	if ps, err := h.c.related(vssd, "Msvm_ProcessorSettingData"); err == nil && len(ps) > 0 {
		t, err := embedObj(ps[0], []param{{"VirtualQuantity", strconv.Itoa(max(spec.CPUs, 1))}})
		closeAll(ps)
		if err != nil {
			return err
		}
		texts = append(texts, t)
	}
	if ms, err := h.c.related(vssd, "Msvm_MemorySettingData"); err == nil && len(ms) > 0 {
		mib := strconv.FormatInt(spec.MemoryMiB, 10)
		t, err := embedObj(ms[0], []param{{"DynamicMemoryEnabled", false}, {"VirtualQuantity", mib}, {"Reservation", mib}, {"Limit", mib}})
		closeAll(ms)
		if err != nil {
			return err
		}
		texts = append(texts, t)
	}
	if len(texts) > 0 {
		if err := h.modifyResources(ctx, texts); err != nil {
			return fmt.Errorf("processors and memory: %w", err)
		}
	}
	ctrls, err := h.controllers(vssd)
	if err != nil {
		return err
	}
	scsi := 0
	for _, c := range ctrls {
		if c.Kind == "scsi" {
			scsi++
		}
	}
	for _, d := range spec.Disks {
		for d.Controller == "scsi" && scsi <= d.Bus {
			def, err := h.c.defaults("Msvm_ResourceAllocationSettingData", subSCSI)
			if err != nil {
				return err
			}
			t, err := embedObj(def, nil)
			def.Close()
			if err != nil {
				return err
			}
			if _, err := h.add(ctx, vssd, t); err != nil {
				return fmt.Errorf("add SCSI controller: %w", err)
			}
			scsi++
		}
	}
	if ctrls, err = h.controllers(vssd); err != nil {
		return err
	}
	for i, d := range spec.Disks {
		if err := h.addDisk(ctx, vssd, ctrls, d, filepath.Join(folder, fmt.Sprintf("disk%d.vhdx", i))); err != nil {
			return fmt.Errorf("disk %d: %w", i, err)
		}
	}
	for i, n := range spec.NICs {
		def, err := h.c.defaults("Msvm_SyntheticEthernetPortSettingData", subNIC)
		if err != nil {
			return err
		}
		t, err := embedObj(def, []param{{"ElementName", "Network Adapter"}, {"VirtualSystemIdentifiers", []string{"{" + newGUID() + "}"}}, {"StaticMacAddress", false}})
		def.Close()
		if err != nil {
			return err
		}
		port, err := h.add(ctx, vssd, t)
		if err != nil {
			return fmt.Errorf("adapter %d: %w", i, err)
		}
		if n.Switch == "" {
			continue
		}
		p, err := h.c.byPath(port)
		if err != nil {
			return err
		}
		err = h.connect(ctx, vssd, nicInfo{port: p}, n.Switch)
		p.Close()
		if err != nil {
			return fmt.Errorf("adapter %d: %w", i, err)
		}
	}
	for i, n := range spec.NICs {
		if len(n.Guest.Addresses) == 0 && n.Guest.Gateway == "" && len(n.Guest.DNS) == 0 {
			continue
		}
		if err := h.setGuest(ctx, cs, i, n.Guest); err != nil {
			return fmt.Errorf("adapter %d guest network: %w", i, err)
		}
	}
	return nil
}

// addDisk creates a dynamic VHDX (CreateVirtualHardDisk: Type 3 dynamic,
// Format 3 VHDX) and attaches it at its slot: a synthetic disk drive on
// the controller, and the file on the drive.
func (h *Host) addDisk(ctx context.Context, vssd obj, ctrls []controller, d host.DiskSpec, path string) error {
	var ctrl *controller
	for i := range ctrls {
		if ctrls[i].Kind == d.Controller && ctrls[i].Bus == d.Bus {
			ctrl = &ctrls[i]
		}
	}
	if ctrl == nil {
		return fmt.Errorf("no %s controller %d: %w", d.Controller, d.Bus, errdefs.ErrInvalidArgument)
	}
	settings, err := h.c.embed("Msvm_VirtualHardDiskSettingData", []param{{"Type", int32(3)}, {"Format", int32(3)},
		{"Path", path}, {"MaxInternalSize", strconv.FormatInt(d.Capacity, 10)}})
	if err != nil {
		return err
	}
	ims, err := h.c.service("Msvm_ImageManagementService")
	if err != nil {
		return err
	}
	_, err = h.c.call(ctx, ims, "CreateVirtualHardDisk", []param{{"VirtualDiskSettingData", settings}})
	ims.Close()
	if err != nil {
		return err
	}
	def, err := h.c.defaults("Msvm_ResourceAllocationSettingData", subDiskDrive)
	if err != nil {
		return err
	}
	t, err := embedObj(def, []param{{"Parent", ctrl.Path}, {"AddressOnParent", strconv.Itoa(d.Location)}})
	def.Close()
	if err != nil {
		return err
	}
	drive, err := h.add(ctx, vssd, t)
	if err != nil {
		return fmt.Errorf("disk drive: %w", err)
	}
	def, err = h.c.defaults("Msvm_StorageAllocationSettingData", subVHD)
	if err != nil {
		return err
	}
	t, err = embedObj(def, []param{{"Parent", drive}, {"HostResource", []string{path}}})
	def.Close()
	if err != nil {
		return err
	}
	_, err = h.add(ctx, vssd, t)
	return err
}

func newGUID() string {
	id := strings.ToUpper(randHex(16))
	return id[0:8] + "-" + id[8:12] + "-4" + id[13:16] + "-" + id[16:20] + "-" + id[20:]
}

// destroy turns a VM off and removes it (DestroySystem).
func (h *Host) destroy(ctx context.Context, cs obj) error {
	if err := h.setRunning(ctx, cs, false); err != nil {
		return err
	}
	vsms, err := h.c.service("Msvm_VirtualSystemManagementService")
	if err != nil {
		return err
	}
	defer vsms.Close()
	_, err = h.c.call(ctx, vsms, "DestroySystem", []param{{"AffectedSystem", cs.path()}})
	return err
}

// DeleteVM turns the VM off, removes it with its checkpoints
// (DestroySystem), then deletes the disk files its current state and its
// checkpoints used, and their parents, which Hyper-V leaves behind.
func (h *Host) DeleteVM(ctx context.Context, vm string) error {
	return h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		cur, snaps, err := h.settings(cs)
		if err != nil {
			return err
		}
		files := map[string]bool{}
		for _, s := range append(snaps, cur) {
			ds, err := h.disks(s)
			if err == nil {
				for _, d := range ds {
					for p, depth := d.path, 0; p != "" && depth < 128; depth++ {
						files[p] = true
						p = h.parentOf(p)
					}
				}
			}
			s.Close()
		}
		if err := h.destroy(ctx, cs); err != nil {
			return fmt.Errorf("delete vm %q: %w", vm, err)
		}
		var errs []error
		for f := range files {
			if ext := strings.ToLower(filepath.Ext(f)); ext != ".vhdx" && ext != ".avhdx" {
				continue
			}
			for _, p := range []string{f, f + ".rct", f + ".mrt", strings.TrimSuffix(f, filepath.Ext(f)) + ".rct", strings.TrimSuffix(f, filepath.Ext(f)) + ".mrt"} {
				if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("delete vm %q: the VM is gone, some of its files stay: %w", vm, err)
		}
		return nil
	})
}

// parentOf reads a disk file's parent (GetVirtualHardDiskSettingData's
// ParentPath); "" for a base disk or one that cannot be read.
func (h *Host) parentOf(path string) string {
	ims, err := h.c.service("Msvm_ImageManagementService")
	if err != nil {
		return ""
	}
	defer ims.Close()
	out, err := h.c.call(context.Background(), ims, "GetVirtualHardDiskSettingData", []param{{"Path", path}}, "SettingData")
	if err != nil {
		return ""
	}
	_, props, err := embedded(toString(out["SettingData"]))
	if err != nil || len(props["ParentPath"]) != 1 {
		return ""
	}
	return props["ParentPath"][0]
}

// GrowDisk gives the VM's current state a new, larger VHDX holding the
// disk's content, written with sdk/disk/vhdx, and points the disk's
// Msvm_StorageAllocationSettingData at it (ModifyResourceSettings). The
// VM must be off; checkpoints keep their files.
func (h *Host) GrowDisk(ctx context.Context, vm string, disk int, size int64) error {
	return h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		if running(toInt(cs.get("EnabledState"))) {
			return fmt.Errorf("grow disk %d of vm %q: it is running: %w", disk, vm, errdefs.ErrFailedPrecondition)
		}
		vssd, snaps, err := h.settings(cs)
		if err != nil {
			return err
		}
		closeAll(snaps)
		defer vssd.Close()
		ds, err := h.disks(vssd)
		if err != nil {
			return err
		}
		if disk < 0 || disk >= len(ds) {
			return fmt.Errorf("vm %q has no disk %d: %w", vm, disk, errdefs.ErrNotFound)
		}
		d := ds[disk]
		if size <= d.capacity {
			return nil
		}
		name := strings.TrimSuffix(filepath.Base(d.path), filepath.Ext(d.path))
		grown := filepath.Join(filepath.Dir(d.path), fmt.Sprintf("%s-grown-%s.vhdx", name, randHex(4)))
		if err := copyGrown(ctx, d.path, grown, size); err != nil {
			os.Remove(grown)
			return fmt.Errorf("grow disk %d of vm %q: %w", disk, vm, err)
		}
		sasds, err := h.c.related(vssd, "Msvm_StorageAllocationSettingData")
		if err != nil {
			os.Remove(grown)
			return err
		}
		defer closeAll(sasds)
		for _, s := range sasds {
			if hr := toStrings(s.get("HostResource")); len(hr) > 0 && strings.EqualFold(hr[0], d.path) {
				t, err := embedObj(s, []param{{"HostResource", []string{grown}}})
				if err == nil {
					err = h.modifyResources(ctx, []string{t})
				}
				if err != nil {
					os.Remove(grown)
					return fmt.Errorf("grow disk %d of vm %q: %w", disk, vm, err)
				}
				return nil
			}
		}
		os.Remove(grown)
		return fmt.Errorf("grow disk %d of vm %q: its settings are gone: %w", disk, vm, errdefs.ErrNotFound)
	})
}

// copyGrown writes a new dynamic VHDX of size bytes at dst with the
// content of the chain ending at src.
func copyGrown(ctx context.Context, src, dst string, size int64) error {
	in, err := vhdx.Open(src, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := vhdx.Create(dst, vhdx.Options{Size: size})
	if err != nil {
		return err
	}
	ext, err := in.ChainExtents()
	buf := make([]byte, 1<<20)
	for _, e := range ext {
		for off := e.Offset; err == nil && off < e.End(); {
			if err = ctx.Err(); err != nil {
				break
			}
			n := min(int64(len(buf)), e.End()-off)
			if _, err = in.ReadAt(buf[:n], off); err == nil {
				_, err = out.WriteAt(buf[:n], off)
			}
			off += n
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
