package engine

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// collectNotices records the notices of the fixture's runs (events come
// from the disks' goroutines at once) and returns them, joined by lines.
func (f *fixture) collectNotices() func() string {
	var mu sync.Mutex
	var out []string
	f.eng.Events = func(e Event) {
		if e.Kind == Notice {
			mu.Lock()
			out = append(out, e.Message)
			mu.Unlock()
		}
	}
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(out, "\n")
	}
}

func TestIndependentDiskIsSkippedWithAWarning(t *testing.T) {
	for _, copyThem := range []bool{false, true} {
		name := "skipped"
		if copyThem {
			name = "copied when asked"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			f.comps.src = sdktest.NewMemSource(sdk.VM{Name: "db-01", Disks: []sdk.Disk{{Capacity: diskSize}, {Capacity: diskSize / 2, Independent: true}}})
			f.job.VMs = []string{"db-01"}
			f.job.CopyIndependentDisks = copyThem
			f.write("db-01", 0, 10)
			f.write("db-01", 1, 10)
			want := f.sourceImage("db-01")
			notices := f.collectNotices()
			s := f.run()
			vm := s.VMs[0]
			if copyThem {
				if vm.Result != catalog.ResultSuccess || len(vm.Disks) != 2 {
					t.Fatalf("with copy_independent_disks: %+v", vm)
				}
				same(t, "point", f.pointImage("db-01", f.points("db-01")[0].ID, 2), want)
				return
			}
			if vm.Result != catalog.ResultWarning || !strings.Contains(vm.Error, "disk 1 is independent") ||
				len(vm.Disks) != 1 || vm.Disks[0].Index != 0 || s.Result != catalog.ResultWarning {
				t.Fatalf("an independent disk: session %s, %+v", s.Result, vm)
			}
			if !strings.Contains(notices(), "copy_independent_disks") {
				t.Errorf("no notice names the setting: %q", notices())
			}
			got := f.pointImage("db-01", f.points("db-01")[0].ID, 2)
			same(t, "disk 0", got[:1], want[:1])
			if strings.Trim(string(got[1]), "\x00") != "" {
				t.Error("the skipped disk's replica holds data")
			}
		})
	}
}

func TestDigestComparisonIsSaidAndCounted(t *testing.T) {
	f := newFixture(t, "web-01")
	f.comps.caps = &sdk.Capabilities{} // no change tracking
	f.write("web-01", 0, 10)
	f.run()
	f.write("web-01", 0, 1)
	want := f.sourceImage("web-01")
	notices := f.collectNotices()
	s := f.run()
	if modes(s) != "digest,digest" || s.Totals().DigestDisks != 2 {
		t.Fatalf("modes %s, %d digest disks counted", modes(s), s.Totals().DigestDisks)
	}
	all := notices()
	for _, want := range []string{"disk 0: compared by digests, reading all 8 MiB: the source does not track changes", "disk 1: compared by digests"} {
		if !strings.Contains(all, want) {
			t.Errorf("no notice says %q: %q", want, all)
		}
	}
	f.newestIs("web-01", want)
}

func TestPointsRecordTheirConsistency(t *testing.T) {
	f := newFixture(t, "web-01")
	f.job.Quiesce = true
	f.run()
	f.job.Quiesce = false
	f.run()
	pts, err := f.cat.RestorePoints("web", "web-01")
	if err != nil || len(pts) != 2 {
		t.Fatalf("points %+v, %v", pts, err)
	}
	if pts[0].Consistency != catalog.ConsistencyApplication || pts[1].Consistency != catalog.ConsistencyCrash {
		t.Fatalf("consistencies %q, %q", pts[0].Consistency, pts[1].Consistency)
	}
	tp := f.points("web-01")
	if tp[0].Labels[LabelConsistency] != "application" {
		t.Fatalf("the target's point is labelled %v", tp[0].Labels)
	}
}

// TestASessionKeepsItsNotes: what a session told its operator is kept
// with it in the catalog, with the VM it was about.
func TestASessionKeepsItsNotes(t *testing.T) {
	f := newFixture(t, "web-01")
	f.comps.caps = &sdk.Capabilities{} // no change tracking: the run says it compares digests
	f.write("web-01", 0, 10)
	f.run()
	f.write("web-01", 0, 1)
	notices := f.collectNotices()
	s := f.run()
	stored, err := f.cat.Session(s.ID)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, n := range stored.Notes {
		if n.VM != "web-01" || n.Time.IsZero() {
			t.Errorf("note %+v", n)
		}
		kept = append(kept, n.Message)
	}
	// The disks' notices come from goroutines of their own: the same
	// notices, in an order of their own.
	said := strings.Split(notices(), "\n")
	slices.Sort(kept)
	slices.Sort(said)
	if len(kept) == 0 || !slices.Equal(kept, said) {
		t.Fatalf("the session kept %q; it said %q", kept, said)
	}
}

func TestASessionKeepsAtMostMaxNotes(t *testing.T) {
	e := &Engine{}
	for i := range catalog.MaxNotes + 2 {
		e.emit(Event{Kind: Notice, Session: "s1", Message: fmt.Sprint("note ", i)})
	}
	e.emit(Event{Kind: Notice, Session: "s2", Message: "another session's"})
	notes := e.takeNotes("s1")
	if len(notes) != catalog.MaxNotes+1 || notes[0].Message != "note 0" || notes[len(notes)-1].Message != "2 more notes were not kept" {
		t.Fatalf("%d notes, first %q, last %q", len(notes), notes[0].Message, notes[len(notes)-1].Message)
	}
	if again := e.takeNotes("s1"); again != nil {
		t.Fatalf("notes taken twice: %d", len(again))
	}
	if other := e.takeNotes("s2"); len(other) != 1 {
		t.Fatalf("another session's notes: %+v", other)
	}
}
