package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk/schema"
)

const pathSrc = `source "vsphere" "vc" {
  url      = "https://vc.example.com/sdk"
  username = "admin"
  password = "pw"
  placement {
    datacenter = "DC1"
  }
  tag {
    key = "a"
  }
  tag {
    key = "b"
  }
}

job "web" {
  source = source.vsphere.vc
  target = target.local.dr
  vms    = ["web-01", "web-02"]
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    dns         = ["10.2.0.53"]
  }
}

target "local" "dr" { path = "./dr" }
`

// text returns the source text a range covers.
func text(src string, r hcl.Range) string {
	if r.Empty() || r.End.Byte > len(src) {
		return fmt.Sprintf("<%s>", r)
	}
	return src[r.Start.Byte:r.End.Byte]
}

func TestPathRange(t *testing.T) {
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(pathSrc)}, testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	vc, job := cfg.Sources["vsphere.vc"], cfg.Jobs["web"]
	tests := []struct {
		name     string
		body     hcl.Body
		path     cty.Path
		want     string // source text of the range
		complete bool
	}{
		{"attribute", vc.Body, cty.GetAttrPath("url"), `"https://vc.example.com/sdk"`, true},
		{"single nested block", vc.Body, cty.GetAttrPath("placement"), "placement", true},
		{"attribute in single nested block", vc.Body, cty.GetAttrPath("placement").GetAttr("datacenter"), `"DC1"`, true},
		{"second of repeated blocks", vc.Body, cty.GetAttrPath("tag").Index(cty.NumberIntVal(1)).GetAttr("key"), `"b"`, true},
		{"repeated block itself", vc.Body, cty.GetAttrPath("tag").Index(cty.NumberIntVal(0)), "tag", true},
		{"block index out of range", vc.Body, cty.GetAttrPath("tag").Index(cty.NumberIntVal(5)).GetAttr("key"), "tag", false},
		{"attribute absent from nested block", vc.Body, cty.GetAttrPath("placement").GetAttr("datastore"), "placement", false},
		{"absent attribute", vc.Body, cty.GetAttrPath("insecure"), "", false},
		{"list element", job.Body, cty.GetAttrPath("vms").Index(cty.NumberIntVal(1)), `"web-02"`, true},
		{"list element out of range", job.Body, cty.GetAttrPath("vms").Index(cty.NumberIntVal(2)), `["web-01", "web-02"]`, false},
		{"element inside nested block", job.Body, cty.GetAttrPath("re_ip").Index(cty.NumberIntVal(0)).GetAttr("dns").Index(cty.NumberIntVal(0)), `"10.2.0.53"`, true},
		{"string index into a list", job.Body, cty.GetAttrPath("vms").Index(cty.StringVal("x")), `["web-01", "web-02"]`, false},
		{"empty path", vc.Body, nil, "", false},
		{"index first", vc.Body, cty.Path{cty.IndexStep{Key: cty.NumberIntVal(0)}}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng, ok := PathRange(tt.body, tt.path)
			got := ""
			if rng != (hcl.Range{}) {
				got = text(pathSrc, rng)
				if tt.want == "placement" || tt.want == "tag" {
					got = strings.Fields(got)[0] // a block's DefRange covers its header
				}
			}
			if got != tt.want || ok != tt.complete {
				t.Fatalf("PathRange = %q, %v; want %q, %v", got, ok, tt.want, tt.complete)
			}
		})
	}
}

func TestPathRangeObjects(t *testing.T) {
	src := `labels = { site = "prod", "two words" = ["a", "b"] }`
	f, diags := parseOne(t, src)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	tests := []struct {
		path cty.Path
		want string
		ok   bool
	}{
		{cty.GetAttrPath("labels").GetAttr("site"), `"prod"`, true},
		{cty.GetAttrPath("labels").Index(cty.StringVal("site")), `"prod"`, true},
		{cty.GetAttrPath("labels").Index(cty.StringVal("two words")).Index(cty.NumberIntVal(1)), `"b"`, true},
		{cty.GetAttrPath("labels").GetAttr("colour"), `{ site = "prod", "two words" = ["a", "b"] }`, false},
	}
	for _, tt := range tests {
		rng, ok := PathRange(f.Body, tt.path)
		if got := text(src, rng); got != tt.want || ok != tt.ok {
			t.Errorf("PathRange(%s) = %q, %v; want %q, %v", schema.FormatPath(tt.path), got, ok, tt.want, tt.ok)
		}
	}
}

func TestConvertDiagnostics(t *testing.T) {
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(pathSrc)}, testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	vc := cfg.Sources["vsphere.vc"]
	var ds schema.Diagnostics
	ds.Errorf(cty.GetAttrPath("url"), "Cannot reach vCenter", "Dialing %s timed out.", "vc.example.com")
	ds.Errorf(cty.GetAttrPath("tag").Index(cty.NumberIntVal(1)).GetAttr("key"), "Unknown tag", "")
	ds.Errorf(cty.GetAttrPath("insecure"), "Certificate not trusted", "Set insecure = true or install the CA.")
	ds.Errorf(nil, "Not a vCenter", "The endpoint is an ESXi host.")
	ds = append(ds, schema.Diagnostic{Severity: schema.Warning, Summary: "Old version", Path: cty.GetAttrPath("placement").GetAttr("datastore")})
	got := vc.Diagnostics(ds)
	want := []struct {
		severity hcl.DiagnosticSeverity
		summary  string
		detail   string
		text     string
	}{
		{hcl.DiagError, "Cannot reach vCenter", "Dialing vc.example.com timed out.", `"https://vc.example.com/sdk"`},
		{hcl.DiagError, "Unknown tag", "", `"b"`},
		{hcl.DiagError, "Certificate not trusted", "Set insecure = true or install the CA. (at insecure)", `source "vsphere" "vc"`},
		{hcl.DiagError, "Not a vCenter", "The endpoint is an ESXi host.", `source "vsphere" "vc"`},
		{hcl.DiagWarning, "Old version", "At placement.datastore.", "placement"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d diagnostics, want %d", len(got), len(want))
	}
	for i, w := range want {
		d := got[i]
		if d.Severity != w.severity || d.Summary != w.summary || d.Detail != w.detail || text(pathSrc, *d.Subject) != w.text {
			t.Errorf("diagnostic %d = %v %q %q at %q; want %v %q %q at %q", i, d.Severity, d.Summary, d.Detail, text(pathSrc, *d.Subject), w.severity, w.summary, w.detail, w.text)
		}
	}
	// Jobs map paths the same way, for the core's own checks.
	if r := cfg.Jobs["web"].PathRange(cty.GetAttrPath("vms").Index(cty.NumberIntVal(0))); text(pathSrc, r) != `"web-01"` {
		t.Errorf("Job.PathRange(vms[0]) = %q", text(pathSrc, r))
	}
	if r := cfg.Jobs["web"].PathRange(cty.GetAttrPath("schedule")); r != cfg.Jobs["web"].DeclRange {
		t.Errorf("Job.PathRange(schedule) = %s, want the block header", r)
	}
}
