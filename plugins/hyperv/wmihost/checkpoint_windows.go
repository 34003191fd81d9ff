//go:build windows

package wmihost

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// checkpointOf describes a checkpoint's settings. consistency is what the
// caller knows of it (Hyper-V keeps no record of it on the checkpoint):
// crash-consistent unless the checkpoint was just taken quiesced.
func (h *Host) checkpointOf(snap obj, consistency host.Consistency) (*host.Checkpoint, error) {
	typ, _ := checkpointType(snap.str("VirtualSystemType"))
	cp := &host.Checkpoint{ID: snap.str("InstanceID"), Name: snap.str("ElementName"), Type: typ, Created: created(snap),
		Consistency: consistency, Notes: joinNotes(snap.get("Notes")), Parent: pathKey(snap.str("Parent"), "InstanceID")}
	disks, err := h.disks(snap)
	if err != nil {
		return nil, err
	}
	for _, d := range disks {
		cd := host.CheckpointDisk{Path: d.path, Capacity: d.capacity}
		if typ == host.Recovery {
			// The frozen file's most recent id is where changes since
			// this checkpoint start. Without it the plugin compares
			// digests next time, which is slower but correct.
			if id, err := mostRecentRCT(d.path); err == nil {
				cd.RCT = id
			}
		}
		cp.Disks = append(cp.Disks, cd)
	}
	return cp, nil
}

// snapshots returns the VM's checkpoints' settings, oldest first; the
// caller closes them.
func (h *Host) snapshots(cs obj) ([]obj, error) {
	cur, snaps, err := h.settings(cs)
	if err != nil {
		return nil, err
	}
	cur.Close()
	var out []obj
	for _, s := range snaps {
		if _, ok := checkpointType(s.str("VirtualSystemType")); ok {
			out = append(out, s)
		} else {
			s.Close()
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return created(out[i]).Before(created(out[j])) })
	return out, nil
}

// findSnapshot finds a checkpoint by id or name; the caller closes it.
func (h *Host) findSnapshot(cs obj, checkpoint string) (obj, error) {
	snaps, err := h.snapshots(cs)
	if err != nil {
		return obj{}, err
	}
	var found obj
	for _, s := range snaps {
		if found.WmiInstance == nil && (s.str("InstanceID") == checkpoint || s.str("ElementName") == checkpoint) {
			found = s
			continue
		}
		s.Close()
	}
	if found.WmiInstance == nil {
		return obj{}, fmt.Errorf("checkpoint %q of vm %s: %w", checkpoint, cs.str("ElementName"), errdefs.ErrNotFound)
	}
	return found, nil
}

// CreateCheckpoint takes a checkpoint (CreateSnapshot) and names it and
// writes its notes (ModifySystemSettings of the checkpoint's settings).
// An application-consistent recovery checkpoint is asked for only when
// the guest's Backup service answers, and one that fails is taken again
// crash-consistent: the checkpoint says which it is.
func (h *Host) CreateCheckpoint(ctx context.Context, vm string, req host.CheckpointRequest) (*host.Checkpoint, error) {
	if req.Type != host.Standard && req.Type != host.Recovery {
		return nil, fmt.Errorf("checkpoint type %d: %w", req.Type, errdefs.ErrInvalidArgument)
	}
	var out *host.Checkpoint
	err := h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		before := map[string]bool{}
		snaps, err := h.snapshots(cs)
		if err != nil {
			return err
		}
		for _, s := range snaps {
			before[s.str("InstanceID")] = true
		}
		closeAll(snaps)
		level := host.CrashConsistent
		if req.Consistency == host.ApplicationConsistent {
			if vss, err := h.c.query("SELECT * FROM Msvm_VssComponent WHERE SystemName = " + wqlString(cs.str("Name"))); err == nil {
				for _, o := range vss {
					st, _ := toInt64s(o.get("OperationalStatus"))
					if guestBackup(toInt(o.get("EnabledState")), st) {
						level = host.ApplicationConsistent
					}
				}
				closeAll(vss)
			}
		}
		err = h.snapshot(ctx, cs, req.Type, level)
		if err != nil && level == host.ApplicationConsistent {
			level = host.CrashConsistent
			err = h.snapshot(ctx, cs, req.Type, level)
		}
		if err != nil {
			return fmt.Errorf("checkpoint vm %q: %w", vm, err)
		}
		snaps, err = h.snapshots(cs)
		if err != nil {
			return err
		}
		defer closeAll(snaps)
		var snap obj
		for _, s := range snaps {
			if !before[s.str("InstanceID")] {
				snap = s // the newest new one
			}
		}
		if snap.WmiInstance == nil {
			return fmt.Errorf("checkpoint vm %q: the new checkpoint is not among the VM's: %w", vm, errdefs.ErrUnavailable)
		}
		var props []param
		if req.Name != "" {
			props = append(props, param{"ElementName", req.Name})
		}
		if req.Notes != "" {
			props = append(props, param{"Notes", []string{req.Notes}})
		}
		if len(props) > 0 {
			if err := h.modifySystem(ctx, snap, props); err != nil {
				return fmt.Errorf("name checkpoint of vm %q: %w", vm, err)
			}
			if err := snap.Refresh(); err != nil {
				return fmt.Errorf("checkpoint of vm %q: %v: %w", vm, err, errdefs.ErrUnavailable)
			}
		}
		out, err = h.checkpointOf(snap, level)
		return err
	})
	return out, err
}

func (h *Host) snapshot(ctx context.Context, cs obj, typ host.CheckpointType, level host.Consistency) error {
	settings, err := h.c.embed("Msvm_VirtualSystemSnapshotSettingData", []param{
		{"ConsistencyLevel", int32(level)}, {"IgnoreNonSnapshottableDisks", true}})
	if err != nil {
		return err
	}
	svc, err := h.c.service("Msvm_VirtualSystemSnapshotService")
	if err != nil {
		return err
	}
	defer svc.Close()
	_, err = h.c.call(ctx, svc, "CreateSnapshot", []param{{"AffectedSystem", cs.path()}, {"SnapshotSettings", settings},
		{"SnapshotType", int32(typ)}}, "ResultingSnapshot")
	return err
}

// ListCheckpoints lists the VM's checkpoints, oldest first.
func (h *Host) ListCheckpoints(ctx context.Context, vm string) ([]host.Checkpoint, error) {
	out := []host.Checkpoint{}
	err := h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		snaps, err := h.snapshots(cs)
		if err != nil {
			return err
		}
		defer closeAll(snaps)
		for _, s := range snaps {
			cp, err := h.checkpointOf(s, host.CrashConsistent)
			if err != nil {
				return err
			}
			out = append(out, *cp)
		}
		return nil
	})
	return out, err
}

// snapshotCall runs a method of Msvm_VirtualSystemSnapshotService on a
// checkpoint.
func (h *Host) snapshotCall(ctx context.Context, vm, checkpoint, method, arg string, outs ...string) (map[string]any, error) {
	var out map[string]any
	err := h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		snap, err := h.findSnapshot(cs, checkpoint)
		if err != nil {
			return err
		}
		defer snap.Close()
		if method == "ConvertToReferencePoint" {
			if t, _ := checkpointType(snap.str("VirtualSystemType")); t != host.Recovery {
				return fmt.Errorf("checkpoint %q is not a recovery checkpoint; only those convert to reference points: %w", checkpoint, errdefs.ErrFailedPrecondition)
			}
		}
		svc, err := h.c.service("Msvm_VirtualSystemSnapshotService")
		if err != nil {
			return err
		}
		defer svc.Close()
		out, err = h.c.call(ctx, svc, method, []param{{arg, snap.path()}}, outs...)
		if err != nil {
			return fmt.Errorf("checkpoint %q of vm %q: %w", checkpoint, vm, err)
		}
		if method == "ConvertToReferencePoint" {
			out["checkpoint"] = snap.str("InstanceID")
		}
		return nil
	})
	return out, err
}

// DestroyCheckpoint deletes a checkpoint (DestroySnapshot); Hyper-V merges
// its differencing disks.
func (h *Host) DestroyCheckpoint(ctx context.Context, vm, checkpoint string) error {
	_, err := h.snapshotCall(ctx, vm, checkpoint, "DestroySnapshot", "AffectedSnapshot")
	return err
}

// ApplyCheckpoint makes the VM's current state the checkpoint's
// (ApplySnapshot).
func (h *Host) ApplyCheckpoint(ctx context.Context, vm, checkpoint string) error {
	_, err := h.snapshotCall(ctx, vm, checkpoint, "ApplySnapshot", "Snapshot")
	return err
}

// ConvertToReferencePoint converts a recovery checkpoint
// (ConvertToReferencePoint) and returns the reference point.
func (h *Host) ConvertToReferencePoint(ctx context.Context, vm, checkpoint string) (*host.ReferencePoint, error) {
	out, err := h.snapshotCall(ctx, vm, checkpoint, "ConvertToReferencePoint", "AffectedSnapshot", "ResultingReferencePoint")
	if err != nil {
		return nil, err
	}
	refs, err := h.ListReferencePoints(ctx, vm)
	if err != nil {
		return nil, err
	}
	// The reference point the call named, or else the newest.
	id := pathKey(toString(out["ResultingReferencePoint"]), "InstanceID")
	for i := len(refs) - 1; i >= 0; i-- {
		if id == "" || refs[i].ID == id {
			r := refs[i]
			r.Checkpoint = toString(out["checkpoint"])
			return &r, nil
		}
	}
	return nil, fmt.Errorf("reference point of checkpoint %q of vm %q: %w", checkpoint, vm, errdefs.ErrNotFound)
}

// ListReferencePoints lists the VM's reference points, ferry's and any
// other product's alike, oldest first. Checkpoint is unknown ("") for
// them: Hyper-V does not keep it.
func (h *Host) ListReferencePoints(ctx context.Context, vm string) ([]host.ReferencePoint, error) {
	out := []host.ReferencePoint{}
	err := h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		refs, err := h.c.related(cs, "Msvm_VirtualSystemReferencePoint")
		if err != nil {
			return err
		}
		defer closeAll(refs)
		for _, r := range refs {
			out = append(out, host.ReferencePoint{ID: r.str("InstanceID"), Created: created(r),
				Consistency: host.Consistency(toInt(r.get("ConsistencyLevel"))), RCT: toStrings(r.get("ResilientChangeTrackingIdentifiers"))})
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// DestroyReferencePoint removes a reference point
// (Msvm_VirtualSystemReferencePointService.DestroyReferencePoint). The
// plugin never asks for one it did not make.
func (h *Host) DestroyReferencePoint(ctx context.Context, vm, ref string) error {
	return h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		refs, err := h.c.related(cs, "Msvm_VirtualSystemReferencePoint")
		if err != nil {
			return err
		}
		defer closeAll(refs)
		i := slices.IndexFunc(refs, func(r obj) bool { return r.str("InstanceID") == ref })
		if i < 0 {
			return fmt.Errorf("reference point %q of vm %q: %w", ref, vm, errdefs.ErrNotFound)
		}
		svc, err := h.c.service("Msvm_VirtualSystemReferencePointService")
		if err != nil {
			return err
		}
		defer svc.Close()
		_, err = h.c.call(ctx, svc, "DestroyReferencePoint", []param{{"AffectedReferencePoint", refs[i].path()}})
		return err
	})
}

// DiskChanges asks Resilient Change Tracking for the ranges of a
// checkpoint's disk changed since an id (GetVirtualDiskChanges on the
// checkpoint's frozen file, in as many calls as it takes). fn runs
// between the calls, outside the WMI session, so it may call the host.
func (h *Host) DiskChanges(ctx context.Context, vm, checkpoint string, disk int, since string, fn func([]host.Extent) error) error {
	var d host.CheckpointDisk
	err := h.c.do(ctx, func() error {
		cs, err := h.vmObj(vm)
		if err != nil {
			return err
		}
		defer cs.Close()
		cur, snaps, err := h.settings(cs)
		if err != nil {
			return err
		}
		closeAll(snaps)
		notes := joinNotes(cur.get("Notes"))
		cur.Close()
		if isFerryReplica(notes) {
			return fmt.Errorf("vm %q is a ferry replica, whose disks ferry wrote past Hyper-V's change tracking: %w", vm, errdefs.ErrChangeIDReset)
		}
		if inFailback(notes) {
			return fmt.Errorf("vm %q was written by a ferry failback past Hyper-V's change tracking: %w", vm, errdefs.ErrChangeIDReset)
		}
		snap, err := h.findSnapshot(cs, checkpoint)
		if err != nil {
			return err
		}
		defer snap.Close()
		cp, err := h.checkpointOf(snap, host.CrashConsistent)
		if err != nil {
			return err
		}
		if disk < 0 || disk >= len(cp.Disks) {
			return fmt.Errorf("checkpoint %q has no disk %d: %w", checkpoint, disk, errdefs.ErrNotFound)
		}
		d = cp.Disks[disk]
		return nil
	})
	if err != nil {
		return err
	}
	if since == "" {
		return fmt.Errorf("disk %d: no change tracking id: %w", disk, errdefs.ErrChangeIDReset)
	}
	if since == d.RCT {
		return nil
	}
	q := func(ctx context.Context, off, n int64) (int64, []host.Extent, error) {
		var processed int64
		var ext []host.Extent
		err := h.c.do(ctx, func() error {
			ims, err := h.c.service("Msvm_ImageManagementService")
			if err != nil {
				return err
			}
			defer ims.Close()
			out, err := h.c.call(ctx, ims, "GetVirtualDiskChanges", []param{{"Path", d.Path}, {"LimitId", since},
				{"ByteOffset", strconv.FormatInt(off, 10)}, {"ByteLength", strconv.FormatInt(n, 10)}},
				"ChangedByteOffsets", "ChangedByteLengths", "ProcessedByteLength")
			if err != nil {
				return err
			}
			if processed, err = toInt64(out["ProcessedByteLength"]); err != nil {
				return err
			}
			ext, err = changeRanges(out["ChangedByteOffsets"], out["ChangedByteLengths"])
			return err
		})
		return processed, ext, changesError(disk, since, err)
	}
	return walkChanges(ctx, d.Capacity, q, fn)
}
