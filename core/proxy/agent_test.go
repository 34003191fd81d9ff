package proxy

import (
	"context"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/core/pluginhost"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// countingPlugins configures a new in-memory target at every call.
type countingPlugins struct{ targets int }

func (c *countingPlugins) Found() []pluginhost.Found                       { return nil }
func (c *countingPlugins) Info(context.Context, string) (*sdk.Info, error) { return &sdk.Info{}, nil }
func (c *countingPlugins) Source(context.Context, string, cty.Value) (sdk.Source, sdk.Capabilities, error) {
	return sdktest.NewMemSource(), sdk.Capabilities{}, nil
}
func (c *countingPlugins) Target(context.Context, string, cty.Value) (sdk.Target, sdk.Capabilities, error) {
	c.targets++
	return sdktest.NewMemTarget(), sdk.Capabilities{}, nil
}
func (c *countingPlugins) Repository(context.Context, string, cty.Value) (sdk.Repository, error) {
	return sdktest.NewMemRepository(), nil
}

func TestComponentsAreKeptPerBlockAndForgottenAfterAFailure(t *testing.T) {
	plugins := &countingPlugins{}
	a := &Agent{Name: "p1", Plugins: plugins}
	ctx := context.Background()
	block := func(path string) *proxyv1.Component {
		c, err := encodeComponent("mem", cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(path)}))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	dr, other := block("/dr"), block("/other")
	first, err := a.component(ctx, sdk.KindTarget, dr)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := a.component(ctx, sdk.KindTarget, block("/dr"))
	if again != first || plugins.targets != 1 {
		t.Fatalf("one block configured %d instances", plugins.targets)
	}
	if o, _ := a.component(ctx, sdk.KindTarget, other); o == first || plugins.targets != 2 {
		t.Fatalf("two blocks share an instance (%d configured)", plugins.targets)
	}
	// A task half failed: its instance is configured anew next time.
	a.forget(sdk.KindTarget, dr)
	if fresh, _ := a.component(ctx, sdk.KindTarget, dr); fresh == first || plugins.targets != 3 {
		t.Fatalf("a forgotten block kept its instance (%d configured)", plugins.targets)
	}
	if _, err := a.component(ctx, sdk.KindTarget, nil); err == nil {
		t.Fatal("no block: no error")
	}
}
