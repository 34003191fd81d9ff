package config

import (
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

func TestPathAttributesAreResolvedAgainstTheConfigFolder(t *testing.T) {
	block := &schema.Block{
		Attributes: map[string]*schema.Attribute{
			"path":  {Type: cty.String, Required: true, Path: true},
			"label": {Type: cty.String},
		},
		Blocks: map[string]*schema.NestedBlock{
			"tls": {Nesting: schema.NestingSingle, Block: schema.Block{Attributes: map[string]*schema.Attribute{
				"ca_file": {Type: cty.String, Path: true},
			}}},
		},
	}
	schemas := StaticSchemas{sdk.KindSource: {"files": block}}
	src := `
source "files" "rel" {
  path  = "sites/prod"
  label = "sites/prod"
  tls { ca_file = "certs/ca.pem" }
}
source "files" "abs" { path = "/srv/prod" }
`
	cfg, diags := LoadFiles("/etc/ferry", map[string][]byte{"main.hcl": []byte(src)}, schemas)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	rel := cfg.Sources["files.rel"].Config
	if got := rel.GetAttr("path").AsString(); got != "/etc/ferry/sites/prod" {
		t.Errorf("relative path = %q", got)
	}
	if got := rel.GetAttr("label").AsString(); got != "sites/prod" {
		t.Errorf("a non-path attribute was rewritten: %q", got)
	}
	if got := rel.GetAttr("tls").GetAttr("ca_file").AsString(); got != "/etc/ferry/certs/ca.pem" {
		t.Errorf("nested path = %q", got)
	}
	if got := cfg.Sources["files.abs"].Config.GetAttr("path").AsString(); got != "/srv/prod" {
		t.Errorf("absolute path = %q", got)
	}
}
