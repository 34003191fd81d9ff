package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// FailbackCatalog is what a failback reads and records besides replicas
// and restore points.
type FailbackCatalog interface {
	Failback(job, vm string) (*catalog.Failback, error)
	PutFailback(f *catalog.Failback) error
	EndFailback(job, vm string, r *catalog.Replica) error
}

var _ FailbackCatalog = (*catalog.Catalog)(nil)

// FailbackOptions tune a failback's first step.
type FailbackOptions struct {
	// To names the production VM to write; "" is the job's VM. A VM
	// that does not exist is created, empty, from the replica's
	// description with its networks mapped back.
	To string
}

// FailbackResult is what a failback command did.
type FailbackResult struct {
	// Failback is the state reached; nil once a commit or undo ended it.
	Failback *catalog.Failback
	// Ended is the failback a commit or undo ended, as it was at its end.
	Ended *catalog.Failback `json:",omitempty"`
	// Steps are the steps run, in order.
	Steps []failback.Step
	// Syncs are the syncs run, in order (a switch may run two).
	Syncs []catalog.FailbackSync
	// Production is the production VM as the last step left it, when a
	// step reported it.
	Production *sdk.VM
}

// FailbackStep names failback step s for Hook: "failback-" and the step.
// A kill there leaves the state the step records before it.
func FailbackStep(s failback.Step) Step { return Step("failback-" + string(s)) }

// StepFailbackMoving is a point in a sync after its first disk moved and
// before the sync is recorded, for Hook.
const StepFailbackMoving Step = "failback-moving"

// Failback runs a failback action for vm of job, whose replica is failed
// over: it decides the steps from the state the catalog keeps
// (failback.Decide) and runs them, recording the state each step enters
// before it and reaches after it. A failed or killed command leaves a
// state from which the same command goes on.
func (e *Engine) Failback(ctx context.Context, job *config.Job, vm string, action failback.Action, opts FailbackOptions) (*FailbackResult, error) {
	fc, ok := e.Catalog.(FailbackCatalog)
	if !ok {
		return nil, fmt.Errorf("job %q vm %q: failback: the catalog (%T) keeps no failbacks: %w", job.Name, vm, e.Catalog, errdefs.ErrUnimplemented)
	}
	rec, err := fc.Failback(job.Name, vm)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return nil, err
	}
	state := failback.None
	if rec != nil {
		state = failback.State(rec.State)
		if opts.To != "" && opts.To != rec.Production {
			return nil, fmt.Errorf("job %q vm %q: failback %s writes production vm %q, not %q: %w", job.Name, vm, rec.ID, rec.Production, opts.To, errdefs.ErrFailedPrecondition)
		}
	}
	steps, err := failback.Decide(state, action)
	if err != nil {
		return nil, fmt.Errorf("job %q vm %q: failback %s: %w", job.Name, vm, action, err)
	}
	res := &FailbackResult{Failback: rec}
	if len(steps) == 0 {
		if action == failback.Switch && rec != nil {
			// Switched already: say where production runs, as the switch
			// did (a plan's readiness checks use its addresses).
			res.Production = e.productionVM(ctx, job, rec.Production)
		}
		return res, nil
	}
	fb, err := e.failbackOf(ctx, fc, job, vm, rec, opts)
	if err != nil {
		return nil, err
	}
	for _, step := range steps {
		if err := fb.run(ctx, step, res); err != nil {
			res.Failback = fb.rec
			return res, fmt.Errorf("job %q vm %q: failback %s: %s: %w", job.Name, vm, action, step, err)
		}
		res.Steps = append(res.Steps, step)
	}
	res.Failback = fb.rec
	return res, nil
}

// productionVM describes a production VM at the job's source; nil when
// it cannot.
func (e *Engine) productionVM(ctx context.Context, job *config.Job, name string) *sdk.VM {
	src, _, _, err := e.source(ctx, job, nil)
	if err != nil {
		return nil
	}
	v, err := src.DescribeVM(ctx, name)
	if err != nil {
		e.log().Warn("describe production vm", "job", job.Name, "vm", name, "error", err)
		return nil
	}
	return v
}

// failbackRun is one failback command under way.
type failbackRun struct {
	e    *Engine
	fc   FailbackCatalog
	job  *config.Job
	vm   string
	rec  *catalog.Failback // nil once ended
	src  sdk.Source
	caps sdk.Capabilities
	fw   sdk.FailbackWriter
	tgt  sdk.Target
	fr   sdk.FailbackReader
	repl *catalog.Replica
}

// failbackOf reaches the job's source and target, checks that both can
// fail back and that the VM is failed over, and makes the record of a
// failback about to begin.
func (e *Engine) failbackOf(ctx context.Context, fc FailbackCatalog, job *config.Job, vm string, rec *catalog.Failback, opts FailbackOptions) (*failbackRun, error) {
	repl, err := e.Catalog.Replica(job.Name, vm)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("job %q vm %q has no replica: %w", job.Name, vm, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if rec == nil && repl.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("job %q vm %q: failback: the replica is %s, not failed over: %w", job.Name, vm, repl.State, errdefs.ErrFailedPrecondition)
	}
	src, caps, _, err := e.source(ctx, job, nil)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", job.Source.Address(), err)
	}
	fw, ok := src.(sdk.FailbackWriter)
	if !caps.Failback || !ok {
		return nil, fmt.Errorf("job %q vm %q: source %s (plugin type %q) cannot take a failback: it does not declare the Failback capability: %w", job.Name, vm, job.Source.Address(), job.Source.Type, errdefs.ErrUnimplemented)
	}
	tgt, tcaps, _, err := e.target(ctx, job, nil)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", job.Target.Address(), err)
	}
	fr, ok := tgt.(sdk.FailbackReader)
	if !tcaps.Failback || !ok {
		return nil, fmt.Errorf("job %q vm %q: target %s (plugin type %q) cannot fail a replica back: it does not declare the Failback capability: %w", job.Name, vm, job.Target.Address(), job.Target.Type, errdefs.ErrUnimplemented)
	}
	if rec == nil {
		prod := opts.To
		if prod == "" {
			prod = vm
			if repl.SourceID != "" {
				prod = repl.SourceID
			}
		}
		rec = &catalog.Failback{Job: job.Name, VM: vm, ID: newFailbackID(e.now()), Production: prod, Point: repl.FailoverPoint,
			Elsewhere: prod != vm && prod != repl.SourceID}
	}
	return &failbackRun{e: e, fc: fc, job: job, vm: vm, rec: rec, src: src, caps: caps, fw: fw, tgt: tgt, fr: fr, repl: repl}, nil
}

// newFailbackID names a failback: the time it began and a random part.
func newFailbackID(now time.Time) string {
	b := make([]byte, 3)
	rand.Read(b)
	return "fb-" + now.UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b)
}

// record puts the failback in state s ("" keeps it).
func (f *failbackRun) record(s failback.State) error {
	if s != "" {
		f.rec.State = string(s)
	}
	return f.fc.PutFailback(f.rec)
}

// run runs one step between the states it records.
func (f *failbackRun) run(ctx context.Context, step failback.Step, res *FailbackResult) error {
	entry := failback.Entries[step]
	if step != failback.End {
		if err := f.record(entry.Before); err != nil {
			return err
		}
	}
	f.e.hook(FailbackStep(step), f.vm)
	var err error
	switch step {
	case failback.Begin:
		res.Production, err = f.begin(ctx)
	case failback.SyncData, failback.FinalSync:
		var s *catalog.FailbackSync
		if s, err = f.sync(ctx); err == nil {
			res.Syncs = append(res.Syncs, *s)
		}
	case failback.StopReplica:
		_, err = f.fr.SetReplicaPower(ctx, f.repl.ReplicaID, false)
	case failback.StartProduction:
		res.Production, err = f.fw.StartFailback(ctx, f.rec.Production, f.rec.ID)
	case failback.CommitProduction:
		err = f.fw.CommitFailback(ctx, f.rec.Production, f.rec.ID)
	case failback.ReturnReplica:
		err = f.returnReplica(ctx)
	case failback.UndoProduction:
		err = f.fw.UndoFailback(ctx, f.rec.Production, f.rec.ID)
	case failback.StartReplica:
		_, err = f.fr.SetReplicaPower(ctx, f.repl.ReplicaID, true)
	case failback.End:
		var r *catalog.Replica
		if f.rec.State == string(failback.Committing) {
			r = f.repl
			r.FailedBack = f.rec.ID
		}
		if err = f.fc.EndFailback(f.job.Name, f.vm, r); err == nil {
			res.Ended, f.rec = f.rec, nil
		}
		return err
	default:
		err = fmt.Errorf("no failback step %q", step)
	}
	if err != nil {
		return err
	}
	if entry.After != "" {
		return f.record(entry.After)
	}
	return nil
}

// begin readies production. A production VM that does not exist is
// created from the replica's description, its networks mapped back.
func (f *failbackRun) begin(ctx context.Context) (*sdk.VM, error) {
	req := sdk.FailbackRequest{ID: f.rec.ID, VM: f.rec.Production}
	if !f.rec.Create {
		_, err := f.src.DescribeVM(ctx, f.rec.Production)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
			f.rec.Create = true
			if err := f.record(""); err != nil {
				return nil, err
			}
		case err != nil:
			return nil, err
		}
	}
	if f.rec.Create {
		r, err := f.tgt.GetReplica(ctx, f.repl.ReplicaID)
		if err != nil {
			return nil, err
		}
		req.Create = productionDescription(r.VM, f.rec.Production, f.job)
	}
	return f.fw.BeginFailback(ctx, req)
}

// productionDescription is the description of a production VM made anew
// from its replica's: its own name, the replica's disks, and each NIC on
// the production network the job's network map maps to the replica's.
// Addresses are the replica's: a re-IP rule cannot be reversed exactly.
func productionDescription(v sdk.VM, name string, job *config.Job) *sdk.VM {
	out := v
	out.ID, out.Name, out.PowerState = name, name, "off"
	out.Disks = append([]sdk.Disk(nil), v.Disks...)
	out.NICs = nil
	back := map[string]string{}
	for _, m := range networkMap(job) {
		back[m.To] = m.From
	}
	for _, n := range v.NICs {
		if from, ok := back[n.Network]; ok {
			n.Network = from
		}
		n.MAC = ""
		out.NICs = append(out.NICs, n)
	}
	return &out
}

// returnReplica undoes the replica's failover on the target, unless an
// earlier attempt did, and records it ready.
func (f *failbackRun) returnReplica(ctx context.Context) error {
	r, err := f.tgt.GetReplica(ctx, f.repl.ReplicaID)
	if err != nil {
		return err
	}
	if r.State == sdk.ReplicaFailedOver {
		if r, err = f.tgt.UndoFailover(ctx, f.repl.ReplicaID); err != nil {
			return err
		}
	}
	f.repl.State, f.repl.FailoverPoint = r.State, r.FailoverPoint
	return nil
}

// sync moves every disk of the replica into production: what the plan of
// each disk names (failback.PlanDisk), through the data mover. The marks
// of the replica's writes are recorded only once every disk moved.
func (f *failbackRun) sync(ctx context.Context) (*catalog.FailbackSync, error) {
	start := f.e.now()
	r, err := f.tgt.GetReplica(ctx, f.repl.ReplicaID)
	if err != nil {
		return nil, err
	}
	f.removeStaleSnapshots(ctx)
	// What the replica wrote, disk by disk, and a mark for each.
	disks := make([]diskSync, len(r.VM.Disks))
	needProduction := false
	for i, d := range r.VM.Disks {
		ds := &disks[i]
		ds.index = d.Index
		since := f.rec.Disk(d.Index).Mark
		ds.mark, err = f.fr.FailedOverChanges(ctx, sdk.FailedOverChangesRequest{Replica: f.repl.ReplicaID, Disk: d.Index, Since: since}, func(b []sdk.Extent) error {
			ds.replica = append(ds.replica, b...)
			return nil
		})
		switch {
		case errors.Is(err, errdefs.ErrChangeIDReset):
			ds.mark, ds.replicaWhy = "", err.Error()
		case err != nil:
			return nil, fmt.Errorf("disk %d: the replica's writes: %w", d.Index, err)
		default:
			ds.replicaKnown = true
		}
		synced := f.rec.Disk(d.Index).Synced
		if (!synced && !f.rec.Create) || (!ds.replicaKnown && (synced || !f.rec.Create)) {
			needProduction = true
		}
	}
	prod := &productionView{f: f, changed: map[int][]sdk.Extent{}, why: map[int]string{}}
	defer prod.remove()
	if needProduction {
		if err := prod.look(ctx, r.VM.Disks); err != nil {
			return nil, err
		}
	}
	compare := false
	for i := range disks {
		ds := &disks[i]
		_, prodKnown := prod.changed[ds.index]
		ds.plan = failback.PlanDisk(failback.DiskInput{ReplicaKnown: ds.replicaKnown, Synced: f.rec.Disk(ds.index).Synced, ProductionKnown: prodKnown, Created: f.rec.Create})
		compare = compare || ds.plan.CompareProduction
	}
	if !compare {
		// Nothing reads the snapshot: writes go straight into the disks.
		if err := prod.remove(); err != nil {
			return nil, err
		}
	}
	out := &catalog.FailbackSync{At: start.UTC()}
	for i := range disks {
		st, err := f.syncDisk(ctx, &disks[i], prod)
		if err != nil {
			return nil, fmt.Errorf("disk %d: %w", disks[i].index, err)
		}
		out.Disks = append(out.Disks, st)
		if i == 0 {
			f.e.hook(StepFailbackMoving, f.vm)
		}
	}
	if err := prod.remove(); err != nil {
		return nil, err
	}
	for _, d := range disks {
		ds := f.rec.Disk(d.index)
		ds.Mark, ds.Synced = d.mark, true
	}
	out.Seconds = f.e.now().Sub(start).Seconds()
	f.rec.Syncs++
	for _, d := range out.Disks {
		f.rec.Sent += d.Sent
	}
	f.rec.LastSync = out
	return out, f.record("")
}

// diskSync is what a sync knows of one disk.
type diskSync struct {
	index        int
	replica      []sdk.Extent // what the replica wrote since the mark
	replicaKnown bool
	replicaWhy   string
	mark         string
	plan         failback.DiskPlan
}

// removeStaleSnapshots removes the failback snapshots of production a
// killed sync left.
func (f *failbackRun) removeStaleSnapshots(ctx context.Context) {
	snaps, err := f.src.ListSnapshots(ctx, f.rec.Production)
	if err != nil {
		return
	}
	for _, s := range snaps {
		if s.Name == f.snapshotName() {
			if err := f.src.RemoveSnapshot(ctx, f.rec.Production, s.ID); err != nil {
				f.e.log().Warn("remove a leftover failback snapshot", "vm", f.rec.Production, "snapshot", s.ID, "error", err)
			}
		}
	}
}

func (f *failbackRun) snapshotName() string {
	return SnapshotPrefix(f.job.Name) + "failback-" + f.rec.ID
}

// productionView is what a sync learns of production before it writes:
// per disk, the areas its change tracking says changed since the failover
// point (absent: it cannot say), and a snapshot to compute digests from.
type productionView struct {
	f       *failbackRun
	snap    *sdk.Snapshot
	changed map[int][]sdk.Extent
	why     map[int]string
}

// look snapshots production (powered off by begin) and asks its change
// tracking, for the disks not yet synced, what changed since the failover
// point's change id.
func (pv *productionView) look(ctx context.Context, disks []sdk.Disk) error {
	f := pv.f
	snap, err := f.src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: f.rec.Production, Name: f.snapshotName()})
	if err != nil {
		return fmt.Errorf("snapshot production vm %q: %w", f.rec.Production, err)
	}
	pv.snap = snap
	if f.rec.Create {
		return nil
	}
	ids := f.pointChangeIDs()
	for _, d := range disks {
		if f.rec.Disk(d.Index).Synced {
			continue
		}
		id := ids[d.Index]
		switch {
		case !f.caps.ChangeTracking:
			pv.why[d.Index] = "the source does not track changes"
			continue
		case id == "":
			pv.why[d.Index] = "the failover point has no change id for the disk"
			continue
		}
		ext := []sdk.Extent{}
		err := f.src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: f.rec.Production, Snapshot: snap.ID, Disk: d.Index, ChangeID: id}, func(b []sdk.Extent) error {
			ext = append(ext, b...)
			return nil
		})
		switch {
		case errors.Is(err, errdefs.ErrChangeIDReset):
			pv.why[d.Index] = err.Error()
		case err != nil:
			return fmt.Errorf("production vm %q disk %d: changed areas since the failover point: %w", f.rec.Production, d.Index, err)
		default:
			pv.changed[d.Index] = ext
		}
	}
	return nil
}

// pointChangeIDs are the change ids, by disk, of the restore point the
// replica was failed over from, as the catalog recorded them.
func (f *failbackRun) pointChangeIDs() map[int]string {
	ids := map[int]string{}
	points, err := f.e.Catalog.RestorePoints(f.job.Name, f.vm)
	if err != nil {
		return ids
	}
	for _, p := range points {
		if p.ID == f.rec.Point {
			for _, d := range p.Disks {
				ids[d.Index] = d.ChangeID
			}
		}
	}
	return ids
}

// remove removes the production snapshot; it may be called again.
func (pv *productionView) remove() error {
	if pv.snap == nil {
		return nil
	}
	err := pv.f.src.RemoveSnapshot(context.Background(), pv.f.rec.Production, pv.snap.ID)
	if err == nil {
		pv.snap = nil
	}
	return err
}

// syncDisk moves one disk as its plan says.
func (f *failbackRun) syncDisk(ctx context.Context, ds *diskSync, prod *productionView) (catalog.FailbackDiskStat, error) {
	plan := ds.plan
	st := catalog.FailbackDiskStat{Index: ds.index, Mode: plan.Mode, Why: plan.Why}
	if w := prod.why[ds.index]; w != "" && plan.CompareProduction {
		st.Why += " (" + w + ")"
	} else if ds.replicaWhy != "" && plan.CompareProduction {
		st.Why += " (" + ds.replicaWhy + ")"
	}
	rd, err := f.fr.OpenFailedOverDisk(ctx, f.repl.ReplicaID, ds.index)
	if err != nil {
		return st, err
	}
	defer rd.Close()
	size := rd.Size()
	st.Size = size
	w, err := f.fw.OpenFailbackDisk(ctx, f.rec.Production, f.rec.ID, ds.index, size)
	if err != nil {
		return st, err
	}
	defer w.Close()
	req := datamover.Request{Source: rd, Size: size, Sink: datamover.NewReceiver(w, size), Sync: func(context.Context) error { return w.Sync() }}
	switch {
	case plan.ReplicaChanges || plan.ProductionChanges:
		changed := []sdk.Extent{}
		if plan.ReplicaChanges {
			changed = append(changed, ds.replica...)
		}
		if plan.ProductionChanges {
			changed = append(changed, prod.changed[ds.index]...)
		}
		req.Changed = sdk.MergeExtents(changed)
	case plan.CompareProduction:
		if prod.snap == nil {
			return st, fmt.Errorf("no snapshot of production vm %q to compare with", f.rec.Production)
		}
		pr, err := f.src.OpenSnapshotDisk(ctx, f.rec.Production, prod.snap.ID, ds.index)
		if err != nil {
			return st, err
		}
		defer pr.Close()
		req.Digests = &readDigests{r: pr, bs: datamover.DefaultBlockSize, seg: datamover.DefaultSegmentBlocks}
	default: // a disk created empty
		req.TargetZero = true
	}
	stats, err := datamover.Move(ctx, req, datamover.Options{})
	if err != nil {
		return st, err
	}
	if err := w.Close(); err != nil {
		return st, err
	}
	if err := rd.Close(); err != nil {
		return st, err
	}
	st.Read, st.Sent, st.Changed = stats.BytesRead, stats.BytesSent, stats.BytesChanged
	return st, nil
}

// readDigests is the digest store of a production disk a sync compares
// with: each segment's digests computed from production's snapshot when
// the data mover takes it, where production lives. It keeps nothing.
type readDigests struct {
	r   sdk.DiskReader
	bs  int
	seg int
}

func (d *readDigests) Take(ctx context.Context, takes []datamover.Take, _ bool) ([]*datamover.Pending, error) {
	out := make([]*datamover.Pending, len(takes))
	segBytes := int64(d.bs) * int64(d.seg)
	for i, t := range takes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		lo := int64(t.Seg) * segBytes
		hi := min(lo+segBytes, d.r.Size())
		var ds []datamover.Digest
		if lo < hi {
			var err error
			if ds, err = datamover.DigestRange(d.r, lo, hi, d.bs); err != nil {
				return nil, fmt.Errorf("digest production: %w", err)
			}
		}
		out[i] = datamover.Known(datamover.Dense(ds))
	}
	return out, nil
}

func (d *readDigests) Put(context.Context, []datamover.Update) error { return nil }

// FailbackVM runs a failback action of vm of job as Failback does, for a
// failover plan's failback (core/recovery): what it left of the VM, with
// production's addresses once it runs.
func (e *Engine) FailbackVM(ctx context.Context, job *config.Job, vm string, action failback.Action) (*recovery.FailbackVM, error) {
	res, err := e.Failback(ctx, job, vm, action, FailbackOptions{})
	if res == nil {
		return nil, err
	}
	return recovery.FailbackVMOf(res.Failback, res.Syncs, res.Production), err
}
