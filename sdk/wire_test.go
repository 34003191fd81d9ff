package sdk

import (
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// A configuration built in code names only what it sets: the attributes
// its schema has and it lacks go as nulls, nested ones too, as HCL would
// leave them.
func TestConfigurationWithoutOptionalAttributes(t *testing.T) {
	ty := cty.Object(map[string]cty.Type{
		"path":             cty.String,
		"isolated_network": cty.String,
		"limits":           cty.Object(map[string]cty.Type{"rate": cty.Number, "burst": cty.Number}),
	})
	v := cty.ObjectVal(map[string]cty.Value{
		"path":   cty.StringVal("/srv/dr"),
		"limits": cty.ObjectVal(map[string]cty.Value{"rate": cty.NumberIntVal(5)}),
	})
	dv, err := valueToProto(v, ty)
	if err != nil {
		t.Fatal(err)
	}
	got, err := valueFromProto(dv, ty)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetAttr("path").AsString() != "/srv/dr" || !got.GetAttr("isolated_network").IsNull() ||
		!got.GetAttr("limits").GetAttr("burst").IsNull() || !got.GetAttr("limits").GetAttr("rate").RawEquals(cty.NumberIntVal(5)) {
		t.Fatalf("decoded %#v", got)
	}
}
