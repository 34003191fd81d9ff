package vsphere

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestFoldersAndTags: ListVMs and DescribeVM name each VM's folder (its
// inventory path, subfolders and moves included) and its tags
// ("Category/Name", sorted); ListTags lists every tag, carried or not.
func TestFoldersAndTags(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "web-01", Disks: []int64{1 << 20}, Folder: "web"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "web-02", Disks: []int64{1 << 20}, Folder: "web/frontend"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "db-01", Disks: []int64{1 << 20}})
	s.Tag(t, "web-01", "tier", "gold")
	s.Tag(t, "web-01", "backup", "daily")
	s.Tag(t, "db-01", "tier", "gold")
	s.CreateTag(t, "tier", "silver")
	src := newTestSource(t, s, false, nil)

	want := map[string]string{
		"web-01": "/DC0/vm/web backup/daily,tier/gold",
		"web-02": "/DC0/vm/web/frontend ",
		"db-01":  "/DC0/vm tier/gold",
	}
	check := func(when string) {
		t.Helper()
		vms, err := src.ListVMs(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(vms) != len(want) {
			t.Fatalf("%s: listed %d VMs, want %d", when, len(vms), len(want))
		}
		for _, vm := range vms {
			got := vm.Folder + " " + strings.Join(vm.Tags, ",")
			if got != want[vm.Name] {
				t.Errorf("%s: listed %s as %q, want %q", when, vm.Name, got, want[vm.Name])
			}
			d, err := src.DescribeVM(t.Context(), vm.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Folder + " " + strings.Join(d.Tags, ","); got != want[vm.Name] {
				t.Errorf("%s: described %s as %q, want %q", when, vm.Name, got, want[vm.Name])
			}
		}
	}
	check("at first")
	tags, err := src.ListTags(t.Context())
	if err != nil || strings.Join(tags, ",") != "backup/daily,tier/gold,tier/silver" {
		t.Fatalf("ListTags = %q, %v", tags, err)
	}

	// Moves and tag changes show at the next call.
	s.MoveVM(t, "web-02", "web")
	s.MoveVM(t, "db-01", "db/new")
	s.Untag(t, "web-01", "backup", "daily")
	s.Tag(t, "web-02", "tier", "silver")
	want["web-01"] = "/DC0/vm/web tier/gold"
	want["web-02"] = "/DC0/vm/web tier/silver"
	want["db-01"] = "/DC0/vm/db/new tier/gold"
	check("after moves")
}

// TestTagsReadInBulk: a listing reads the tags of every VM in one call of
// the Automation API, plus one call per tag and category name not read
// lately; the next listing only the one.
func TestTagsReadInBulk(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		s.CreateVM(t, vcsimtest.VMSpec{Name: name, Disks: []int64{1 << 20}})
		s.Tag(t, name, "tier", "gold")
		s.Tag(t, name, "backup", "daily")
	}
	src := newTestSource(t, s, false, nil)
	for i, want := range []int64{5, 1} { // association, 2 tags, 2 categories; then the association
		before := src.c.tags.calls.Load()
		vms, err := src.ListVMs(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got := src.c.tags.calls.Load() - before; got != want {
			t.Errorf("listing %d of %d tagged VMs made %d calls of the Automation API, want %d", i+1, len(vms), got, want)
		}
		for _, vm := range vms {
			if strings.Join(vm.Tags, ",") != "backup/daily,tier/gold" {
				t.Fatalf("%s has tags %q", vm.Name, vm.Tags)
			}
		}
	}
}

// TestESXiHasNoTags: on a standalone host VMs have folders but no tags,
// and listing tags is ErrUnimplemented, saying why.
func TestESXiHasNoTags(t *testing.T) {
	t.Parallel()
	e := vcsimtest.StartESX(t)
	attrs := map[string]cty.Value{}
	for k, v := range e.Attributes() {
		attrs[k] = cty.StringVal(v)
	}
	cfg, err := decodeSource(configValue(sourceSchema(), attrs))
	if err != nil {
		t.Fatal(err)
	}
	src, err := newSource(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Stop(context.Background())
	vms, err := src.ListVMs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) == 0 {
		t.Fatal("the host lists no VMs")
	}
	for _, vm := range vms {
		if vm.Folder != "/ha-datacenter/vm" || vm.Tags != nil {
			t.Errorf("%s: folder %q, tags %q", vm.Name, vm.Folder, vm.Tags)
		}
	}
	_, err = src.ListTags(t.Context())
	if !errors.Is(err, errdefs.ErrUnimplemented) || !strings.Contains(err.Error(), "ESXi host") || !strings.Contains(err.Error(), e.URL) {
		t.Fatalf("ListTags on ESXi = %v", err)
	}
}

// TestTagsSessionRenewed: when vCenter drops the Automation API session,
// the next call logs in again; Stop logs out.
func TestTagsSessionRenewed(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "web-01", Disks: []int64{1 << 20}})
	s.Tag(t, "web-01", "tier", "gold")
	src := newTestSource(t, s, false, nil)
	if _, err := src.ListTags(t.Context()); err != nil {
		t.Fatal(err)
	}
	old := src.c.tags.rc
	if err := old.Logout(t.Context()); err != nil { // as vCenter does after idling
		t.Fatal(err)
	}
	tags, err := src.ListTags(t.Context())
	if err != nil || strings.Join(tags, ",") != "tier/gold" {
		t.Fatalf("ListTags after the session was dropped = %q, %v", tags, err)
	}
	renewed := src.c.tags.rc
	if renewed == old {
		t.Fatal("no new session")
	}
	if err := src.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s, err := renewed.Session(t.Context()); err != nil || s != nil {
		t.Fatalf("the session outlived Stop: %+v, %v", s, err)
	}
}
