package plan

import (
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/hwmap"
	"github.com/ferry-dr/ferry/core/retention"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Facts are what the decision about one VM of a job is made from. A plan
// gathers them from the catalog and from what the source and the target
// say when it is made; a session gathers them live at the start of each
// attempt at the VM (package engine). Both hand them to Decide, so that
// `ferry plan` and the run answer by one rule.
type Facts struct {
	Job *config.Job
	// Key names the VM in the job, the catalog and its replica's name.
	Key string
	// Record is the catalog's record of the VM's replica; nil when the
	// catalog has none.
	Record *catalog.Replica
	// VM is what the source says of the VM; nil when it could not, and
	// SourceErr says why (nil: the source does not have it).
	VM        *sdk.VM
	SourceErr error
	// SameAs is the job's entry that named the same source VM before this
	// one (in the plan, or in the session); "" when none did.
	SameAs string
	// TargetAsked says whether the target was asked for the replica; then
	// Replica is what it holds (nil: no replica of the name). When it was
	// not asked the catalog's Record stands for the replica.
	TargetAsked bool
	Replica     *sdk.Replica
	// Owner is whom the job's replica of the VM belongs to; zero when
	// unknown (the owner is not checked then).
	Owner sdk.ReplicaOwner
	// Points are the replica's restore points, oldest first: the target's
	// when it was asked, else the catalog's. Their Job and VM are what the
	// points' labels say; each disk's ChangeID the change id it recorded.
	Points []Point
	// Caps are what the source declares; nil when unknown (a disk's mode
	// is then left undecided).
	Caps *sdk.Capabilities
}

// Verdict is what a run does with a VM.
type Verdict string

const (
	// VerdictCreate creates the VM's replica empty and copies every
	// allocated block into it.
	VerdictCreate Verdict = "create"
	// VerdictIncremental replicates into the replica the target has.
	VerdictIncremental Verdict = "incremental"
	// VerdictSkip leaves the VM alone this run without failing it: its
	// replica is failed over.
	VerdictSkip Verdict = "skip"
	// VerdictFail fails the run for the VM; Refusal says why.
	VerdictFail Verdict = "fail"
)

// Refusal is why a run fails for a VM before it changes anything.
type Refusal string

const (
	RefusedNot            Refusal = ""
	RefusedCommitted      Refusal = "committed"         // its replica was committed as the production VM
	RefusedSourceMissing  Refusal = "source-missing"    // the source does not have it or cannot be asked
	RefusedSameVM         Refusal = "same-vm"           // another entry of the job names the same source VM
	RefusedOtherOwner     Refusal = "other-owner"       // the replica belongs to another job or source VM
	RefusedOtherJobsPoint Refusal = "other-jobs-point"  // a replica without owner holds another job's point
	RefusedNotReady       Refusal = "replica-not-ready" // the replica is in a state runs do not write into
	RefusedHardware       Refusal = "hardware"          // the replica to create could not be built or could not boot
)

// Decision is what a run does with one VM: the typed answer of Decide,
// which `ferry plan` renders and a session executes.
type Decision struct {
	VM      string
	Verdict Verdict
	Refusal Refusal // for VerdictFail
	// ReplicaName is the replica's name on the target ("" when the source
	// could not describe the VM).
	ReplicaName string
	// Adopt: the replica exists without a recorded owner and its restore
	// points are this job's; the run records the owner before it writes.
	Adopt bool
	// Retire says why the catalog's replica of the VM is not the target's
	// (deleted, or replaced by another of its name): the run records it
	// as gone with its restore points. "" when the catalog's is the one.
	Retire string
	// TakeOver: the target has the replica, the catalog has no record of
	// it (a catalog moved aside, a first run killed before its record);
	// the run records it with its restore points.
	TakeOver bool
	// Map (with VerdictCreate): the job maps the VM onto a VM the target
	// has, ReplicaName, which becomes the replica instead of an empty new
	// one; every block is compared with it.
	Map bool
	// Disks are the VM's disks in the source's order, each with its mode
	// (for VerdictCreate and VerdictIncremental).
	Disks []DiskDecision
	// Drop are the restore points retention deletes once the run's new
	// point exists, oldest first, with why.
	Drop []retention.Decision
	// Hardware is the replica's hardware mapped from the source's onto
	// what the target builds (package hwmap): the description a replica
	// made now is created with, and every change against the source. Nil
	// when the source could not describe the VM. HardwareErr says why
	// the mapping was refused; for a replica to create that fails the VM
	// (RefusedHardware), for one that exists it is a warning.
	Hardware    *hwmap.Result
	HardwareErr error
	// HardwareKept are the ways a replica that exists, as its target
	// describes it, differs from Hardware: what it keeps, since ferry
	// never rebuilds a replica's hardware (a hardware_map or the source
	// changed after it was built). Only when the target was asked.
	HardwareKept []hwmap.Change

	f Facts
	// The replica's state and failover point as decided from (the
	// target's word, or the catalog's).
	state    sdk.ReplicaState
	failover string
}

// DiskDecision is how a run moves one disk of a VM.
type DiskDecision struct {
	Index    int
	Capacity int64
	// Skip: the disk is not replicated (Why says why).
	Skip bool
	// Mode is how the disk is read: every allocated block (full), the
	// areas change tracking reports since Since, or every allocated block
	// compared by digests (Why says why). "" when skipped, or undecided
	// because the source's capabilities are unknown.
	Mode  catalog.Mode
	Since string
	Why   string
	// Planned is the mode decided at the start when the run learned
	// better while moving the disk and fell back (see FallBack); "" when
	// it did not.
	Planned catalog.Mode
	// New: the replica has no such disk yet. Was is the capacity the
	// replica's disk has when it differs from Capacity (grown or shrunk
	// at the source).
	New bool
	Was int64
}

// Why the mode of a disk is what it is, in the words plans and sessions
// both use.
const (
	WhyTrackingOff    = "the source does not track its changes now (tracking is switched off)"
	WhyTrackingReset  = "change tracking was reset since the last restore point"
	WhyNotTheReplica  = "the replica is not the one the catalog knows"
	WhyIndependent    = "independent (VM snapshots do not capture it)"
	WhyAppearedLate   = "the disk appeared after the VM was described"
	WhyNoRestorePoint = "the replica has no restore point yet"
	WhyMapped         = "the replica is a VM the target had (replica_mapping): every block is compared with it"
)

// FallBack records that the run moves the disk another way than decided
// (a change id the source no longer knows, tracking switched off since)
// and why; the first decision stays in Planned.
func (d *DiskDecision) FallBack(mode catalog.Mode, why string) {
	if d.Planned == "" {
		d.Planned = d.Mode
	}
	d.Mode, d.Why, d.Since = mode, why, ""
}

// Disk returns the decision about the disk of the given index. A disk the
// decision does not know (it appeared between the VM's description and
// its snapshot) is moved the safe way: copied into a replica made now,
// else compared by digests.
func (d *Decision) Disk(index int, capacity int64) *DiskDecision {
	for i := range d.Disks {
		if d.Disks[i].Index == index {
			return &d.Disks[i]
		}
	}
	dd := DiskDecision{Index: index, Capacity: capacity, New: true, Mode: catalog.ModeFull}
	if d.Verdict == VerdictIncremental {
		dd.Mode, dd.Why = catalog.ModeDigest, WhyAppearedLate
	}
	d.Disks = append(d.Disks, dd)
	return &d.Disks[len(d.Disks)-1]
}

// Admit decides what needs no word of the target: a VM whose replica was
// committed, that the source does not describe, or that another entry of
// the job names too, fails. It returns nil for a VM to be decided further
// by Decide (which calls Admit first).
func Admit(f Facts) *Decision {
	d := &Decision{VM: f.Key, f: f}
	if f.VM != nil {
		d.ReplicaName = f.Job.ReplicaName(f.Key, f.VM.Name)
	}
	switch {
	case f.Record != nil && f.Record.State == sdk.ReplicaCommitted:
		d.Verdict, d.Refusal = VerdictFail, RefusedCommitted
	case f.VM == nil:
		d.Verdict, d.Refusal = VerdictFail, RefusedSourceMissing
	case f.SameAs != "" && f.VM.ID != "":
		d.Verdict, d.Refusal = VerdictFail, RefusedSameVM
	default:
		return nil
	}
	return d
}

// Decide decides what a run does with one VM: fail it (and why), skip it,
// or replicate it (creating its replica, adopting it, retiring the
// catalog's record of a replica the target no longer has), with each
// disk's mode and the restore points retention deletes after. It is pure.
func Decide(f Facts) Decision {
	if d := Admit(f); d != nil {
		return *d
	}
	d := Decision{VM: f.Key, ReplicaName: f.Job.ReplicaName(f.Key, f.VM.Name), f: f}
	d.Hardware, d.HardwareErr = mapHardware(f)
	state, failoverPoint := sdk.ReplicaReady, ""
	exists := f.Record != nil
	if f.Record != nil {
		state, failoverPoint = f.Record.State, f.Record.FailoverPoint
	}
	if f.TargetAsked {
		exists = f.Replica != nil
		if r := f.Replica; r != nil {
			if r.Owner.IsZero() {
				for _, p := range f.Points {
					if p.Job != "" && (p.Job != f.Job.Name || p.VM != f.Key) {
						d.Verdict, d.Refusal = VerdictFail, RefusedOtherJobsPoint
						return d
					}
				}
				d.Adopt = true
			} else if !f.Owner.IsZero() && r.Owner != f.Owner {
				d.Verdict, d.Refusal = VerdictFail, RefusedOtherOwner
				return d
			}
			if r.State != "" { // a target that says nothing leaves the catalog's word
				state, failoverPoint = r.State, r.FailoverPoint
			} else if f.Record == nil {
				state, failoverPoint = "", ""
			}
		}
		switch rec := f.Record; {
		case rec != nil && f.Replica == nil:
			d.Retire = fmt.Sprintf("replica %q (id %s) is gone from %s", rec.ReplicaName, rec.ReplicaID, f.Job.Target.Address())
		case rec != nil && rec.ReplicaID != f.Replica.ID:
			d.Retire = fmt.Sprintf("replica %q (id %s) on %s was replaced by another VM of its name (id %s)", rec.ReplicaName, rec.ReplicaID, f.Job.Target.Address(), f.Replica.ID)
		case rec == nil && f.Replica != nil:
			d.TakeOver = true
		}
	}
	switch {
	case !exists && d.HardwareErr != nil:
		d.Verdict, d.Refusal = VerdictFail, RefusedHardware
		return d
	case !exists:
		d.Verdict = VerdictCreate
		_, d.Map = f.Job.Mapped(f.Key)
	case state == sdk.ReplicaFailedOver:
		d.Verdict, d.state, d.failover = VerdictSkip, state, failoverPoint
		return d
	case state != sdk.ReplicaReady:
		d.Verdict, d.Refusal, d.state = VerdictFail, RefusedNotReady, state
		return d
	default:
		d.Verdict = VerdictIncremental
	}
	if h := d.Hardware; exists && f.Replica != nil && h != nil && h.Mapped {
		d.HardwareKept = hwmap.Kept(f.Replica.VM, h.VM)
	}
	d.Disks = decideDisks(f, d.Verdict == VerdictCreate, d.Map, d.Retire != "")
	if d.Verdict == VerdictIncremental {
		d.Drop = drops(f.Points, f.Job.Retention.RestorePoints, failoverPoint)
	}
	return d
}

// mapHardware maps the source VM's hardware onto what the job's target
// declares it builds, with the job's hardware_map.
func mapHardware(f Facts) (*hwmap.Result, error) {
	var hw *sdk.HardwareSupport
	if t := f.Job.Target; t != nil && t.Info != nil {
		hw = t.Info.Hardware
	}
	res, err := hwmap.Map(*f.VM, hw, f.Job.HardwareMap.For(f.Key, f.VM.Name))
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// decideDisks decides each disk's mode: a replica made now is filled,
// unless it is mapped onto a VM the target has, whose every block is
// compared; an existing one without restore points, or not the one the
// catalog knows, has every block compared; else change tracking since the
// change id the newest point recorded for the disk, when the source
// tracks changes and the point has one, or digests.
func decideDisks(f Facts, create, mapped, replaced bool) []DiskDecision {
	old := map[int]int64{}
	if f.Record != nil && !create {
		for _, d := range f.Record.Disks {
			old[d.Index] = d.Capacity
		}
	}
	ids := map[int]string{}
	if n := len(f.Points); n > 0 {
		for _, d := range f.Points[n-1].Disks {
			ids[d.Index] = d.ChangeID
		}
	}
	var out []DiskDecision
	for _, disk := range f.VM.Disks {
		dd := DiskDecision{Index: disk.Index, Capacity: disk.Capacity}
		if f.Record != nil && !create {
			was, known := old[disk.Index]
			dd.New = !known
			if known && was != disk.Capacity {
				dd.Was = was
			}
		}
		switch {
		case disk.Independent && !f.Job.CopyIndependentDisks:
			dd.Skip, dd.Why = true, WhyIndependent
		case mapped:
			dd.Mode, dd.Why = catalog.ModeDigest, WhyMapped
		case create:
			dd.Mode = catalog.ModeFull
		case len(f.Points) == 0:
			dd.Mode, dd.Why = catalog.ModeFull, WhyNoRestorePoint
		case replaced:
			dd.Mode, dd.Why = catalog.ModeDigest, WhyNotTheReplica
		case f.Caps == nil:
			// Undecided: the source's capabilities are unknown.
		default:
			if why := DigestReason(f.Caps.ChangeTracking, ids[disk.Index]); why != "" {
				dd.Mode, dd.Why = catalog.ModeDigest, why
			} else {
				dd.Mode, dd.Since = catalog.ModeChangeTracking, ids[disk.Index]
			}
		}
		out = append(out, dd)
	}
	return out
}

// newPoint stands for the point the run makes: newer than any other.
var newPoint = retention.Point{ID: "", Created: time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)}

// drops are the points of the replica that retention deletes once the
// run's new point exists: package retention's rule over the points and
// the new one, the point a failover runs from pinned.
func drops(points []Point, keep int, pinned string) []retention.Decision {
	rp := []retention.Point{newPoint}
	for _, p := range points {
		rp = append(rp, retention.Point{ID: p.ID, Created: p.Created, Pinned: p.ID != "" && p.ID == pinned})
	}
	var out []retention.Decision
	for _, d := range retention.Apply(rp, retention.Policy{RestorePoints: keep}) {
		if !d.Keep && d.Point.ID != newPoint.ID {
			out = append(out, d)
		}
	}
	return out
}

// FailedBack says a failback was committed onto the VM since its
// replica's newest restore point, as the catalog's record the decision
// was made from says (catalog.Replica.FailedBack): the run then compares
// what change tracking names before it sends it.
func (d Decision) FailedBack() bool {
	return d.f.Record != nil && d.f.Record.FailedBack != ""
}

// Err is the error a run fails the VM with, for VerdictFail; its class
// (errdefs) says whether waiting may cure it. Nil for other verdicts.
func (d Decision) Err() error {
	if d.Verdict != VerdictFail {
		return nil
	}
	return fmt.Errorf("job %q vm %q: %w", d.f.Job.Name, d.VM, d.reason())
}

// reason is why a run fails the VM, without naming the job and the VM:
// Err's cause, and what a plan says.
func (d Decision) reason() error {
	f := d.f
	job := f.Job
	var err error
	switch d.Refusal {
	case RefusedCommitted:
		err = fmt.Errorf("its replica was committed to a permanent failover; remove the VM from the job: %w", errdefs.ErrFailedPrecondition)
	case RefusedSourceMissing:
		switch cause := f.SourceErr; {
		case cause == nil:
			err = fmt.Errorf("not found on source %s: %w", job.Source.Address(), errdefs.ErrNotFound)
		case errors.Is(cause, errdefs.ErrNotFound):
			err = fmt.Errorf("not found on source %s: %w", job.Source.Address(), cause)
		default:
			err = fmt.Errorf("source %s cannot describe it: %w", job.Source.Address(), cause)
		}
	case RefusedSameVM:
		err = fmt.Errorf("names the same VM as %q (id %s), which this session replicates; list the VM once in the job: %w", f.SameAs, f.VM.ID, errdefs.ErrInvalidArgument)
	case RefusedOtherJobsPoint:
		p := d.otherPoint()
		err = fmt.Errorf("replica %q on %s holds restore point %s of job %q VM %q, not of this job's VM: refusing to write into another job's replica; give one of the jobs another replica_suffix or target: %w",
			d.ReplicaName, job.Target.Address(), p.ID, p.Job, p.VM, errdefs.ErrFailedPrecondition)
	case RefusedOtherOwner:
		err = fmt.Errorf("replica %q on %s belongs to %s, not to this job's VM %s of %s: refusing to write into it; give one of the jobs another replica_suffix or target: %w",
			d.ReplicaName, job.Target.Address(), f.Replica.Owner, f.VM.ID, job.Source.Address(), errdefs.ErrFailedPrecondition)
	case RefusedNotReady:
		err = fmt.Errorf("replica %q is %s; undo or commit the failover before replicating again: %w", d.ReplicaName, d.state, errdefs.ErrFailedPrecondition)
	case RefusedHardware:
		err = fmt.Errorf("create replica %q on %s: %w", d.ReplicaName, job.Target.Address(), d.HardwareErr)
	default:
		err = fmt.Errorf("refused (%s): %w", d.Refusal, errdefs.ErrFailedPrecondition)
	}
	return err
}

// otherPoint is the first restore point of another job on a replica
// without owner.
func (d Decision) otherPoint() Point {
	for _, p := range d.f.Points {
		if p.Job != "" && (p.Job != d.f.Job.Name || p.VM != d.VM) {
			return p
		}
	}
	return Point{}
}

// Skipped says why a VM of VerdictSkip is skipped, as the session records
// it.
func (d Decision) Skipped() string {
	return fmt.Sprintf("replica %q is failed over (to restore point %s): skipped until 'ferry failover undo' or 'ferry failover commit'", d.ReplicaName, d.failover)
}
