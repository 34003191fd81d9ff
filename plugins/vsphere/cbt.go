package vsphere

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// changeID is a parsed CBT change id. vSphere writes it as
// "<epoch>/<sequence>": the epoch (a UUID in hex groups) changes whenever
// tracking is reset (switched off and on, a disk restored), the sequence
// grows with every snapshot. Ids of one epoch can be compared; ids of two
// epochs cannot.
type changeID struct {
	epoch string
	seq   uint64
}

// parseChangeID splits a change id at its last '/'. An id that does not
// have that form was not made by vSphere's tracking.
func parseChangeID(s string) (changeID, bool) {
	i := strings.LastIndexByte(s, '/')
	if i <= 0 || i == len(s)-1 {
		return changeID{}, false
	}
	epoch := strings.TrimSpace(s[:i])
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || epoch == "" {
		return changeID{}, false
	}
	return changeID{epoch: epoch, seq: seq}, true
}

// checkChangeID decides whether tracking can answer for since, given the
// change id of the disk in the snapshot asked about. It returns an
// ErrChangeIDReset error when it cannot: an id that is not vSphere's, an
// epoch that differs (tracking was reset in between), a snapshot taken
// without tracking, or an id newer than the snapshot.
func checkChangeID(since, current string) error {
	from, ok := parseChangeID(since)
	if !ok {
		return fmt.Errorf("change id %q is not of the form <epoch>/<sequence>: %w", since, errdefs.ErrChangeIDReset)
	}
	if current == "" {
		return fmt.Errorf("the snapshot was taken without changed block tracking: %w", errdefs.ErrChangeIDReset)
	}
	to, ok := parseChangeID(current)
	if !ok {
		return fmt.Errorf("the snapshot's change id %q is not of the form <epoch>/<sequence>: %w", current, errdefs.ErrChangeIDReset)
	}
	if from.epoch != to.epoch {
		return fmt.Errorf("change id %q belongs to tracking epoch %q, the disk is now in epoch %q (tracking was reset): %w", since, from.epoch, to.epoch, errdefs.ErrChangeIDReset)
	}
	if from.seq > to.seq {
		return fmt.Errorf("change id %q is newer than the snapshot's %q: %w", since, current, errdefs.ErrChangeIDReset)
	}
	return nil
}

// ChangedAreas reports the areas of a snapshot disk that changed since a
// change id, asking vSphere's QueryChangedDiskAreas in a loop (each answer
// covers a part of the disk). An empty change id asks for every allocated
// area ("*"); without tracking on the disk the whole disk is reported.
func (s *Source) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	vm, snap, disk, err := s.snapshotDisk(ctx, req.VM, req.Snapshot, req.Disk)
	if err != nil {
		return err
	}
	capacity := diskCapacity(disk)
	current := diskChangeID(disk)
	since := req.ChangeID
	if since == "" {
		if current == "" {
			s.log.Info("no changed block tracking on the disk: reporting it whole", "vm", vm.Name, "disk", req.Disk)
			if capacity == 0 {
				return nil
			}
			return fn([]sdk.Extent{{Offset: 0, Length: capacity}})
		}
		since = "*"
	} else if err := checkChangeID(since, current); err != nil {
		return fmt.Errorf("vm %q disk %d: %w", vm.Name, req.Disk, err)
	}
	return s.c.queryChanged(ctx, vm, snap, disk, req.Disk, since, fn)
}

// queryChanged asks QueryChangedDiskAreas, in a loop (each answer covers a
// part of the disk), what changed on disk (index n) of vm between change id
// since ("*": every allocated area) and snapshot snap, and calls fn with
// each answer's areas, sorted and apart. A change id vSphere no longer
// knows is errdefs.ErrChangeIDReset.
func (c *conn) queryChanged(ctx context.Context, vm *mo.VirtualMachine, snap types.ManagedObjectReference, disk *types.VirtualDisk, n int, since string, fn func([]sdk.Extent) error) error {
	capacity := diskCapacity(disk)
	var offset, last int64
	for offset < capacity {
		if err := ctx.Err(); err != nil {
			return err
		}
		res, err := methods.QueryChangedDiskAreas(ctx, c.client, &types.QueryChangedDiskAreas{
			This: vm.Self, Snapshot: &snap, DeviceKey: disk.Key, StartOffset: offset, ChangeId: since,
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if since != "*" && (fault.Is(err, &types.InvalidArgument{}) || fault.Is(err, &types.FileFault{})) {
				return fmt.Errorf("vm %q disk %d: vSphere cannot answer for change id %q (%s): %w", vm.Name, n, since, faultMessage(err), errdefs.ErrChangeIDReset)
			}
			return c.classify(err, fmt.Sprintf("changed areas of vm %q disk %d", vm.Name, n))
		}
		info := res.Returnval
		next := info.StartOffset + info.Length
		if info.Length <= 0 || next <= offset {
			return fmt.Errorf("vm %q disk %d: QueryChangedDiskAreas at %d answered for [%d, %d), making no progress", vm.Name, n, offset, info.StartOffset, next)
		}
		batch := clipAreas(info.ChangedArea, last, min(next, capacity))
		if len(batch) > 0 {
			last = batch[len(batch)-1].End()
			if err := fn(batch); err != nil {
				return err
			}
		}
		offset = next
	}
	return nil
}

// clipAreas sorts and merges the areas of one answer and keeps what lies in
// [from, to), so batches stay sorted and disjoint whatever the server says.
func clipAreas(areas []types.DiskChangeExtent, from, to int64) []sdk.Extent {
	var exts []sdk.Extent
	for _, a := range areas {
		start, end := max(a.Start, from), min(a.Start+a.Length, to)
		if end > start {
			exts = append(exts, sdk.Extent{Offset: start, Length: end - start})
		}
	}
	sort.Slice(exts, func(i, j int) bool { return exts[i].Offset < exts[j].Offset })
	var out []sdk.Extent
	for _, e := range exts {
		if n := len(out); n > 0 && e.Offset <= out[n-1].End() {
			if e.End() > out[n-1].End() {
				out[n-1].Length = e.End() - out[n-1].Offset
			}
			continue
		}
		out = append(out, e)
	}
	return out
}
