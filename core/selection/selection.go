package selection

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Source is what Resolve asks of a job's source. A source that also
// implements sdk.TagLister is asked for its tags when a tag selector needs
// them.
type Source interface {
	ListVMs(ctx context.Context) ([]sdk.VM, error)
	DescribeVM(ctx context.Context, vm string) (*sdk.VM, error)
}

// Inputs are what Select decides from.
type Inputs struct {
	Job *config.Job
	// Named is what the source says of each VM the job names one by one
	// (in vms and in exclude), by the entry as written; NamedErrors says
	// why an entry is missing.
	Named       map[string]*sdk.VM
	NamedErrors map[string]error
	// Listing is every VM the source lists: what folder and tag selectors
	// pick from.
	Listing []sdk.VM
	// Tags are every tag the source knows (sdk.TagLister), for telling a
	// tag nobody carries from one that does not exist; TagsErr says why
	// the source cannot answer, which leaves tag selectors unanswerable.
	Tags    []string
	TagsErr error
	// Known maps the source id of each VM the catalog holds a replica of
	// for this job to the key the replica is recorded under.
	Known map[string]string
	// Last holds, by key, the selectors that picked each VM at the job's
	// last run (catalog.JobState.Selected).
	Last map[string][]string
}

// VM is a VM a run replicates.
type VM struct {
	// Key names the VM in the job, the catalog and its replica's name.
	Key string
	// Ref names the VM to the source: the entry as written for a VM named
	// one by one, the VM's id for one a selector picked.
	Ref string
	// VM is what the source said of it; nil when the source could not
	// describe a VM named one by one, or was not asked (a job without
	// selectors). Missing says why the source could not.
	VM      *sdk.VM
	Missing error
	// Named is set for a VM the job names one by one in vms.
	Named bool
	// By lists the selectors that picked it, as written; empty for a VM
	// named one by one and picked by nothing else.
	By []string
	// New is set for a VM a selector picked that has no replica in the
	// catalog yet: the run creates one.
	New bool
	// Err says why the VM cannot be replicated (it would share its key,
	// and so its replica, with another VM); nil normally.
	Err error
}

// Match is what one selector of vms, or one entry of exclude, matched.
type Match struct {
	Selector config.Selector
	Exclude  bool
	// VMs are the keys of the VMs it matched, sorted.
	VMs []string
	// Err says why the source cannot answer it (a tag selector on a
	// source without tags); the VMs it would match are unknown.
	Err error
	// Why explains a selector that matched nothing, with a close folder
	// or tag the source has when there is one.
	Why string
}

// Excluded is a VM the job would replicate but excludes.
type Excluded struct {
	Key string
	By  []string // the exclude entries that matched it
}

// Left is a VM the catalog holds a replica of that the job no longer
// picks: its replica and restore points are kept, not replicated.
type Left struct {
	Key string
	By  []string // the selectors that picked it at the last run; nil when unknown
}

// Result is the VMs a run replicates and how they were found.
type Result struct {
	// VMs are the VMs to replicate: those named one by one in the order
	// of vms, then those selectors picked, by key.
	VMs      []VM
	Matches  []Match // the folder and tag selectors of vms in order, then exclude's entries
	Excluded []Excluded
	Left     []Left
	// Notes are things worth telling that change nothing, such as two
	// entries of vms that name the same VM.
	Notes []string
}

// Problems are the selectors that leave the run unsure of its VMs: those
// the source cannot answer. A run must not go on with them.
func (r *Result) Problems() error {
	var errs []error
	for _, m := range r.Matches {
		if m.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Selector, m.Err))
		}
	}
	return errors.Join(errs...)
}

// Empty are the selectors of vms that matched no VM.
func (r *Result) Empty() []Match {
	var out []Match
	for _, m := range r.Matches {
		if !m.Exclude && m.Err == nil && len(m.VMs) == 0 {
			out = append(out, m)
		}
	}
	return out
}

// Resolve asks the source what Select needs and selects. Without folder
// or tag selectors and without exclusions it asks nothing: the job's VMs
// are its vms as written. An error means the source could not list its
// VMs; a selector it cannot answer is in the result (Result.Problems).
func Resolve(ctx context.Context, src Source, job *config.Job, known map[string]string, last map[string][]string) (*Result, error) {
	in := Inputs{Job: job, Named: map[string]*sdk.VM{}, NamedErrors: map[string]error{}, Known: known, Last: last}
	if !job.Selects() {
		return Select(in), nil
	}
	describe := func(entry string) {
		if _, done := in.Named[entry]; done {
			return
		}
		vm, err := src.DescribeVM(ctx, entry)
		if err != nil {
			in.NamedErrors[entry] = err
			return
		}
		in.Named[entry] = vm
	}
	for _, e := range job.VMs {
		describe(e)
	}
	list, tags := false, false
	for _, s := range slices.Concat(job.Selectors, job.Exclude) {
		switch s.Kind {
		case config.SelectVM:
			describe(s.Value)
		case config.SelectTag:
			list, tags = true, true
		case config.SelectFolder:
			list = true
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if list {
		vms, err := src.ListVMs(ctx)
		if err != nil {
			return nil, fmt.Errorf("list the VMs of the source: %w", err)
		}
		in.Listing = vms
	}
	if tags {
		if tl, ok := src.(sdk.TagLister); ok {
			in.Tags, in.TagsErr = tl.ListTags(ctx)
		} else {
			in.TagsErr = fmt.Errorf("the source does not list tags: %w", errdefs.ErrUnimplemented)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return Select(in), nil
}

// Select works out the VMs of a run. See the package documentation for
// the rules.
func Select(in Inputs) *Result {
	s := &selector{in: in, res: &Result{}, chosen: map[string]int{}, namedKey: map[string]string{}, excluded: map[string][]string{}}
	s.named()
	s.exclude()
	s.pick()
	s.conflicts()
	s.left()
	return s.res
}

// selector is the state of one Select.
type selector struct {
	in       Inputs
	res      *Result
	listing  []sdk.VM            // in.Listing by name, then id
	chosen   map[string]int      // VM id -> index in res.VMs
	namedKey map[string]string   // VM id -> the vms entry that names it
	excluded map[string][]string // VM id -> the exclude entries that match it
}

// key is the key a VM gets: the entry that names it, its replica's key
// in the catalog, or its name.
func (s *selector) key(vm *sdk.VM) string {
	if k, ok := s.namedKey[vm.ID]; ok {
		return k
	}
	if k, ok := s.in.Known[vm.ID]; ok {
		return k
	}
	return vm.Name
}

// named takes the VMs the job names one by one.
func (s *selector) named() {
	for _, e := range s.in.Job.VMs {
		vm := s.in.Named[e]
		if vm != nil {
			if first, dup := s.namedKey[vm.ID]; dup {
				s.res.Notes = append(s.res.Notes, fmt.Sprintf("%q and %q name the same VM (id %s); it is replicated once, as %q", first, e, vm.ID, first))
				continue
			}
			s.namedKey[vm.ID] = e
			s.chosen[vm.ID] = len(s.res.VMs)
		}
		s.res.VMs = append(s.res.VMs, VM{Key: e, Ref: e, VM: vm, Missing: s.in.NamedErrors[e], Named: true})
	}
	s.listing = slices.Clone(s.in.Listing)
	slices.SortFunc(s.listing, func(a, b sdk.VM) int { return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID)) })
}

// exclude finds the VMs of exclude's entries.
func (s *selector) exclude() {
	for _, x := range s.in.Job.Exclude {
		m := Match{Selector: x, Exclude: true}
		switch {
		case x.Kind == config.SelectVM:
			if vm := s.in.Named[x.Value]; vm != nil {
				s.excluded[vm.ID] = append(s.excluded[vm.ID], x.String())
				m.VMs = []string{s.key(vm)}
			} else if err := s.in.NamedErrors[x.Value]; err != nil && !errors.Is(err, errdefs.ErrNotFound) {
				m.Err = fmt.Errorf("the source cannot say which VM it is: %w", err)
			} else {
				m.Why = "the source has no such VM"
			}
		case x.Kind == config.SelectTag && s.in.TagsErr != nil:
			m.Err = s.in.TagsErr
		default:
			for i := range s.listing {
				vm := &s.listing[i]
				if x.Matches(vm.Folder, vm.Tags) {
					s.excluded[vm.ID] = append(s.excluded[vm.ID], x.String())
					m.VMs = append(m.VMs, s.key(vm))
				}
			}
			if len(m.VMs) == 0 {
				m.Why = s.why(x)
			}
		}
		slices.Sort(m.VMs)
		s.res.Matches = append(s.res.Matches, m)
	}
}

// pick drops the excluded VMs named one by one and adds those the folder
// and tag selectors pick.
func (s *selector) pick() {
	excluded := map[string]bool{} // by VM id
	addExcluded := func(key, id string) {
		if !excluded[id] {
			excluded[id] = true
			s.res.Excluded = append(s.res.Excluded, Excluded{Key: key, By: s.excluded[id]})
		}
	}
	kept := s.res.VMs[:0]
	for _, v := range s.res.VMs {
		if v.VM != nil && s.excluded[v.VM.ID] != nil {
			addExcluded(v.Key, v.VM.ID)
			delete(s.chosen, v.VM.ID)
			continue
		}
		kept = append(kept, v)
	}
	s.res.VMs = kept
	s.chosen = map[string]int{}
	for i, v := range s.res.VMs {
		if v.VM != nil {
			s.chosen[v.VM.ID] = i
		}
	}

	var matches []Match
	var picked []VM
	for _, sel := range s.in.Job.Selectors {
		m := Match{Selector: sel}
		if sel.Kind == config.SelectTag && s.in.TagsErr != nil {
			m.Err = s.in.TagsErr
			matches = append(matches, m)
			continue
		}
		for i := range s.listing {
			vm := &s.listing[i]
			if !sel.Matches(vm.Folder, vm.Tags) {
				continue
			}
			key := s.key(vm)
			m.VMs = append(m.VMs, key)
			switch i, ok := s.chosen[vm.ID]; {
			case s.excluded[vm.ID] != nil:
				addExcluded(key, vm.ID)
			case ok && i < len(s.res.VMs):
				s.res.VMs[i].By = append(s.res.VMs[i].By, sel.String())
			case ok:
				picked[i-len(s.res.VMs)].By = append(picked[i-len(s.res.VMs)].By, sel.String())
			default:
				_, known := s.in.Known[vm.ID]
				s.chosen[vm.ID] = len(s.res.VMs) + len(picked)
				copied := *vm
				picked = append(picked, VM{Key: key, Ref: vm.ID, VM: &copied, By: []string{sel.String()}, New: !known})
			}
		}
		if len(m.VMs) == 0 {
			m.Why = s.why(sel)
		}
		slices.Sort(m.VMs)
		matches = append(matches, m)
	}
	slices.SortStableFunc(picked, func(a, b VM) int { return cmp.Compare(a.Key, b.Key) })
	s.res.VMs = append(s.res.VMs, picked...)
	for i, v := range s.res.VMs {
		if v.VM != nil {
			s.chosen[v.VM.ID] = i
		}
	}
	s.res.Matches = append(matches, s.res.Matches...)
	slices.SortFunc(s.res.Excluded, func(a, b Excluded) int { return cmp.Compare(a.Key, b.Key) })
}

// conflicts refuses VMs that would share a key, and so a replica, with
// another VM. The key stays with the VM named one by one, else with the VM
// whose replica the catalog keeps under it; the others are refused. A
// picked VM is also refused the key of another VM's replica in the
// catalog: its restore points would mix with that VM's.
func (s *selector) conflicts() {
	owner := map[string]string{} // key -> source id of the replica the catalog has under it
	for id, key := range s.in.Known {
		owner[key] = id
	}
	byKey := map[string][]int{}
	for i, v := range s.res.VMs {
		byKey[v.Key] = append(byKey[v.Key], i)
	}
	for key, idx := range byKey {
		if len(idx) < 2 {
			continue
		}
		keeper := -1
		for _, i := range idx {
			if v := s.res.VMs[i]; v.Named || (keeper < 0 && owner[key] == v.VM.ID) {
				keeper = i
			}
		}
		var others []string
		for _, i := range idx {
			if v := s.res.VMs[i]; i != keeper {
				others = append(others, describe(v.VM))
			}
		}
		why := fmt.Sprintf("%d VMs would be replicated as %q (%s): their replicas would share a name", len(idx), key, strings.Join(others, ", "))
		if keeper >= 0 {
			k := s.res.VMs[keeper]
			how := "is named so in vms"
			if !k.Named {
				how = "has its replica in the catalog"
			}
			why = fmt.Sprintf("another VM, %s, is replicated as %q (it %s); their replicas would share a name", describeOr(k.VM, k.Key), key, how)
		}
		for _, i := range idx {
			if i != keeper {
				s.res.VMs[i].Err = fmt.Errorf("%s; exclude all but one, or name the one to replicate by its inventory path or id in vms", why)
			}
		}
	}
	for i := range s.res.VMs {
		v := &s.res.VMs[i]
		if v.Err != nil || v.Named {
			continue
		}
		if id, taken := owner[v.Key]; taken && id != v.VM.ID {
			v.Err = fmt.Errorf("it is named %q like the VM (id %s) whose replica the catalog keeps for this job, which would take its restore points; rename one of them, or exclude this one", v.Key, id)
		}
	}
}

// describeOr names a VM with its id and folder, or by key when the
// source could not describe it.
func describeOr(vm *sdk.VM, key string) string {
	if vm == nil {
		return fmt.Sprintf("%q", key)
	}
	return describe(vm)
}

// describe names a VM with its id and folder.
func describe(vm *sdk.VM) string {
	if vm.Folder != "" {
		return fmt.Sprintf("id %s in %s", vm.ID, vm.Folder)
	}
	return "id " + vm.ID
}

// left lists the VMs the catalog has replicas of that the run does not
// replicate and does not exclude.
func (s *selector) left() {
	keys := map[string]bool{} // of the VMs replicated or excluded
	for _, v := range s.res.VMs {
		if v.Err == nil {
			keys[v.Key] = true
		}
	}
	for _, x := range s.res.Excluded {
		keys[x.Key] = true
	}
	for id, key := range s.in.Known {
		if i, chosen := s.chosen[id]; (chosen && s.res.VMs[i].Err == nil) || keys[key] {
			continue
		}
		s.res.Left = append(s.res.Left, Left{Key: key, By: s.in.Last[key]})
	}
	slices.SortFunc(s.res.Left, func(a, b Left) int { return cmp.Compare(a.Key, b.Key) })
}

// why explains a folder or tag selector that matched nothing.
func (s *selector) why(sel config.Selector) string {
	if len(s.listing) == 0 {
		return "the source lists no VMs"
	}
	switch sel.Kind {
	case config.SelectFolder:
		var folders []string
		seen := map[string]bool{}
		for _, vm := range s.listing {
			for f := vm.Folder; f != "" && f != "/" && !seen[f]; f = parent(f) {
				seen[f] = true
				folders = append(folders, f)
			}
		}
		if len(folders) == 0 {
			return "the source reports no folders"
		}
		slices.Sort(folders)
		return "no VM is in that folder or below it" + didYouMean("folder:", sel.Value, folders)
	case config.SelectTag:
		cat, name := sel.TagCategory()
		var candidates []string
		for _, t := range s.in.Tags {
			c, n, ok := strings.Cut(t, "/")
			if (cat != "" && t == sel.Value) || (cat == "" && ((ok && n == name) || (!ok && t == name))) {
				return "the tag exists, but no VM carries it"
			}
			switch {
			case cat != "":
				candidates = append(candidates, t)
			case ok:
				candidates = append(candidates, n)
			default:
				candidates = append(candidates, c)
			}
		}
		return "the source has no such tag" + didYouMean("tag:", sel.Value, candidates)
	}
	return ""
}

func parent(folder string) string {
	i := strings.LastIndex(folder, "/")
	if i <= 0 {
		return ""
	}
	return folder[:i]
}

func didYouMean(prefix, given string, candidates []string) string {
	if s := config.Suggest(given, candidates); s != "" {
		return "; did you mean " + prefix + s + "?"
	}
	return ""
}
