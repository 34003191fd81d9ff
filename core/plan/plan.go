// Package plan works out what the next run of a job would do, from the
// job's configuration, what the catalog knows of earlier runs and what the
// source reports now. It is pure: the command line gathers the inputs and
// renders the result.
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
}

// Plan is the result for one job.
type Plan struct {
	Job     string
	Changes []Change
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
	for _, name := range job.VMs {
		vm, ok := in.Source[name]
		rec, hasReplica := replicas[name]
		points := in.Points[name]
		if !ok {
			why := "not found on " + job.Source.Address()
			if err := in.SourceErrors[name]; err != nil {
				why = err.Error()
			}
			add(Warn, name, -1, "%s; the run will fail for it", why)
			continue
		}
		if !hasReplica {
			var total int64
			for _, d := range vm.Disks {
				total += d.Capacity
			}
			add(Create, name, -1, "create replica %s%s on %s: %s, %s; the first run copies every allocated block",
				name, job.ReplicaSuffix, job.Target.Address(), plural(len(vm.Disks), "disk"), human(total))
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
				add(Create, name, d.Index, "new disk of %s on the replica; its first copy reads every allocated block", human(d.Capacity))
				changed = true
			case d.Capacity > was:
				add(Update, name, d.Index, "grows from %s to %s; earlier restore points keep their size", human(was), human(d.Capacity))
				changed = true
			case d.Capacity < was:
				add(Warn, name, d.Index, "shrank from %s to %s at the source; replica disks never shrink", human(was), human(d.Capacity))
				changed = true
			}
		}
		if !changed {
			add(Keep, name, -1, "incremental run: %s, the newest %s", plural(len(points), "restore point"), newest(points))
		}
		if keep := job.Retention.RestorePoints; keep > 0 && len(points)+1 > keep {
			add(Delete, name, -1, "%s beyond the newest %d will be deleted", plural(len(points)+1-keep, "restore point"), keep)
		}
	}
	var gone []string
	for vm := range replicas {
		if !contains(job.VMs, vm) {
			gone = append(gone, vm)
		}
	}
	sort.Strings(gone)
	for _, vm := range gone {
		r := replicas[vm]
		add(Delete, vm, -1, "no longer in the job; its replica %s and %s are kept, not replicated", r.ReplicaName, plural(len(in.Points[vm]), "restore point"))
	}
	return p
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

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// human renders a byte count.
func human(n int64) string {
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
