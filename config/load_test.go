package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

func parseOne(t *testing.T, src string) (*hcl.File, hcl.Diagnostics) {
	t.Helper()
	return hclsyntax.ParseConfig([]byte(src), "test.hcl", hcl.InitialPos)
}

const minimal = `
source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01"]
}
`

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func summaries(diags hcl.Diagnostics) string {
	var s []string
	for _, d := range diags {
		s = append(s, d.Summary)
	}
	return strings.Join(s, "; ")
}

func TestLoadFolder(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // nil: the folder does not exist
		want  string            // summaries of the diagnostics
		jobs  int
	}{
		{"missing folder", nil, "Cannot read the configuration folder", 0},
		{"empty folder", map[string]string{}, "No configuration files", 0},
		{"only other files", map[string]string{"README.md": "# hi", "main.tf": minimal}, "No configuration files", 0},
		{"hidden and backup files ignored", map[string]string{"main.hcl": minimal, ".draft.hcl": "job {", "main.hcl~": "job {"}, "", 1},
		{"files together", map[string]string{
			"a.hcl": `source "local" "prod" { path = "./prod" }`,
			"b.hcl": `target "local" "dr" { path = "./dr" }`,
			"c.hcl": "job \"web\" {\n source = source.local.prod\n target = target.local.dr\n vms = [\"a\"]\n}\n",
		}, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "nope")
			if tt.files != nil {
				dir = writeFiles(t, tt.files)
			}
			cfg, diags := Load(dir, testSchemas())
			if got := summaries(diags); got != tt.want {
				t.Fatalf("diagnostics %q, want %q", got, tt.want)
			}
			if cfg == nil || len(cfg.Jobs) != tt.jobs {
				t.Fatalf("config %+v, want %d jobs", cfg, tt.jobs)
			}
			if !filepath.IsAbs(cfg.Dir) {
				t.Fatalf("Dir %q is not absolute", cfg.Dir)
			}
		})
	}
}

func TestLoadRelativeDirIsMadeAbsolute(t *testing.T) {
	cfg, diags := Load("testdata/valid_minimal", testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "testdata", "valid_minimal"); cfg.Dir != want {
		t.Fatalf("Dir = %q, want %q", cfg.Dir, want)
	}
	// Values stay as written; resolving them is the host's business.
	if p := cfg.Sources["local.prod"].Config.GetAttr("path").AsString(); p != "./prod" {
		t.Fatalf("path = %q, want it as written", p)
	}
	if _, ok := cfg.Files[filepath.Join("testdata", "valid_minimal", "main.hcl")]; !ok {
		t.Fatalf("Files lacks main.hcl: %v", cfg.Files)
	}
}

// failingSchemas fails every lookup with err.
type failingSchemas struct{ err error }

func (f failingSchemas) Schema(sdk.Kind, string) (*schema.Block, error) { return nil, f.err }

func TestLoadSchemaProblems(t *testing.T) {
	broken := StaticSchemas{sdk.KindSource: {"local": {Attributes: map[string]*schema.Attribute{"path": {}}}}}
	nilSchema := StaticSchemas{sdk.KindSource: {"local": nil}}
	tests := []struct {
		name    string
		schemas Schemas
		want    string
		detail  string
	}{
		{"no schemas at all", nil, "Unknown source type", "no plugins are installed"},
		{"lookup fails", failingSchemas{errors.New("plugin ferry-plugin-local exited")}, "Cannot read plugin schema", "plugin ferry-plugin-local exited"},
		{"not found without a list of types", failingSchemas{fmt.Errorf("no such type: %w", errdefs.ErrNotFound)}, "Unknown source type", `No installed plugin serves source "local".`},
		{"invalid schema", broken, "Invalid plugin schema", `attribute "path": no type`},
		{"nil schema", nilSchema, "Invalid plugin schema", "declares no schema"},
		{"kind without types", StaticSchemas{}, "Unknown source type", "No installed plugin serves any source."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(`source "local" "prod" { path = "./prod" }`)}, tt.schemas)
			if len(diags) != 1 || diags[0].Summary != tt.want || !strings.Contains(diags[0].Detail, tt.detail) {
				t.Fatalf("diagnostics %v, want one %q with %q", diags, tt.want, tt.detail)
			}
			if diags[0].Subject == nil || diags[0].Subject.Start.Column != 8 {
				t.Fatalf("diagnostic does not point at the type label: %v", diags[0].Subject)
			}
			pb := cfg.Sources["local.prod"]
			if pb == nil || pb.Config != cty.NilVal {
				t.Fatalf("source block %+v: want it declared and not decoded", pb)
			}
		})
	}
}

func TestSensitiveDiagnosticsCarryNoExpression(t *testing.T) {
	src := `source "vsphere" "vc" {
  url      = "https://vc.example.com/sdk"
  username = "admin"
  password = [env("FERRY_TEST_PASSWORD")]
  insecure = "perhaps"
}`
	setTestEnv(t)
	_, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
	if len(diags) != 2 {
		t.Fatalf("diagnostics %v, want 2", diags)
	}
	for _, d := range diags {
		sensitive := d.Subject.Start.Line == 4
		if sensitive && (d.Expression != nil || d.EvalContext != nil) {
			t.Errorf("diagnostic about the password keeps its expression: %v", d)
		}
		if !sensitive && d.Expression == nil {
			t.Errorf("diagnostic about insecure lost its expression: %v", d)
		}
	}
}

func TestLoadIsDeterministic(t *testing.T) {
	files := map[string][]byte{}
	for _, name := range []string{"a.hcl", "b.hcl"} {
		src, err := os.ReadFile(filepath.Join("testdata", "duplicate_names", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = src
	}
	var first string
	for i := range 20 {
		_, diags := LoadFiles("/cfg", files, testSchemas())
		var out strings.Builder
		for _, d := range diags {
			out.WriteString(d.Error() + "\n")
		}
		if i == 0 {
			first = out.String()
			// The first declaration wins: the file that sorts first.
			if !strings.Contains(first, "b.hcl:1,1-22: Duplicate source block") {
				t.Fatalf("duplicate not reported on b.hcl:\n%s", first)
			}
		} else if out.String() != first {
			t.Fatalf("run %d differs:\n%s\nfirst:\n%s", i, out.String(), first)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(minimal + `proxy "p" { address = "h:1" }`)}, testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	j := cfg.Jobs["web"]
	switch {
	case j.ReplicaSuffix != DefaultReplicaSuffix:
		t.Errorf("replica suffix %q", j.ReplicaSuffix)
	case j.Retention.RestorePoints != DefaultRestorePoints || j.Retention.DeclRange != (hcl.Range{}):
		t.Errorf("retention %+v", j.Retention)
	case j.Transfer.Compression != CompressionAuto || j.Transfer.Throttle != 0 || j.Transfer.MaxTasks != 0 || j.Transfer.BlockSize != 0:
		t.Errorf("transfer %+v", j.Transfer)
	case !j.Schedule.IsZero() || j.Quiesce || j.Repository != nil || len(j.Proxies) != 0:
		t.Errorf("job %+v", j)
	case cfg.Proxies["p"].MaxTasks != DefaultProxyMaxTasks || cfg.Proxies["p"].Port != 1:
		t.Errorf("proxy %+v", cfg.Proxies["p"])
	}
	if j.Source != cfg.Sources["local.prod"] || j.Target != cfg.Targets["local.dr"] {
		t.Errorf("references not resolved to the declared blocks")
	}
}

func TestWriteDiagnosticsNeedsNoFiles(t *testing.T) {
	cfg, diags := Load(filepath.Join(t.TempDir(), "missing"), nil)
	var out strings.Builder
	if err := cfg.WriteDiagnostics(&out, diags, 80, false); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "Error: Cannot read the configuration folder") {
		t.Fatalf("rendered %q", out.String())
	}
}

func TestNullMeansDefault(t *testing.T) {
	src := minimal[:len(minimal)-2] + "\n  replica_suffix = null\n  schedule = null\n  quiesce = null\n}\n"
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	j := cfg.Jobs["web"]
	if j.ReplicaSuffix != DefaultReplicaSuffix || !j.Schedule.IsZero() || j.Quiesce {
		t.Fatalf("null attributes did not keep their defaults: %+v", j)
	}
}

// TestRetentionLimit: a target that declares the most restore points it
// keeps makes a larger retention an error at restore_points (at the job
// when it keeps the default), naming the limit and why; without a
// declaration nothing is checked.
func TestRetentionLimit(t *testing.T) {
	local := &schema.Block{Attributes: map[string]*schema.Attribute{"path": {Type: cty.String, Required: true}}}
	infos := func(max int) StaticComponents {
		return StaticComponents{
			sdk.KindSource: {"local": {Schema: local}},
			sdk.KindTarget: {"snap": {Schema: local, Limits: sdk.Limits{MaxRestorePoints: max, MaxRestorePointsReason: "the array keeps 8 snapshots per volume."}}},
		}
	}
	job := func(retention string) []byte {
		return []byte(`source "local" "prod" { path = "/p" }
target "snap" "dr" { path = "/d" }
job "web" {
  source = source.local.prod
  target = target.snap.dr
  vms    = ["web-01"]
` + retention + `}
`)
	}
	for _, tc := range []struct {
		name      string
		schemas   Schemas
		retention string
		line      int    // of the error; 0 for none
		want      string // in its detail
	}{
		{"over", infos(6), "  retention { restore_points = 9 }\n", 7,
			`Job "web" keeps 9 restore points per replica, but target.snap.dr (type "snap") keeps at most 6: the array keeps 8 snapshots per volume. Set retention { restore_points = 6 } or fewer.`},
		{"at", infos(6), "  retention { restore_points = 6 }\n", 0, ""},
		{"default over", infos(6), "", 3, "keeps the default of 7 restore points per replica"},
		{"no limit", infos(0), "  retention { restore_points = 500 }\n", 0, ""},
		{"schemas only", StaticSchemas{sdk.KindSource: {"local": local}, sdk.KindTarget: {"snap": local}}, "  retention { restore_points = 500 }\n", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": job(tc.retention)}, tc.schemas)
			if tc.line == 0 {
				if len(diags) > 0 {
					t.Fatalf("unexpected diagnostics: %s", diags)
				}
				return
			}
			if len(diags) != 1 || diags[0].Summary != "Too many restore points" || diags[0].Subject == nil ||
				diags[0].Subject.Start.Line != tc.line || !strings.Contains(diags[0].Detail, tc.want) {
				t.Fatalf("diagnostics %s; want one at line %d saying %q", diags, tc.line, tc.want)
			}
		})
	}
}

func TestSensitiveValueIsNeverRendered(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-very-secret"
	for _, tc := range []struct{ name, src string }{
		{"type error", `source "vsphere" "vc" {
  url      = "https://vc.example.com/sdk"
  username = "admin"
  password = ["` + secret + `"]
}`},
		{"heredoc with another error in the block", `source "vsphere" "vc" {
  username = "admin"
  password = <<EOT
` + secret + `
EOT
  insecure = "perhaps"
  tag {
    key   = 1
    value = ["` + secret + `"]
  }
}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(tc.src)}, testSchemas())
			if !diags.HasErrors() {
				t.Fatal("no diagnostics")
			}
			// A plugin's complaint about the password points at it too.
			pb := cfg.Sources["vsphere.vc"]
			diags = append(diags, ConvertDiagnostics(pb.Body, pb.DeclRange, schema.Diagnostics{
				{Severity: schema.Error, Summary: "Wrong password", Path: cty.GetAttrPath("password")},
			})...)
			var out strings.Builder
			if err := cfg.WriteDiagnostics(&out, diags, 100, false); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out.String(), "hunter2") {
				t.Fatalf("the rendered diagnostics show the password:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "password = ") {
				t.Fatalf("the rendered diagnostics do not show where the password is:\n%s", out.String())
			}
		})
	}
}

func TestSensitiveValueIsNeverRenderedInSyntaxErrors(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-very-secret"
	for _, tc := range []struct{ name, src string }{
		{"missing closing quote", "source \"vsphere\" \"vc\" {\n  url      = \"u\"\n  password = \"" + secret + "\n  username = \"a\"\n}\n"},
		{"bare word", "source \"vsphere\" \"vc\" {\n  url      = \"u\"\n  password = " + secret + " +\n}\n"},
		{"two strings", "source \"vsphere\" \"vc\" {\n  url      = \"u\"\n  password = \"" + secret + "\" \"x\"\n}\n"},
		{"nested block", "source \"vsphere\" \"vc\" {\n  tag {\n    key   = \"k\"\n    value = \"" + secret + "\" +\n  }\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(tc.src)}, testSchemas())
			if !diags.HasErrors() {
				t.Fatal("no diagnostics")
			}
			var out strings.Builder
			if err := cfg.WriteDiagnostics(&out, diags, 100, false); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out.String(), "hunter2") {
				t.Fatalf("the rendered diagnostics show the secret:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "main.hcl line ") {
				t.Fatalf("the rendered diagnostics do not say where:\n%s", out.String())
			}
		})
	}
}

func TestSiteIsFerrysNotThePlugins(t *testing.T) {
	dir := writeFiles(t, map[string]string{"main.hcl": `
source "local" "prod" {
  path = "./prod"
  site = "prod"
}
target "local" "dr" { path = "./dr" }
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01"]
}
`})
	cfg, diags := Load(dir, testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	src := cfg.Sources["local.prod"]
	if src.Site != "prod" || cfg.Targets["local.dr"].Site != "" {
		t.Fatalf("sites %q and %q", src.Site, cfg.Targets["local.dr"].Site)
	}
	if src.Config.Type().HasAttribute("site") {
		t.Fatalf("the plugin sees site: %#v", src.Config)
	}

	// A plugin whose schema has its own site keeps it.
	owned := testSchemas()
	owned[sdk.KindSource]["local"] = sdk.ComponentInfo{Schema: &schema.Block{Attributes: map[string]*schema.Attribute{
		"path": {Type: cty.String, Required: true}, "site": {Type: cty.String}}}}
	cfg, diags = Load(dir, owned)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	src = cfg.Sources["local.prod"]
	if src.Site != "" || src.Config.GetAttr("site").AsString() != "prod" {
		t.Fatalf("site %q, config %#v", src.Site, src.Config)
	}

	// A site that is not a string is an error at its line.
	bad := writeFiles(t, map[string]string{"main.hcl": "source \"local\" \"prod\" {\n  path = \"./prod\"\n  site = [1]\n}\n"})
	_, diags = Load(bad, testSchemas())
	if !diags.HasErrors() || diags[0].Subject == nil || diags[0].Subject.Start.Line != 3 {
		t.Fatalf("diagnostics %v", diags)
	}
}

func TestRPO(t *testing.T) {
	for _, c := range []struct {
		rpo  string
		want time.Duration
		err  string
	}{
		{`"1h"`, time.Hour, ""},
		{`"90m"`, 90 * time.Minute, ""},
		{`"2d"`, 48 * time.Hour, ""},
		{`"1d12h"`, 36 * time.Hour, ""},
		{`"soon"`, 0, `"soon" is not a positive duration`},
		{`"-1h"`, 0, `"-1h" is not a positive duration`},
		{`"0s"`, 0, `"0s" is not a positive duration`},
		{`"xd"`, 0, `"xd" is not a positive duration`},
		{`12`, 12 * time.Second, `"12" is not a positive duration`},
	} {
		src := minimal[:len(minimal)-2] + "\n  rpo = " + c.rpo + "\n}\n"
		cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
		if c.err != "" {
			if !diags.HasErrors() || diags[0].Summary != "Invalid RPO" || !strings.Contains(diags[0].Detail, c.err) || diags[0].Subject == nil || diags[0].Subject.Start.Line == 0 {
				t.Errorf("rpo = %s: %v", c.rpo, diags)
			}
			continue
		}
		if diags.HasErrors() || cfg.Jobs["web"].RPO != c.want {
			t.Errorf("rpo = %s: %v, %v", c.rpo, cfg.Jobs["web"].RPO, diags)
		}
	}
}

func TestWebhooks(t *testing.T) {
	t.Setenv("FERRY_TEST_HOOK", "a-secret-of-enough-length")
	src := minimal + `
webhook "ops" {
  url    = "https://hooks.example.com/ferry"
  secret = env("FERRY_TEST_HOOK")
  events = ["rpo.breached", "session.ended"]
}
webhook "all" {
  url    = "http://127.0.0.1:9/hook"
  secret = "0123456789abcdef"
}
`
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if len(cfg.Webhooks) != 2 || cfg.Webhooks[0].Name != "ops" || cfg.Webhooks[0].Secret != "a-secret-of-enough-length" ||
		!cfg.Webhooks[0].Wants("rpo.breached") || cfg.Webhooks[0].Wants("vm.failed") || !cfg.Webhooks[1].Wants("vm.failed") {
		t.Fatalf("webhooks %+v", cfg.Webhooks)
	}
	for _, c := range []struct{ body, summary, detail string }{
		{`url = "ftp://x/y"` + "\n  secret = \"0123456789abcdef\"", "Invalid webhook URL", `"ftp://x/y" is not an http or https URL`},
		{`url = "https://x/y"` + "\n  secret = \"short\"", "Invalid webhook secret", "at least 16 characters"},
		{`url = "https://x/y"` + "\n  secret = \"0123456789abcdef\"\n  events = [\"vm.exploded\"]", "Unknown webhook event", `no event "vm.exploded"`},
	} {
		src := minimal + "webhook \"bad\" {\n  " + c.body + "\n}\n"
		cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
		if !diags.HasErrors() || diags[0].Summary != c.summary || !strings.Contains(diags[0].Detail, c.detail) || len(cfg.Webhooks) != 0 {
			t.Errorf("%s: %v", c.summary, diags)
		}
		// The secret never shows in a rendered diagnostic.
		var out strings.Builder
		cfg.WriteDiagnostics(&out, diags, 100, false)
		if strings.Contains(out.String(), "0123456789abcdef") || strings.Contains(out.String(), `"short"`) {
			t.Errorf("a rendered diagnostic shows the secret:\n%s", out.String())
		}
	}
}
