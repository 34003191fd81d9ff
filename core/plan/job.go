package plan

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
)

// JobFacts are what the decision about a run as a whole is made from:
// which VMs it takes up, whether it can start at all, what it tells about
// the job before its first VM. A plan gathers them before it decides
// about each VM; a session at its start (package engine). Both hand them
// to DecideJob.
type JobFacts struct {
	Job *config.Job
	// Fingerprint digests the job's settings now (engine.Fingerprint);
	// Last is the catalog's state of the job, nil when it never ran.
	Fingerprint string
	Last        *catalog.JobState
	// Replicas are the catalog's replicas of the job, and Points how many
	// restore points the catalog holds of each, by VM.
	Replicas []catalog.Replica
	Points   map[string]int
	// SourceErr and TargetErr say why the job's source or target cannot
	// be configured; nil when it can.
	SourceErr, TargetErr error
	// Selection is what the job's selectors pick now (package
	// selection), nil for a job that names its VMs one by one;
	// SelectionErr says why the source could not be asked.
	Selection    *selection.Result
	SelectionErr error
}

// JobDecision is what a run does before, and besides, its VMs: the typed
// answer of DecideJob.
type JobDecision struct {
	// Fail says why the run fails before it takes up any VM (a source or
	// a target that cannot be configured, VMs that cannot be known); the
	// VMs are unknown then, and the fields below empty.
	Fail error
	// SettingsChanged: the job's settings changed since its last run.
	SettingsChanged bool
	// VMs are the VMs the run takes up, in order, each with what the
	// source said of it while selecting.
	VMs []JobVM
	// Refused are VMs a selector picked that the run fails at once (they
	// would share a replica with another).
	Refused []Refused
	// Warnings are what the session records as its warnings (a selector
	// that matched nothing); Notes what it only tells.
	Warnings, Notes []string
	// Leaving are the catalog's replicas of VMs the run no longer takes
	// up: kept, not replicated.
	Leaving []Leaving
}

// JobVM is a VM a run takes up.
type JobVM struct {
	Key string
	// Ref names it to the source (see selection.VM).
	Ref string
	// VM is what the source said of it while selecting, and Missing why
	// it could not; both nil for a job that names its VMs one by one (the
	// source is asked at the VM's turn).
	VM      *sdk.VM
	Missing error
	// By are the selectors that picked it; New is set when they picked it
	// first now.
	By  []string
	New bool
}

// Refused is a VM a run fails without trying it.
type Refused struct {
	Name string // its key and id, as the session names it
	Err  error
}

// Error is the error the session records for the VM.
func (r Refused) Error(job string) string {
	return fmt.Sprintf("job %q vm %q: not replicated: %v", job, r.Name, r.Err)
}

// Leaving is a VM whose replica the catalog has and the run does not take
// up.
type Leaving struct {
	VM          string
	Why         string // "no longer in the job", "left SELECTOR", "excluded by ENTRY"
	ReplicaName string
	Points      int // the catalog's restore points of its replica
}

// What says it as plans and sessions both do.
func (l Leaving) What() string {
	return fmt.Sprintf("%s; its replica %s and %s are kept, not replicated", l.Why, l.ReplicaName, plural(l.Points, "restore point"))
}

// WhySettingsChanged is what plans and sessions say of a job whose
// settings changed since its last run.
const WhySettingsChanged = "the job's settings changed since its last run"

// DecideJob decides what a run does as a whole: whether it can start,
// which VMs it takes up in which order, which it fails at once, what it
// warns of, and which replicas it leaves alone because their VMs left the
// job. It is pure.
func DecideJob(f JobFacts) JobDecision {
	job := f.Job
	var d JobDecision
	switch {
	case f.SourceErr != nil:
		d.Fail = fmt.Errorf("source %s: %w", job.Source.Address(), f.SourceErr)
		return d
	case f.TargetErr != nil:
		d.Fail = fmt.Errorf("target %s: %w", job.Target.Address(), f.TargetErr)
		return d
	case f.SelectionErr != nil:
		d.Fail = fmt.Errorf("source %s: %w", job.Source.Address(), f.SelectionErr)
		return d
	}
	d.SettingsChanged = f.Last != nil && f.Last.Fingerprint != "" && f.Last.Fingerprint != f.Fingerprint
	why := map[string]string{}
	if sel := f.Selection; sel != nil {
		var unanswered joined
		for _, m := range sel.Matches {
			if m.Err != nil {
				unanswered = append(unanswered, fmt.Errorf("%s: %w", m.Selector, m.Err))
			}
		}
		if len(unanswered) > 0 {
			return DecidedFail(fmt.Errorf("source %s cannot answer every selector, so the job's VMs are unknown: %w", job.Source.Address(), unanswered))
		}
		for _, m := range sel.Empty() {
			d.Warnings = append(d.Warnings, fmt.Sprintf("%s matches no VM at %s: %s", m.Selector, job.Source.Address(), m.Why))
		}
		d.Notes = sel.Notes
		for _, v := range sel.VMs {
			if v.Err != nil {
				name := v.Key
				if v.VM != nil {
					name = fmt.Sprintf("%s (id %s)", v.Key, v.VM.ID)
				}
				d.Refused = append(d.Refused, Refused{Name: name, Err: v.Err})
				continue
			}
			d.VMs = append(d.VMs, JobVM{Key: v.Key, Ref: v.Ref, VM: v.VM, Missing: v.Missing, By: v.By, New: v.New})
		}
		if len(d.VMs) == 0 && len(d.Refused) == 0 {
			w := "every VM it picks is excluded"
			if len(d.Warnings) > 0 {
				w = strings.Join(d.Warnings, "; ")
			}
			return DecidedFail(fmt.Errorf("the job selects no VM at source %s: %s", job.Source.Address(), w))
		}
		for _, x := range sel.Excluded {
			why[x.Key] = "excluded by " + strings.Join(x.By, ", ")
		}
		for _, l := range sel.Left {
			if len(l.By) > 0 {
				why[l.Key] = "left " + strings.Join(l.By, ", ")
			}
		}
	} else {
		for _, name := range job.VMs {
			d.VMs = append(d.VMs, JobVM{Key: name, Ref: name})
		}
	}
	for _, r := range f.Replicas {
		if slices.ContainsFunc(d.VMs, func(v JobVM) bool { return v.Key == r.VM }) {
			continue
		}
		w := why[r.VM]
		if w == "" {
			w = "no longer in the job"
		}
		d.Leaving = append(d.Leaving, Leaving{VM: r.VM, Why: w, ReplicaName: r.ReplicaName, Points: f.Points[r.VM]})
	}
	sort.Slice(d.Leaving, func(i, j int) bool { return d.Leaving[i].VM < d.Leaving[j].VM })
	return d
}

// DecidedFail is the decision of a run that fails as a whole with err.
func DecidedFail(err error) JobDecision { return JobDecision{Fail: err} }

// Keys are the keys of the VMs the run takes up, in order.
func (d JobDecision) Keys() []string {
	out := make([]string, 0, len(d.VMs))
	for _, v := range d.VMs {
		out = append(out, v.Key)
	}
	return out
}

// joined is errors.Join on one line, as plans and sessions say errors.
type joined []error

func (j joined) Error() string {
	msgs := make([]string, len(j))
	for i, err := range j {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (j joined) Unwrap() []error { return j }
