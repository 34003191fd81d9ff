package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

func TestValidatePath(t *testing.T) {
	tests := []struct {
		name    string
		cfg     cty.Value
		summary string
	}{
		{"absolute", pathValue("/srv/site"), ""},
		{"unknown", cty.ObjectVal(map[string]cty.Value{"path": cty.UnknownVal(cty.String)}), ""},
		{"empty", pathValue(""), "Empty path"},
		{"null", cty.ObjectVal(map[string]cty.Value{"path": cty.NullVal(cty.String)}), "Empty path"},
		{"relative", pathValue("site"), "Relative path"},
		{"dot relative", pathValue("./site"), "Relative path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := validatePath(tt.cfg)
			if tt.summary == "" {
				if diags.HasErrors() {
					t.Fatalf("unexpected diagnostics: %v", diags.Err())
				}
				return
			}
			if len(diags) != 1 || diags[0].Summary != tt.summary || schema.FormatPath(diags[0].Path) != "path" {
				t.Fatalf("diagnostics %+v, want one %q about path", diags, tt.summary)
			}
		})
	}
}

func TestPluginNew(t *testing.T) {
	ctx := context.Background()
	p := Plugin()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	if _, err := p.Sources["local"].New(ctx, pathValue(missing)); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("source on a missing folder: %v, want ErrNotFound", err)
	}
	if _, err := p.Sources["local"].New(ctx, pathValue("rel")); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("source on a relative path: %v, want ErrInvalidArgument", err)
	}
	for name, newFn := range map[string]func() error{
		"target": func() error { _, err := p.Targets["local"].New(ctx, pathValue(filepath.Join(dir, "t"))); return err },
		"repository": func() error {
			_, err := p.Repositories["local"].New(ctx, pathValue(filepath.Join(dir, "r")))
			return err
		},
	} {
		if err := newFn(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, sub := range []string{"t", "r"} {
		if st, err := os.Stat(filepath.Join(dir, sub)); err != nil || !st.IsDir() {
			t.Errorf("folder %s was not created: %v", sub, err)
		}
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := p.Targets["local"].New(ctx, pathValue(file)); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("target on a file: %v, want ErrInvalidArgument", err)
	}
	caps := p.Sources["local"].Capabilities
	if !caps.ChangeTracking || !caps.DirectData || caps.Quiesce || caps.ReIP {
		t.Errorf("source capabilities %+v", caps)
	}
	if c := p.Targets["local"].Capabilities; !c.ReIP || !c.DirectData || c.ChangeTracking {
		t.Errorf("target capabilities %+v", c)
	}
}
