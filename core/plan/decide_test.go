package plan

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// point is a restore point of job web's VM web-01 whose disks recorded the
// given change ids ("" for none).
func point(id string, minute int, changeIDs ...string) Point {
	p := Point{Job: "web", VM: "web-01", ID: id, Created: time.Date(2026, 11, 20, 2, minute, 0, 0, time.UTC)}
	for i, c := range changeIDs {
		p.Disks = append(p.Disks, catalog.PointDisk{Index: i, ChangeID: c})
	}
	return p
}

// modesOf renders the disks of a decision as "mode(why)" per disk, "skip"
// for a skipped one.
func modesOf(d Decision) string {
	var out []string
	for _, dd := range d.Disks {
		s := string(dd.Mode)
		switch {
		case dd.Skip:
			s = "skip"
		case dd.Mode == "":
			s = "?"
		case dd.Mode == catalog.ModeChangeTracking:
			s += "@" + dd.Since
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}

func dropsOf(d Decision) string {
	var out []string
	for _, x := range d.Drop {
		out = append(out, x.Point.ID)
	}
	return strings.Join(out, ",")
}

// TestDecide: the decision about one VM, from what the catalog, the source
// and the target say, as both a plan and a run make it.
func TestDecide(t *testing.T) {
	t.Parallel()
	job := &config.Job{
		Name:          "web",
		Source:        &config.PluginBlock{Kind: sdk.KindSource, Type: "local", Name: "prod"},
		Target:        &config.PluginBlock{Kind: sdk.KindTarget, Type: "local", Name: "dr"},
		ReplicaSuffix: "_replica",
		Retention:     config.Retention{RestorePoints: 2},
	}
	copying := *job
	copying.CopyIndependentDisks = true
	mapping := *job
	mapping.ReplicaMappings = []config.ReplicaMapping{{VM: "web-01", Replica: "web-restored"}}
	tracks, blind := &sdk.Capabilities{ChangeTracking: true}, &sdk.Capabilities{}
	web := &sdk.VM{ID: "vm-1", Name: "web-01", Disks: []sdk.Disk{{Index: 0, Capacity: 8 << 20}, {Index: 1, Capacity: 4 << 20}}}
	indep := &sdk.VM{ID: "vm-1", Name: "web-01", Disks: []sdk.Disk{{Index: 0, Capacity: 8 << 20}, {Index: 1, Capacity: 4 << 20, Independent: true}}}
	grown := &sdk.VM{ID: "vm-1", Name: "web-01", Disks: []sdk.Disk{{Index: 0, Capacity: 16 << 20}, {Index: 1, Capacity: 4 << 20}, {Index: 2, Capacity: 1 << 20}}}
	owner := sdk.ReplicaOwner{Job: "web", Source: "source.local.prod", SourceVM: "vm-1"}
	record := func(state sdk.ReplicaState) *catalog.Replica {
		r := &catalog.Replica{Job: "web", VM: "web-01", ReplicaID: "r1", ReplicaName: "web-01_replica", State: state,
			Disks: []catalog.ReplicaDisk{{Index: 0, Capacity: 8 << 20}, {Index: 1, Capacity: 4 << 20}}}
		if state == sdk.ReplicaFailedOver {
			r.FailoverPoint = "p1"
		}
		return r
	}
	replica := func(id string, state sdk.ReplicaState, o sdk.ReplicaOwner) *sdk.Replica {
		r := &sdk.Replica{ID: id, Name: "web-01_replica", State: state, Owner: o}
		if state == sdk.ReplicaFailedOver {
			r.FailoverPoint = "p1"
		}
		return r
	}
	tracked := []Point{point("p1", 1, "c1", "d1"), point("p2", 2, "c2", "d2")}
	three := []Point{point("p0", 0, "c0", "d0"), point("p1", 1, "c1", "d1"), point("p2", 2, "c2", "d2")}
	shop := point("s1", 3, "c3", "d3")
	shop.Job = "shop"

	tests := []struct {
		name     string
		f        Facts
		verdict  Verdict
		refusal  Refusal
		class    error  // of Err, for a refusal
		modes    string // see modesOf
		whys     string // each disk's Why, joined by "|"
		drop     string
		retire   string // a part of Retire
		adopt    bool
		takeOver bool
		mapped   string // the replica a mapping makes
	}{
		{name: "a first run creates the replica and fills it", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks},
			verdict: VerdictCreate, modes: "full,full", whys: "|"},
		{name: "an incremental run tracks changes since the newest point", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), Points: tracked},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2", whys: "|", drop: "p1"},
		{name: "a source without tracking compares digests", f: Facts{Job: job, Key: "web-01", VM: web, Caps: blind, Record: record(sdk.ReplicaReady), Points: tracked[:1]},
			verdict: VerdictIncremental, modes: "digest,digest", whys: "the source does not track changes|the source does not track changes"},
		{name: "a disk without a change id compares digests", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), Points: []Point{point("p1", 1, "c1", "")}},
			verdict: VerdictIncremental, modes: "change-tracking@c1,digest", whys: "|the last restore point has no change id for it (tracking was off then, or the disk is new)"},
		{name: "unknown capabilities leave the modes undecided", f: Facts{Job: job, Key: "web-01", VM: web, Record: record(sdk.ReplicaReady), Points: tracked},
			verdict: VerdictIncremental, modes: "?,?", whys: "|", drop: "p1"},
		{name: "retention drops the oldest beyond the policy", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), Points: three},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2", whys: "|", drop: "p0,p1"},
		{name: "an independent disk is skipped", f: Facts{Job: job, Key: "web-01", VM: indep, Caps: tracks, Record: record(sdk.ReplicaReady), Points: tracked[1:]},
			verdict: VerdictIncremental, modes: "change-tracking@c2,skip", whys: "|" + WhyIndependent},
		{name: "an independent disk is copied when the job asks", f: Facts{Job: &copying, Key: "web-01", VM: indep, Caps: tracks, Record: record(sdk.ReplicaReady), Points: tracked[1:]},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2", whys: "|"},
		{name: "grown and new disks", f: Facts{Job: job, Key: "web-01", VM: grown, Caps: tracks, Record: record(sdk.ReplicaReady), Points: tracked[1:]},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2,digest", whys: "||the last restore point has no change id for it (tracking was off then, or the disk is new)"},
		{name: "a replica without restore points is compared whole", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), TargetAsked: true, Replica: replica("r1", sdk.ReplicaReady, owner), Owner: owner},
			verdict: VerdictIncremental, modes: "full,full", whys: WhyNoRestorePoint + "|" + WhyNoRestorePoint},
		{name: "a committed replica fails the run even when the source lost the VM", f: Facts{Job: job, Key: "web-01", Record: record(sdk.ReplicaCommitted)},
			verdict: VerdictFail, refusal: RefusedCommitted, class: errdefs.ErrFailedPrecondition},
		{name: "a VM the source does not have", f: Facts{Job: job, Key: "web-01"},
			verdict: VerdictFail, refusal: RefusedSourceMissing, class: errdefs.ErrNotFound},
		{name: "a source that cannot be asked", f: Facts{Job: job, Key: "web-01", SourceErr: fmt.Errorf("down: %w", errdefs.ErrUnavailable)},
			verdict: VerdictFail, refusal: RefusedSourceMissing, class: errdefs.ErrUnavailable},
		{name: "a second entry naming the same VM", f: Facts{Job: job, Key: "vm-1", VM: web, SameAs: "web-01"},
			verdict: VerdictFail, refusal: RefusedSameVM, class: errdefs.ErrInvalidArgument},
		{name: "the catalog's word on a failed over replica", f: Facts{Job: job, Key: "web-01", VM: web, Record: record(sdk.ReplicaFailedOver)},
			verdict: VerdictSkip},
		{name: "the target's word on a failed over replica", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), TargetAsked: true, Replica: replica("r1", sdk.ReplicaFailedOver, owner), Owner: owner, Points: tracked},
			verdict: VerdictSkip},
		{name: "the target's word on an undone failover", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaFailedOver), TargetAsked: true, Replica: replica("r1", sdk.ReplicaReady, owner), Owner: owner, Points: tracked},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2", whys: "|", drop: "p1"},
		{name: "a replica in a state runs do not write", f: Facts{Job: job, Key: "web-01", VM: web, Record: record(sdk.ReplicaReady), TargetAsked: true, Replica: replica("r1", "testing", owner), Owner: owner},
			verdict: VerdictFail, refusal: RefusedNotReady, class: errdefs.ErrFailedPrecondition},
		{name: "a replica gone from the target is retired and made anew", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), TargetAsked: true, Owner: owner},
			verdict: VerdictCreate, modes: "full,full", whys: "|", retire: "is gone from target.local.dr"},
		{name: "a replaced replica is retired and compared whole", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), TargetAsked: true, Replica: replica("r2", sdk.ReplicaReady, owner), Owner: owner, Points: tracked},
			verdict: VerdictIncremental, modes: "digest,digest", whys: WhyNotTheReplica + "|" + WhyNotTheReplica, retire: "was replaced by another VM of its name (id r2)", drop: "p1"},
		{name: "another job's replica", f: Facts{Job: job, Key: "web-01", VM: web, TargetAsked: true, Replica: replica("r1", sdk.ReplicaReady, sdk.ReplicaOwner{Job: "shop", Source: "source.local.shop", SourceVM: "vm-9"}), Owner: owner},
			verdict: VerdictFail, refusal: RefusedOtherOwner, class: errdefs.ErrFailedPrecondition},
		{name: "a replica without owner holding another job's point", f: Facts{Job: job, Key: "web-01", VM: web, TargetAsked: true, Replica: replica("r1", sdk.ReplicaReady, sdk.ReplicaOwner{}), Owner: owner, Points: []Point{tracked[0], shop}},
			verdict: VerdictFail, refusal: RefusedOtherJobsPoint, class: errdefs.ErrFailedPrecondition},
		{name: "a replica without owner holding this job's points is adopted", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, Record: record(sdk.ReplicaReady), TargetAsked: true, Replica: replica("r1", sdk.ReplicaReady, sdk.ReplicaOwner{}), Owner: owner, Points: tracked[1:]},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2", whys: "|", adopt: true},
		{name: "a first run maps the replica onto the VM the job names and compares every block", f: Facts{Job: &mapping, Key: "web-01", VM: web, Caps: tracks, TargetAsked: true},
			verdict: VerdictCreate, modes: "digest,digest", whys: WhyMapped + "|" + WhyMapped, mapped: "web-restored"},
		{name: "a mapped replica made runs incrementals", f: Facts{Job: &mapping, Key: "web-01", VM: web, Caps: tracks, TargetAsked: true, Replica: replica("r1", sdk.ReplicaReady, owner), Owner: owner, Record: record(sdk.ReplicaReady), Points: tracked},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2", whys: "|", drop: "p1"},
		{name: "a replica the catalog lost is taken over", f: Facts{Job: job, Key: "web-01", VM: web, Caps: tracks, TargetAsked: true, Replica: replica("r1", sdk.ReplicaReady, owner), Owner: owner, Points: three},
			verdict: VerdictIncremental, modes: "change-tracking@c2,change-tracking@d2", whys: "|", drop: "p0,p1", takeOver: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.f)
			if d.Verdict != tt.verdict || d.Refusal != tt.refusal {
				t.Fatalf("verdict %s (%s), want %s (%s)", d.Verdict, d.Refusal, tt.verdict, tt.refusal)
			}
			err := d.Err()
			if (err != nil) != (tt.verdict == VerdictFail) || (tt.class != nil && !errors.Is(err, tt.class)) {
				t.Fatalf("Err() = %v, want one of class %v", err, tt.class)
			}
			if err != nil && !strings.Contains(err.Error(), `job "web" vm "`+tt.f.Key+`"`) {
				t.Fatalf("Err() = %v does not name the job and the VM", err)
			}
			if d.Verdict == VerdictSkip && !strings.Contains(d.Skipped(), "is failed over (to restore point p1)") {
				t.Fatalf("Skipped() = %q", d.Skipped())
			}
			var whys []string
			for _, dd := range d.Disks {
				whys = append(whys, dd.Why)
			}
			if got := modesOf(d); got != tt.modes {
				t.Errorf("modes %q, want %q", got, tt.modes)
			}
			if got := strings.Join(whys, "|"); got != tt.whys && !(got == "" && tt.whys == "") {
				t.Errorf("whys %q, want %q", got, tt.whys)
			}
			if got := dropsOf(d); got != tt.drop {
				t.Errorf("drops %q, want %q", got, tt.drop)
			}
			if (tt.retire == "") != (d.Retire == "") || !strings.Contains(d.Retire, tt.retire) {
				t.Errorf("retire %q, want one saying %q", d.Retire, tt.retire)
			}
			if d.Map != (tt.mapped != "") || tt.mapped != "" && d.ReplicaName != tt.mapped {
				t.Errorf("map %v onto %q, want a mapping onto %q", d.Map, d.ReplicaName, tt.mapped)
			}
			if d.Adopt != tt.adopt || d.TakeOver != tt.takeOver {
				t.Errorf("adopt %v, take over %v; want %v, %v", d.Adopt, d.TakeOver, tt.adopt, tt.takeOver)
			}
			for _, x := range d.Drop {
				if x.Keep || x.Reason == "" {
					t.Errorf("drop %+v", x)
				}
			}
		})
	}
}

// TestDecideGrownAndNewDisks: the decision says which disks grew, shrank
// or are new on the replica, as plans show them.
func TestDecideGrownAndNewDisks(t *testing.T) {
	job := &config.Job{Name: "web", Source: &config.PluginBlock{Kind: sdk.KindSource, Type: "local", Name: "prod"},
		Target: &config.PluginBlock{Kind: sdk.KindTarget, Type: "local", Name: "dr"}}
	rec := &catalog.Replica{VM: "web-01", ReplicaID: "r1", State: sdk.ReplicaReady,
		Disks: []catalog.ReplicaDisk{{Index: 0, Capacity: 8}, {Index: 1, Capacity: 4}}}
	vm := &sdk.VM{Name: "web-01", Disks: []sdk.Disk{{Index: 0, Capacity: 16}, {Index: 1, Capacity: 2}, {Index: 2, Capacity: 1}}}
	d := Decide(Facts{Job: job, Key: "web-01", VM: vm, Record: rec})
	got := fmt.Sprintf("%+v", []struct {
		New bool
		Was int64
	}{{d.Disks[0].New, d.Disks[0].Was}, {d.Disks[1].New, d.Disks[1].Was}, {d.Disks[2].New, d.Disks[2].Was}})
	if want := "[{New:false Was:8} {New:false Was:4} {New:true Was:0}]"; got != want {
		t.Fatalf("disks %s, want %s", got, want)
	}
}

// TestFallBackKeepsThePlannedMode: what a run learns while moving a disk
// changes its mode; the decision keeps what was planned and says why.
func TestFallBackKeepsThePlannedMode(t *testing.T) {
	d := Decision{Verdict: VerdictIncremental, Disks: []DiskDecision{{Index: 0, Mode: catalog.ModeChangeTracking, Since: "c1"}}}
	dd := d.Disk(0, 8)
	dd.FallBack(catalog.ModeDigest, WhyTrackingReset)
	dd.FallBack(catalog.ModeDigest, WhyTrackingOff)
	if got := d.Disks[0]; got.Mode != catalog.ModeDigest || got.Planned != catalog.ModeChangeTracking || got.Why != WhyTrackingOff || got.Since != "" {
		t.Fatalf("after falling back: %+v", got)
	}
	// A disk the decision did not know: compared, and said why.
	late := d.Disk(3, 8)
	if late.Mode != catalog.ModeDigest || late.Why != WhyAppearedLate || len(d.Disks) != 2 {
		t.Fatalf("a disk that appeared late: %+v", late)
	}
	fresh := Decision{Verdict: VerdictCreate}
	if dd := fresh.Disk(0, 8); dd.Mode != catalog.ModeFull {
		t.Fatalf("a disk that appeared late in a new replica: %+v", dd)
	}
}
