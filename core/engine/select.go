package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
)

// selectVMs works out the session's VMs and returns their keys, in order.
// For a job that names its VMs one by one they are its vms as written. For
// one with folder or tag selectors they are what package selection finds
// at the source now: the session records what each selector matched, which
// VMs are new and which left, and the source is addressed by VM id from
// here on (see keyedSource). VMs that cannot be replicated (they would
// share a replica with another) are recorded as failed at once.
//
// A selector that matches nothing is a warning, not a failure: the other
// VMs of the job still get their restore points, and the session ends
// "warning" so the operator learns that a folder or tag lost its VMs (a
// rename is the usual cause). A selector the source cannot answer (tags of
// an ESXi host) and a source that cannot list its VMs fail the session:
// ferry never guesses which VMs a job means, and an exclusion it cannot
// evaluate could replicate VMs the job keeps out.
func (r *run) selectVMs(ctx context.Context) ([]string, error) {
	job := r.job
	if !job.Selects() {
		return job.VMs, nil
	}
	known, last, err := r.catalogSelection()
	if err != nil {
		return nil, err
	}
	res, err := selection.Resolve(ctx, r.src, job, known, last)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", job.Source.Address(), err)
	}
	if err := res.Problems(); err != nil {
		return nil, fmt.Errorf("source %s cannot answer every selector, so the job's VMs are unknown: %w", job.Source.Address(), err)
	}
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
		default:
			w := fmt.Sprintf("%s matches no VM at %s: %s", m.Selector, job.Source.Address(), m.Why)
			r.sess.Warnings = append(r.sess.Warnings, w)
			r.notice("", "warning: %s", w)
		}
	}
	for _, n := range res.Notes {
		r.notice("", "%s", n)
	}
	ids := map[string]string{}
	r.selected = map[string][]string{}
	var keys []string
	var refused []selection.VM
	for _, v := range res.VMs {
		if v.Err != nil {
			refused = append(refused, v)
			continue
		}
		keys = append(keys, v.Key)
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
		was := "the job"
		if len(l.By) > 0 {
			was = strings.Join(l.By, ", ")
		}
		r.notice(l.Key, "left %s: its replica and restore points are kept, not replicated", was)
	}
	r.sess.Selection = sel
	if len(ids) > 0 {
		r.ids = ids
		r.src = keyedSource{Source: r.src, ids: ids}
	}
	if err := r.e.Catalog.SaveSession(r.sess); err != nil {
		return nil, fmt.Errorf("record the selection: %w", err)
	}
	for _, v := range refused {
		// Named with its id: the key is what it shares with another VM,
		// and a session lists each VM once.
		name := fmt.Sprintf("%s (id %s)", v.Key, v.VM.ID)
		res := catalog.VMResult{VM: name, Result: catalog.ResultFailed, Error: fmt.Sprintf("job %q vm %q: not replicated: %v", job.Name, name, v.Err)}
		r.e.emit(Event{Kind: VMFinished, Session: r.sess.ID, Job: job.Name, VM: name, Err: v.Err})
		r.sess.VMs = append(r.sess.VMs, res)
		if err := r.e.Catalog.SaveSessionVM(r.sess.ID, res); err != nil {
			return nil, fmt.Errorf("vm %q: record the result: %w", name, err)
		}
	}
	if len(keys) == 0 && len(refused) == 0 {
		why := "every VM it picks is excluded"
		if len(r.sess.Warnings) > 0 {
			why = strings.Join(r.sess.Warnings, "; ")
		}
		return nil, fmt.Errorf("the job selects no VM at source %s: %s", job.Source.Address(), why)
	}
	return keys, nil
}

// catalogSelection is what the catalog knows of the job's VMs: the key of
// each replica by source VM id, and the selectors of the last run.
func (r *run) catalogSelection() (known map[string]string, last map[string][]string, err error) {
	replicas, err := r.e.Catalog.Replicas(r.job.Name)
	if err != nil {
		return nil, nil, fmt.Errorf("read the job's replicas: %w", err)
	}
	known = map[string]string{}
	for _, rep := range replicas {
		if rep.SourceID != "" {
			known[rep.SourceID] = rep.VM
		}
	}
	if st, err := r.e.Catalog.JobState(r.job.Name); err == nil {
		last = st.Selected
	}
	return known, last, nil
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
