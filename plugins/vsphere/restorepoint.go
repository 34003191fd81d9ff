package vsphere

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// pointPrefix starts the name of every snapshot that is a restore point.
const pointPrefix = "ferry-rp-"

// pointDesc is the description of a restore point's snapshot, as JSON.
type pointDesc struct {
	Point   string            `json:"ferry_restore_point"`
	Created time.Time         `json:"created"`
	Disks   []int64           `json:"disk_capacities"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// point is a restore point: a snapshot of the replica VM and the
// capacities and labels its description holds.
type point struct {
	id      string
	snap    types.ManagedObjectReference
	created time.Time
	labels  map[string]string
	caps    []int64
}

// capacity is the size disk d had at the point (0: it did not exist).
func (p *point) capacity(d int) int64 {
	if d < len(p.caps) {
		return p.caps[d]
	}
	return 0
}

// parsePoints lists a replica's restore points, oldest first. Snapshots
// that are not ferry's are ignored.
func parsePoints(vm *mo.VirtualMachine) []*point {
	var out []*point
	if vm.Snapshot == nil {
		return out
	}
	for _, n := range flattenSnapshots(vm.Snapshot.RootSnapshotList) {
		if !strings.HasPrefix(n.Name, pointPrefix) {
			continue
		}
		var d pointDesc
		if err := json.Unmarshal([]byte(n.Description), &d); err != nil || d.Point == "" || pointPrefix+d.Point != n.Name {
			continue
		}
		out = append(out, &point{id: d.Point, snap: n.Snapshot, created: d.Created, labels: d.Labels, caps: d.Disks})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].created.Before(out[j].created) })
	return out
}

func pointIndex(points []*point, id string) int {
	for i, p := range points {
		if p.id == id {
			return i
		}
	}
	return -1
}

func newPointID() string {
	var b [8]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102t150405") + "-" + hex.EncodeToString(b[:4])
}

// toRestorePoint describes a point; its size is what its undo stores hold.
func (r *replica) toRestorePoint(p *point) sdk.RestorePoint {
	rp := sdk.RestorePoint{ID: p.id, Replica: r.id, Created: p.created, Labels: p.labels}
	for d, c := range p.caps {
		rp.Disks = append(rp.Disks, sdk.SnapshotDisk{Index: d, Capacity: c})
		if st, err := os.Stat(filepath.Join(r.pointDir(p.id), undoName(d))); err == nil {
			rp.Size += st.Size()
		}
	}
	return rp
}

// CreateRestorePoint freezes the working state: the disks are flushed,
// then a snapshot of the replica VM records the point, with the labels and
// disk sizes as JSON in its description. From then on every first write to
// a block saves the block in the point's undo store before overwriting it.
// A writer offering its path (the direct lane) must be closed first.
func (t *Target) CreateRestorePoint(ctx context.Context, key string, labels map[string]string) (*sdk.RestorePoint, error) {
	r, unlock, err := t.lockReplica(ctx, key)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if r.state.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("replica %q is %s: %w", r.vm.Name, r.state.State, errdefs.ErrFailedPrecondition)
	}
	if r.direct > 0 {
		return nil, fmt.Errorf("replica %q: a disk writer with direct access is open; close it before making a restore point: %w", r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	if err := r.detached("make a restore point"); err != nil {
		return nil, err
	}
	r.gate.Lock()
	defer r.gate.Unlock()
	for _, d := range r.disks {
		if d.file == "" {
			continue // through HotAdd: closed writers flushed their devices
		}
		if err := syncFile(d.file); err != nil {
			return nil, fmt.Errorf("replica %q: flush %s: %w", r.vm.Name, d.file, err)
		}
	}
	desc := pointDesc{Point: newPointID(), Created: time.Now().UTC(), Labels: labels}
	for _, d := range r.disks {
		desc.Disks = append(desc.Disks, d.capacity)
	}
	text, err := json.Marshal(desc)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name := pointPrefix + desc.Point
	obj := object.NewVirtualMachine(t.c.client, r.vm.Self)
	_, err = t.c.call(ctx, "restore point of "+r.vm.Name, func(ctx context.Context) (*object.Task, error) {
		return obj.CreateSnapshot(ctx, name, string(text), false, false)
	})
	if err != nil {
		if ctx.Err() != nil {
			// The snapshot may have been made: a point exists only when
			// this call succeeds, so take it back.
			t.dropSnapshot(r.vm, name)
		}
		return nil, err
	}
	if err := t.refresh(ctx, r); err != nil {
		return nil, err
	}
	r.points = parsePoints(r.vm)
	i := pointIndex(r.points, desc.Point)
	if i < 0 {
		return nil, fmt.Errorf("replica %q: restore point %s does not show after it was made", r.vm.Name, desc.Point)
	}
	t.log.Info("restore point", "replica", r.vm.Name, "point", desc.Point)
	rp := r.toRestorePoint(r.points[i])
	return &rp, nil
}

// dropSnapshot removes a snapshot by name, with a context of its own: the
// caller's was cancelled.
func (t *Target) dropSnapshot(vm *mo.VirtualMachine, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var now mo.VirtualMachine
	if err := t.c.retrieveOne(ctx, vm.Self, []string{"snapshot"}, &now); err != nil || now.Snapshot == nil {
		return
	}
	for _, n := range flattenSnapshots(now.Snapshot.RootSnapshotList) {
		if n.Name == name {
			if err := t.c.removeSnapshot(ctx, vm.Name, n.Snapshot.Value); err != nil {
				t.log.Warn("remove the snapshot of a cancelled restore point", "replica", vm.Name, "snapshot", name, "error", err)
			}
		}
	}
}

func syncFile(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ListRestorePoints lists a replica's restore points, oldest first.
func (t *Target) ListRestorePoints(ctx context.Context, key string) ([]sdk.RestorePoint, error) {
	r, err := t.load(ctx, key)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	done, err := t.enter(ctx, r)
	if err != nil {
		return nil, err
	}
	defer done()
	out := []sdk.RestorePoint{}
	for _, p := range parsePoints(r.vm) {
		out = append(out, r.toRestorePoint(p))
	}
	return out, nil
}

// DeleteRestorePoint deletes a point and frees its undo stores. The blocks
// the point's stores hold that the point before it lacks are copied into
// that point's stores first (the older point read them from here), then
// the snapshot goes, then the stores. Each step can be repeated, so a
// deletion cut short is finished by the next one; the other points read
// the same throughout.
func (t *Target) DeleteRestorePoint(ctx context.Context, key, id string) error {
	r, unlock, err := t.lockReplica(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()
	if r.state.State == sdk.ReplicaFailedOver {
		return fmt.Errorf("replica %q is failed over; undo or commit first: %w", r.vm.Name, errdefs.ErrFailedPrecondition)
	}
	if err := r.detached("delete a restore point"); err != nil {
		return err
	}
	r.gate.Lock()
	defer r.gate.Unlock()
	points := parsePoints(r.vm)
	k := pointIndex(points, id)
	if k < 0 {
		return fmt.Errorf("restore point %q of replica %q: %w", id, r.vm.Name, errdefs.ErrNotFound)
	}
	if k > 0 {
		prev := points[k-1]
		for d := range r.disks {
			if err := r.fold(points[k].id, prev, d); err != nil {
				return fmt.Errorf("replica %q: fold restore point %s into %s: %w", r.vm.Name, id, prev.id, err)
			}
		}
	}
	if err := t.c.removeSnapshot(ctx, r.vm.Name, points[k].snap.Value); err != nil {
		return err
	}
	r.dropStores(id)
	if err := os.RemoveAll(r.pointDir(id)); err != nil {
		return fmt.Errorf("replica %q: %w", r.vm.Name, err)
	}
	if err := t.refresh(ctx, r); err != nil {
		return err
	}
	r.points = parsePoints(r.vm)
	r.removeOrphans(r.points)
	t.log.Info("deleted restore point", "replica", r.vm.Name, "point", id)
	return nil
}

// fold copies the blocks of point id's store of disk d that prev's store
// lacks (and that lie within prev's size) into prev's store.
func (r *replica) fold(id string, prev *point, d int) error {
	src, err := r.store(id, d, false)
	if err != nil || src == nil {
		return err
	}
	var blocks []int64
	for _, b := range src.blocks() {
		if b*undoBlock < prev.capacity(d) {
			blocks = append(blocks, b)
		}
	}
	if len(blocks) == 0 {
		return nil
	}
	dst, err := r.store(prev.id, d, true)
	if err != nil {
		return err
	}
	return dst.save(blocks, func(b int64, p []byte) error {
		ok, err := src.read(b, p)
		if err == nil && !ok {
			err = fmt.Errorf("block %d vanished from %s", b, src.path)
		}
		return err
	})
}

// dropStores closes the stores of a point.
func (r *replica) dropStores(id string) {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	for _, s := range r.stores[id] {
		if s != nil {
			s.close()
		}
	}
	delete(r.stores, id)
	for k := range r.missing {
		if strings.HasPrefix(k, id+"/") {
			delete(r.missing, k)
		}
	}
}

// removeOrphans deletes the undo stores of points whose snapshot is gone
// (a deletion cut short after the snapshot went).
func (r *replica) removeOrphans(points []*point) {
	entries, err := os.ReadDir(filepath.Join(r.dir, "points"))
	if err != nil {
		return
	}
	for _, e := range entries {
		if pointIndex(points, e.Name()) < 0 {
			r.dropStores(e.Name())
			os.RemoveAll(r.pointDir(e.Name()))
		}
	}
}
