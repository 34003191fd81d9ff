package sdktest

import (
	"fmt"
	"regexp"
	"sort"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// semver is a canonical semantic version without a leading "v": the form
// in plugin file names and version constraints.
var semver = regexp.MustCompile(`^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// pluginName is what may follow ferry-plugin- in a binary's name.
var pluginName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// RunPlugin checks what a plugin says about itself, without configuring
// anything: its metadata, that every schema builds an HCL decoder, and
// that every Validate func survives a null and an empty configuration and
// names real attributes in its diagnostics.
func RunPlugin(t *testing.T, p *sdk.Plugin) {
	t.Run("Metadata", func(t *testing.T) {
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		if !pluginName.MatchString(p.Name) {
			t.Errorf("plugin name %q cannot follow ferry-plugin- in a file name: use lower-case letters, digits, - and _", p.Name)
		}
		if !semver.MatchString(p.Version) {
			t.Errorf("plugin version %q is not a semantic version such as 1.4.0 (no leading v)", p.Version)
		}
	})
	components := pluginComponents(p)
	t.Run("Schema", func(t *testing.T) {
		for _, pc := range components {
			t.Run(pc.name, func(t *testing.T) {
				if _, err := emptyConfig(pc.schema); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
	t.Run("Validate", func(t *testing.T) {
		for _, pc := range components {
			t.Run(pc.name, func(t *testing.T) {
				if pc.validate == nil {
					t.Skip("the component has no Validate func")
				}
				empty, err := emptyConfig(pc.schema)
				if err != nil {
					t.Fatalf("schema: %v", err)
				}
				for _, v := range []struct {
					what string
					val  cty.Value
				}{
					{"a null configuration", cty.NullVal(pc.schema.ImpliedType())},
					{"an empty configuration block", empty},
				} {
					diags, err := callValidate(pc.validate, v.val)
					if err != nil {
						t.Errorf("Validate of %s: %v", v.what, err)
						continue
					}
					for _, d := range diags {
						if msg := checkDiagnostic(pc.schema, d); msg != "" {
							t.Errorf("Validate of %s: %s", v.what, msg)
						}
					}
				}
			})
		}
	})
}

// pluginComponent is one component of a plugin, whatever its kind.
type pluginComponent struct {
	name     string // kind_type, the name of its subtests
	schema   *schema.Block
	validate func(cty.Value) schema.Diagnostics
}

func pluginComponents(p *sdk.Plugin) []pluginComponent {
	var out []pluginComponent
	out = appendComponents(out, sdk.KindSource, p.Sources)
	out = appendComponents(out, sdk.KindTarget, p.Targets)
	out = appendComponents(out, sdk.KindRepository, p.Repositories)
	return out
}

func appendComponents[T any](out []pluginComponent, kind sdk.Kind, m map[string]sdk.Component[T]) []pluginComponent {
	types := make([]string, 0, len(m))
	for typ := range m {
		types = append(types, typ)
	}
	sort.Strings(types)
	for _, typ := range types {
		c := m[typ]
		out = append(out, pluginComponent{name: string(kind) + "_" + typ, schema: c.Schema, validate: c.Validate})
	}
	return out
}

// emptyConfig decodes an empty block body against the schema, as the host
// does for a block the user left empty: attributes null, nested lists
// empty. Errors about required attributes are expected and dropped.
func emptyConfig(s *schema.Block) (val cty.Value, err error) {
	if s == nil {
		return cty.NilVal, fmt.Errorf("no schema")
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoding against the schema panicked: %v", r)
		}
	}()
	if err := s.Validate(); err != nil {
		return cty.NilVal, err
	}
	spec := s.Spec()
	if ty := hcldec.ImpliedType(spec); !ty.IsObjectType() {
		return cty.NilVal, fmt.Errorf("the schema decodes to %s, want an object", ty.FriendlyName())
	}
	file, diags := hclsyntax.ParseConfig(nil, "empty.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	val, _ = hcldec.Decode(file.Body, spec, nil)
	return val, nil
}

// callValidate calls a Validate func, turning a panic into an error.
func callValidate(validate func(cty.Value) schema.Diagnostics, v cty.Value) (diags schema.Diagnostics, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return validate(v), nil
}

// checkDiagnostic reports a diagnostic the host could not show well: no
// severity or summary, or a path that names nothing in the schema.
func checkDiagnostic(s *schema.Block, d schema.Diagnostic) string {
	if d.Severity != schema.Error && d.Severity != schema.Warning {
		return fmt.Sprintf("diagnostic %q has severity %d, want Error or Warning", d.Summary, d.Severity)
	}
	if d.Summary == "" {
		return fmt.Sprintf("a diagnostic at %q has no summary", schema.FormatPath(d.Path))
	}
	if err := pathInSchema(s, d.Path); err != nil {
		return fmt.Sprintf("diagnostic %q: path %q: %v", d.Summary, schema.FormatPath(d.Path), err)
	}
	return ""
}

// pathInSchema reports a path that does not lead through the schema's
// blocks to one of its attributes or blocks. Past an attribute the path
// may go on into the attribute's value.
func pathInSchema(b *schema.Block, path cty.Path) error {
	for i := 0; i < len(path); i++ {
		step, ok := path[i].(cty.GetAttrStep)
		if !ok {
			return fmt.Errorf("step %d indexes a block body", i)
		}
		if _, ok := b.Attributes[step.Name]; ok {
			return nil
		}
		nb, ok := b.Blocks[step.Name]
		if !ok {
			return fmt.Errorf("%q is neither an attribute nor a block", step.Name)
		}
		if nb.Nesting == schema.NestingList && i+1 < len(path) {
			idx, ok := path[i+1].(cty.IndexStep)
			if !ok || idx.Key.Type() != cty.Number {
				return fmt.Errorf("block list %q must be indexed by number", step.Name)
			}
			i++
		}
		b = &nb.Block
	}
	return nil
}
