// Package plan works out what the next run of a job would do, from the
// job's configuration, what the catalog knows of earlier runs and what the
// source and the target report now. It is pure: the engine gathers the
// inputs (engine.Engine.Plan, for `ferry plan` and ferry server's GET
// /v1/plan) and the command line renders the result.
//
// Decide is the rule for one VM (fail it and why, skip it, create its
// replica or replicate into it, each disk's mode, the restore points
// retention drops after): Make renders its Decision, and a session calls
// the same function at the start of each VM and executes what it returns,
// so a plan and a run cannot drift apart. DecideJob is the rule for the
// run as a whole (whether it can start, which VMs it takes up, which it
// fails at once, its warnings, a change of the job's settings, the
// replicas it leaves because their VMs left the job): Make renders it
// before the VMs, and a session makes it at its start and executes it.
//
// It never changes anything and never talks to a plugin.
package plan

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/hwmap"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
)

// Action is the kind of a change.
type Action string

const (
	Create Action = "+" // a replica or disk will be created
	Update Action = "~" // something will change in place
	Delete Action = "-" // something will be deleted, or leaves the job
	Warn   Action = "!" // the run cannot do what the job asks
	Keep   Action = " " // an ordinary incremental run
)

// Change is one line of a plan.
type Change struct {
	Action Action
	VM     string
	Disk   int // -1 when about the VM or the job
	What   string
}

// Point is a restore point as the catalog records it.
type Point = catalog.RestorePoint

// Inputs are what a plan is made from.
type Inputs struct {
	Job *config.Job
	// Replicas and Points are the catalog's records of the job.
	Replicas    []catalog.Replica
	Points      map[string][]Point // by VM
	Fingerprint string             // the job's settings now
	Last        *catalog.JobState  // nil: never run
	// SourceErr and TargetErr say why the job's source or target cannot
	// be configured (the run fails then); nil when it can.
	SourceErr, TargetErr error
	// Source has what the source reports of each of the job's VMs; a VM
	// it lacks is missing there, and SourceErrors says why.
	Source       map[string]*sdk.VM
	SourceErrors map[string]error
	// Selection is what the job's folder and tag selectors and exclusions
	// pick now (package selection); nil for a job that names its VMs one
	// by one. SelectionErr says why the source could not be asked; the
	// job's VMs are then unknown.
	Selection    *selection.Result
	SelectionErr error
	// Target has what the target reports of each VM's replica, by VM: a
	// nil entry is a replica the target does not have. Nil when the
	// target was not asked; then the catalog's word is taken.
	Target map[string]*sdk.Replica
	// TargetPoints are the restore points the target lists of each
	// replica in Target, by VM, oldest first (their Job, VM and change ids
	// as the points' labels say); the catalog's Points stand in for a VM
	// it lacks.
	TargetPoints map[string][]Point
	// Owner is whom the job's replica of a source VM belongs to (see
	// engine); nil when the target was not asked.
	Owner func(vm *sdk.VM) sdk.ReplicaOwner
	// SourceCaps are what the source declares; nil when unknown.
	SourceCaps *sdk.Capabilities
}

// Plan is the result for one job.
type Plan struct {
	Job     string
	Changes []Change
	// Selection shows what each selector of the job matched; empty for a
	// job that names its VMs one by one.
	Selection []Selected
	// Proxies says where the job's disks would move when the
	// configuration declares proxies; nil when they move in ferry.
	Proxies *Proxies
	// VMs are the decisions Changes render, one per VM a run would take
	// up, in order: what a session of the job would do with each (see
	// Decide). The plan's JSON carries them ("decisions", versioned by
	// DecisionsVersion), without the facts they were made from.
	VMs []Decision
	// Overall is the decision about the run as a whole (DecideJob): a
	// session of the job makes it at its start and executes it. Not in the
	// plan's JSON: its lines are.
	Overall JobDecision
}

// Proxies is where a job's disks would move: the proxy that reads them
// and the one that writes them, and why, as the proxies are now (a run
// balances the load, so busy proxies may change it).
type Proxies struct {
	Source, Target       string `json:",omitempty"`
	SourceWhy, TargetWhy string `json:",omitempty"`
	Compression          string `json:",omitempty"` // the codec the link gets
	// Skipped are the proxies that cannot be used now, and why.
	Skipped []string `json:",omitempty"`
	// Error says why no proxy can take the job's disks.
	Error string `json:",omitempty"`
}

// Selected is what one selector of vms, or one entry of exclude, matches.
type Selected struct {
	Selector string
	Exclude  bool     `json:",omitempty"`
	VMs      []string // keys, sorted
	Why      string   `json:",omitempty"` // for a selector that matches nothing
}

// JobFacts are the inputs' facts about the job as a whole.
func (in Inputs) JobFacts() JobFacts {
	counts := map[string]int{}
	for vm, ps := range in.Points {
		counts[vm] = len(ps)
	}
	return JobFacts{Job: in.Job, Fingerprint: in.Fingerprint, Last: in.Last, Replicas: in.Replicas, Points: counts,
		SourceErr: in.SourceErr, TargetErr: in.TargetErr, Selection: in.Selection, SelectionErr: in.SelectionErr}
}

// Make works out the plan of one job: the job's decision as a whole
// (DecideJob), then each VM's (Decide), rendered as lines.
func Make(in Inputs) Plan {
	job := in.Job
	p := Plan{Job: job.Name}
	add := func(a Action, vm string, disk int, format string, args ...any) {
		p.Changes = append(p.Changes, Change{Action: a, VM: vm, Disk: disk, What: fmt.Sprintf(format, args...)})
	}
	jd := DecideJob(in.JobFacts())
	p.Overall = jd
	if sel := in.Selection; sel != nil {
		for _, m := range sel.Matches {
			p.Selection = append(p.Selection, Selected{Selector: m.Selector.String(), Exclude: m.Exclude, VMs: m.VMs, Why: m.Why})
		}
	}
	if jd.Fail != nil {
		add(Warn, "", -1, "the run will fail: %v", jd.Fail)
		return p
	}
	if jd.SettingsChanged {
		add(Update, "", -1, "%s", WhySettingsChanged)
	}
	for _, w := range jd.Warnings {
		add(Warn, "", -1, "%s; the run will warn", w)
	}
	for _, n := range jd.Notes {
		add(Warn, "", -1, "%s", n)
	}
	for _, r := range jd.Refused {
		add(Warn, r.Name, -1, "not replicated: %v", r.Err)
	}
	replicas := map[string]catalog.Replica{}
	for _, r := range in.Replicas {
		replicas[r.VM] = r
	}
	seen := map[string]string{} // VM id -> the entry that named it first
	for _, v := range jd.VMs {
		name := v.Key
		f := Facts{Job: job, Key: name, VM: in.Source[name], SourceErr: in.SourceErrors[name], Points: in.Points[name], Caps: in.SourceCaps}
		if in.Selection != nil {
			f.VM, f.SourceErr = v.VM, v.Missing // what the source said while selecting
		}
		if rec, ok := replicas[name]; ok {
			f.Record = &rec
		}
		if vm := f.VM; vm != nil {
			if other, dup := seen[vm.ID]; dup && vm.ID != "" {
				f.SameAs = other
			} else {
				seen[vm.ID] = name
			}
		}
		if tr, asked := in.Target[name]; asked {
			f.TargetAsked, f.Replica = true, tr
			if tr == nil {
				f.Points = nil
			} else if pts, listed := in.TargetPoints[name]; listed {
				f.Points = pts
			}
			if in.Owner != nil && f.VM != nil {
				f.Owner = in.Owner(f.VM)
			}
		}
		d := Decide(f)
		p.VMs = append(p.VMs, d)
		var by []string
		if v.New {
			by = v.By
		}
		p.render(d, in.Points[name], by, add)
	}
	for _, l := range jd.Leaving {
		add(Delete, l.VM, -1, "%s", l.What())
	}
	return p
}

// render adds the lines that say a VM's decision; catalogPoints are the
// catalog's points of the VM (those a retired replica takes along), by
// the selectors that picked it new.
func (p *Plan) render(d Decision, catalogPoints []Point, by []string, add func(Action, string, int, string, ...any)) {
	f, name := d.f, d.VM
	job := f.Job
	target := job.Target.Address()
	switch d.Verdict {
	case VerdictFail:
		switch d.Refusal {
		case RefusedCommitted:
			add(Warn, name, -1, "replica %s was committed as the production VM; remove %s from the job", f.Record.ReplicaName, name)
		case RefusedSourceMissing:
			add(Warn, name, -1, "%v; the run will fail for it", d.reason())
		case RefusedSameVM:
			add(Warn, name, -1, "names the same VM as %s (id %s), which runs replicate; the run will fail for this entry: list the VM once", f.SameAs, f.VM.ID)
		case RefusedOtherOwner:
			add(Warn, name, -1, "replica %s on %s belongs to %s; the run will fail for this VM: give one of the jobs another replica_suffix or target", d.ReplicaName, target, f.Replica.Owner)
		case RefusedHardware:
			add(Warn, name, -1, "replica %s cannot be created on %s: %v; the run will fail for this VM", d.ReplicaName, target, d.HardwareErr)
		case RefusedOtherJobsPoint:
			pt := d.otherPoint()
			add(Warn, name, -1, "replica %s on %s holds restore point %s of job %q VM %q; the run will fail for this VM: give one of the jobs another replica_suffix or target", d.ReplicaName, target, pt.ID, pt.Job, pt.VM)
		default:
			add(Warn, name, -1, "replica %s is %s; the run will fail for this VM: undo or commit the failover first", d.ReplicaName, d.state)
		}
		return
	case VerdictSkip:
		add(Warn, name, -1, "replica %s is failed over (to %s); runs skip it until 'ferry failover undo' or 'commit'", d.ReplicaName, d.failover)
		return
	}
	p.renderHardware(d, add)
	if d.Retire != "" {
		if d.Verdict == VerdictCreate {
			add(Create, name, -1, "replica %s is gone from %s: it will be created and filled; the catalog's %s of it will be recorded as gone",
				f.Record.ReplicaName, target, plural(len(catalogPoints), "restore point"))
		} else {
			add(Update, name, -1, "replica %s on %s is not the one the catalog knows (id %s, was %s): every block is compared with the source; the catalog's %s of the old one will be recorded as gone",
				d.ReplicaName, target, f.Replica.ID, f.Record.ReplicaID, plural(len(catalogPoints), "restore point"))
		}
		return
	}
	if d.Verdict == VerdictCreate && d.Map {
		var total int64
		for _, dd := range d.Disks {
			total += dd.Capacity
		}
		add(Create, name, -1, "map the replica onto VM %s on %s (replica_mapping): %s, %s; the first run compares every block with it and sends only what differs",
			d.ReplicaName, target, plural(len(d.Disks), "disk"), Human(total))
		return
	}
	if d.Verdict == VerdictCreate {
		var total int64
		for _, dd := range d.Disks {
			total += dd.Capacity
		}
		what := ""
		if len(by) > 0 {
			what = " (new in " + strings.Join(by, ", ") + ")"
		}
		add(Create, name, -1, "create replica %s on %s%s: %s, %s; the first run copies every allocated block",
			d.ReplicaName, target, what, plural(len(d.Disks), "disk"), Human(total))
		return
	}
	changed := false
	for _, dd := range d.Disks {
		switch {
		case dd.New:
			add(Create, name, dd.Index, "new disk of %s on the replica; its first copy reads every allocated block", Human(dd.Capacity))
			changed = true
		case dd.Was != 0 && dd.Capacity > dd.Was:
			add(Update, name, dd.Index, "grows from %s to %s; earlier restore points keep their size", Human(dd.Was), Human(dd.Capacity))
			changed = true
		case dd.Was != 0 && dd.Capacity < dd.Was:
			add(Warn, name, dd.Index, "shrank from %s to %s at the source; replica disks never shrink", Human(dd.Was), Human(dd.Capacity))
			changed = true
		}
	}
	for _, dd := range d.Disks {
		if dd.Skip {
			add(Warn, name, dd.Index, "%s: not replicated, the run will warn; set copy_independent_disks = true to copy it knowingly", dd.Why)
		}
	}
	switch {
	case d.TakeOver && len(f.Points) == 0:
		add(Update, name, -1, "replica %s exists on %s but not in the catalog: the run takes it over and compares every block with the source", d.ReplicaName, target)
	case d.TakeOver:
		add(Update, name, -1, "replica %s exists on %s but not in the catalog: the run takes it over with its %s, the newest %s%s",
			d.ReplicaName, target, plural(len(f.Points), "restore point"), newest(f.Points), digestDisks(d))
	case !changed:
		add(Keep, name, -1, "incremental run: %s, the newest %s%s", plural(len(f.Points), "restore point"), newest(f.Points), digestDisks(d))
	}
	if len(d.Drop) > 0 {
		add(Delete, name, -1, "%s beyond the newest %d will be deleted", plural(len(d.Drop), "restore point"), job.Retention.RestorePoints)
	}
}

// renderHardware adds a line for each way the replica's hardware differs
// from the source's, or the reason the mapping cannot be built.
func (p *Plan) renderHardware(d Decision, add func(Action, string, int, string, ...any)) {
	if d.HardwareErr != nil {
		add(Warn, d.VM, -1, "hardware: %v; the existing replica keeps what it was built with", d.HardwareErr)
		return
	}
	h := d.Hardware
	if h == nil || !h.Mapped {
		return
	}
	// For a replica to create the differences are changes the run makes;
	// for one that exists they are what it has and keeps.
	action := Update
	if d.Verdict != VerdictCreate {
		action = Keep
	}
	for _, c := range h.Changes {
		add(action, d.VM, diskOf(c), "hardware (%s): %s", h.Profile, c.String())
	}
	for _, c := range d.HardwareKept {
		add(Warn, d.VM, diskOf(c), "hardware: the replica keeps %s %s where the mapping now gives %s (%s)", c.Item, c.From, c.To, c.Reason)
	}
}

// diskOf is the disk a hardware change is of; -1 for the VM's.
func diskOf(c hwmap.Change) int {
	if n, ok := strings.CutPrefix(c.Item, "disk "); ok {
		if i, err := strconv.Atoi(n); err == nil {
			return i
		}
	}
	return -1
}

func newest(ps []Point) string {
	if len(ps) == 0 {
		return "none yet"
	}
	return "from " + ps[len(ps)-1].Created.UTC().Format("2006-01-02 15:04:05 UTC")
}

// Summary counts the changes by action.
func (p Plan) Summary() string {
	count := map[Action]int{}
	for _, c := range p.Changes {
		count[c.Action]++
	}
	return fmt.Sprintf("%d to create, %d to change, %d to delete, %d warnings, %d unchanged",
		count[Create], count[Update], count[Delete], count[Warn], count[Keep])
}

// Write renders the plan for people, Terraform-style.
func (p Plan) Write(w io.Writer) {
	fmt.Fprintf(w, "job %q\n", p.Job)
	for _, s := range p.Selection {
		verb := "selects"
		if s.Exclude {
			verb = "excludes"
		}
		vms := strings.Join(s.VMs, ", ")
		if len(s.VMs) == 0 {
			vms = "no VM"
		}
		fmt.Fprintf(w, "    %s %s: %s\n", verb, s.Selector, vms)
	}
	if x := p.Proxies; x != nil {
		if x.Error != "" {
			fmt.Fprintf(w, "  proxies: %s\n", x.Error)
		} else {
			fmt.Fprintf(w, "  proxies: read by %s (%s), written by %s (%s), compression %s\n", x.Source, x.SourceWhy, x.Target, x.TargetWhy, x.Compression)
		}
		for _, sk := range x.Skipped {
			fmt.Fprintf(w, "    skipped: %s\n", sk)
		}
	}
	for _, c := range p.Changes {
		subject := c.VM
		if c.Disk >= 0 {
			subject = fmt.Sprintf("%s disk %d", c.VM, c.Disk)
		}
		if subject == "" {
			subject = "job"
		}
		fmt.Fprintf(w, "  %s %s: %s\n", c.Action, subject, c.What)
	}
	fmt.Fprintf(w, "  Plan: %s.\n", p.Summary())
}

// DigestReason says why a disk of an incremental run is compared by
// digests rather than by change tracking, as far as the source's
// capabilities and the change id of the disk's newest restore point tell;
// "" when change tracking can be asked. The plan and the run both say it.
func DigestReason(tracks bool, lastChangeID string) string {
	switch {
	case !tracks:
		return "the source does not track changes"
	case lastChangeID == "":
		return "the last restore point has no change id for it (tracking was off then, or the disk is new)"
	}
	return ""
}

// digestDisks says which disks of an incremental run are compared by
// digests, reading the whole disk, and why.
func digestDisks(d Decision) string {
	var out []string
	for _, dd := range d.Disks {
		if !dd.Skip && dd.Mode == catalog.ModeDigest {
			out = append(out, fmt.Sprintf("disk %d by digest comparison (%s): reads all %s", dd.Index, dd.Why, Human(dd.Capacity)))
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, "; ")
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// Human renders a byte count as plans and sessions say it: "8 GiB",
// "1.5 MiB", "512 B".
func Human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/float64(div)), "0"), ".") + " " + string("KMGTP"[exp]) + "iB"
}
