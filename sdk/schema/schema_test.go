package schema

import (
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

var testBlock = &Block{
	Attributes: map[string]*Attribute{
		"path":    {Type: cty.String, Required: true},
		"workers": {Type: cty.Number},
		"tags":    {Type: cty.List(cty.String)},
	},
	Blocks: map[string]*NestedBlock{
		"tls":   {Nesting: NestingSingle, Block: Block{Attributes: map[string]*Attribute{"ca_file": {Type: cty.String}}}},
		"label": {Nesting: NestingList, Block: Block{Attributes: map[string]*Attribute{"key": {Type: cty.String, Required: true}}}},
	},
}

func decode(t *testing.T, src string) (cty.Value, hcl.Diagnostics) {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), "test.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return hcldec.Decode(f.Body, testBlock.Spec(), nil)
}

func TestSpecDecodes(t *testing.T) {
	v, diags := decode(t, `
path    = "/srv/site"
workers = 4
tls { ca_file = "ca.pem" }
label { key = "a" }
label { key = "b" }
`)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if got := v.GetAttr("path").AsString(); got != "/srv/site" {
		t.Errorf("path = %q", got)
	}
	if got := v.GetAttr("label").LengthInt(); got != 2 {
		t.Errorf("%d label blocks", got)
	}
	if !v.Type().Equals(testBlock.ImpliedType()) {
		t.Errorf("decoded type %#v is not the implied type %#v", v.Type(), testBlock.ImpliedType())
	}
}

func TestSpecReportsErrorsWithRanges(t *testing.T) {
	tests := []struct {
		name, src string
		line      int
	}{
		{"missing required", `workers = 1`, 1},
		{"wrong type", "path = \"x\"\nworkers = \"many\"", 2},
		{"unknown attribute", "path = \"x\"\n\ncolour = 3", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := decode(t, tt.src)
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			if diags[0].Subject == nil || diags[0].Subject.Start.Line != tt.line {
				t.Fatalf("error %v not on line %d", diags[0], tt.line)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		b    *Block
		ok   bool
	}{
		{"good", testBlock, true},
		{"bad name", &Block{Attributes: map[string]*Attribute{"9lives": {Type: cty.String}}}, false},
		{"no type", &Block{Attributes: map[string]*Attribute{"x": {}}}, false},
		{"attr and block", &Block{Attributes: map[string]*Attribute{"x": {Type: cty.String}}, Blocks: map[string]*NestedBlock{"x": {Nesting: NestingSingle}}}, false},
		{"bad nesting", &Block{Blocks: map[string]*NestedBlock{"x": {}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.b.Validate(); (err == nil) != tt.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestFormatPath(t *testing.T) {
	p := cty.GetAttrPath("label").Index(cty.NumberIntVal(1)).GetAttr("key")
	if got := FormatPath(p); got != "label[1].key" {
		t.Fatalf("FormatPath = %q", got)
	}
	var ds Diagnostics
	ds.Errorf(cty.GetAttrPath("path"), "Folder missing", "%q does not exist", "/nope")
	if err := ds.Err(); err == nil || err.Error() != `path: Folder missing: "/nope" does not exist` {
		t.Fatalf("Err = %v", err)
	}
}
