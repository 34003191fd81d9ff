package plan

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/selection"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestDecideJob: the decision about a run as a whole, as both a plan and
// a session make it.
func TestDecideJob(t *testing.T) {
	t.Parallel()
	job := &config.Job{Name: "web", VMs: []string{"web-01", "web-02"},
		Source: &config.PluginBlock{Kind: sdk.KindSource, Type: "local", Name: "prod"},
		Target: &config.PluginBlock{Kind: sdk.KindTarget, Type: "local", Name: "dr"}}
	sel := func(s ...string) []config.Selector {
		var out []config.Selector
		for _, e := range s {
			x, err := config.ParseSelector(e)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
		return out
	}
	selecting := *job
	selecting.VMs, selecting.Selectors, selecting.Exclude = nil, sel("folder:/web", "tag:gold"), sel("web-03")
	listing := []sdk.VM{
		{ID: "vm-1", Name: "web-01", Folder: "/web"}, {ID: "vm-3", Name: "web-03", Folder: "/web"},
		{ID: "vm-5", Name: "app", Folder: "/web"}, {ID: "vm-6", Name: "app", Folder: "/web/b"},
	}
	replicas := []catalog.Replica{{VM: "web-01", ReplicaName: "web-01_r"}, {VM: "old", ReplicaName: "old_r"}, {VM: "web-03", ReplicaName: "web-03_r", SourceID: "vm-3"}}
	down := fmt.Errorf("plugin exited: %w", errdefs.ErrPluginExited)
	tests := []struct {
		name string
		f    JobFacts
		fail string // a part of Fail's message; "" for none
		want string // see summary
	}{
		{name: "a source that cannot be configured fails the run", f: JobFacts{Job: job, SourceErr: down, Replicas: replicas},
			fail: "source source.local.prod: plugin exited"},
		{name: "so does a target", f: JobFacts{Job: job, TargetErr: down},
			fail: "target target.local.dr: plugin exited"},
		{name: "and a source that cannot list its VMs", f: JobFacts{Job: &selecting, SelectionErr: down},
			fail: "source source.local.prod: plugin exited"},
		{name: "and selectors the source cannot answer", f: JobFacts{Job: &selecting,
			Selection: selection.Select(selection.Inputs{Job: &selecting, Listing: listing, TagsErr: fmt.Errorf("no tags: %w", errdefs.ErrUnimplemented)})},
			fail: "cannot answer every selector, so the job's VMs are unknown: tag:gold: no tags: not implemented"},
		{name: "and selectors that pick nothing", f: JobFacts{Job: &selecting,
			Selection: selection.Select(selection.Inputs{Job: &selecting, Tags: []string{"gold"}})},
			fail: "the job selects no VM at source source.local.prod: folder:/web matches no VM"},
		{name: "VMs named one by one, in order", f: JobFacts{Job: job},
			want: "vms web-01,web-02"},
		{name: "settings changed, and replicas of VMs no longer in the job", f: JobFacts{Job: job, Fingerprint: "new",
			Last: &catalog.JobState{Fingerprint: "old"}, Replicas: replicas, Points: map[string]int{"old": 2}},
			want: "changed; vms web-01,web-02; leaving old: no longer in the job; its replica old_r and 2 restore points are kept, not replicated|web-03: no longer in the job; its replica web-03_r and 0 restore points are kept, not replicated"},
		{name: "a job's first run changes no settings", f: JobFacts{Job: job, Fingerprint: "new"},
			want: "vms web-01,web-02"},
		{name: "selectors: picked, new, refused, excluded, empty", f: JobFacts{Job: &selecting, Replicas: replicas,
			Selection: selection.Select(selection.Inputs{Job: &selecting, Listing: listing, Tags: []string{"gold"}, Named: map[string]*sdk.VM{"web-03": &listing[1]}, Known: map[string]string{"vm-1": "web-01", "vm-3": "web-03"}})},
			want: "vms web-01; new none; refused app (id vm-5),app (id vm-6); warnings tag:gold matches no VM at source.local.prod: the tag exists, but no VM carries it; " +
				"leaving old: no longer in the job; its replica old_r and 0 restore points are kept, not replicated|web-03: excluded by web-03; its replica web-03_r and 0 restore points are kept, not replicated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideJob(tt.f)
			if tt.fail != "" {
				if d.Fail == nil || !strings.Contains(d.Fail.Error(), tt.fail) || len(d.VMs)+len(d.Leaving) != 0 || d.SettingsChanged {
					t.Fatalf("decision %+v, want a failure saying %q and nothing else", d, tt.fail)
				}
				if tt.f.SourceErr != nil && !errors.Is(d.Fail, errdefs.ErrPluginExited) {
					t.Fatalf("the failure lost its class: %v", d.Fail)
				}
				return
			}
			if d.Fail != nil {
				t.Fatalf("the run fails: %v", d.Fail)
			}
			if got := summary(d); got != tt.want {
				t.Fatalf("decision\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// summary renders a decision that does not fail as "changed; vms A,B;
// new C; refused D; warnings W; leaving L|L", leaving out empty parts
// (new, refused and warnings only for selecting jobs).
func summary(d JobDecision) string {
	var parts []string
	if d.SettingsChanged {
		parts = append(parts, "changed")
	}
	parts = append(parts, "vms "+strings.Join(d.Keys(), ","))
	var news, refused, leaving []string
	for _, v := range d.VMs {
		if v.New {
			news = append(news, v.Key)
		}
	}
	for _, r := range d.Refused {
		refused = append(refused, r.Name)
	}
	for _, l := range d.Leaving {
		leaving = append(leaving, l.VM+": "+l.What())
	}
	if len(d.Refused) > 0 || len(d.Warnings) > 0 {
		if len(news) == 0 {
			news = []string{"none"}
		}
		parts = append(parts, "new "+strings.Join(news, ","), "refused "+strings.Join(refused, ","), "warnings "+strings.Join(d.Warnings, ","))
	}
	if len(leaving) > 0 {
		parts = append(parts, "leaving "+strings.Join(leaving, "|"))
	}
	return strings.Join(parts, "; ")
}
