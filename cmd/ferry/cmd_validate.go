package main

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/pluginhost"
)

func init() {
	register(&command{
		name: "validate",
		summary: `Check the configuration and print every problem at once.

All *.hcl files of the configuration folder are read as one configuration.
Each plugin block is decoded against the schema its plugin declares and then
checked by the plugin itself. Problems are printed with file, line, column
and a snippet; nothing is printed when all is well. Exit status 1 means
problems were found.`,
		usage: "ferry [--config DIR] validate",
		setup: noFlags(runValidate),
	})
}

func runValidate(e *env, args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q (use --config DIR to name the configuration folder)", args[0])
	}
	h := e.host()
	defer h.Close()
	cfg, diags := loadConfig(context.Background(), e.configDir, h)
	if len(diags) > 0 {
		if err := cfg.WriteDiagnostics(e.stderr, diags, 100, false); err != nil {
			return err
		}
	}
	if diags.HasErrors() {
		return &exitError{code: exitFailure}
	}
	return nil
}

// loadConfig loads the configuration and has each plugin check the blocks
// it owns, mapping what plugins say back to the user's files.
func loadConfig(ctx context.Context, dir string, h *pluginhost.Host) (*config.Config, hcl.Diagnostics) {
	cfg, diags := config.Load(dir, h)
	for _, blocks := range []map[string]*config.PluginBlock{cfg.Sources, cfg.Targets, cfg.Repositories} {
		keys := make([]string, 0, len(blocks))
		for k := range blocks {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b := blocks[k]
			if b.Config.IsNull() || b.Schema == nil {
				continue // did not decode; already reported
			}
			ds, err := h.Validate(ctx, b.Kind, b.Type, b.Config)
			if err != nil {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Plugin could not check the block",
					Detail:   fmt.Sprintf("Checking %s with its plugin failed: %s.", b.Address(), err),
					Subject:  b.DeclRange.Ptr(),
				})
				continue
			}
			diags = append(diags, b.Diagnostics(ds)...)
		}
	}
	return cfg, diags
}
