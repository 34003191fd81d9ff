package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// selectJob is the job of the selection tests: every VM in /prod/web and
// every VM tagged tier/gold, except those tagged ferry/no-dr, plus a
// selector that matches nothing.
const selectJob = `
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }

job "e2e" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["folder:/prod/web", "tag:tier/gold", %s]
  exclude    = ["tag:ferry/no-dr"]
  retention { restore_points = 3 }
}
`

func selectConfig(extra string) string {
	return strings.Replace(selectJob, "%s", extra, 1)
}

// moveVM edits a local VM's vm.json, as a person moving it would.
func moveVM(t *testing.T, site, vm, folder string) {
	t.Helper()
	path := filepath.Join(site, vm, "vm.json")
	var v map[string]any
	if err := json.Unmarshal([]byte(readFile(t, path)), &v); err != nil {
		t.Fatal(err)
	}
	v["folder"] = folder
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSelectionEndToEnd selects VMs by folder (subfolders included) and
// by tag through the real binaries: plan shows what each selector
// matches; a run replicates each VM once, never an excluded one, warns of
// a selector matching nothing; a VM that appears in the folder gets a new
// replica, one that leaves keeps its replica and is no longer replicated.
func TestSelectionEndToEnd(t *testing.T) {
	l := newLab(t, 3)
	for _, vm := range [][]string{
		{"web-01", "--folder", "/prod/web", "--tag", "tier/gold"},
		{"web-02", "--folder", "/prod/web/front"},
		{"web-test", "--folder", "/prod/web", "--tag", "ferry/no-dr"},
		{"db-01", "--folder", "/prod/db", "--tag", "tier/gold"},
		{"app-01", "--folder", "/prod/webshop"},
	} {
		local(t, nil, append([]string{"vm", "create", l.prod, vm[0], "--disk", "4MiB"}, vm[1:]...)...)
		l.write(vm[0], 0, 0, mib)
	}
	l.writeConfig(selectConfig(`"tag:tier/platinum"`))

	// The plan: what each selector matches, three new replicas, a warning.
	r := ferry(t, l.cfg, "plan", "e2e")
	if r.code != 0 {
		t.Fatalf("plan: %s", r)
	}
	for _, want := range []string{
		"    selects folder:/prod/web: web-01, web-02, web-test\n",
		"    selects tag:tier/gold: db-01, web-01\n",
		"    selects tag:tier/platinum: no VM\n",
		"    excludes tag:ferry/no-dr: web-test\n",
		"  ! job: tag:tier/platinum matches no VM at source.local.prod: the source has no such tag; the run will warn\n",
		"  + db-01: create replica db-01_replica on target.local.dr (new in tag:tier/gold)",
		"  + web-01: create replica web-01_replica on target.local.dr (new in folder:/prod/web, tag:tier/gold)",
		"  + web-02: create replica web-02_replica on target.local.dr (new in folder:/prod/web)",
		"Plan: 3 to create, 0 to change, 0 to delete, 1 warnings, 0 unchanged.",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "app-01") || strings.Contains(r.stdout, "+ web-test") {
		t.Errorf("plan picks a VM it must not:\n%s", r.stdout)
	}

	// The run: three VMs, each once; a warning session (exit 1).
	s := l.run()
	if s.code != 1 || s.Result != "warning" || len(s.VMs) != 3 || s.Totals.Success != 3 {
		t.Fatalf("first run: exit %d, %s: %+v\n%s", s.code, s.Result, s.VMs, s.stderr)
	}
	for _, vm := range []string{"web-01", "web-02", "db-01"} {
		if s.vm(vm).Result != "success" {
			t.Fatalf("%s: %+v", vm, s.vm(vm))
		}
		ps := l.points(vm)
		if len(ps) != 1 {
			t.Fatalf("%s has %d points", vm, len(ps))
		}
		sameBytes(t, vm+" point", l.point(vm, ps[0].ID, 0), l.source(vm, 0))
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "tag:tier/platinum matches no VM") {
		t.Fatalf("warnings %q", s.Warnings)
	}
	if sel := s.Selection; sel == nil || strings.Join(sel.New, ",") != "db-01,web-01,web-02" || strings.Join(sel.Excluded, ",") != "web-test" {
		t.Fatalf("selection %+v", s.Selection)
	}
	if _, err := os.Stat(filepath.Join(l.dr, "web-test_replica")); !os.IsNotExist(err) {
		t.Fatalf("the excluded VM has a replica: %v", err)
	}

	// A VM appears in the folder, another leaves it; the empty selector
	// goes. The plan says so, the run does it.
	local(t, nil, "vm", "create", l.prod, "web-03", "--disk", "4MiB", "--folder", "/prod/web/back")
	l.write("web-03", 0, mib, mib)
	moveVM(t, l.prod, "web-02", "/prod/archive")
	l.writeConfig(selectConfig(`"vm:app-01"`))
	r = ferry(t, l.cfg, "plan", "e2e")
	for _, want := range []string{
		"  + web-03: create replica web-03_replica on target.local.dr (new in folder:/prod/web)",
		"  - web-02: left folder:/prod/web; its replica web-02_replica and 1 restore point are kept, not replicated",
		"  + app-01: create replica app-01_replica",
		"    web-01: incremental run",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("second plan lacks %q:\n%s", want, r.stdout)
		}
	}
	plain := ferry(t, l.cfg, "run", "e2e")
	for _, want := range []string{
		"note: folder:/prod/web selects web-01, web-03, web-test",
		"web-03: note: new in folder:/prod/web: its replica will be created",
		"web-02: note: left folder:/prod/web; its replica web-02_replica and 1 restore point are kept, not replicated",
	} {
		if !strings.Contains(plain.stdout, want) {
			t.Errorf("run output lacks %q:\n%s", want, plain.stdout)
		}
	}
	if plain.code != 0 {
		t.Fatalf("second run: %s", plain)
	}
	if n := len(l.points("web-02")); n != 1 {
		t.Fatalf("web-02 left the folder but has %d points", n)
	}
	for vm, n := range map[string]int{"web-01": 2, "db-01": 2, "web-03": 1, "app-01": 1} {
		if got := len(l.points(vm)); got != n {
			t.Fatalf("%s has %d points, want %d", vm, got, n)
		}
	}

	// status lists the selected VMs by their replicas.
	st := ferry(t, l.cfg, "status")
	for _, vm := range []string{"web-01", "web-02", "web-03", "db-01", "app-01"} {
		if !strings.Contains(st.stdout, "  "+vm+" ") {
			t.Errorf("status lacks %s:\n%s", vm, st.stdout)
		}
	}
}

// TestSelectionValidate: bad selectors are configuration errors at their
// line, all at once.
func TestSelectionValidate(t *testing.T) {
	cfg := t.TempDir()
	os.WriteFile(filepath.Join(cfg, "main.hcl"), []byte(`
source "local" "prod" { path = "prod" }
target "local" "dr"   { path = "dr" }
job "web" {
  source  = source.local.prod
  target  = target.local.dr
  vms     = [
    "folder:prod/web",
    "fodler:/prod",
    "tag:tier/",
  ]
  exclude = ["tag:tier/", "folder:prod/web"]
}
`), 0o644)
	r := ferry(t, cfg, "validate")
	if r.code != 1 {
		t.Fatalf("validate: %s", r)
	}
	for _, want := range []string{
		"main.hcl line 8", "folder:prod/web is not an inventory path",
		"main.hcl line 9", "did you mean folder:/prod?",
		"main.hcl line 10", "tag:tier/ has an empty category or name",
		"main.hcl line 12",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("validate lacks %q:\n%s", want, r.stderr)
		}
	}
}
