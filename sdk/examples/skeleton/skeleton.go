package skeleton

import (
	"context"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// Version is the plugin's version, a semantic version without a leading v.
// ferry shows it and matches it against version constraints.
const Version = "0.1.0"

// Plugin describes what the ferry-plugin-skeleton binary serves. Its keys
// are the type names users write in their HCL, so this repository is
// configured as
//
//	repository "skeleton" "meta" {
//	  max_object_bytes = 1048576
//	}
func Plugin() *sdk.Plugin {
	return &sdk.Plugin{
		Name:    "skeleton",
		Version: Version,
		Repositories: map[string]sdk.Component[sdk.Repository]{
			"skeleton": {
				Schema:   configSchema,
				Validate: validateConfig,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Repository, error) {
					return newRepository(cfg)
				},
				// A repository has no optional features to declare. A
				// Source or Target would set, for example,
				// Capabilities: sdk.Capabilities{ChangeTracking: true}.
			},
		},
	}
}

// configSchema is the body of the repository block. ferry decodes the
// user's HCL against it, so a wrong type or a missing required attribute is
// reported at the user's file, line and column before the plugin sees
// anything.
var configSchema = &schema.Block{
	Description: "Keeps metadata objects in the plugin's memory.",
	Attributes: map[string]*schema.Attribute{
		"max_object_bytes": {
			Type:        cty.Number,
			Description: "The largest object the repository accepts, in bytes. Default 64 MiB.",
		},
	},
}

// defaultMaxObjectBytes is the limit when the configuration sets none.
const defaultMaxObjectBytes = 64 << 20

// config is the decoded configuration. Each field's cty tag names an
// attribute of configSchema; a pointer stays nil when the user left the
// attribute out.
type config struct {
	MaxObjectBytes *int64 `cty:"max_object_bytes"`
}

// validateConfig checks what the schema cannot express. It must have no
// side effects and never touch the network: ferry calls it for
// `ferry validate` on machines that may not reach the endpoint. It must
// also cope with a null or half-empty value.
func validateConfig(v cty.Value) schema.Diagnostics {
	var diags schema.Diagnostics
	if v.IsNull() || !v.IsKnown() {
		return nil
	}
	limit := v.GetAttr("max_object_bytes")
	if limit.IsNull() || !limit.IsKnown() {
		return nil
	}
	if n, _ := limit.AsBigFloat().Int64(); !limit.AsBigFloat().IsInt() || n <= 0 {
		// The path names the attribute, so ferry can point at the very
		// line of the user's file.
		diags.Errorf(cty.GetAttrPath("max_object_bytes"), "Invalid object size limit",
			"max_object_bytes must be a whole number of bytes greater than zero, not %s.", limit.AsBigFloat().Text('f', -1))
	}
	return diags
}

// newRepository builds an instance from a configuration that passed
// validation.
func newRepository(cfg cty.Value) (*Repository, error) {
	var c config
	if !cfg.IsNull() {
		if err := sdk.DecodeConfig(cfg, &c); err != nil {
			return nil, err
		}
	}
	limit := int64(defaultMaxObjectBytes)
	if c.MaxObjectBytes != nil {
		limit = *c.MaxObjectBytes
	}
	return NewRepository(limit), nil
}
