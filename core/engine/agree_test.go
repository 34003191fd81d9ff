package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/plan"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// planThenRun plans the fixture's job, runs it, and checks that the run
// did what the plan decided, read from the session: the VMs in order,
// each one's result (the same error for a VM that fails, the same words
// for one skipped), each disk's mode and why, and the restore points
// retention deleted. A disk may differ in one way only: the run learned
// something the plan could not know and fell back, and then the session
// keeps the planned mode beside the one it used. It returns the plan and
// the session for the scenario's own checks.
func (f *fixture) planThenRun() (plan.Plan, *catalog.Session) {
	t := f.t
	t.Helper()
	ctx := context.Background()
	plans, err := f.eng.Plan(ctx, []*config.Job{f.job})
	if err != nil || len(plans) != 1 {
		t.Fatalf("plan: %v", err)
	}
	p := plans[0]
	before := map[string][]string{}
	for _, d := range p.VMs {
		before[d.VM] = pointIDs(f.comps.tgt, d.ReplicaName)
	}
	s, runErr := f.eng.Run(ctx, f.job)
	if s == nil {
		t.Fatalf("run: %v", runErr)
	}
	f.jobAgrees(p.Overall, s, runErr)
	if len(s.VMs) != len(p.VMs)+len(p.Overall.Refused) {
		t.Fatalf("the plan decided about %d VMs, the session ran %d: %+v", len(p.VMs), len(s.VMs), s.VMs)
	}
	for i, r := range p.Overall.Refused {
		if res := s.VMs[i]; res.VM != r.Name || res.Result != catalog.ResultFailed || res.Error != r.Error(f.job.Name) {
			t.Errorf("planned to fail %s (%s); the run: %s %s, %q", r.Name, r.Err, res.VM, res.Result, res.Error)
		}
	}
	for i, d := range p.VMs {
		res := s.VMs[len(p.Overall.Refused)+i]
		if res.VM != d.VM {
			t.Fatalf("VM %d: planned %s, ran %s", i, d.VM, res.VM)
		}
		switch d.Verdict {
		case plan.VerdictFail:
			want := d.Err().Error()
			if res.Result != catalog.ResultFailed || res.Error != want {
				t.Errorf("%s: planned to fail with %q; the run: %s, %q", d.VM, d.Err(), res.Result, res.Error)
			}
			continue
		case plan.VerdictSkip:
			if res.Result != catalog.ResultSkipped || res.Error != d.Skipped() {
				t.Errorf("%s: planned to skip (%q); the run: %s, %q", d.VM, d.Skipped(), res.Result, res.Error)
			}
			continue
		}
		if res.Result != catalog.ResultSuccess && res.Result != catalog.ResultWarning {
			t.Errorf("%s: planned to %s; the run: %s, %q", d.VM, d.Verdict, res.Result, res.Error)
			continue
		}
		var moved []catalog.DiskResult
		for _, dd := range d.Disks {
			i := slices.IndexFunc(res.Disks, func(r catalog.DiskResult) bool { return r.Index == dd.Index })
			if dd.Skip {
				if i >= 0 {
					t.Errorf("%s disk %d: planned to skip (%s); the run moved it", d.VM, dd.Index, dd.Why)
				}
				continue
			}
			if i < 0 {
				t.Errorf("%s disk %d: planned %s; the run did not move it", d.VM, dd.Index, dd.Mode)
				continue
			}
			r := res.Disks[i]
			moved = append(moved, r)
			switch {
			case r.Planned == "" && (r.Mode != dd.Mode || r.Why != dd.Why):
				t.Errorf("%s disk %d: planned %s (%s); the run: %s (%s)", d.VM, dd.Index, dd.Mode, dd.Why, r.Mode, r.Why)
			case r.Planned != "" && (r.Planned != dd.Mode || r.Mode == dd.Mode || r.Why == ""):
				t.Errorf("%s disk %d: planned %s; the run fell back from %s to %s (%s)", d.VM, dd.Index, dd.Mode, r.Planned, r.Mode, r.Why)
			}
		}
		if len(moved) != len(res.Disks) {
			t.Errorf("%s: the run moved disks %+v, the plan decided %+v", d.VM, res.Disks, d.Disks)
		}
		var gone, want []string
		after := pointIDs(f.comps.tgt, d.ReplicaName)
		for _, id := range before[d.VM] {
			if !slices.Contains(after, id) {
				gone = append(gone, id)
			}
		}
		for _, x := range d.Drop {
			want = append(want, x.Point.ID)
		}
		if d.Verdict == plan.VerdictCreate && d.Retire != "" {
			gone = nil // the old replica's points went with it, not by retention
		}
		if !slices.Equal(gone, want) {
			t.Errorf("%s: retention deleted %v, the plan said %v", d.VM, gone, want)
		}
	}
	return p, s
}

// jobAgrees checks that the session did as a whole what the plan
// decided: it failed before any VM with the same error, or it said that
// the job's settings changed, warned as planned, and said of each VM
// leaving the job what the plan says, and of no other.
func (f *fixture) jobAgrees(d plan.JobDecision, s *catalog.Session, runErr error) {
	t := f.t
	t.Helper()
	if d.Fail != nil {
		want := fmt.Sprintf("job %q: %v", f.job.Name, d.Fail)
		if runErr == nil || s.Error != want || len(s.VMs) != 0 {
			t.Fatalf("the plan said the run fails with %q; the run: %v, %q, %d VMs", want, runErr, s.Error, len(s.VMs))
		}
		return
	}
	if runErr != nil {
		t.Fatalf("the plan said the run runs; it failed: %v", runErr)
	}
	said := func(vm, msg string) bool {
		return slices.ContainsFunc(s.Notes, func(n catalog.Note) bool { return n.VM == vm && n.Message == msg })
	}
	if said("", plan.WhySettingsChanged) != d.SettingsChanged {
		t.Errorf("the plan says the settings changed: %v; the session's notes: %+v", d.SettingsChanged, s.Notes)
	}
	if !slices.Equal(s.Warnings, d.Warnings) {
		t.Errorf("the plan warns %q; the session %q", d.Warnings, s.Warnings)
	}
	leaving := 0
	for _, n := range s.Notes {
		if strings.HasSuffix(n.Message, "are kept, not replicated") {
			leaving++
		}
	}
	for _, l := range d.Leaving {
		if !said(l.VM, l.What()) {
			t.Errorf("the plan says %s: %s; the session did not: %+v", l.VM, l.What(), s.Notes)
		}
	}
	if leaving != len(d.Leaving) {
		t.Errorf("the session says %d VMs left the job, the plan %d: %+v", leaving, len(d.Leaving), s.Notes)
	}
}

func pointIDs(tgt *sdktest.MemTarget, replica string) []string {
	r, err := tgt.GetReplica(context.Background(), replica)
	if err != nil {
		return nil
	}
	ps, _ := tgt.ListRestorePoints(context.Background(), r.ID)
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

// verdicts lists what the plan decided of the run as a whole ("fail";
// "settings-changed", "-VM" for each VM leaving the job), then each VM's
// verdict and disk modes, as "web-01:incremental(change-tracking,digest)".
func verdicts(p plan.Plan) string {
	var out []string
	if p.Overall.Fail != nil {
		out = append(out, "fail")
	}
	if p.Overall.SettingsChanged {
		out = append(out, "settings-changed")
	}
	for _, l := range p.Overall.Leaving {
		out = append(out, "-"+l.VM)
	}
	for _, d := range p.VMs {
		s := d.VM + ":" + string(d.Verdict)
		if d.Refusal != "" {
			s += "/" + string(d.Refusal)
		}
		var modes []string
		for _, dd := range d.Disks {
			if dd.Skip {
				modes = append(modes, "skip")
			} else {
				modes = append(modes, string(dd.Mode))
			}
		}
		if len(modes) > 0 {
			s += "(" + strings.Join(modes, ",") + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// TestPlanAndRunAgree: for each scenario, what `ferry plan` decides is
// what the next run does.
func TestPlanAndRunAgree(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// setup prepares the scenario; the fixture's job names web-01.
		setup func(f *fixture)
		want  string // the plan's verdicts, see verdicts
	}{
		{"a first run", func(f *fixture) {}, "web-01:create(full,full)"},
		{"an incremental run", func(f *fixture) {
			f.run()
			f.write("web-01", 0, 1)
		}, "web-01:incremental(change-tracking,change-tracking)"},
		{"a source without change tracking", func(f *fixture) {
			f.comps.caps = &sdk.Capabilities{}
			f.run()
			f.write("web-01", 0, 1)
		}, "web-01:incremental(digest,digest)"},
		{"retention", func(f *fixture) {
			f.job.Retention.RestorePoints = 2
			f.run()
			f.run()
			f.run()
		}, "web-01:incremental(change-tracking,change-tracking)"},
		{"change tracking reset after the plan", func(f *fixture) {
			f.run()
			f.write("web-01", 1, 1)
			// The plan cannot know: the source says so only when asked
			// for the changes since the point's change id.
			f.comps.src.ResetChangeTracking("web-01", 1)
		}, "web-01:incremental(change-tracking,change-tracking)"},
		{"an independent disk", func(f *fixture) {
			f.comps.src = sdktest.NewMemSource(sdk.VM{Name: "web-01", Disks: []sdk.Disk{{Capacity: diskSize}, {Capacity: diskSize / 2, Independent: true}}})
			f.run()
		}, "web-01:incremental(change-tracking,skip)"},
		{"a failed over replica", func(f *fixture) {
			f.run()
			if _, err := f.comps.tgt.Failover(ctx, sdk.FailoverRequest{Replica: "web-01_replica"}); err != nil {
				f.t.Fatal(err)
			}
		}, "web-01:skip"},
		{"a committed replica", func(f *fixture) {
			f.run()
			rec, err := f.cat.Replica("web", "web-01")
			if err != nil {
				f.t.Fatal(err)
			}
			rec.State = sdk.ReplicaCommitted
			if err := f.cat.PutReplica(rec); err != nil {
				f.t.Fatal(err)
			}
		}, "web-01:fail/committed"},
		{"a replica deleted at the target", func(f *fixture) {
			f.run()
			if err := f.comps.tgt.DeleteReplica(ctx, "web-01_replica"); err != nil {
				f.t.Fatal(err)
			}
		}, "web-01:create(full,full)"},
		{"a replica replaced at the target", func(f *fixture) {
			f.run()
			old, _ := f.comps.tgt.GetReplica(ctx, "web-01_replica")
			f.comps.tgt.DeleteReplica(ctx, old.ID)
			vm, _ := f.comps.src.DescribeVM(ctx, "web-01")
			other, err := f.comps.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01_replica", VM: *vm, Owner: old.Owner})
			if err != nil {
				f.t.Fatal(err)
			}
			// Its point is labelled as this job's, change ids and all:
			// still not the replica the catalog knows, so compared whole.
			f.comps.tgt.CreateRestorePoint(ctx, other.ID, map[string]string{LabelJob: "web", LabelVM: "web-01", LabelSession: "elsewhere",
				labelChangeID(0): "x", labelChangeID(1): "y"})
		}, "web-01:incremental(digest,digest)"},
		{"a replica the catalog lost", func(f *fixture) {
			f.run()
			f.run()
			cat, err := catalog.Open(f.t.TempDir()+"/catalog.db", catalog.Options{})
			if err != nil {
				f.t.Fatal(err)
			}
			f.t.Cleanup(func() { cat.Close() })
			f.cat, f.eng.Catalog = cat, cat
		}, "web-01:incremental(change-tracking,change-tracking)"},
		{"another job's replica", func(f *fixture) {
			vm, _ := f.comps.src.DescribeVM(ctx, "web-01")
			f.comps.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01_replica", VM: *vm, Owner: sdk.ReplicaOwner{Job: "shop", Source: "source.mem.shop", SourceVM: vm.ID}})
		}, "web-01:fail/other-owner"},
		{"a replica without owner of another job", func(f *fixture) {
			vm, _ := f.comps.src.DescribeVM(ctx, "web-01")
			legacy, _ := f.comps.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01_replica", VM: *vm})
			f.comps.tgt.CreateRestorePoint(ctx, legacy.ID, map[string]string{LabelJob: "shop", LabelVM: "web-01"})
		}, "web-01:fail/other-jobs-point"},
		{"a replica without owner of this job", func(f *fixture) {
			vm, _ := f.comps.src.DescribeVM(ctx, "web-01")
			legacy, _ := f.comps.tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "web-01_replica", VM: *vm})
			f.comps.tgt.CreateRestorePoint(ctx, legacy.ID, map[string]string{LabelJob: "web", LabelVM: "web-01"})
		}, "web-01:incremental(digest,digest)"},
		{"a VM the source does not have, and one named twice", func(f *fixture) {
			f.comps.src = sdktest.NewMemSource(sdk.VM{ID: "vm-17", Name: "web-01", Disks: []sdk.Disk{{Capacity: diskSize}}})
			f.job.VMs = []string{"web-01", "ghost", "vm-17"}
		}, "web-01:create(full) ghost:fail/source-missing vm-17:fail/same-vm"},
		{"a VM that left the job, with changed settings", func(f *fixture) {
			disks := []sdk.Disk{{Capacity: diskSize}, {Capacity: diskSize / 2}}
			f.comps.src = sdktest.NewMemSource(sdk.VM{Name: "web-01", Disks: disks}, sdk.VM{Name: "web-02", Disks: disks})
			f.job.VMs = []string{"web-01", "web-02"}
			f.run()
			f.job.VMs = []string{"web-01"}
		}, "settings-changed -web-02 web-01:incremental(change-tracking,change-tracking)"},
		{"a source that cannot be configured", func(f *fixture) {
			f.run()
			f.comps.srcErr = fmt.Errorf("plugin ferry-plugin-mem: %w", errdefs.ErrPluginExited)
		}, "fail"},
		{"selectors the source cannot answer", func(f *fixture) {
			f.run()
			tag, _ := config.ParseSelector("tag:tier/gold")
			f.job.Selectors = []config.Selector{tag}
			f.comps.source = noTags{f.comps.src}
		}, "fail"},
		{"selectors that pick a VM, and one that leaves", func(f *fixture) {
			disks := []sdk.Disk{{Capacity: diskSize}}
			f.comps.src = sdktest.NewMemSource(sdk.VM{Name: "web-01", Folder: "/Prod/vm/web", Disks: disks}, sdk.VM{Name: "db-01", Folder: "/Prod/vm/web", Disks: disks})
			f.run()
			folder, _ := config.ParseSelector("folder:/Prod/vm/web")
			web, _ := config.ParseSelector("web-01")
			f.job.VMs, f.job.Selectors, f.job.Exclude = nil, []config.Selector{folder}, []config.Selector{web}
		}, "settings-changed -web-01 db-01:create(full)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, "web-01")
			f.write("web-01", 0, 5)
			tt.setup(f)
			p, s := f.planThenRun()
			if got := verdicts(p); got != tt.want {
				t.Fatalf("the plan decided %s, want %s", got, tt.want)
			}
			if tt.name == "change tracking reset after the plan" {
				d := s.VMs[0].Disks[1]
				if d.Planned != catalog.ModeChangeTracking || d.Mode != catalog.ModeDigest || d.Why != plan.WhyTrackingReset {
					t.Fatalf("the fallback is not recorded: %+v", d)
				}
			}
			if tt.name == "retention" && len(p.VMs[0].Drop) != 1 {
				t.Fatalf("retention drops %+v, want the oldest point", p.VMs[0].Drop)
			}
		})
	}
}

// TestPlanAndRunPlaceAlike: the proxies a plan says would move a job's
// disks are those the run moves them with: the plan places a task made as
// the run makes its tasks, for the first VM the run copies (not the first
// the job names, which the run may not copy), by the pool's rule.
func TestPlanAndRunPlaceAlike(t *testing.T) {
	f := newFixture(t, "web-01")
	ts := f.twoSites()
	// p-direct, at the source's site too, reads web-01's disks from its
	// storage directly, and cannot reach those of other VMs.
	direct, a, _ := f.startAgent(ts.ca, "p-direct", "prod")
	a.Plugins = f.memPluginsWith(func(src sdk.Source) sdk.Source {
		return reachOnly{Source: src, vm: "web-01"}
	}, "")
	control, err := pki.Load(filepath.Join(ts.ca, "control"))
	if err != nil {
		t.Fatal(err)
	}
	pool := proxy.NewPool(append(ts.members, direct), control, "test", nil)
	defer pool.Close()
	f.eng.Proxies = pool
	f.job.VMs = []string{"ghost", "web-01"}
	f.write("web-01", 0, 5)
	p, s := f.planThenRun()
	x := p.Proxies
	if x == nil || x.Error != "" || x.Source != "p-direct" || x.Target != "p-dst" {
		t.Fatalf("the plan's proxies: %+v, want p-direct to p-dst", x)
	}
	if got := proxiesOf(s); got != "p-direct>p-dst,p-direct>p-dst" {
		t.Fatalf("the plan places the disks on p-direct>p-dst, the run moved them %s", got)
	}
}

// reachOnly is a source that reads the disks of one VM from its storage
// directly, and cannot reach any other's.
type reachOnly struct {
	sdk.Source
	vm string
}

func (r reachOnly) ProbeTransport(_ context.Context, vm string, _ int) (string, string, error) {
	if vm == r.vm {
		return sdk.TransportDirect, "the datastore is mounted here", nil
	}
	return "", "the datastore of " + vm + " is not mounted here", nil
}
