package hyperv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Source replicates the VMs of a Hyper-V host. A snapshot is a recovery
// checkpoint; removing it after the run converts it to a reference point,
// whose change tracking ids the next run asks changes since.
type Source struct {
	h     host.Host
	locks vmLocks // failback calls, per VM id
	// step, when set, is called at the named steps of a failback (tests
	// abandon the call there to prove each step re-runnable). Nil in the
	// plugin.
	step func(name string)
}

var (
	_ sdk.Source          = (*Source)(nil)
	_ sdk.TransportProber = (*Source)(nil)
)

// NewSource returns a source on the host h.
func NewSource(h host.Host) *Source { return &Source{h: h} }

// ListVMs lists every VM of the host.
func (s *Source) ListVMs(ctx context.Context) ([]sdk.VM, error) {
	vms, err := s.h.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]sdk.VM, 0, len(vms))
	for _, v := range vms {
		out = append(out, describeVM(v, nil))
	}
	return out, nil
}

// DescribeVM returns one VM by id or name.
func (s *Source) DescribeVM(ctx context.Context, vm string) (*sdk.VM, error) {
	v, err := s.h.GetVM(ctx, vm)
	if err != nil {
		return nil, err
	}
	d := describeVM(*v, nil)
	return &d, nil
}

// describeVM says what ferry sees of a VM. sizes, when set, are the
// disks' sizes to report instead of their VHDX sizes (a replica's disks
// are VHDX files rounded up to whole sectors).
func describeVM(v host.VM, sizes []int64) sdk.VM {
	out := sdk.VM{ID: v.ID, Name: v.Name, CPUs: v.CPUs, MemoryMiB: v.MemoryMiB, Firmware: "efi", PowerState: "off",
		Attributes: map[string]string{
			AttrGeneration: strconv.Itoa(v.Generation),
			AttrSecureBoot: strconv.FormatBool(v.SecureBoot),
			AttrTPM:        strconv.FormatBool(v.TPM),
		}}
	if v.Generation == 1 {
		out.Firmware = "bios"
	}
	if v.Running {
		out.PowerState = "on"
	}
	out.Hardware = sdk.Hardware{Firmware: out.Firmware, Generation: v.Generation, SecureBoot: v.SecureBoot, TPM: v.TPM}
	if v.SecureBoot {
		out.Hardware.SecureBootTemplate = v.SecureBootTemplate
	}
	boot := -1
	for i, d := range v.Disks {
		c := controllerName(d)
		size := d.Capacity
		if i < len(sizes) {
			size = sizes[i]
		}
		disk := sdk.Disk{Index: i, Name: c, Capacity: size, Controller: c, Thin: true,
			Bus: sdk.Bus(d.Controller), ControllerNumber: d.Bus, Unit: d.Location}
		if d.Controller == "scsi" {
			disk.ControllerModel = sdk.ModelHyperVSCSI
		}
		out.Disks = append(out.Disks, disk)
		// Generation 1 boots from the first IDE disk (IDE 0:0 first).
		if d.Controller == "ide" && (boot < 0 || d.Bus*2+d.Location < v.Disks[boot].Bus*2+v.Disks[boot].Location) {
			boot = i
		}
	}
	switch {
	case len(v.BootOrder) > 0:
		// The firmware's order, as the host reports it.
		out.Hardware.BootOrder = append([]sdk.BootDevice(nil), v.BootOrder...)
	case v.Generation == 1 && boot >= 0:
		out.Hardware.BootOrder = []sdk.BootDevice{{Kind: sdk.BootDisk, Index: boot}}
	}
	for i, n := range v.NICs {
		model := sdk.NICHyperVSynthetic
		if n.Legacy {
			model = sdk.NICHyperVLegacy
		}
		out.NICs = append(out.NICs, sdk.NIC{Index: i, Network: n.Switch, MAC: n.MAC, Model: model,
			Addresses: n.Guest.Addresses, Gateway: n.Guest.Gateway, DNS: n.Guest.DNS})
	}
	return out
}

// The attributes of sdk.VM that carry what ferry's VM description has no
// field for; a Hyper-V target reads them back.
const (
	AttrGeneration = "hyperv.generation"
	AttrSecureBoot = "hyperv.secure_boot"
	AttrTPM        = "hyperv.tpm"
)

func controllerName(d host.Disk) string {
	return fmt.Sprintf("%s%d:%d", d.Controller, d.Bus, d.Location)
}

// CreateSnapshot takes a recovery checkpoint, application-consistent when
// asked and the guest's Backup integration service allows it (the
// snapshot says which it got), crash-consistent otherwise.
func (s *Source) CreateSnapshot(ctx context.Context, req sdk.SnapshotRequest) (*sdk.Snapshot, error) {
	v, err := s.h.GetVM(ctx, req.VM)
	if err != nil {
		return nil, err
	}
	level := host.CrashConsistent
	if req.Quiesce {
		level = host.ApplicationConsistent
	}
	// A failback writer of the VM's disks would write into the file the
	// checkpoint freezes: it is closed first, and refuses later writes.
	if err := s.supersedeWriters(v.ID, "a snapshot"); err != nil {
		return nil, err
	}
	cp, err := s.h.CreateCheckpoint(ctx, v.ID, host.CheckpointRequest{Name: req.Name, Type: host.Recovery, Consistency: level})
	if err != nil {
		return nil, fmt.Errorf("snapshot vm %q: %w", req.VM, err)
	}
	snap := snapshotOf(v.ID, *cp)
	return &snap, nil
}

func snapshotOf(vm string, cp host.Checkpoint) sdk.Snapshot {
	snap := sdk.Snapshot{ID: cp.ID, VM: vm, Name: cp.Name, Created: cp.Created, Quiesced: cp.Consistency == host.ApplicationConsistent}
	for i, d := range cp.Disks {
		snap.Disks = append(snap.Disks, sdk.SnapshotDisk{Index: i, Capacity: d.Capacity, ChangeID: d.RCT})
	}
	return snap
}

// RemoveSnapshot converts the recovery checkpoint to a reference point:
// the checkpoint's differencing disks merge, and the reference point keeps
// the change tracking ids the next run asks changes since. A checkpoint
// that is gone is removed already. A snapshot taken after a failback's
// commit ends the failback's marker (afterRun).
func (s *Source) RemoveSnapshot(ctx context.Context, vm, snapshot string) error {
	cp, err := s.checkpoint(ctx, vm, snapshot)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// The merge that follows makes the files above the checkpoint anew:
	// a failback writer still open on the newest one is closed first.
	v, err := s.h.GetVM(ctx, vm)
	if err != nil {
		return err
	}
	if err := s.supersedeWriters(v.ID, "a snapshot's removal"); err != nil {
		return err
	}
	if _, err := s.h.ConvertToReferencePoint(ctx, vm, cp.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("remove snapshot %q of vm %q: %w", snapshot, vm, err)
	}
	return s.afterRun(ctx, vm, cp.ID)
}

// ListSnapshots lists the VM's recovery checkpoints, oldest first.
func (s *Source) ListSnapshots(ctx context.Context, vm string) ([]sdk.Snapshot, error) {
	v, err := s.h.GetVM(ctx, vm)
	if err != nil {
		return nil, err
	}
	cps, err := s.h.ListCheckpoints(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	out := []sdk.Snapshot{}
	for _, cp := range cps {
		if cp.Type == host.Recovery {
			out = append(out, snapshotOf(v.ID, cp))
		}
	}
	return out, nil
}

// checkpoint finds a recovery checkpoint of a VM by id or name.
func (s *Source) checkpoint(ctx context.Context, vm, snapshot string) (*host.Checkpoint, error) {
	cps, err := s.h.ListCheckpoints(ctx, vm)
	if err != nil {
		return nil, err
	}
	for _, cp := range cps {
		if cp.Type == host.Recovery && (cp.ID == snapshot || cp.Name == snapshot) {
			return &cp, nil
		}
	}
	return nil, fmt.Errorf("snapshot %q of vm %q: %w", snapshot, vm, errdefs.ErrNotFound)
}

func (s *Source) snapshotDisk(ctx context.Context, vm, snapshot string, disk int) (*host.Checkpoint, host.CheckpointDisk, error) {
	cp, err := s.checkpoint(ctx, vm, snapshot)
	if err != nil {
		return nil, host.CheckpointDisk{}, err
	}
	if disk < 0 || disk >= len(cp.Disks) {
		return nil, host.CheckpointDisk{}, fmt.Errorf("snapshot %q of vm %q has no disk %d: %w", snapshot, vm, disk, errdefs.ErrNotFound)
	}
	return cp, cp.Disks[disk], nil
}

// ChangedAreas reports the allocated areas of the frozen chain (no change
// id), or the ranges Resilient Change Tracking says changed since the
// change id; an id it cannot answer for is errdefs.ErrChangeIDReset, and
// ferry compares digests instead.
func (s *Source) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	cp, d, err := s.snapshotDisk(ctx, req.VM, req.Snapshot, req.Disk)
	if err != nil {
		return err
	}
	emit := func(e []host.Extent) error {
		out := make([]sdk.Extent, 0, len(e))
		for _, x := range e {
			if x.Offset >= d.Capacity {
				continue
			}
			out = append(out, sdk.Extent{Offset: x.Offset, Length: min(x.Length, d.Capacity-x.Offset)})
		}
		if len(out) == 0 {
			return nil
		}
		return fn(out)
	}
	if req.ChangeID != "" {
		return s.h.DiskChanges(ctx, req.VM, cp.ID, req.Disk, req.ChangeID, emit)
	}
	img, err := vhdx.Open(d.Path, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer img.Close()
	ext, err := img.ChainExtents()
	if err != nil {
		return err
	}
	for len(ext) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(ext), 1024)
		batch := make([]host.Extent, n)
		for i, x := range ext[:n] {
			batch[i] = host.Extent{Offset: x.Offset, Length: x.Length}
		}
		if err := emit(batch); err != nil {
			return err
		}
		ext = ext[n:]
	}
	return nil
}

// OpenSnapshotDisk reads the checkpoint's frozen chain with ferry's VHDX
// reader, straight from the host's storage.
func (s *Source) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (sdk.DiskReader, error) {
	if !s.h.Local() {
		return nil, fmt.Errorf("vm %q: the host's files are not on this machine; run the plugin on the Hyper-V host (beside a ferry proxy): %w", vm, errdefs.ErrUnavailable)
	}
	_, d, err := s.snapshotDisk(ctx, vm, snapshot, disk)
	if err != nil {
		return nil, err
	}
	return openReader(d.Path, d.Capacity)
}

// ProbeTransport says the disks are read directly when their files are on
// this machine.
func (s *Source) ProbeTransport(ctx context.Context, vm string, disk int) (string, string, error) {
	return probe(ctx, s.h, vm, disk)
}

func probe(ctx context.Context, h host.Host, vm string, disk int) (string, string, error) {
	if !h.Local() {
		return "", fmt.Sprintf("the files of Hyper-V host %s are not on this machine", h.Name()), nil
	}
	if vm == "" {
		return sdk.TransportDirect, "the host's VHDX files are on this machine's file system", nil
	}
	v, err := h.GetVM(ctx, vm)
	if err != nil {
		return "", "", err
	}
	for i, d := range v.Disks {
		if disk >= 0 && i != disk {
			continue
		}
		if _, err := os.Stat(d.Path); err != nil {
			return "", fmt.Sprintf("disk %d of vm %q: %v", i, v.Name, err), nil
		}
	}
	return sdk.TransportDirect, "the VM's VHDX files are on this machine's file system; ferry's VHDX reader reads them", nil
}
