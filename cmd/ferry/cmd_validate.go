package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/pflag"

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
and a snippet on standard error; nothing is printed when all is well.
--json prints them as a list on standard output instead ([] when all is
well). Exit status 1 means problems were found.`,
		usage: "ferry [--config DIR] validate [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print the problems as JSON, on standard output")
			return func(e *env, args []string) error { return runValidate(e, args, *asJSON) }
		},
	})
}

// diagnostic is one problem of 'ferry validate --json'.
type diagnostic struct {
	Severity string `json:"severity"` // error or warning
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	// Where: the file's path, and the line and column where the problem
	// starts, both from 1; absent for a problem of no one file.
	File   string `json:"file,omitempty"`
	Line   int    `json:"line,omitempty"`
	Column int    `json:"column,omitempty"`
}

func runValidate(e *env, args []string, asJSON bool) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q (use --config DIR to name the configuration folder)", args[0])
	}
	h := e.host()
	defer h.Close()
	cfg, diags := loadConfig(context.Background(), e.configDir, h)
	if asJSON {
		list := make([]diagnostic, 0, len(diags))
		for _, d := range diags {
			dj := diagnostic{Severity: "error", Summary: d.Summary, Detail: d.Detail}
			if d.Severity == hcl.DiagWarning {
				dj.Severity = "warning"
			}
			if r := d.Subject; r != nil {
				dj.File, dj.Line, dj.Column = r.Filename, r.Start.Line, r.Start.Column
			}
			list = append(list, dj)
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			return err
		}
	} else if len(diags) > 0 {
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
