package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Plugin returns what ferry-plugin-local serves: a source, a target and a
// repository, each of type "local", each configured by a folder path.
func Plugin() *sdk.Plugin {
	return &sdk.Plugin{
		Name:    "local",
		Version: Version,
		Sources: map[string]sdk.Component[sdk.Source]{
			"local": {
				Schema:       pathSchema("A site folder: one sub-folder per VM with vm.json and disk<N>.img.", "The site folder. It must exist."),
				Capabilities: sdk.Capabilities{ChangeTracking: true, DirectData: true, Folders: true, Tags: true, Failback: true},
				Validate:     validatePath,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Source, error) {
					path, err := decodePath(cfg)
					if err != nil {
						return nil, err
					}
					return NewSource(path)
				},
			},
		},
		Targets: map[string]sdk.Component[sdk.Target]{
			"local": {
				Schema:       targetSchema(),
				Capabilities: sdk.Capabilities{ReIP: true, DirectData: true, TestFailover: true, MapReplicas: true, Failback: true},
				// A replica records the hardware it is given in its vm.json.
				Hardware: &sdk.HardwareSupport{AsGiven: true},
				Validate: validatePath,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Target, error) {
					path, err := decodePath(cfg)
					if err != nil {
						return nil, err
					}
					t, err := NewTarget(path)
					if err != nil {
						return nil, err
					}
					if v := optionalString(cfg, "isolated_network"); v != "" {
						t.isolated = v
					}
					return t, nil
				},
			},
		},
		Repositories: map[string]sdk.Component[sdk.Repository]{
			"local": {
				Schema:   pathSchema("A repository folder: one file per metadata object.", "The repository folder. It is created when missing."),
				Validate: validatePath,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Repository, error) {
					path, err := decodePath(cfg)
					if err != nil {
						return nil, err
					}
					return NewRepository(path)
				},
			},
		},
	}
}

func pathSchema(block, attr string) *schema.Block {
	return &schema.Block{
		Description: block,
		Attributes: map[string]*schema.Attribute{
			"path": {Type: cty.String, Required: true, Path: true, Description: attr},
		},
	}
}

func targetSchema() *schema.Block {
	s := pathSchema("A target folder: one sub-folder per replica.", "The target folder. It is created when missing.")
	s.Attributes["isolated_network"] = &schema.Attribute{Type: cty.String,
		Description: "The network test VMs' NICs go on when a plan's test_network_map does not map theirs (default " + DefaultIsolatedNetwork + ")."}
	return s
}

// optionalString reads an optional string attribute: "" when absent,
// null or unknown.
func optionalString(cfg cty.Value, name string) string {
	if cfg.IsNull() || !cfg.IsKnown() || !cfg.Type().IsObjectType() || !cfg.Type().HasAttribute(name) {
		return ""
	}
	v := cfg.GetAttr(name)
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return ""
	}
	return v.AsString()
}

type pathConfig struct {
	Path string `cty:"path"`
}

// validatePath reports an empty or relative path. The host resolves a
// relative path against the configuration folder before the plugin sees
// it, so a relative one here is a bug to report, not to guess about.
func validatePath(cfg cty.Value) schema.Diagnostics {
	var diags schema.Diagnostics
	at := cty.GetAttrPath("path")
	if cfg.IsNull() || !cfg.IsKnown() || !cfg.Type().IsObjectType() || !cfg.Type().HasAttribute("path") {
		diags.Errorf(at, "Missing path", "the block needs a path")
		return diags
	}
	v := cfg.GetAttr("path")
	switch {
	case !v.IsKnown():
		// Known only at run time; New checks it then.
	case v.IsNull() || v.AsString() == "":
		diags.Errorf(at, "Empty path", "path must name a folder")
	case !filepath.IsAbs(v.AsString()):
		diags.Errorf(at, "Relative path", "%q is relative; the host resolves paths before they reach the plugin", v.AsString())
	}
	return diags
}

func decodePath(cfg cty.Value) (string, error) {
	if err := validatePath(cfg).Err(); err != nil {
		return "", fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	// The path alone: a target's block has more attributes.
	var pc pathConfig
	if err := sdk.DecodeConfig(cty.ObjectVal(map[string]cty.Value{"path": cfg.GetAttr("path")}), &pc); err != nil {
		return "", fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return filepath.Clean(pc.Path), nil
}

// checkFolder checks that path is a folder, creating it when create is set.
func checkFolder(path string, create bool) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		if !create {
			return fmt.Errorf("folder %s: %w", path, errdefs.ErrNotFound)
		}
		return mkdirDurable(path)
	}
	if err != nil {
		return fmt.Errorf("folder %s: %w", path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a folder: %w", path, errdefs.ErrInvalidArgument)
	}
	return nil
}
