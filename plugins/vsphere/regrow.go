package vsphere

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// vSphere refuses to extend a virtual disk that has snapshots, and a
// replica's restore points are snapshots. A restore point's data lives in
// ferry's undo stores, though, and its snapshot only marks it (with its
// description); so to grow a disk of a replica with points, the plugin
// writes a journal naming every point's snapshot and description, removes
// the snapshots, extends the disk and takes the snapshots again, oldest
// first, with the same names and descriptions. A run cut short anywhere
// leaves the journal, and the next operation on the replica finishes the
// work before anything else looks at its points (the points are missing
// from vSphere in between, never from the journal or the undo stores).
//
// The snapshots taken again hold the grown size: a failover to a point
// from before the growth runs the VM with the disk at its grown size (the
// point's data fills the size it had; ferry reads the point at that size).

// regrowJournal is the journal of growing a disk of a replica with points.
type regrowJournal struct {
	Disk   int              `json:"disk"`
	Size   int64            `json:"size"`
	Points []regrowSnapshot `json:"points"` // oldest first
}

type regrowSnapshot struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

func regrowPath(dir string) string { return filepath.Join(dir, "regrow.json") }

// readRegrow returns the journal of a growth under way; nil when none.
func readRegrow(dir string) (*regrowJournal, error) {
	b, err := os.ReadFile(regrowPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var j regrowJournal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", regrowPath(dir), err)
	}
	return &j, nil
}

// growWithPoints grows disk of a replica that has snapshots to size. The
// caller holds r.mu and has refreshed r.
func (t *Target) growWithPoints(ctx context.Context, r *replica, disk int, size int64) error {
	j := &regrowJournal{Disk: disk, Size: size}
	for _, n := range flattenSnapshots(r.vm.Snapshot.RootSnapshotList) {
		if !strings.HasPrefix(n.Name, pointPrefix) {
			return fmt.Errorf("replica %q disk %d: vSphere cannot extend a disk that has snapshots, and snapshot %q is not ferry's (remove it, then run again): %w", r.vm.Name, disk, n.Name, errdefs.ErrFailedPrecondition)
		}
		j.Points = append(j.Points, regrowSnapshot{Name: n.Name, Description: n.Description})
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(regrowPath(r.dir), b); err != nil {
		return fmt.Errorf("replica %q: journal the growth of disk %d: %w", r.vm.Name, disk, err)
	}
	return t.regrow(ctx, r, j)
}

// resumeRegrow finishes a growth a killed or failed run left; the caller
// holds r.mu and has refreshed r.
func (t *Target) resumeRegrow(ctx context.Context, r *replica) error {
	j, err := readRegrow(r.dir)
	if err != nil || j == nil {
		return err
	}
	t.log.Info("finishing the growth of a replica disk a run left", "replica", r.vm.Name, "disk", j.Disk, "size", j.Size)
	return t.regrow(ctx, r, j)
}

// regrow does the growth a journal describes; every step can be repeated.
func (t *Target) regrow(ctx context.Context, r *replica, j *regrowJournal) error {
	fail := func(step string, err error) error {
		return fmt.Errorf("replica %q: grow disk %d to %d bytes: %s: %w (the next operation on the replica finishes it)", r.vm.Name, j.Disk, j.Size, step, err)
	}
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	if r.vm.Snapshot != nil {
		for _, n := range flattenSnapshots(r.vm.Snapshot.RootSnapshotList) {
			if !strings.HasPrefix(n.Name, pointPrefix) {
				return fail("remove the restore points' snapshots", fmt.Errorf("snapshot %q is not ferry's: %w", n.Name, errdefs.ErrFailedPrecondition))
			}
		}
		if _, err := t.c.call(ctx, "remove the snapshots of "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
			res, err := methods.RemoveAllSnapshots_Task(ctx, t.c.client, &types.RemoveAllSnapshots_Task{This: r.vm.Self, Consolidate: types.NewBool(true)})
			if err != nil {
				return nil, err
			}
			return object.NewTask(t.c.client, res.Returnval), nil
		}); err != nil {
			return fail("remove the restore points' snapshots", err)
		}
		if err := t.refresh(ctx, r); err != nil {
			return fail("reload the replica", err)
		}
	}
	if j.Disk >= len(r.disks) {
		return fail("find the disk", fmt.Errorf("the replica has %d disks: %w", len(r.disks), errdefs.ErrNotFound))
	}
	if r.disks[j.Disk].capacity < j.Size {
		if err := t.extend(ctx, r, j.Disk, j.Size); err != nil {
			return fail("extend the disk", err)
		}
	}
	for _, p := range j.Points {
		if _, err := t.c.call(ctx, "restore point "+p.Name+" of "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
			return obj.CreateSnapshot(ctx, p.Name, p.Description, false, false)
		}); err != nil {
			return fail("take the restore points' snapshots again", err)
		}
	}
	if err := os.Remove(regrowPath(r.dir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail("remove the journal", err)
	}
	if err := t.refresh(ctx, r); err != nil {
		return err
	}
	r.gate.Lock()
	r.points = parsePoints(r.vm)
	r.gate.Unlock()
	t.log.Info("grew a replica disk that has restore points", "replica", r.vm.Name, "disk", j.Disk, "size", j.Size, "points", len(j.Points))
	return nil
}
