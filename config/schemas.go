package config

import (
	"fmt"
	"maps"
	"slices"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// Schemas finds the schema of the block body a plugin owns.
type Schemas interface {
	// Schema returns the body schema of component kind of type typ (the
	// block's first label), or an error wrapping errdefs.ErrNotFound when
	// no installed plugin serves it. Load calls it once per block, from
	// one goroutine.
	Schema(kind sdk.Kind, typ string) (*schema.Block, error)
}

// TypeLister is a Schemas that can also list the types it serves. Load uses
// it, when present, to name the known types when a block names an unknown
// one.
type TypeLister interface {
	// Types returns the types served for kind, sorted.
	Types(kind sdk.Kind) []string
}

// ComponentInfos is implemented by a Schemas that also says what a
// component type declares besides its schema: capabilities and limits.
// Load uses it, when present, to check jobs against them (a folder or tag
// selector on a source that has none, a retention beyond the target's
// limit) and keeps the answer in PluginBlock.Info.
type ComponentInfos interface {
	// ComponentInfo returns the declaration of component kind of type
	// typ, or an error wrapping errdefs.ErrNotFound when no installed
	// plugin serves it.
	ComponentInfo(kind sdk.Kind, typ string) (sdk.ComponentInfo, error)
}

// StaticComponents serves what plugins declare from memory: kind, then
// type. It suits tests, and hosts that collected the declarations of their
// plugins beforehand.
type StaticComponents map[sdk.Kind]map[string]sdk.ComponentInfo

var (
	_ Schemas        = StaticComponents(nil)
	_ TypeLister     = StaticComponents(nil)
	_ ComponentInfos = StaticComponents(nil)
)

// Schema implements Schemas.
func (s StaticComponents) Schema(kind sdk.Kind, typ string) (*schema.Block, error) {
	c, err := s.ComponentInfo(kind, typ)
	return c.Schema, err
}

// Types implements TypeLister.
func (s StaticComponents) Types(kind sdk.Kind) []string {
	return slices.Sorted(maps.Keys(s[kind]))
}

// ComponentInfo implements ComponentInfos.
func (s StaticComponents) ComponentInfo(kind sdk.Kind, typ string) (sdk.ComponentInfo, error) {
	if c, ok := s[kind][typ]; ok {
		c.Kind, c.Type = kind, typ
		return c, nil
	}
	return sdk.ComponentInfo{}, fmt.Errorf("%s %q: %w", kind, typ, errdefs.ErrNotFound)
}

// StaticSchemas serves schemas from memory: kind, then type. It suits tests,
// and hosts that collected the schemas of their plugins beforehand.
type StaticSchemas map[sdk.Kind]map[string]*schema.Block

var (
	_ Schemas    = StaticSchemas(nil)
	_ TypeLister = StaticSchemas(nil)
)

// Schema implements Schemas.
func (s StaticSchemas) Schema(kind sdk.Kind, typ string) (*schema.Block, error) {
	if b, ok := s[kind][typ]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s %q: %w", kind, typ, errdefs.ErrNotFound)
}

// Types implements TypeLister.
func (s StaticSchemas) Types(kind sdk.Kind) []string {
	return slices.Sorted(maps.Keys(s[kind]))
}
