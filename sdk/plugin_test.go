package sdk_test

import (
	"context"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// TestPluginValidateLimits: a restore point limit belongs to a target, is
// not negative, and comes with the reason users will read.
func TestPluginValidateLimits(t *testing.T) {
	s := &schema.Block{Attributes: map[string]*schema.Attribute{"path": {Type: cty.String}}}
	newTarget := func(ctx context.Context, cfg cty.Value) (sdk.Target, error) { return nil, nil }
	newSource := func(ctx context.Context, cfg cty.Value) (sdk.Source, error) { return nil, nil }
	for _, tc := range []struct {
		name   string
		plugin sdk.Plugin
		want   string // "" for valid
	}{
		{"target limit", sdk.Plugin{Targets: map[string]sdk.Component[sdk.Target]{"t": {Schema: s, New: newTarget,
			Limits: sdk.Limits{MaxRestorePoints: 28, MaxRestorePointsReason: "32 snapshots in a chain"}}}}, ""},
		{"no limit", sdk.Plugin{Targets: map[string]sdk.Component[sdk.Target]{"t": {Schema: s, New: newTarget}}}, ""},
		{"negative", sdk.Plugin{Targets: map[string]sdk.Component[sdk.Target]{"t": {Schema: s, New: newTarget,
			Limits: sdk.Limits{MaxRestorePoints: -1, MaxRestorePointsReason: "x"}}}}, "negative"},
		{"no reason", sdk.Plugin{Targets: map[string]sdk.Component[sdk.Target]{"t": {Schema: s, New: newTarget,
			Limits: sdk.Limits{MaxRestorePoints: 3}}}}, "MaxRestorePointsReason"},
		{"on a source", sdk.Plugin{Sources: map[string]sdk.Component[sdk.Source]{"s": {Schema: s, New: newSource,
			Limits: sdk.Limits{MaxRestorePoints: 3, MaxRestorePointsReason: "x"}}}}, "only a target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.plugin
			p.Name, p.Version = "p", "1.0.0"
			err := p.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want an error about %q", err, tc.want)
			}
		})
	}
}
