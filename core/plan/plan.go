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
// so a plan and a run cannot drift apart.
//
// It never changes anything and never talks to a plugin.
package plan

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
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

// Make works out the plan of one job.
func Make(in Inputs) Plan {
	job := in.Job
	p := Plan{Job: job.Name}
	add := func(a Action, vm string, disk int, format string, args ...any) {
		p.Changes = append(p.Changes, Change{Action: a, VM: vm, Disk: disk, What: fmt.Sprintf(format, args...)})
	}
	if in.Last != nil && in.Last.Fingerprint != "" && in.Last.Fingerprint != in.Fingerprint {
		add(Update, "", -1, "the job's settings changed since its last run")
	}
	replicas := map[string]catalog.Replica{}
	for _, r := range in.Replicas {
		replicas[r.VM] = r
	}
	names, picked, known := p.selection(in, add)
	source, sourceErrors := in.Source, in.SourceErrors
	if in.Selection != nil {
		// What the source said while selecting.
		source, sourceErrors = map[string]*sdk.VM{}, map[string]error{}
		for _, v := range in.Selection.VMs {
			if v.VM != nil {
				source[v.Key] = v.VM
			} else if v.Missing != nil {
				sourceErrors[v.Key] = fmt.Errorf("%s: %w", job.Source.Address(), v.Missing)
			}
		}
	}
	seen := map[string]string{} // VM id -> the entry that named it first
	for _, name := range names {
		f := Facts{Job: job, Key: name, VM: source[name], SourceErr: sourceErrors[name], Points: in.Points[name], Caps: in.SourceCaps}
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
		p.render(d, in.Points[name], picked[name], add)
	}
	if !known {
		return p // which replicas leave the job is unknown
	}
	var gone []string
	for vm := range replicas {
		if !contains(names, vm) {
			gone = append(gone, vm)
		}
	}
	sort.Strings(gone)
	why := map[string]string{}
	if sel := in.Selection; sel != nil {
		for _, x := range sel.Excluded {
			why[x.Key] = "excluded by " + strings.Join(x.By, ", ")
		}
		for _, l := range sel.Left {
			if len(l.By) > 0 {
				why[l.Key] = "left " + strings.Join(l.By, ", ")
			}
		}
	}
	for _, vm := range gone {
		r := replicas[vm]
		reason := why[vm]
		if reason == "" {
			reason = "no longer in the job"
		}
		add(Delete, vm, -1, "%s; its replica %s and %s are kept, not replicated", reason, r.ReplicaName, plural(len(in.Points[vm]), "restore point"))
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
			why := "not found on " + job.Source.Address()
			if f.SourceErr != nil {
				why = f.SourceErr.Error()
			}
			add(Warn, name, -1, "%s; the run will fail for it", why)
		case RefusedSameVM:
			add(Warn, name, -1, "names the same VM as %s (id %s), which runs replicate; the run will fail for this entry: list the VM once", f.SameAs, f.VM.ID)
		case RefusedOtherOwner:
			add(Warn, name, -1, "replica %s on %s belongs to %s; the run will fail for this VM: give one of the jobs another replica_suffix or target", d.ReplicaName, target, f.Replica.Owner)
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

// selection adds what the job's selectors match to the plan and returns
// the VMs a run would replicate, in order; the selectors that pick each
// new VM; and whether the VMs are known at all.
func (p *Plan) selection(in Inputs, add func(Action, string, int, string, ...any)) (names []string, picked map[string][]string, known bool) {
	job := in.Job
	if in.SelectionErr != nil {
		add(Warn, "", -1, "the VMs of %s are unknown: %v; the run will fail", job.Source.Address(), in.SelectionErr)
		return job.VMs, nil, false
	}
	sel := in.Selection
	if sel == nil {
		return job.VMs, nil, true
	}
	known = true
	for _, m := range sel.Matches {
		p.Selection = append(p.Selection, Selected{Selector: m.Selector.String(), Exclude: m.Exclude, VMs: m.VMs, Why: m.Why})
		switch {
		case m.Err != nil:
			add(Warn, "", -1, "%s: %v; the run will fail", m.Selector, m.Err)
			known = false
		case !m.Exclude && len(m.VMs) == 0:
			add(Warn, "", -1, "%s matches no VM at %s (%s); the run will warn", m.Selector, job.Source.Address(), m.Why)
		}
	}
	for _, n := range sel.Notes {
		add(Warn, "", -1, "%s", n)
	}
	picked = map[string][]string{}
	for _, v := range sel.VMs {
		if v.Err != nil {
			name := v.Key
			if v.VM != nil {
				name = fmt.Sprintf("%s (id %s)", v.Key, v.VM.ID)
			}
			add(Warn, name, -1, "not replicated: %v", v.Err)
			continue
		}
		names = append(names, v.Key)
		if v.New {
			picked[v.Key] = v.By
		}
	}
	return names, picked, known
}

func newest(ps []Point) string {
	if len(ps) == 0 {
		return "none yet"
	}
	return "from " + ps[len(ps)-1].Created.UTC().Format("2006-01-02 15:04:05 UTC")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
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
