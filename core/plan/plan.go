// Package plan works out what the next run of a job would do, from the
// job's configuration, what the catalog knows of earlier runs and what the
// source reports now. It is pure: the engine gathers the inputs
// (engine.Engine.Plan, for `ferry plan` and ferry server's GET /v1/plan)
// and the command line renders the result.
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
		vm, ok := source[name]
		rec, hasReplica := replicas[name]
		points := in.Points[name]
		if !ok {
			why := "not found on " + job.Source.Address()
			if err := sourceErrors[name]; err != nil {
				why = err.Error()
			}
			add(Warn, name, -1, "%s; the run will fail for it", why)
			continue
		}
		if other, dup := seen[vm.ID]; dup && vm.ID != "" {
			add(Warn, name, -1, "names the same VM as %s (id %s), which runs replicate; the run will fail for this entry: list the VM once", other, vm.ID)
			continue
		}
		seen[vm.ID] = name
		if in.Target != nil {
			tr, asked := in.Target[name]
			replicaName := job.ReplicaName(name, vm.Name)
			switch {
			case asked && tr != nil && !tr.Owner.IsZero() && in.Owner != nil && tr.Owner != in.Owner(vm):
				add(Warn, name, -1, "replica %s on %s belongs to %s; the run will fail for this VM: give one of the jobs another replica_suffix or target", replicaName, job.Target.Address(), tr.Owner)
				continue
			case asked && tr == nil && hasReplica:
				add(Create, name, -1, "replica %s is gone from %s: it will be created and filled; the catalog's %s of it will be recorded as gone",
					rec.ReplicaName, job.Target.Address(), plural(len(points), "restore point"))
				continue
			case asked && tr != nil && hasReplica && tr.ID != rec.ReplicaID:
				add(Update, name, -1, "replica %s on %s is not the one the catalog knows (id %s, was %s): every block is compared with the source; the catalog's %s of the old one will be recorded as gone",
					replicaName, job.Target.Address(), tr.ID, rec.ReplicaID, plural(len(points), "restore point"))
				continue
			case asked && tr != nil && !hasReplica:
				add(Update, name, -1, "replica %s exists on %s but not in the catalog: the run takes it over and compares every block with the source", replicaName, job.Target.Address())
				continue
			}
		}
		if !hasReplica {
			var total int64
			for _, d := range vm.Disks {
				total += d.Capacity
			}
			what := ""
			if by := picked[name]; len(by) > 0 {
				what = " (new in " + strings.Join(by, ", ") + ")"
			}
			add(Create, name, -1, "create replica %s on %s%s: %s, %s; the first run copies every allocated block",
				job.ReplicaName(name, vm.Name), job.Target.Address(), what, plural(len(vm.Disks), "disk"), Human(total))
			continue
		}
		switch rec.State {
		case sdk.ReplicaFailedOver:
			add(Warn, name, -1, "replica %s is failed over (to %s); runs skip it until 'ferry failover undo' or 'commit'", rec.ReplicaName, rec.FailoverPoint)
			continue
		case sdk.ReplicaCommitted:
			add(Warn, name, -1, "replica %s was committed as the production VM; remove %s from the job", rec.ReplicaName, name)
			continue
		}
		old := map[int]int64{}
		for _, d := range rec.Disks {
			old[d.Index] = d.Capacity
		}
		changed := false
		for _, d := range vm.Disks {
			was, known := old[d.Index]
			switch {
			case !known:
				add(Create, name, d.Index, "new disk of %s on the replica; its first copy reads every allocated block", Human(d.Capacity))
				changed = true
			case d.Capacity > was:
				add(Update, name, d.Index, "grows from %s to %s; earlier restore points keep their size", Human(was), Human(d.Capacity))
				changed = true
			case d.Capacity < was:
				add(Warn, name, d.Index, "shrank from %s to %s at the source; replica disks never shrink", Human(was), Human(d.Capacity))
				changed = true
			}
		}
		for _, d := range vm.Disks {
			if d.Independent && !job.CopyIndependentDisks {
				add(Warn, name, d.Index, "independent (VM snapshots do not capture it): not replicated, the run will warn; set copy_independent_disks = true to copy it knowingly")
			}
		}
		if !changed {
			add(Keep, name, -1, "incremental run: %s, the newest %s%s", plural(len(points), "restore point"), newest(points), digestDisks(in.SourceCaps, vm, points))
		}
		if keep := job.Retention.RestorePoints; keep > 0 && len(points)+1 > keep {
			add(Delete, name, -1, "%s beyond the newest %d will be deleted", plural(len(points)+1-keep, "restore point"), keep)
		}
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
// digests, reading the whole disk, and why: the source does not track
// changes, or the newest restore point has no change id for the disk.
func digestDisks(caps *sdk.Capabilities, vm *sdk.VM, points []Point) string {
	if caps == nil || len(points) == 0 {
		return ""
	}
	ids := map[int]string{}
	for _, d := range points[len(points)-1].Disks {
		ids[d.Index] = d.ChangeID
	}
	var out []string
	for _, d := range vm.Disks {
		if why := DigestReason(caps.ChangeTracking, ids[d.Index]); why != "" && !d.Independent {
			out = append(out, fmt.Sprintf("disk %d by digest comparison (%s): reads all %s", d.Index, why, Human(d.Capacity)))
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
