package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/plugins/internal/filelock"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// A target folder holds one sub-folder per replica:
//
//	TARGET/.ferry-target.lock                 flock: replica creation and deletion
//	TARGET/<name>/vm.json                     the replica's description
//	TARGET/<name>/disk<N>.img                 only when failed over or committed
//	TARGET/<name>/.replica/lock               flock: one change at a time
//	TARGET/<name>/.replica/writers.lock       flock: held while disk writers are open
//	TARGET/<name>/.replica/replica.json       state, restore points, journal
//	TARGET/<name>/.replica/current/disk<N>.img   the working images
//	TARGET/<name>/.replica/points/<id>/disk<N>.* the undo store of a point
//
// Once failed over, the folder is an ordinary VM folder (vm.json and
// disk<N>.img) that a source "local" can read for failback.

const (
	replicaDirName  = ".replica"
	replicaFile     = "replica.json"
	targetLockName  = ".ferry-target.lock"
	writersLockName = "writers.lock"
	deletingPrefix  = ".deleting-"
)

// Target serves a target folder as an sdk.Target. Restore points are
// reverse-incremental: the replica keeps one working image per disk, and
// each point owns an undo store of the blocks overwritten after it.
type Target struct {
	root  string
	now   func() time.Time
	crash func(step string) // tests only: see site.crash

	// isolated is the network test VMs' unmapped NICs go on
	// (isolated_network; DefaultIsolatedNetwork).
	isolated string

	mu      sync.Mutex
	writers map[string]*replicaWriters // by replica folder
}

var _ sdk.Target = (*Target)(nil)

// NewTarget opens the target folder root, creating it when missing, and
// clears what a killed process left of deleted replicas.
func NewTarget(root string) (*Target, error) {
	if err := checkFolder(root, true); err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), deletingPrefix) {
			if err := removeAllDurable(filepath.Join(root, e.Name())); err != nil {
				return nil, fmt.Errorf("open target: %w", err)
			}
		}
	}
	if err := clearStoppedTests(root); err != nil {
		return nil, fmt.Errorf("open target: %w", err)
	}
	return &Target{root: root, now: time.Now, isolated: DefaultIsolatedNetwork, writers: map[string]*replicaWriters{}}, nil
}

func (t *Target) step(name string) {
	if t.crash != nil {
		t.crash(name)
	}
}

// replicaState is .replica/replica.json.
type replicaState struct {
	Version       int              `json:"version"`
	ID            string           `json:"id"`
	Name          string           `json:"name"`
	SourceVM      string           `json:"source_vm"`
	State         sdk.ReplicaState `json:"state"`
	FailoverPoint string           `json:"failover_point,omitempty"`
	// Owner is the job and source VM the replica belongs to; nil for a
	// replica made before owners were recorded, until one adopts it.
	Owner *replicaOwner `json:"owner,omitempty"`
	// PreFailover is the description before the failover, restored by
	// UndoFailover.
	PreFailover *sdk.VM `json:"pre_failover,omitempty"`
	// FailingOver journals a failover in progress: set before the disks
	// are materialized, cleared when the state becomes failed_over. Found
	// set on a ready replica, the failover is rolled back.
	FailingOver string `json:"failing_over,omitempty"`
	// UndoingFailover journals an undo in progress: set before vm.json or
	// any failover disk is touched, cleared when the state becomes ready.
	// Found set, the undo is finished, never rolled back: the failover
	// disks may be partly gone already.
	UndoingFailover bool `json:"undoing_failover,omitempty"`
	// FailoverChangeIDs holds, by disk index, the change id of each
	// failover disk at the moment of the failover: the failed-over VM's
	// change tracking starts there, and failback asks what it wrote since.
	// Empty for a failover made before the plugin tracked them.
	FailoverChangeIDs map[int]string `json:"failover_change_ids,omitempty"`
	NextPoint         int64          `json:"next_point"`
	Disks             []replicaDisk  `json:"disks"`
	Points            []*pointState  `json:"points"`
}

type replicaOwner struct {
	Job      string `json:"job"`
	Source   string `json:"source"`
	SourceVM string `json:"source_vm"`
}

type replicaDisk struct {
	Index int   `json:"index"`
	Size  int64 `json:"size"`
}

type pointState struct {
	ID      string            `json:"id"`
	Seq     int64             `json:"seq"`
	Created time.Time         `json:"created"`
	Labels  map[string]string `json:"labels,omitempty"`
	Disks   []replicaDisk     `json:"disks"`
	// Deleting journals a deletion: the point is hidden, and its undo
	// blocks are being folded into the point before it.
	Deleting bool `json:"deleting,omitempty"`
}

func replicaMeta(dir string) string { return filepath.Join(dir, replicaDirName) }

func workingImage(dir string, index int) string {
	return diskFile(filepath.Join(replicaMeta(dir), "current"), index)
}

func pointDir(dir, id string) string {
	return filepath.Join(replicaMeta(dir), "points", id)
}

func loadReplica(dir string) (*replicaState, error) {
	var rs replicaState
	if err := readJSON(filepath.Join(replicaMeta(dir), replicaFile), &rs); err != nil {
		return nil, err
	}
	return &rs, nil
}

func saveReplica(dir string, rs *replicaState) error {
	return writeJSONAtomic(filepath.Join(replicaMeta(dir), replicaFile), rs)
}

// isReplicaInProgress reports a folder holding a replica that still
// receives replication (or is being created): not a VM a source may read.
func isReplicaInProgress(dir string) bool {
	if _, err := os.Stat(replicaMeta(dir)); err != nil {
		return false
	}
	rs, err := loadReplica(dir)
	if err != nil {
		return true
	}
	return rs.State == sdk.ReplicaReady
}

func (rs *replicaState) disk(index int) (replicaDisk, bool) {
	for _, d := range rs.Disks {
		if d.Index == index {
			return d, true
		}
	}
	return replicaDisk{}, false
}

// livePoints are the points that exist for callers (not being deleted).
func (rs *replicaState) livePoints() []*pointState {
	var out []*pointState
	for _, p := range rs.Points {
		if !p.Deleting {
			out = append(out, p)
		}
	}
	return out
}

func (rs *replicaState) point(id string) int {
	for i, p := range rs.Points {
		if p.ID == id {
			return i
		}
	}
	return -1
}

func (p *pointState) capacity(index int) (int64, bool) {
	for _, d := range p.Disks {
		if d.Index == index {
			return d.Size, true
		}
	}
	return 0, false
}

func (t *Target) notFound(ref string) error {
	return fmt.Errorf("replica %q in target %s: %w", ref, t.root, errdefs.ErrNotFound)
}

// resolve finds a replica's folder by name or id.
func (t *Target) resolve(ref string) (string, error) {
	if validName(ref) {
		dir := filepath.Join(t.root, ref)
		if _, err := os.Stat(filepath.Join(replicaMeta(dir), replicaFile)); err == nil {
			return dir, nil
		}
	}
	reps, err := t.scan()
	if err != nil {
		return "", err
	}
	for _, r := range reps {
		if r.rs.ID == ref {
			return r.dir, nil
		}
	}
	return "", t.notFound(ref)
}

type foundReplica struct {
	dir string
	rs  *replicaState
}

func (t *Target) scan() ([]foundReplica, error) {
	entries, err := os.ReadDir(t.root)
	if err != nil {
		return nil, fmt.Errorf("list target %s: %w", t.root, err)
	}
	var out []foundReplica
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		dir := filepath.Join(t.root, e.Name())
		rs, err := loadReplica(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, foundReplica{dir: dir, rs: rs})
	}
	return out, nil
}

func (t *Target) replicaOf(dir string, rs *replicaState) (*sdk.Replica, error) {
	vm, err := readVM(dir)
	if err != nil {
		return nil, err
	}
	r := &sdk.Replica{
		ID: rs.ID, Name: rs.Name, SourceVM: rs.SourceVM, VM: *vm,
		State: rs.State, FailoverPoint: rs.FailoverPoint,
		// IDs are random and never reused: a replica made again under its
		// name has a new one.
		Incarnation: rs.ID,
	}
	if rs.Owner != nil {
		r.Owner = sdk.ReplicaOwner{Job: rs.Owner.Job, Source: rs.Owner.Source, SourceVM: rs.Owner.SourceVM}
	}
	return r, nil
}

// adopt records an owner on a replica made before owners were recorded.
func (t *Target) adopt(ctx context.Context, name string, owner sdk.ReplicaOwner) (*sdk.Replica, error) {
	x, err := t.begin(ctx, name, false)
	if err != nil {
		return nil, err
	}
	defer x.release()
	if x.rs.Owner == nil {
		x.rs.Owner = &replicaOwner{Job: owner.Job, Source: owner.Source, SourceVM: owner.SourceVM}
		if err := x.save(); err != nil {
			return nil, err
		}
	}
	return t.replicaOf(x.dir, x.rs)
}

// txn is a replica locked for a change.
type txn struct {
	dir    string
	rs     *replicaState
	lock   *filelock.Lock
	wlock  *filelock.Lock
	target *Target
	// paused are this process's open writers of the replica, held still
	// for the change and brought up to date when it ends.
	paused  []*sharedDisk
	deleted bool
	// undoFinished says begin finished an undo of a failover that a
	// killed process had journalled.
	undoFinished bool
}

func (x *txn) release() {
	for _, sd := range x.paused {
		x.target.resync(x, sd)
		sd.gate.Unlock()
	}
	x.paused = nil
	x.wlock.Release()
	x.lock.Release()
}

func (x *txn) save() error { return saveReplica(x.dir, x.rs) }

// begin locks a replica for a change and settles what a killed process
// left half-done that this lock alone guards (settle: temporary files,
// failover, undo, commit). With exclusive set, the change may touch
// restore points: disk writers of this process are paused until it ends
// (and then write into the right undo store), writers of other processes
// make it fail with ErrFailedPrecondition, and every other change a killed
// process left half-done is finished first.
func (t *Target) begin(ctx context.Context, ref string, exclusive bool) (*txn, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	dir, err := t.resolve(ref)
	if err != nil {
		return nil, err
	}
	lock, err := filelock.Acquire(ctx, filepath.Join(replicaMeta(dir), lockFileName))
	if err != nil {
		return nil, err
	}
	x := &txn{dir: dir, lock: lock, target: t}
	if exclusive {
		if err := t.pause(x); err != nil {
			x.release()
			return nil, fmt.Errorf("replica %q: %w", ref, err)
		}
	}
	if x.rs, err = loadReplica(dir); err != nil {
		x.release()
		return nil, err
	}
	if err := t.settle(x); err != nil {
		x.release()
		return nil, fmt.Errorf("replica %q: finish interrupted change: %w", ref, err)
	}
	if exclusive {
		if err := t.recover(ctx, x); err != nil {
			x.release()
			return nil, fmt.Errorf("replica %q: finish interrupted change: %w", ref, err)
		}
	}
	return x, nil
}

// pause holds this process's writers of the replica still, or makes sure
// no other process has one open.
func (t *Target) pause(x *txn) error {
	t.mu.Lock()
	rw := t.writers[x.dir]
	if rw != nil {
		for _, sd := range rw.disks {
			if sd.direct > 0 {
				t.mu.Unlock()
				return fmt.Errorf("a writer that offered its local path is open (the data mover may be writing the file itself): %w", errdefs.ErrFailedPrecondition)
			}
		}
		for _, sd := range rw.disks {
			sd.gate.Lock()
			x.paused = append(x.paused, sd)
		}
		t.mu.Unlock()
		// Writes accepted before the change belong before it.
		for _, sd := range x.paused {
			if err := sd.flush(t); err != nil {
				return fmt.Errorf("apply pending writes of disk %d: %w", sd.disk, err)
			}
		}
		return nil
	}
	t.mu.Unlock()
	wl, err := filelock.Try(filepath.Join(replicaMeta(x.dir), writersLockName))
	if errors.Is(err, filelock.ErrLocked) {
		return fmt.Errorf("disk writers are open in another process: %w", errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return err
	}
	x.wlock = wl
	return nil
}

// recover finishes what a killed process left half-done of the changes to
// restore points, after settle. The caller holds the replica's lock and
// writers lock.
func (t *Target) recover(ctx context.Context, x *txn) error {
	rs := x.rs
	if rs.State == sdk.ReplicaCommitted {
		return nil // settle finished the commit
	}
	for i := 0; i < len(rs.Points); i++ {
		if rs.Points[i].Deleting {
			if err := t.finishDelete(ctx, x, i); err != nil {
				return err
			}
			i--
		}
	}
	// Point folders no point owns: a deletion committed just before a kill.
	entries, err := os.ReadDir(filepath.Join(replicaMeta(x.dir), "points"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("list points: %w", err)
	}
	for _, e := range entries {
		if rs.point(e.Name()) < 0 {
			if err := removeAllDurable(filepath.Join(replicaMeta(x.dir), "points", e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// GetPlacement lists the networks of the target's VMs and "default", and
// the target folder as the one datastore.
func (t *Target) GetPlacement(ctx context.Context) (*sdk.Placement, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(t.root)
	if err != nil {
		return nil, fmt.Errorf("list target %s: %w", t.root, err)
	}
	nets := map[string]bool{"default": true}
	for _, e := range entries {
		if !e.IsDir() || !validName(e.Name()) {
			continue
		}
		vm, err := readVM(filepath.Join(t.root, e.Name()))
		if err != nil {
			continue
		}
		for _, n := range vm.NICs {
			if n.Network != "" {
				nets[n.Network] = true
			}
		}
	}
	p := &sdk.Placement{Datastores: []string{t.root}}
	for n := range nets {
		p.Networks = append(p.Networks, n)
	}
	sort.Strings(p.Networks)
	return p, nil
}

// CreateReplica creates a replica with empty sparse working images shaped
// like req.VM, its networks mapped by req.NetworkMap. A replica of that
// name that exists is returned as it is.
func (t *Target) CreateReplica(ctx context.Context, req sdk.ReplicaRequest) (*sdk.Replica, error) {
	dir, rules, release, err := t.replicaFolder(ctx, "create replica", req)
	if err != nil {
		return nil, err
	}
	defer release()
	if rs, err := loadReplica(dir); err == nil {
		if rs.Owner == nil && !req.Owner.IsZero() {
			return t.adopt(ctx, req.Name, req.Owner)
		}
		return t.replicaOf(dir, rs)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if _, err := os.Stat(replicaMeta(dir)); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dir, vmFile)); err == nil {
			return nil, fmt.Errorf("create replica %q: %s holds a VM that is not a replica: %w", req.Name, dir, errdefs.ErrAlreadyExists)
		}
	}
	if _, err := os.Stat(mappingPath(dir)); err == nil {
		return nil, fmt.Errorf("create replica %q: a mapping of the VM in %s onto a replica was interrupted; run the job that maps it again: %w", req.Name, dir, errdefs.ErrFailedPrecondition)
	}
	// .replica first: a folder with it and no replica.json is a creation
	// to redo, never someone else's VM.
	if err := mkdirDurable(filepath.Join(replicaMeta(dir), "current")); err != nil {
		return nil, err
	}
	vm := cloneVM(&req.VM)
	rs := newReplicaState(req)
	for _, d := range vm.Disks {
		if d.Capacity < 0 {
			return nil, fmt.Errorf("create replica %q: disk %d: capacity %d: %w", req.Name, d.Index, d.Capacity, errdefs.ErrInvalidArgument)
		}
		if err := createSparse(workingImage(dir, d.Index), d.Capacity); err != nil {
			return nil, err
		}
		rs.Disks = append(rs.Disks, replicaDisk{Index: d.Index, Size: d.Capacity})
	}
	if err := describeReplica(dir, rs, vm, rules); err != nil {
		return nil, fmt.Errorf("create replica %q: %w", req.Name, err)
	}
	t.step("replica-described")
	if err := saveReplica(dir, rs); err != nil {
		return nil, err
	}
	return t.replicaOf(dir, rs)
}

// replicaFolder checks req's name and network map and takes the target's
// lock for a replica to be made in the folder it returns (what names the
// change in errors); release gives the lock back.
func (t *Target) replicaFolder(ctx context.Context, what string, req sdk.ReplicaRequest) (dir string, rules *sdk.NetworkRules, release func(), err error) {
	if !validName(req.Name) {
		return "", nil, nil, fmt.Errorf("%s %q: not a valid folder name: %w", what, req.Name, errdefs.ErrInvalidArgument)
	}
	if rules, err = sdk.CompileNetwork(sdk.NetworkConfig{NetworkMap: req.NetworkMap}); err != nil {
		return "", nil, nil, fmt.Errorf("%s %q: %w", what, req.Name, err)
	}
	tl, err := filelock.Acquire(ctx, filepath.Join(t.root, targetLockName))
	if err != nil {
		return "", nil, nil, err
	}
	return filepath.Join(t.root, req.Name), rules, tl.Release, nil
}

// newReplicaState is the record of a new replica of req's VM, ready, with
// no disks and no points yet.
func newReplicaState(req sdk.ReplicaRequest) *replicaState {
	rs := &replicaState{Version: 1, ID: "r-" + randomHex(8), Name: req.Name, SourceVM: req.VM.ID, State: sdk.ReplicaReady, NextPoint: 1}
	if !req.Owner.IsZero() {
		rs.Owner = &replicaOwner{Job: req.Owner.Job, Source: req.Owner.Source, SourceVM: req.Owner.SourceVM}
	}
	if rs.SourceVM == "" {
		rs.SourceVM = req.VM.Name
	}
	return rs
}

// describeReplica writes the replica's vm.json: its source's description,
// powered off, with the network rules applied.
func describeReplica(dir string, rs *replicaState, vm *sdk.VM, rules *sdk.NetworkRules) error {
	vm.ID, vm.Name, vm.PowerState = rs.ID, rs.Name, "off"
	if err := applyNetwork(rules, vm); err != nil {
		return err
	}
	return writeVM(dir, vm)
}

// cloneVM deep-copies a VM description.
func cloneVM(v *sdk.VM) *sdk.VM {
	c := *v
	c.Disks = append([]sdk.Disk(nil), v.Disks...)
	c.Hardware.BootOrder = append([]sdk.BootDevice(nil), v.Hardware.BootOrder...)
	c.NICs = make([]sdk.NIC, len(v.NICs))
	for i, n := range v.NICs {
		n.Addresses = append([]string(nil), n.Addresses...)
		n.DNS = append([]string(nil), n.DNS...)
		c.NICs[i] = n
	}
	if v.NICs == nil {
		c.NICs = nil
	}
	if v.Attributes != nil {
		c.Attributes = make(map[string]string, len(v.Attributes))
		for k, val := range v.Attributes {
			c.Attributes[k] = val
		}
	}
	return &c
}

// GetReplica returns a replica by name or id.
func (t *Target) GetReplica(ctx context.Context, ref string) (*sdk.Replica, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	dir, err := t.resolve(ref)
	if err != nil {
		return nil, err
	}
	rs, err := loadReplica(dir)
	if err != nil {
		return nil, err
	}
	return t.replicaOf(dir, rs)
}

// ListReplicas lists the replicas, committed ones included, by name.
func (t *Target) ListReplicas(ctx context.Context) ([]sdk.Replica, error) {
	if err := canceled(ctx); err != nil {
		return nil, err
	}
	reps, err := t.scan()
	if err != nil {
		return nil, err
	}
	out := make([]sdk.Replica, 0, len(reps))
	for _, r := range reps {
		rep, err := t.replicaOf(r.dir, r.rs)
		if err != nil {
			return nil, err
		}
		out = append(out, *rep)
	}
	return out, nil
}

// DeleteReplica deletes a replica with its restore points; deleting one
// that is gone succeeds. A committed replica is a production VM now: only
// its replica record goes, its VM folder stays.
func (t *Target) DeleteReplica(ctx context.Context, ref string) error {
	tl, err := filelock.Acquire(ctx, filepath.Join(t.root, targetLockName))
	if err != nil {
		return err
	}
	defer tl.Release()
	x, err := t.begin(ctx, ref, true)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer x.release()
	if x.rs.State == sdk.ReplicaCommitted {
		return removeAllDurable(replicaMeta(x.dir))
	}
	// Rename first, so a kill half-way leaves no half-deleted replica
	// behind: NewTarget clears .deleting-* folders.
	gone := filepath.Join(t.root, deletingPrefix+filepath.Base(x.dir)+"-"+randomHex(4))
	if err := os.Rename(x.dir, gone); err != nil {
		return fmt.Errorf("delete replica %q: %w", ref, err)
	}
	x.deleted = true
	if err := syncDir(t.root); err != nil {
		return err
	}
	t.step("replica-renamed")
	return removeAllDurable(gone)
}
