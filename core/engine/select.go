package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
)

// start configures the session's components, works out its VMs and
// executes what package plan decides of the run as a whole (DecideJob,
// the rule `ferry plan` answers by): a source or a target that cannot be
// configured, or VMs that cannot be known, fail the session; the VMs it
// takes up are returned in order, after the session has told what it
// knows of the job (its settings changed, what each selector matched,
// which VMs are new and which left, those it fails at once).
//
// For a job that names its VMs one by one they are its vms as written.
// For one with folder or tag selectors they are what package selection
// finds at the source now: the session records what each selector
// matched, and the source is addressed by VM id from here on (see
// keyedSource).
//
// A selector that matches nothing is a warning, not a failure: the other
// VMs of the job still get their restore points, and the session ends
// "warning" so the operator learns that a folder or tag lost its VMs (a
// rename is the usual cause). A selector the source cannot answer (tags of
// an ESXi host) and a source that cannot list its VMs fail the session:
// ferry never guesses which VMs a job means, and an exclusion it cannot
// evaluate could replicate VMs the job keeps out.
func (r *run) start(ctx context.Context) ([]string, error) {
	job := r.job
	srcErr, tgtErr, repoErr := r.configure(ctx)
	f, err := r.jobFacts()
	if err != nil {
		return nil, err
	}
	f.SourceErr, f.TargetErr = srcErr, tgtErr
	if srcErr == nil && tgtErr == nil && job.Selects() {
		known := map[string]string{}
		for _, rep := range f.Replicas {
			if rep.SourceID != "" {
				known[rep.SourceID] = rep.VM
			}
		}
		var last map[string][]string
		if f.Last != nil {
			last = f.Last.Selected
		}
		f.Selection, f.SelectionErr = selection.Resolve(ctx, r.src, job, known, last)
	}
	d := plan.DecideJob(f)
	if d.Fail != nil {
		return nil, d.Fail
	}
	if repoErr != nil {
		return nil, repoErr // a plan does not configure the repository
	}
	if d.SettingsChanged {
		r.notice("", "%s", plan.WhySettingsChanged)
	}
	if f.Selection != nil {
		if err := r.recordSelection(f.Selection, d); err != nil {
			return nil, err
		}
	}
	for _, l := range d.Leaving {
		r.notice(l.VM, "%s", l.What())
	}
	for _, v := range d.Refused {
		// Named with its id: the key is what it shares with another VM,
		// and a session lists each VM once.
		res := catalog.VMResult{VM: v.Name, Result: catalog.ResultFailed, Error: v.Error(job.Name)}
		r.e.emit(Event{Kind: VMFinished, Session: r.sess.ID, Job: job.Name, VM: v.Name, Err: v.Err})
		r.sess.VMs = append(r.sess.VMs, res)
		if err := r.e.Catalog.SaveSessionVM(r.sess.ID, res); err != nil {
			return nil, fmt.Errorf("vm %q: record the result: %w", v.Name, err)
		}
	}
	return d.Keys(), nil
}

// jobFacts are what the catalog knows of the job, for DecideJob.
func (r *run) jobFacts() (plan.JobFacts, error) {
	f := plan.JobFacts{Job: r.job, Fingerprint: Fingerprint(r.job), Points: map[string]int{}}
	var err error
	if f.Replicas, err = r.e.Catalog.Replicas(r.job.Name); err != nil {
		return f, fmt.Errorf("read the job's replicas: %w", err)
	}
	for _, rep := range f.Replicas {
		points, err := r.e.Catalog.RestorePoints(r.job.Name, rep.VM)
		if err != nil {
			return f, fmt.Errorf("read the restore points of %q: %w", rep.VM, err)
		}
		f.Points[rep.VM] = len(points)
	}
	if st, err := r.e.Catalog.JobState(r.job.Name); err == nil {
		f.Last = st
	}
	return f, nil
}

// recordSelection tells what the job's selectors matched and which VMs
// are new, and records it in the session; from here on the source is
// addressed by the ids of the VMs selectors picked.
func (r *run) recordSelection(res *selection.Result, d plan.JobDecision) error {
	sel := &catalog.Selection{}
	for _, m := range res.Matches {
		sel.Selectors = append(sel.Selectors, catalog.SelectorMatch{Selector: m.Selector.String(), Exclude: m.Exclude, VMs: nonNil(m.VMs)})
		switch {
		case m.Exclude && len(m.VMs) > 0:
			r.notice("", "exclude %s matches %s", m.Selector, strings.Join(m.VMs, ", "))
		case m.Exclude:
			r.notice("", "exclude %s matches no VM: %s", m.Selector, m.Why)
		case len(m.VMs) > 0:
			r.notice("", "%s selects %s", m.Selector, strings.Join(m.VMs, ", "))
		}
	}
	for _, w := range d.Warnings {
		r.sess.Warnings = append(r.sess.Warnings, w)
		r.notice("", "warning: %s", w)
	}
	for _, n := range d.Notes {
		r.notice("", "%s", n)
	}
	ids := map[string]string{}
	r.selected = map[string][]string{}
	for _, v := range d.VMs {
		if v.Ref != v.Key {
			ids[v.Key] = v.Ref
		}
		if len(v.By) > 0 {
			r.selected[v.Key] = v.By
		}
		if v.New {
			sel.New = append(sel.New, v.Key)
			r.notice(v.Key, "new in %s: its replica will be created", strings.Join(v.By, ", "))
		}
	}
	for _, x := range res.Excluded {
		sel.Excluded = append(sel.Excluded, x.Key)
	}
	for _, l := range res.Left {
		sel.Left = append(sel.Left, l.Key)
	}
	r.sess.Selection = sel
	if len(ids) > 0 {
		r.ids = ids
		r.src = keyedSource{Source: r.src, ids: ids}
	}
	if err := r.e.Catalog.SaveSession(r.sess); err != nil {
		return fmt.Errorf("record the selection: %w", err)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// keyedSource addresses VMs a selector picked by their id while the engine
// names them by key (their name, or their replica's key in the catalog):
// a name may repeat elsewhere in the source's inventory, an id does not.
// VMs named one by one pass through as written.
type keyedSource struct {
	sdk.Source
	ids map[string]string // key -> VM id
}

var _ sdk.Source = keyedSource{}

func (s keyedSource) ref(vm string) string {
	if id, ok := s.ids[vm]; ok {
		return id
	}
	return vm
}

func (s keyedSource) DescribeVM(ctx context.Context, vm string) (*sdk.VM, error) {
	return s.Source.DescribeVM(ctx, s.ref(vm))
}

func (s keyedSource) CreateSnapshot(ctx context.Context, req sdk.SnapshotRequest) (*sdk.Snapshot, error) {
	req.VM = s.ref(req.VM)
	return s.Source.CreateSnapshot(ctx, req)
}

func (s keyedSource) RemoveSnapshot(ctx context.Context, vm, snapshot string) error {
	return s.Source.RemoveSnapshot(ctx, s.ref(vm), snapshot)
}

func (s keyedSource) ListSnapshots(ctx context.Context, vm string) ([]sdk.Snapshot, error) {
	return s.Source.ListSnapshots(ctx, s.ref(vm))
}

func (s keyedSource) ChangedAreas(ctx context.Context, req sdk.ChangedAreasRequest, fn func([]sdk.Extent) error) error {
	req.VM = s.ref(req.VM)
	return s.Source.ChangedAreas(ctx, req, fn)
}

func (s keyedSource) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (sdk.DiskReader, error) {
	return s.Source.OpenSnapshotDisk(ctx, s.ref(vm), snapshot, disk)
}
