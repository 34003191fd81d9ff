package selection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// job builds a job from vms and exclude entries as a user writes them.
func job(t *testing.T, vms []string, exclude ...string) *config.Job {
	t.Helper()
	j := &config.Job{Name: "web"}
	for _, e := range vms {
		s, err := config.ParseSelector(e)
		if err != nil {
			t.Fatal(err)
		}
		if s.Kind == config.SelectVM {
			j.VMs = append(j.VMs, s.Value)
		} else {
			j.Selectors = append(j.Selectors, s)
		}
	}
	for _, e := range exclude {
		s, err := config.ParseSelector(e)
		if err != nil {
			t.Fatal(err)
		}
		j.Exclude = append(j.Exclude, s)
	}
	return j
}

func vm(id, name, folder string, tags ...string) sdk.VM {
	return sdk.VM{ID: id, Name: name, Folder: folder, Tags: tags, Disks: []sdk.Disk{{Capacity: 1 << 20}}}
}

// prod is a source inventory: web VMs in a folder tree, databases tagged,
// two VMs of the same name in different folders.
var prod = []sdk.VM{
	vm("vm-1", "web-01", "/Prod/vm/web", "tier/gold"),
	vm("vm-2", "web-02", "/Prod/vm/web/frontend"),
	vm("vm-3", "web-test", "/Prod/vm/web", "ferry/no-dr"),
	vm("vm-4", "db-01", "/Prod/vm/db", "tier/gold", "backup/daily"),
	vm("vm-5", "db-02", "/Prod/vm/db", "tier/silver"),
	vm("vm-6", "app", "/Prod/vm/team-a"),
	vm("vm-7", "app", "/Prod/vm/team-b"),
	vm("vm-8", "webshop", "/Prod/vm/webshop"),
}

var prodTags = []string{"backup/daily", "ferry/no-dr", "tier/bronze", "tier/gold", "tier/silver"}

// source answers from prod, counting the calls.
type source struct {
	vms      []sdk.VM
	tags     []string
	tagsErr  error
	listErr  error
	calls    []string
	noTagger bool
}

func (s *source) ListVMs(ctx context.Context) ([]sdk.VM, error) {
	s.calls = append(s.calls, "ListVMs")
	return slices.Clone(s.vms), s.listErr
}

func (s *source) DescribeVM(ctx context.Context, name string) (*sdk.VM, error) {
	s.calls = append(s.calls, "DescribeVM "+name)
	var found []sdk.VM
	for _, v := range s.vms {
		if v.ID == name || v.Name == name || v.Folder+"/"+v.Name == name {
			found = append(found, v)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("vm %q: %w", name, errdefs.ErrNotFound)
	case 1:
		return &found[0], nil
	}
	return nil, fmt.Errorf("vm %q: %d VMs have that name: %w", name, len(found), errdefs.ErrInvalidArgument)
}

type tagSource struct{ *source }

func (s tagSource) ListTags(ctx context.Context) ([]string, error) {
	s.calls = append(s.calls, "ListTags")
	return s.tags, s.tagsErr
}

func resolve(t *testing.T, src *source, j *config.Job, known map[string]string, last map[string][]string) *Result {
	t.Helper()
	var s Source = src
	if !src.noTagger {
		s = tagSource{src}
	}
	res, err := Resolve(context.Background(), s, j, known, last)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// render is a compact, stable view of a result.
func render(r *Result) string {
	var b strings.Builder
	for _, v := range r.VMs {
		fmt.Fprintf(&b, "vm %s ref %s", v.Key, v.Ref)
		if v.Named {
			b.WriteString(" named")
		}
		if len(v.By) > 0 {
			fmt.Fprintf(&b, " by %s", strings.Join(v.By, ","))
		}
		if v.New {
			b.WriteString(" new")
		}
		if v.Err != nil {
			fmt.Fprintf(&b, " ERR %v", v.Err)
		}
		b.WriteString("\n")
	}
	for _, m := range r.Matches {
		verb := "selects"
		if m.Exclude {
			verb = "excludes"
		}
		fmt.Fprintf(&b, "%s %s: %s", m.Selector, verb, strings.Join(m.VMs, ","))
		if m.Why != "" {
			fmt.Fprintf(&b, " (%s)", m.Why)
		}
		if m.Err != nil {
			fmt.Fprintf(&b, " ERR %v", m.Err)
		}
		b.WriteString("\n")
	}
	for _, x := range r.Excluded {
		fmt.Fprintf(&b, "excluded %s by %s\n", x.Key, strings.Join(x.By, ","))
	}
	for _, l := range r.Left {
		fmt.Fprintf(&b, "left %s (was %s)\n", l.Key, strings.Join(l.By, ","))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note %s\n", n)
	}
	return b.String()
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		name    string
		vms     []string
		exclude []string
		known   map[string]string
		last    map[string][]string
		want    string
	}{
		{
			name: "folder with subfolders",
			vms:  []string{"folder:/Prod/vm/web"},
			want: `vm web-01 ref vm-1 by folder:/Prod/vm/web new
vm web-02 ref vm-2 by folder:/Prod/vm/web new
vm web-test ref vm-3 by folder:/Prod/vm/web new
folder:/Prod/vm/web selects: web-01,web-02,web-test
`,
		},
		{
			name: "tags by category and by name",
			vms:  []string{"tag:tier/gold", "tag:daily"},
			want: `vm db-01 ref vm-4 by tag:tier/gold,tag:daily new
vm web-01 ref vm-1 by tag:tier/gold new
tag:tier/gold selects: db-01,web-01
tag:daily selects: db-01
`,
		},
		{
			name: "named and picked twice is replicated once",
			vms:  []string{"web-01", "folder:/Prod/vm/web", "tag:gold", "vm-1"},
			want: `vm web-01 ref web-01 named by folder:/Prod/vm/web,tag:gold
vm db-01 ref vm-4 by tag:gold new
vm web-02 ref vm-2 by folder:/Prod/vm/web new
vm web-test ref vm-3 by folder:/Prod/vm/web new
folder:/Prod/vm/web selects: web-01,web-02,web-test
tag:gold selects: db-01,web-01
note "web-01" and "vm-1" name the same VM (id vm-1); it is replicated once, as "web-01"
`,
		},
		{
			name:    "excluded by tag, name and folder, also when named",
			vms:     []string{"db-02", "folder:/Prod/vm/web", "tag:tier/gold"},
			exclude: []string{"tag:ferry/no-dr", "db-02", "folder:/Prod/vm/web/frontend", "ghost"},
			want: `vm db-01 ref vm-4 by tag:tier/gold new
vm web-01 ref vm-1 by folder:/Prod/vm/web,tag:tier/gold new
folder:/Prod/vm/web selects: web-01,web-02,web-test
tag:tier/gold selects: db-01,web-01
tag:ferry/no-dr excludes: web-test
db-02 excludes: db-02
folder:/Prod/vm/web/frontend excludes: web-02
ghost excludes:  (the source has no such VM)
excluded db-02 by db-02
excluded web-02 by folder:/Prod/vm/web/frontend
excluded web-test by tag:ferry/no-dr
`,
		},
		{
			name: "matching nothing, with hints",
			vms:  []string{"folder:/Prod/vm/wbe", "folder:/Lab", "tag:tier/bronze", "tag:tier/glod", "tag:critical", "web-01"},
			want: `vm web-01 ref web-01 named
folder:/Prod/vm/wbe selects:  (no VM is in that folder or below it; did you mean folder:/Prod/vm/web?)
folder:/Lab selects:  (no VM is in that folder or below it)
tag:tier/bronze selects:  (the tag exists, but no VM carries it)
tag:tier/glod selects:  (the source has no such tag; did you mean tag:tier/gold?)
tag:critical selects:  (the source has no such tag)
`,
		},
		{
			name:  "renamed VM keeps its replica; new VMs are new",
			vms:   []string{"folder:/Prod/vm/db"},
			known: map[string]string{"vm-4": "database-01"},
			want: `vm database-01 ref vm-4 by folder:/Prod/vm/db
vm db-02 ref vm-5 by folder:/Prod/vm/db new
folder:/Prod/vm/db selects: database-01,db-02
`,
		},
		{
			name:  "left the selection",
			vms:   []string{"folder:/Prod/vm/db"},
			known: map[string]string{"vm-4": "db-01", "vm-1": "web-01", "vm-99": "gone-01"},
			last:  map[string][]string{"web-01": {"tag:tier/gold"}},
			want: `vm db-01 ref vm-4 by folder:/Prod/vm/db
vm db-02 ref vm-5 by folder:/Prod/vm/db new
folder:/Prod/vm/db selects: db-01,db-02
left gone-01 (was )
left web-01 (was tag:tier/gold)
`,
		},
		{
			name: "two new VMs of one name are refused",
			vms:  []string{"folder:/Prod/vm/team-a", "folder:/Prod/vm/team-b"},
			want: `vm app ref vm-6 by folder:/Prod/vm/team-a new ERR 2 VMs would be replicated as "app" (id vm-6 in /Prod/vm/team-a, id vm-7 in /Prod/vm/team-b): their replicas would share a name; exclude all but one, or name the one to replicate by its inventory path or id in vms
vm app ref vm-7 by folder:/Prod/vm/team-b new ERR 2 VMs would be replicated as "app" (id vm-6 in /Prod/vm/team-a, id vm-7 in /Prod/vm/team-b): their replicas would share a name; exclude all but one, or name the one to replicate by its inventory path or id in vms
folder:/Prod/vm/team-a selects: app
folder:/Prod/vm/team-b selects: app
`,
		},
		{
			name:  "the VM with the replica keeps the name",
			vms:   []string{"folder:/Prod/vm/team-a", "folder:/Prod/vm/team-b"},
			known: map[string]string{"vm-7": "app"},
			want: `vm app ref vm-6 by folder:/Prod/vm/team-a new ERR another VM, id vm-7 in /Prod/vm/team-b, is replicated as "app" (it has its replica in the catalog); their replicas would share a name; exclude all but one, or name the one to replicate by its inventory path or id in vms
vm app ref vm-7 by folder:/Prod/vm/team-b
folder:/Prod/vm/team-a selects: app
folder:/Prod/vm/team-b selects: app
`,
		},
		{
			name: "a VM named one by one keeps the name",
			vms:  []string{"/Prod/vm/team-a/app", "folder:/Prod/vm/team-b"},
			want: `vm /Prod/vm/team-a/app ref /Prod/vm/team-a/app named
vm app ref vm-7 by folder:/Prod/vm/team-b new
folder:/Prod/vm/team-b selects: app
`,
		},
		{
			name:  "a new VM is refused the name of another VM's replica",
			vms:   []string{"folder:/Prod/vm/team-b"},
			known: map[string]string{"vm-6": "app"},
			want: `vm app ref vm-7 by folder:/Prod/vm/team-b new ERR it is named "app" like the VM (id vm-6) whose replica the catalog keeps for this job, which would take its restore points; rename one of them, or exclude this one
folder:/Prod/vm/team-b selects: app
left app (was )
`,
		},
		{
			name: "root folder selects every VM",
			vms:  []string{"folder:/"},
			exclude: []string{"folder:/Prod/vm/web", "folder:/Prod/vm/team-a", "folder:/Prod/vm/team-b",
				"folder:/Prod/vm/webshop"},
			want: `vm db-01 ref vm-4 by folder:/ new
vm db-02 ref vm-5 by folder:/ new
folder:/ selects: app,app,db-01,db-02,web-01,web-02,web-test,webshop
folder:/Prod/vm/web excludes: web-01,web-02,web-test
folder:/Prod/vm/team-a excludes: app
folder:/Prod/vm/team-b excludes: app
folder:/Prod/vm/webshop excludes: webshop
excluded app by folder:/Prod/vm/team-a
excluded app by folder:/Prod/vm/team-b
excluded web-01 by folder:/Prod/vm/web
excluded web-02 by folder:/Prod/vm/web
excluded web-test by folder:/Prod/vm/web
excluded webshop by folder:/Prod/vm/webshop
`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &source{vms: prod, tags: prodTags}
			res := resolve(t, src, job(t, tc.vms, tc.exclude...), tc.known, tc.last)
			if got := render(res); got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

// TestResolveAsksOnlyWhatItNeeds: a job without selectors costs the
// source nothing; folder selectors list once; tags are listed only for a
// tag selector; VMs named one by one are described.
func TestResolveAsksOnlyWhatItNeeds(t *testing.T) {
	for _, tc := range []struct {
		vms, exclude []string
		calls        string
	}{
		{[]string{"web-01", "db-01"}, nil, ""},
		{[]string{"folder:/Prod/vm/web"}, nil, "ListVMs"},
		{[]string{"web-01", "tag:gold"}, []string{"db-01"}, "DescribeVM web-01,DescribeVM db-01,ListVMs,ListTags"},
		{[]string{"web-01"}, []string{"db-01"}, "DescribeVM web-01,DescribeVM db-01"},
	} {
		src := &source{vms: prod, tags: prodTags}
		resolve(t, src, job(t, tc.vms, tc.exclude...), nil, nil)
		if got := strings.Join(src.calls, ","); got != tc.calls {
			t.Errorf("vms %q exclude %q: calls %q, want %q", tc.vms, tc.exclude, got, tc.calls)
		}
	}
	// Without selectors the VMs are the job's as written, undescribed.
	res := resolve(t, &source{}, job(t, []string{"web-01", "ghost"}), nil, nil)
	if got := render(res); got != "vm web-01 ref web-01 named\nvm ghost ref ghost named\n" {
		t.Fatalf("got\n%s", got)
	}
}

// TestResolveTagsUnavailable: a tag selector on a source that cannot
// answer is a problem the run must not go past; folder selectors still
// answer.
func TestResolveTagsUnavailable(t *testing.T) {
	esx := errors.New("vsphere https://esx-01/sdk is an ESXi host: no tags: " + errdefs.ErrUnimplemented.Error())
	for _, src := range []*source{
		{vms: prod, tagsErr: fmt.Errorf("%w", esx)},
		{vms: prod, noTagger: true},
	} {
		res := resolve(t, src, job(t, []string{"folder:/Prod/vm/db", "tag:tier/gold"}, "tag:no-dr"), nil, nil)
		err := res.Problems()
		if err == nil || !strings.Contains(err.Error(), "tag:tier/gold: ") || !strings.Contains(err.Error(), "tag:no-dr: ") {
			t.Fatalf("problems: %v\n%s", err, render(res))
		}
		if len(res.VMs) != 2 || res.VMs[0].Key != "db-01" {
			t.Fatalf("the folder selector did not answer:\n%s", render(res))
		}
	}
}

func TestResolveListFails(t *testing.T) {
	src := &source{listErr: fmt.Errorf("vsphere https://vc/sdk cannot be reached: %w", errdefs.ErrUnavailable)}
	_, err := Resolve(context.Background(), tagSource{src}, job(t, []string{"folder:/Prod"}), nil, nil)
	if !errors.Is(err, errdefs.ErrUnavailable) || !strings.Contains(err.Error(), "list the VMs of the source") {
		t.Fatalf("Resolve = %v", err)
	}
}

// TestResolveMemSource runs against the sdk's reference source, which
// lists tags itself.
func TestResolveMemSource(t *testing.T) {
	src := sdktest.NewMemSource(prod...)
	res, err := Resolve(context.Background(), src, job(t, []string{"tag:gold", "folder:/Prod/vm/webshop"}, "tag:nothing"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := `vm db-01 ref vm-4 by tag:gold new
vm web-01 ref vm-1 by tag:gold new
vm webshop ref vm-8 by folder:/Prod/vm/webshop new
tag:gold selects: db-01,web-01
folder:/Prod/vm/webshop selects: webshop
tag:nothing excludes:  (the source has no such tag)
`
	if got := render(res); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if len(res.Empty()) != 0 || res.Problems() != nil {
		t.Fatalf("empty %v, problems %v", res.Empty(), res.Problems())
	}
}
