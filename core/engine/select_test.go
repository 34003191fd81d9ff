package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// inventory is a source whose VMs can move between folders and lose
// tags, and which records the VM of every snapshot it takes.
type inventory struct {
	*sdktest.MemSource
	mu      sync.Mutex
	folders map[string]string // VM id -> folder, overriding the VM's
	snapped []string
}

func (s *inventory) patch(vm *sdk.VM) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.folders[vm.ID]; ok {
		vm.Folder = f
	}
}

func (s *inventory) ListVMs(ctx context.Context) ([]sdk.VM, error) {
	vms, err := s.MemSource.ListVMs(ctx)
	for i := range vms {
		s.patch(&vms[i])
	}
	return vms, err
}

func (s *inventory) DescribeVM(ctx context.Context, vm string) (*sdk.VM, error) {
	v, err := s.MemSource.DescribeVM(ctx, vm)
	if v != nil {
		s.patch(v)
	}
	return v, err
}

func (s *inventory) CreateSnapshot(ctx context.Context, req sdk.SnapshotRequest) (*sdk.Snapshot, error) {
	s.mu.Lock()
	s.snapped = append(s.snapped, req.VM)
	s.mu.Unlock()
	return s.MemSource.CreateSnapshot(ctx, req)
}

func (s *inventory) move(id, folder string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.folders[id] = folder
}

// noTags hides the TagLister of a source, as an ESXi host has no tags.
type noTags struct{ sdk.Source }

func newSelectFixture(t *testing.T, vms []sdk.VM, entries []string, exclude ...string) (*fixture, *inventory) {
	t.Helper()
	f := newFixture(t)
	for i := range vms {
		vms[i].Disks = []sdk.Disk{{Capacity: 1 << 20}}
	}
	f.comps.src = sdktest.NewMemSource(vms...)
	inv := &inventory{MemSource: f.comps.src, folders: map[string]string{}}
	f.comps.source = inv
	f.job.VMs = nil
	for _, e := range entries {
		s, err := config.ParseSelector(e)
		if err != nil {
			t.Fatal(err)
		}
		if s.Kind == config.SelectVM {
			f.job.VMs = append(f.job.VMs, s.Value)
		} else {
			f.job.Selectors = append(f.job.Selectors, s)
		}
	}
	for _, e := range exclude {
		s, err := config.ParseSelector(e)
		if err != nil {
			t.Fatal(err)
		}
		f.job.Exclude = append(f.job.Exclude, s)
	}
	return f, inv
}

func results(s *catalog.Session) string {
	var out []string
	for _, vm := range s.VMs {
		out = append(out, vm.VM+"="+string(vm.Result))
	}
	return strings.Join(out, " ")
}

// TestSelectionRun replicates what folder and tag selectors pick: once
// each, excluded VMs never, by id (two VMs share a name), with the
// selection, new VMs and empty selectors recorded in the session.
func TestSelectionRun(t *testing.T) {
	f, inv := newSelectFixture(t, []sdk.VM{
		{ID: "vm-1", Name: "web-01", Folder: "/Prod/vm/web", Tags: []string{"tier/gold"}},
		{ID: "vm-2", Name: "web-02", Folder: "/Prod/vm/web/front", Tags: []string{"ferry/no-dr"}},
		{ID: "vm-3", Name: "db-01", Folder: "/Prod/vm/db", Tags: []string{"tier/gold"}},
		{ID: "vm-4", Name: "app", Folder: "/Prod/vm/team-a"},
		{ID: "vm-5", Name: "app", Folder: "/Prod/vm/team-b"},
	}, []string{"folder:/Prod/vm/web", "tag:gold", "folder:/Prod/vm/team-b", "tag:tier/platinum"}, "tag:ferry/no-dr")
	// The two VMs named app hold different data: the run must read vm-5.
	a, b := bytes.Repeat([]byte("team-a"), 1000), bytes.Repeat([]byte("team-b"), 1000)
	if err := f.comps.src.WriteDisk("vm-4", 0, 0, a); err != nil {
		t.Fatal(err)
	}
	if err := f.comps.src.WriteDisk("vm-5", 0, 0, b); err != nil {
		t.Fatal(err)
	}
	var notes []string
	f.eng.Events = func(ev Event) {
		if ev.Kind == Notice {
			notes = append(notes, ev.VM+": "+ev.Message)
		}
	}
	s := f.run()
	if got := results(s); got != "app=success db-01=success web-01=success" {
		t.Fatalf("results %s", got)
	}
	if s.Result != catalog.ResultWarning || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "tag:tier/platinum matches no VM at source.mem.prod: the source has no such tag") {
		t.Fatalf("session %s, warnings %q", s.Result, s.Warnings)
	}
	slices.Sort(inv.snapped)
	if got := strings.Join(inv.snapped, ","); got != "vm-1,vm-3,vm-5" {
		t.Fatalf("snapshots of %s, want the selected VMs by id", got)
	}
	if got := f.pointImage("app", f.points("app")[0].ID, 1)[0][:len(b)]; !bytes.Equal(got, b) {
		t.Fatalf("the replica of app holds %.12q..., not team-b's data", got)
	}
	sel := s.Selection
	if sel == nil || strings.Join(sel.New, ",") != "app,db-01,web-01" || strings.Join(sel.Excluded, ",") != "web-02" || len(sel.Left) != 0 {
		t.Fatalf("selection %+v", sel)
	}
	want := []catalog.SelectorMatch{
		{Selector: "folder:/Prod/vm/web", VMs: []string{"web-01", "web-02"}},
		{Selector: "tag:gold", VMs: []string{"db-01", "web-01"}},
		{Selector: "folder:/Prod/vm/team-b", VMs: []string{"app"}},
		{Selector: "tag:tier/platinum", VMs: []string{}},
		{Selector: "tag:ferry/no-dr", Exclude: true, VMs: []string{"web-02"}},
	}
	if fmt.Sprint(sel.Selectors) != fmt.Sprint(want) {
		t.Fatalf("selectors %+v\nwant %+v", sel.Selectors, want)
	}
	// The catalog keeps what the session says.
	stored, err := f.cat.Session(s.ID)
	if err != nil || fmt.Sprint(stored.Selection) != fmt.Sprint(sel) || len(stored.Warnings) != 1 {
		t.Fatalf("stored session %+v, %v", stored, err)
	}
	for _, want := range []string{": folder:/Prod/vm/web selects web-01, web-02", "db-01: new in tag:gold", ": exclude tag:ferry/no-dr matches web-02"} {
		if !slices.ContainsFunc(notes, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("no notice %q in %q", want, notes)
		}
	}

	// web-01 moves out of the folder but keeps its tag; db-01 leaves the
	// selection for good; a VM moved into the folder is new.
	inv.move("vm-1", "/Prod/vm/archive")
	inv.move("vm-3", "/Prod/vm/db")
	f.job.Selectors = f.job.Selectors[:1]
	inv.move("vm-4", "/Prod/vm/web/team-a")
	notes = nil
	s = f.run()
	if got := results(s); got != "app (id vm-4)=failed" {
		t.Fatalf("second run results %s", got)
	}
	if !strings.Contains(s.VMs[0].Error, `another VM, id vm-5 in /Prod/vm/team-b, is replicated as "app" (it has its replica in the catalog)`) &&
		!strings.Contains(s.VMs[0].Error, `is named "app" like the VM (id vm-5)`) {
		t.Fatalf("the second app took the first one's replica: %s", s.VMs[0].Error)
	}
	if s.Selection == nil || strings.Join(s.Selection.Left, ",") != "app,db-01,web-01" {
		t.Fatalf("left %+v", s.Selection)
	}
	if !slices.ContainsFunc(notes, func(n string) bool {
		return strings.HasPrefix(n, "db-01: left tag:gold; its replica db-01_replica and 1 restore point are kept")
	}) {
		t.Errorf("no notice that db-01 left, in %q", notes)
	}
	st, err := f.cat.JobState("web")
	if err != nil || fmt.Sprint(st.Selected) != "map[]" {
		t.Fatalf("job state %+v, %v", st, err)
	}
}

// TestSelectionNothingSelected: a job whose selectors match nothing fails
// and says why.
func TestSelectionNothingSelected(t *testing.T) {
	f, _ := newSelectFixture(t, []sdk.VM{{ID: "vm-1", Name: "web-01", Folder: "/Prod/vm/web"}}, []string{"folder:/Prod/vm/wbe"})
	_, err := f.eng.Run(context.Background(), f.job)
	if err == nil || !strings.Contains(err.Error(), "selects no VM") || !strings.Contains(err.Error(), "did you mean folder:/Prod/vm/web?") {
		t.Fatalf("Run = %v", err)
	}
	ss, _ := f.cat.Sessions("web", 1)
	if len(ss) != 1 || ss[0].Result != catalog.ResultFailed {
		t.Fatalf("sessions %+v", ss)
	}
}

// TestSelectionTagsUnavailable: a tag selector (or exclusion) the source
// cannot answer fails the session before anything is replicated.
func TestSelectionTagsUnavailable(t *testing.T) {
	f, inv := newSelectFixture(t, []sdk.VM{{ID: "vm-1", Name: "web-01", Folder: "/Prod/vm/web"}}, []string{"folder:/Prod/vm/web"}, "tag:no-dr")
	f.comps.source = noTags{inv}
	_, err := f.eng.Run(context.Background(), f.job)
	if !errors.Is(err, errdefs.ErrUnimplemented) || !strings.Contains(err.Error(), "tag:no-dr: the source does not list tags") {
		t.Fatalf("Run = %v", err)
	}
	if len(inv.snapped) != 0 {
		t.Fatalf("snapshots taken: %v", inv.snapped)
	}
}

// TestNamedVMsAskNothingMore: a job without selectors never lists the
// source, as before selectors existed.
func TestNamedVMsAskNothingMore(t *testing.T) {
	f := newFixture(t, "web-01")
	f.comps.source = listForbidden{f.comps.src}
	if s := f.run(); s.Result != catalog.ResultSuccess || s.Selection != nil {
		t.Fatalf("session %s, selection %+v", s.Result, s.Selection)
	}
}

type listForbidden struct{ *sdktest.MemSource }

func (listForbidden) ListVMs(context.Context) ([]sdk.VM, error) {
	return nil, errors.New("a job without selectors listed the source")
}
