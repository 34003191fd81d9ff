package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/replicameta"
	"github.com/ferry-dr/ferry/core/retention"
	"github.com/ferry-dr/ferry/core/traffic"
	"github.com/ferry-dr/ferry/scheduler"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Labels the engine sets on every restore point it creates.
const (
	LabelSession  = "ferry.session"
	LabelJob      = "ferry.job"
	LabelVM       = "ferry.vm"
	LabelSnapshot = "ferry.snapshot"
	// LabelConsistency says whether the point is application-consistent
	// (the guest was quiesced) or crash-consistent.
	LabelConsistency = "ferry.consistency"
)

// labelChangeID names the label holding a disk's change id.
func labelChangeID(disk int) string { return "ferry.disk." + strconv.Itoa(disk) + ".change_id" }

// SnapshotPrefix starts the name of every snapshot the engine takes for a
// job, so leftovers of a killed run can be found.
func SnapshotPrefix(job string) string { return "ferry-" + job + "-" }

// DefaultMaxTasks is how many disks of a VM move at once unless the job
// says otherwise.
const DefaultMaxTasks = 4

// run is one session of one job.
type run struct {
	e    *Engine
	job  *config.Job
	sess *catalog.Session

	src     sdk.Source
	srcCaps sdk.Capabilities
	tgt     sdk.Target
	repo    sdk.Repository
	codec   datamover.Codec
	limiter *datamover.Limiter // nil when the job does not throttle
	// rules are the limiters of the traffic rules the job's data crosses.
	rules []*datamover.Limiter
	// selected holds the selectors that picked each VM, for the job state
	// (see selectVMs); nil for a job without selectors.
	selected map[string][]string
	// ids maps the key of each VM a selector picked to its id at the
	// source, when they differ (see keyedSource).
	ids map[string]string
	// seen maps the id of each VM the session described to the job entry
	// that named it: two entries naming one VM replicate it once.
	seen map[string]string
	// tidying is the work a VM's disks leave to finish in the background
	// (deleting replaced metadata objects) while the VM's restore point
	// is made; vm waits for it.
	tidying sync.WaitGroup
	// oneByOne is set once the proxy relaying the target answered that
	// it does not know CommitPoint: the session's VMs make the point and
	// the retention's calls one by one.
	oneByOne bool
}

func (r *run) run(ctx context.Context) error {
	job := r.job
	var err error
	if r.codec, err = datamover.ParseCodec(string(job.Transfer.Compression), r.e.Link); err != nil {
		return fmt.Errorf("job %q: %w", job.Name, err)
	}
	if job.Transfer.Throttle > 0 {
		r.limiter = datamover.NewLimiter(job.Transfer.Throttle)
	}
	if r.e.Traffic != nil && r.e.Proxies == nil {
		link := traffic.Link{From: traffic.End{Site: job.Source.Site}, To: traffic.End{Site: job.Target.Site}}
		limits, lims := r.e.Traffic.Link(link, r.e.now())
		r.rules = lims
		if len(limits.Rules) > 0 {
			msg := fmt.Sprintf("traffic rules %s cover the data from %s to %s", strings.Join(limits.Rules, ", "), siteName(job.Source), siteName(job.Target))
			r.e.log().Info(msg, "job", job.Name)
			r.e.emit(Event{Kind: Notice, Session: r.sess.ID, Job: job.Name, Message: msg})
		}
	}
	if r.e.Proxies != nil {
		r.greetProxies(ctx, true)
	}
	vms, err := r.start(ctx)
	if err != nil {
		return fmt.Errorf("job %q: %w", job.Name, err)
	}
	return r.vms(ctx, vms)
}

// vm makes one attempt at replicating a VM and reports what happened; it
// never panics on a plugin's answer and always tries to remove the
// snapshot it took. The first attempt starts the VM's events; the caller
// finishes them (see vms).
func (r *run) vm(ctx context.Context, name string, attempt int) (catalog.VMResult, error) {
	start := r.e.now()
	res := catalog.VMResult{VM: name, Result: catalog.ResultRunning, Attempts: attempt}
	if attempt == 1 {
		r.e.emit(Event{Kind: VMStarted, Session: r.sess.ID, Job: r.job.Name, VM: name, Attempt: attempt})
	}
	err := r.replicate(ctx, name, &res)
	r.tidying.Wait()
	res.Duration = r.e.now().Sub(start)
	if err != nil {
		res.Result = catalog.ResultFailed
		res.Error = err.Error()
		r.e.log().Info("vm failed", "job", r.job.Name, "vm", name, "attempt", attempt, "error", err)
	} else if res.Result == catalog.ResultRunning {
		res.Result = catalog.ResultSuccess
	}
	return res, err
}

func (r *run) notice(vm, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.e.log().Info(msg, "job", r.job.Name, "vm", vm)
	r.e.emit(Event{Kind: Notice, Session: r.sess.ID, Job: r.job.Name, VM: vm, Message: msg})
}

func (r *run) replicate(ctx context.Context, name string, res *catalog.VMResult) error {
	job := r.job
	// The errors keep their class (%w), so that Retryable can tell
	// what waiting may cure from what it cannot.
	fail := func(format string, args ...any) error {
		return fmt.Errorf("job %q vm %q: %w", job.Name, name, fmt.Errorf(format, args...))
	}

	// What to do with the VM is decided by package plan's rule, the one
	// `ferry plan` answers by, from what the catalog, the source and the
	// target say now; the run executes the decision.
	if r.e.Proxies != nil {
		// How the proxies reach the VM's disks is asked now, while the
		// VM is looked at: placing its disks would wait for it.
		go r.e.Proxies.Probe(ctx, ProxyTask(job, name))
	}
	caps := r.srcCaps
	f := plan.Facts{Job: job, Key: name, Caps: &caps}
	if rec, err := r.e.Catalog.Replica(job.Name, name); err == nil {
		f.Record = rec
	}
	f.VM, f.SourceErr = r.src.DescribeVM(ctx, name)
	if f.SourceErr != nil {
		f.VM = nil
	}
	if vm := f.VM; vm != nil {
		if other, dup := r.seen[vm.ID]; dup && vm.ID != "" && other != name {
			f.SameAs = other
		}
	}
	if dec := plan.Admit(f); dec != nil {
		return dec.Err()
	}
	vm := f.VM
	if r.seen == nil {
		r.seen = map[string]string{}
	}
	r.seen[vm.ID] = name
	r.removeStaleSnapshots(ctx, name)

	dec, replica, points, err := r.decide(ctx, f)
	if err != nil {
		return err
	}
	replica, fresh, err := r.replica(ctx, &dec, vm, replica)
	if err != nil {
		return err
	}
	switch dec.Verdict {
	case plan.VerdictFail:
		return dec.Err()
	case plan.VerdictSkip:
		r.notice(name, "%s", dec.Skipped())
		res.Result, res.Error = catalog.ResultSkipped, dec.Skipped()
		return nil
	}
	res.Replica = replica.ID
	var last *sdk.RestorePoint
	if len(points) > 0 && !fresh {
		last = &points[len(points)-1]
	}

	quiesce := job.Quiesce && r.srcCaps.Quiesce
	if job.Quiesce && !r.srcCaps.Quiesce {
		r.notice(name, "the source cannot quiesce; the snapshot is crash-consistent")
	}
	snap, err := r.src.CreateSnapshot(ctx, sdk.SnapshotRequest{VM: name, Name: SnapshotPrefix(job.Name) + r.sess.ID, Quiesce: quiesce})
	if err != nil {
		return fail("snapshot: %w", err)
	}
	r.e.hook(StepSnapshotted, name)
	snapshotRemoved := false
	defer func() {
		if !snapshotRemoved {
			// A fresh context: the run's may be what failed.
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := r.src.RemoveSnapshot(cctx, name, snap.ID); err != nil {
				r.notice(name, "remove snapshot %s: %v (the next run retries)", snap.ID, err)
			}
		}
	}()

	skip := r.independentDisks(name, vm, &dec, res)
	disks, err := r.disks(ctx, name, snap, replica, last, fresh, &dec, skip, res)
	if err != nil {
		return err
	}
	r.e.hook(StepMoved, name)

	if quiesce && !snap.Quiesced {
		r.notice(name, "the source could not quiesce the guest; the restore point is crash-consistent")
	}
	labels := map[string]string{LabelSession: r.sess.ID, LabelJob: job.Name, LabelVM: name, LabelSnapshot: snap.ID, LabelConsistency: consistency(snap.Quiesced)}
	for _, d := range snap.Disks {
		if d.ChangeID != "" {
			labels[labelChangeID(d.Index)] = d.ChangeID
		}
	}
	// Behind a proxy, the proxy deletes the points retention dropped in
	// the same exchange, once the point exists (see createPoint).
	point, done, err := r.createPoint(ctx, replica.ID, labels, dec.Drop)
	if err != nil {
		return fail("create restore point: %w", err)
	}
	res.RestorePoint = point.ID
	r.e.hook(StepPointCreated, name)
	if err := r.commitCatalog(name, vm, replica, point, snap, disks); err != nil {
		return fail("record restore point %s: %w", point.ID, err)
	}
	r.e.hook(StepCataloged, name)

	if err := r.src.RemoveSnapshot(ctx, name, snap.ID); err != nil {
		r.notice(name, "remove snapshot %s: %v (the next run retries)", snap.ID, err)
	}
	snapshotRemoved = true
	r.e.hook(StepSnapshotGone, name)

	if err := r.applyRetention(ctx, name, replica, dec.Drop, done); err != nil {
		r.notice(name, "retention: %v", err)
		res.Result = catalog.ResultWarning
		res.Error = joinMessage(res.Error, "retention: "+err.Error())
	}
	r.e.hook(StepRetentionDone, name)
	return nil
}

// Owner is whom the job's replica of the source VM vm belongs to.
func Owner(job *config.Job, vm *sdk.VM) sdk.ReplicaOwner {
	return sdk.ReplicaOwner{Job: job.Name, Source: job.Source.Address(), SourceVM: vm.ID}
}

// listed is a replica's restore points as a ListRestorePoints made
// beside other calls answered.
type listed struct {
	points []sdk.RestorePoint
	err    error
}

// decide asks the target for the VM's replica and its restore points and
// decides, by package plan's rule, what the run does with the VM. It
// returns the decision, the replica (nil when the target has none) and its
// points, oldest first.
func (r *run) decide(ctx context.Context, f plan.Facts) (plan.Decision, *sdk.Replica, []sdk.RestorePoint, error) {
	job, name := r.job, f.Key
	fail := func(format string, args ...any) (plan.Decision, *sdk.Replica, []sdk.RestorePoint, error) {
		return plan.Decision{}, nil, nil, fmt.Errorf("job %q vm %q: %w", job.Name, name, fmt.Errorf(format, args...))
	}
	f.Owner = Owner(job, f.VM)
	replicaName := job.ReplicaName(name, f.VM.Name)
	// The points of the replica the catalog knows are listed while the
	// target is asked for the replica by name: two round trips to the
	// target in the time of one. They are used only when the replica the
	// target names is that one.
	var early chan listed
	if f.Record != nil && f.Record.ReplicaID != "" {
		early = make(chan listed, 1)
		go func() {
			points, err := r.tgt.ListRestorePoints(ctx, f.Record.ReplicaID)
			early <- listed{points, err}
		}()
	}
	replica, err := r.tgt.GetReplica(ctx, replicaName)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		replica = nil
	case err != nil:
		return fail("replica %q on %s: %w", replicaName, job.Target.Address(), err)
	}
	var points []sdk.RestorePoint
	if replica != nil {
		var l listed
		if early != nil && replica.ID == f.Record.ReplicaID {
			l = <-early
			if l.err != nil {
				// It went with the first calls to the target. On a
				// proxy those may follow an Attach the proxy refused:
				// they then go to another one, and so does the list.
				l.points, l.err = r.tgt.ListRestorePoints(ctx, replica.ID)
			}
		} else {
			l.points, l.err = r.tgt.ListRestorePoints(ctx, replica.ID)
		}
		if points, err = l.points, l.err; err != nil {
			return fail("list restore points of %q: %w", replicaName, err)
		}
	}
	f.TargetAsked, f.Replica, f.Points = true, replica, PlanPoints(points)
	return plan.Decide(f), replica, points, nil
}

// PlanPoints are a replica's restore points as package plan decides from
// them: their job, VM, session and each disk's change id as their labels
// say.
func PlanPoints(points []sdk.RestorePoint) []plan.Point {
	var out []plan.Point
	for _, p := range points {
		pt := plan.Point{Job: p.Labels[LabelJob], VM: p.Labels[LabelVM], ID: p.ID, Created: p.Created, Size: p.Size,
			Session: p.Labels[LabelSession], Consistency: p.Labels[LabelConsistency]}
		capacity := map[int]int64{}
		for _, d := range p.Disks {
			capacity[d.Index] = d.Capacity
		}
		for key, id := range p.Labels {
			if n, ok := changeIDDisk(key); ok {
				pt.Disks = append(pt.Disks, catalog.PointDisk{Index: n, Capacity: capacity[n], ChangeID: id})
			}
		}
		slices.SortFunc(pt.Disks, func(a, b catalog.PointDisk) int { return a.Index - b.Index })
		out = append(out, pt)
	}
	return out
}

// changeIDDisk returns the disk whose change id a label holds.
func changeIDDisk(label string) (int, bool) {
	rest, ok := strings.CutPrefix(label, "ferry.disk.")
	if !ok {
		return 0, false
	}
	num, ok := strings.CutSuffix(rest, ".change_id")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	return n, err == nil && n >= 0 && labelChangeID(n) == label
}

// replica carries out what the decision says of the VM's replica: it
// creates one when the target has none, records the owner of one from
// before owners, and retires the catalog's record of a replica the target
// no longer has (deleted, or replaced by another of its name) with its
// restore points, never taking it for the new one. A replica that belongs
// to another job is not touched. It returns the replica and whether it
// was created empty now.
func (r *run) replica(ctx context.Context, dec *plan.Decision, vm *sdk.VM, replica *sdk.Replica) (*sdk.Replica, bool, error) {
	job, name, replicaName := r.job, dec.VM, dec.ReplicaName
	fail := func(format string, args ...any) (*sdk.Replica, bool, error) {
		return nil, false, fmt.Errorf("job %q vm %q: %w", job.Name, name, fmt.Errorf(format, args...))
	}
	if dec.Refusal == plan.RefusedOtherOwner || dec.Refusal == plan.RefusedOtherJobsPoint {
		return nil, false, dec.Err()
	}
	owner := Owner(job, vm)
	fresh := false
	// The replica is built (or mapped) with the hardware the decision
	// mapped onto what the target builds, and says how it differs from
	// the source.
	want := *vm
	if h := dec.Hardware; dec.Verdict == plan.VerdictCreate && h != nil && h.Mapped {
		want = h.VM
		for _, c := range h.Changes {
			r.e.log().Info("replica hardware differs from the source's", "job", job.Name, "vm", name, "replica", replicaName, "change", c.String())
		}
	}
	if len(dec.HardwareKept) > 0 {
		kept := make([]string, len(dec.HardwareKept))
		for i, c := range dec.HardwareKept {
			kept[i] = fmt.Sprintf("%s %s (the mapping now gives %s)", c.Item, c.From, c.To)
		}
		r.notice(name, "replica %s keeps the hardware it was built with: %s; ferry never rebuilds a replica's hardware, a replica created anew would be built as mapped", replicaName, strings.Join(kept, ", "))
	}
	if dec.Verdict == plan.VerdictCreate && dec.Map {
		mapper, ok := r.tgt.(sdk.ReplicaMapper)
		if !ok {
			return fail("map the replica onto VM %q of %s: the target cannot map replicas: %w", replicaName, job.Target.Address(), errdefs.ErrUnimplemented)
		}
		mapped, err := mapper.MapReplica(ctx, sdk.ReplicaRequest{Name: replicaName, VM: want, NetworkMap: networkMap(job), Owner: owner})
		if err != nil {
			return fail("map the replica onto VM %q of %s: %w", replicaName, job.Target.Address(), err)
		}
		r.notice(name, "replica mapped onto VM %s of %s: every block is compared with it", replicaName, job.Target.Address())
		replica = mapped
	} else if dec.Verdict == plan.VerdictCreate {
		created, err := r.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: replicaName, VM: want, NetworkMap: networkMap(job), Owner: owner})
		if err != nil {
			return fail("create replica %q on %s: %w", replicaName, job.Target.Address(), err)
		}
		replica, fresh = created, true
	}
	if dec.Adopt {
		adopted, err := r.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: replicaName, VM: *vm, NetworkMap: networkMap(job), Owner: owner})
		if err != nil {
			return fail("record the owner of replica %q on %s: %w", replicaName, job.Target.Address(), err)
		}
		if adopted.ID != replica.ID {
			return fail("replica %q on %s changed while its owner was recorded (id %s, now %s); run again", replicaName, job.Target.Address(), replica.ID, adopted.ID)
		}
		if adopted.Owner.IsZero() {
			r.notice(name, "target %s does not record replica owners (a plugin older than protocol 1.2); the replica's restore point labels say it is this job's", job.Target.Address())
		} else if adopted.Owner != owner {
			return fail("replica %q on %s belongs to %s, not to this job's VM %s of %s: refusing to write into it; give one of the jobs another replica_suffix or target: %w",
				replicaName, job.Target.Address(), adopted.Owner, vm.ID, job.Source.Address(), errdefs.ErrFailedPrecondition)
		}
		replica = adopted
	}
	if why := dec.Retire; why != "" {
		gone, err := r.e.Catalog.RetireReplica(job.Name, name, why)
		if err != nil {
			return fail("record that %s: %w", why, err)
		}
		verb := "filled from the source"
		if !fresh {
			verb = "compared with the source block by block"
		}
		r.notice(name, "%s; its %d restore points are recorded as gone, and replica %s is %s", why, len(gone.Points), replica.ID, verb)
	}
	return replica, fresh, nil
}

func networkMap(job *config.Job) []sdk.NetworkMapping {
	var out []sdk.NetworkMapping
	for _, m := range job.NetworkMap {
		out = append(out, sdk.NetworkMapping{From: m.From, To: m.To})
	}
	return out
}

// NetworkConfig is what a job asks of a replica's network at failover.
func NetworkConfig(job *config.Job) sdk.NetworkConfig {
	n := sdk.NetworkConfig{NetworkMap: networkMap(job)}
	for _, rule := range job.ReIP {
		x := sdk.ReIPRule{FromSubnet: rule.FromSubnet.String(), ToSubnet: rule.ToSubnet.String()}
		if rule.Gateway.IsValid() {
			x.Gateway = rule.Gateway.String()
		}
		for _, d := range rule.DNS {
			x.DNS = append(x.DNS, d.String())
		}
		n.ReIP = append(n.ReIP, x)
	}
	return n
}

// removeStaleSnapshots removes the job's snapshots that a killed run left.
func (r *run) removeStaleSnapshots(ctx context.Context, vm string) {
	snaps, err := r.src.ListSnapshots(ctx, vm)
	if err != nil {
		r.notice(vm, "list snapshots: %v", err)
		return
	}
	for _, s := range snaps {
		if strings.HasPrefix(s.Name, SnapshotPrefix(r.job.Name)) {
			if err := r.src.RemoveSnapshot(ctx, vm, s.ID); err != nil {
				r.notice(vm, "remove the leftover snapshot %s (%s): %v", s.ID, s.Name, err)
				continue
			}
			of := "an earlier run"
			if s.Name == SnapshotPrefix(r.job.Name)+r.sess.ID {
				of = "this session's earlier attempt"
			}
			r.notice(vm, "removed the leftover snapshot %s (%s) of %s", s.ID, s.Name, of)
		}
	}
}

// independentDisks says what becomes of the VM's disks that snapshots do
// not capture. Unless the job asks to copy them knowingly the decision
// skips them: the VM's other disks replicate and the VM ends with a
// warning naming each one (a copy of a disk changing under the read would
// be a point that never existed). It returns the disks to skip.
func (r *run) independentDisks(name string, vm *sdk.VM, dec *plan.Decision, res *catalog.VMResult) map[int]bool {
	skip := map[int]bool{}
	for _, d := range vm.Disks {
		if d.Independent && r.job.CopyIndependentDisks {
			r.notice(name, "disk %d is independent (VM snapshots do not capture it): copied as it is read, as copy_independent_disks asks; its restore points may hold a state that never existed", d.Index)
		}
	}
	for _, dd := range dec.Disks {
		if !dd.Skip {
			continue
		}
		skip[dd.Index] = true
		msg := fmt.Sprintf("disk %d is %s: not replicated; its replica disk stays as it was. Set copy_independent_disks = true to copy it knowingly", dd.Index, dd.Why)
		r.notice(name, "%s", msg)
		res.Result = catalog.ResultWarning
		res.Error = joinMessage(res.Error, msg)
	}
	return skip
}

// consistency names what a snapshot captured.
func consistency(quiesced bool) string {
	if quiesced {
		return catalog.ConsistencyApplication
	}
	return catalog.ConsistencyCrash
}

// joinMessage adds msg to the messages in s.
func joinMessage(s, msg string) string {
	if s == "" {
		return msg
	}
	return s + "; " + msg
}

// localProxy names the data mover in this process, the only proxy until
// remote proxies exist.
const localProxy = "local"

// disks moves every disk of the snapshot: one task per disk, placed on the
// data mover's task slots (the job's task limit) as slots free up.
func (r *run) disks(ctx context.Context, name string, snap *sdk.Snapshot, replica *sdk.Replica, last *sdk.RestorePoint, fresh bool, dec *plan.Decision, skip map[int]bool, res *catalog.VMResult) ([]catalog.DiskResult, error) {
	limit := r.job.Transfer.MaxTasks
	if limit <= 0 {
		limit = DefaultMaxTasks
	}
	results := make([]catalog.DiskResult, len(snap.Disks))
	errs := make([]error, len(snap.Disks))
	byID := map[string]int{}
	// Each task moves its disk as the decision says and records there
	// what it learns; a disk the decision did not know is added first,
	// so that the tasks' decisions stay where they are.
	for _, d := range snap.Disks {
		dec.Disk(d.Index, d.Capacity)
	}
	decided := make([]*plan.DiskDecision, len(snap.Disks))
	for i, d := range snap.Disks {
		decided[i] = dec.Disk(d.Index, d.Capacity)
	}
	var pending []scheduler.Task
	for i, d := range snap.Disks {
		if skip[d.Index] {
			continue
		}
		id := fmt.Sprintf("%s/disk-%d", name, d.Index)
		byID[id] = i
		pending = append(pending, scheduler.Task{ID: id, VM: name})
	}
	done := make(chan struct{})
	running := 0
	for len(pending) > 0 || running > 0 {
		placed, waiting := scheduler.Place(pending, []scheduler.Slot{{Proxy: localProxy, MaxTasks: limit, Running: running}})
		for _, p := range placed {
			i := byID[p.Task.ID]
			running++
			go func() {
				defer func() { done <- struct{}{} }()
				results[i], errs[i] = r.disk(ctx, name, snap, snap.Disks[i], replica, last, fresh, decided[i], dec.FailedBack())
			}()
		}
		pending = waiting
		if running > 0 {
			<-done
			running--
		}
	}
	moved := results[:0]
	for i, d := range snap.Disks {
		if !skip[d.Index] {
			moved = append(moved, results[i])
		}
	}
	results = moved
	res.Disks = results
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return results, nil
}

// comparedDigests is a replica's digest store whose digests are there
// before the data mover reads, those it does not keep computed from the
// replica: the mover compares every block it reads with them, where with
// change tracking it sends what it reads before they arrive (change
// tracking named it, so it most likely changed). The run after a
// failback's commit uses it: the areas production's change tracking
// names there are mostly those the failback wrote, and most of them hold
// what the replica holds.
type comparedDigests struct{ datamover.DigestStore }

func (c comparedDigests) Take(ctx context.Context, takes []datamover.Take, _ bool) ([]*datamover.Pending, error) {
	// Waiting, the store digests from the replica what it does not know
	// (a segment of zeros when it was first written, for one).
	ps, err := c.DigestStore.Take(ctx, takes, true)
	if err != nil {
		return nil, err
	}
	for i, p := range ps {
		if p == nil {
			continue
		}
		d, err := p.Wait(ctx)
		if err != nil {
			return nil, err
		}
		ps[i] = datamover.Known(d)
	}
	return ps, nil
}

// commitCatalog records the new point and the replica in one transaction.
func (r *run) commitCatalog(name string, vm *sdk.VM, replica *sdk.Replica, point *sdk.RestorePoint, snap *sdk.Snapshot, disks []catalog.DiskResult) error {
	now := r.e.now().UTC()
	rec := &catalog.Replica{Job: r.job.Name, VM: name, SourceID: vm.ID, ReplicaID: replica.ID, ReplicaName: replica.Name,
		Target: r.job.Target.Address(), State: sdk.ReplicaReady, Created: now, Updated: now, LastSession: r.sess.ID}
	if old, err := r.e.Catalog.Replica(r.job.Name, name); err == nil {
		rec.Created = old.Created
	}
	pt := &catalog.RestorePoint{Job: r.job.Name, VM: name, ID: point.ID, Created: point.Created.UTC(), Size: point.Size, Session: r.sess.ID,
		Consistency: consistency(snap.Quiesced)}
	if pt.Created.IsZero() {
		pt.Created = now
	}
	for _, d := range snap.Disks {
		rec.Disks = append(rec.Disks, catalog.ReplicaDisk{Index: d.Index, Capacity: d.Capacity})
		pt.Disks = append(pt.Disks, catalog.PointDisk{Index: d.Index, Capacity: d.Capacity, ChangeID: d.ChangeID})
	}
	return r.e.Catalog.CommitPoint(rec, pt)
}

// applyRetention deletes the points the VM's decision said retention
// drops once the new point exists (a point it did not know of, made while
// the run ran, waits for the next run's decision) and makes the catalog
// agree with what the target holds. done, when not nil, is what the proxy
// relaying the target did with the point (see createPoint): the deletes'
// answers and the list, which are not asked again.
func (r *run) applyRetention(ctx context.Context, name string, replica *sdk.Replica, decided []retention.Decision, done *proxy.Commit) error {
	var deleted []error
	var l listed
	if done != nil {
		deleted, l = done.Deleted, listed{done.Points, done.ListErr}
	} else {
		deleted, l = r.dropPoints(ctx, replica.ID, decided)
	}
	drop := map[string]bool{}
	var errs []error
	for i, d := range decided {
		switch err := deleted[i]; {
		case err == nil, errors.Is(err, errdefs.ErrNotFound):
			drop[d.Point.ID] = true
		default:
			errs = append(errs, fmt.Errorf("delete restore point %s: %w", d.Point.ID, err))
		}
	}
	if l.err != nil {
		return errors.Join(append(errs, fmt.Errorf("list restore points: %w", l.err))...)
	}
	points := l.points
	known, err := r.e.Catalog.RestorePoints(r.job.Name, name)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	byID := map[string]catalog.RestorePoint{}
	for _, k := range known {
		byID[k.ID] = k
	}
	var keep []catalog.RestorePoint
	for _, p := range points {
		if drop[p.ID] {
			continue
		}
		rec, ok := byID[p.ID]
		if !ok {
			rec = catalog.RestorePoint{Job: r.job.Name, VM: name, ID: p.ID, Created: p.Created.UTC(), Size: p.Size, Session: p.Labels[LabelSession],
				Consistency: p.Labels[LabelConsistency]}
			for _, d := range p.Disks {
				rec.Disks = append(rec.Disks, catalog.PointDisk{Index: d.Index, Capacity: d.Capacity, ChangeID: p.Labels[labelChangeID(d.Index)]})
			}
		}
		if rec.Created.IsZero() {
			rec.Created = r.e.now().UTC()
		}
		rec.Size = p.Size // what the point holds on its own changes as newer points come
		keep = append(keep, rec)
	}
	if err := r.e.Catalog.ReplaceRestorePoints(r.job.Name, name, keep); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// dropPoints deletes the points of decided from replica, one error (or
// nil) each, and lists the replica's points meanwhile: each is a round
// trip to the target (across the link between the sites when it runs on
// a proxy), and neither needs the other's answer. A point gone already
// (deleted meanwhile) answers not found; one the list shows and the
// deletes removed is not kept (applyRetention).
func (r *run) dropPoints(ctx context.Context, replica string, decided []retention.Decision) ([]error, listed) {
	lc := make(chan listed, 1)
	go func() {
		points, err := r.tgt.ListRestorePoints(ctx, replica)
		lc <- listed{points, err}
	}()
	deleted := make([]error, len(decided))
	for i, d := range decided {
		deleted[i] = r.tgt.DeleteRestorePoint(ctx, replica, d.Point.ID)
	}
	return deleted, <-lc
}

// disk moves one disk and reports how.
func (r *run) disk(ctx context.Context, name string, snap *sdk.Snapshot, d sdk.SnapshotDisk, replica *sdk.Replica, last *sdk.RestorePoint, fresh bool, dd *plan.DiskDecision, failedBack bool) (catalog.DiskResult, error) {
	start := r.e.now()
	res := catalog.DiskResult{Index: d.Index, Size: d.Capacity}
	fail := func(format string, args ...any) (catalog.DiskResult, error) {
		err := fmt.Errorf("job %q vm %q disk %d: %w", r.job.Name, name, d.Index, fmt.Errorf(format, args...))
		res.Error = err.Error()
		res.Duration = r.e.now().Sub(start)
		r.e.emit(Event{Kind: DiskFinished, Session: r.sess.ID, Job: r.job.Name, VM: name, Disk: d.Index, Err: err})
		return res, err
	}
	req := datamover.Request{Size: d.Capacity, TargetZero: fresh}
	res.Mode = dd.Mode

	// What to read, as decided: the areas change tracking reports, else
	// every allocated area (compared against the replica's digests where
	// the replica has any). What the source says now may make the run
	// fall back from change tracking to digests; the decision records it.
	if dd.Mode == catalog.ModeChangeTracking && d.ChangeID == "" {
		dd.FallBack(catalog.ModeDigest, plan.WhyTrackingOff)
	}
	if dd.Mode == catalog.ModeChangeTracking {
		var changed []sdk.Extent
		err := r.src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: name, Snapshot: snap.ID, Disk: d.Index, ChangeID: dd.Since}, func(b []sdk.Extent) error {
			changed = append(changed, b...)
			return nil
		})
		switch {
		case errors.Is(err, errdefs.ErrChangeIDReset):
			dd.FallBack(catalog.ModeDigest, plan.WhyTrackingReset)
		case err != nil:
			return fail("changed areas since %s: %w", dd.Since, err)
		default:
			if changed == nil {
				changed = []sdk.Extent{}
			}
			req.Changed = changed
		}
	}
	res.Mode, res.Why, res.Planned = dd.Mode, dd.Why, dd.Planned
	if dd.Mode == catalog.ModeDigest {
		r.notice(name, "disk %d: compared by digests, reading all %s: %s", d.Index, plan.Human(d.Capacity), dd.Why)
	}
	if req.Changed == nil {
		var alloc []sdk.Extent
		err := r.src.ChangedAreas(ctx, sdk.ChangedAreasRequest{VM: name, Snapshot: snap.ID, Disk: d.Index}, func(b []sdk.Extent) error {
			alloc = append(alloc, b...)
			return nil
		})
		if err != nil {
			return fail("allocated areas: %w", err)
		}
		if alloc == nil {
			alloc = []sdk.Extent{}
		}
		req.Allocated = alloc
	}

	bs := int(r.job.Transfer.BlockSize)
	if bs == 0 {
		bs = datamover.DefaultBlockSize
	}
	total := d.Capacity
	if req.Changed != nil {
		total = datamover.CoveredBytes(req.Changed, bs, d.Capacity)
	}
	r.e.emit(Event{Kind: DiskStarted, Session: r.sess.ID, Job: r.job.Name, VM: name, Disk: d.Index, Mode: res.Mode, Total: total})

	bind := replicameta.Binding{Replica: replica.ID, Incarnation: replica.Incarnation}
	if last != nil {
		bind.Point, bind.PointSession = last.ID, last.Labels[LabelSession]
	}
	for _, rd := range replica.VM.Disks {
		if rd.Index == d.Index && !fresh {
			bind.Capacity = rd.Capacity
		}
	}
	if r.e.Proxies != nil {
		if err := r.remoteDisk(ctx, name, snap, d, replica, fresh, bind, req, bs, total, &res); err != nil {
			return fail("%w", err)
		}
		res.Duration = r.e.now().Sub(start)
		r.e.emit(Event{Kind: DiskFinished, Session: r.sess.ID, Job: r.job.Name, VM: name, Disk: d.Index, Mode: res.Mode, Lane: res.Lane, Done: total, Total: total, Busy: res.Busy})
		return res, nil
	}

	// The replica disk, the snapshot disk and the disk's metadata are
	// opened at once: three plugins' round trips (a vCenter's, on
	// vSphere), none depending on another.
	var (
		w                   sdk.DiskWriter
		src                 sdk.DiskReader
		store               *replicameta.Store
		wErr, srcErr, mdErr error
		opens               sync.WaitGroup
	)
	opens.Go(func() { w, wErr = r.tgt.OpenReplicaDisk(ctx, replica.ID, d.Index, d.Capacity) })
	opens.Go(func() { src, srcErr = r.src.OpenSnapshotDisk(ctx, name, snap.ID, d.Index) })
	store, mdErr = replicameta.Open(ctx, r.repo, replicameta.Prefix(r.job.Name, name, d.Index), replicameta.Options{
		Session: r.sess.ID, Size: d.Capacity, BlockSize: bs, SegmentBlocks: datamover.DefaultSegmentBlocks, Fresh: fresh, Binding: bind,
		Recompute: func(ctx context.Context) (io.ReaderAt, error) {
			return r.tgt.OpenRestorePointDisk(ctx, replica.ID, "", d.Index)
		},
	})
	opens.Wait()
	wClosed, srcClosed := wErr != nil, srcErr != nil
	defer func() {
		if !wClosed {
			w.Close()
		}
		if !srcClosed {
			src.Close()
		}
	}()
	if mdErr == nil {
		// Closing waits for the store's deletes of replaced objects: let
		// them finish while the restore point is made.
		defer r.tidying.Go(func() { store.Close() })
	}
	switch {
	case wErr != nil:
		return fail("open the replica disk: %w", wErr)
	case srcErr != nil:
		return fail("open the snapshot disk: %w", srcErr)
	case mdErr != nil:
		return fail("replica metadata: %w", mdErr)
	}
	res.Lane = catalog.LaneStream
	if _, ok := src.(sdk.LocalPather); ok {
		res.Lane = catalog.LaneDirect
	}
	if tr, ok := src.(sdk.TransportReporter); ok {
		res.Transport, res.TransportWhy = tr.Transport()
		r.transport(name, d.Index, res.Transport, res.TransportWhy)
	}
	if why := store.Distrusted(); why != "" {
		r.distrusted(name, d.Index, fresh, why)
	}
	recv := datamover.NewReceiver(w, d.Capacity)
	req.Source = src
	req.Digests = store
	if req.Changed != nil && failedBack {
		req.Digests = comparedDigests{store}
		r.notice(name, "disk %d: every area change tracking names is compared with the replica's digests before it is sent: a failback wrote production since the last restore point", d.Index)
	}
	req.Sink = datamover.Throttle(recv, append(r.rules, r.limiter)...)
	req.Sync = func(context.Context) error {
		recv.Busy().Start()
		defer recv.Busy().Stop()
		return w.Sync()
	}
	if p, ok := w.(sdk.WritePreparer); ok {
		req.Prepare = func(_ context.Context, ranges []sdk.Extent) error { return p.PrepareWrites(ranges) }
	}
	var halfway sync.Once
	req.Progress = func(done int64) {
		if done*2 >= total {
			halfway.Do(func() { r.e.hook(StepMoving, name) })
		}
		r.e.emit(Event{Kind: DiskProgress, Session: r.sess.ID, Job: r.job.Name, VM: name, Disk: d.Index, Mode: res.Mode, Lane: res.Lane, Done: done, Total: total})
	}
	st, err := datamover.Move(ctx, req, datamover.Options{BlockSize: bs, Codec: r.codec})
	res.BytesRead, res.BytesSent, res.BlocksChanged, res.BlocksTotal = st.BytesRead, st.BytesSent, st.BlocksChanged, st.BlocksTotal
	res.BytesWritten = recv.Written()
	// In one process the frames go straight into the receiver: what the
	// mover spent handing them over beyond the writes is the throttle.
	res.Busy = stagesOf(st, st.SendBusy-recv.Busy().Total(), recv.Busy().Total())
	if err != nil {
		return fail("move: %w", err)
	}
	srcClosed = true
	if err := src.Close(); err != nil {
		return fail("the snapshot disk: %w", err)
	}
	wClosed = true
	if err := w.Close(); err != nil {
		return fail("flush the replica disk: %w", err)
	}
	if err := store.Finish(ctx, d.Capacity); err != nil {
		return fail("replica metadata: %w", err)
	}
	if ms := store.Stats(); ms.SegmentsRecomputed > 0 {
		r.recomputed(name, d.Index, ms.SegmentsRecomputed, ms.BytesRecomputed)
	}
	res.Duration = r.e.now().Sub(start)
	r.e.emit(Event{Kind: DiskFinished, Session: r.sess.ID, Job: r.job.Name, VM: name, Disk: d.Index, Mode: res.Mode, Lane: res.Lane, Done: total, Total: total, Busy: res.Busy})
	return res, nil
}
