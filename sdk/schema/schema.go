// Package schema describes the HCL blocks a plugin owns, and the diagnostics
// a plugin reports about them.
//
// A plugin declares the body of its configuration block (the inside of
// source "local" "prod" { ... }) as a Block. The host decodes the user's
// original HCL against it, so type and required-attribute errors point at the
// user's file, line and column, and hands the decoded value to the plugin.
// Diagnostics a plugin returns name an attribute by path; the host maps the
// path back to a source range.
//
// This package holds data and pure conversions only; it never talks to a
// plugin process.
package schema

import (
	"fmt"
	"sort"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"
)

// Block is the schema of one HCL block body.
type Block struct {
	Attributes  map[string]*Attribute
	Blocks      map[string]*NestedBlock
	Description string
}

// Attribute is one attribute of a block.
type Attribute struct {
	Type      cty.Type
	Required  bool
	Sensitive bool // never logged nor shown in plans
	// Path marks a string that names a file or folder: the host makes a
	// relative value absolute against the configuration folder, so the
	// plugin never depends on the directory ferry was started in.
	Path        bool
	Description string
}

// Nesting says how often a nested block may appear.
type Nesting int

const (
	NestingSingle Nesting = iota + 1 // at most once (exactly once when MinItems is 1)
	NestingList                      // any number of times, in order
)

// NestedBlock is a block inside a block.
type NestedBlock struct {
	Block    Block
	Nesting  Nesting
	MinItems int
	MaxItems int // 0: no limit
}

// ImpliedType is the cty type of a value decoded with the block's spec.
func (b *Block) ImpliedType() cty.Type {
	return hcldec.ImpliedType(b.Spec())
}

// Spec returns the hcldec specification that decodes a body of this block.
func (b *Block) Spec() hcldec.Spec {
	spec := hcldec.ObjectSpec{}
	for name, a := range b.Attributes {
		spec[name] = &hcldec.AttrSpec{Name: name, Type: a.Type, Required: a.Required}
	}
	for name, nb := range b.Blocks {
		inner := nb.Block.Spec()
		switch nb.Nesting {
		case NestingList:
			spec[name] = &hcldec.BlockListSpec{TypeName: name, Nested: inner, MinItems: nb.MinItems, MaxItems: nb.MaxItems}
		default:
			spec[name] = &hcldec.BlockSpec{TypeName: name, Nested: inner, Required: nb.MinItems > 0}
		}
	}
	return spec
}

// Validate reports a schema that cannot describe an HCL body: names that are
// not identifiers, attributes without a type, a name used twice.
func (b *Block) Validate() error {
	return b.validate("")
}

func (b *Block) validate(prefix string) error {
	for _, name := range sortedKeys(b.Attributes) {
		a := b.Attributes[name]
		if !isIdentifier(name) {
			return fmt.Errorf("attribute %q: not an identifier", prefix+name)
		}
		if a == nil || a.Type == cty.NilType {
			return fmt.Errorf("attribute %q: no type", prefix+name)
		}
		if a.Path && !a.Type.Equals(cty.String) {
			return fmt.Errorf("attribute %q: a path must be a string", prefix+name)
		}
		if _, dup := b.Blocks[name]; dup {
			return fmt.Errorf("%q: both an attribute and a block", prefix+name)
		}
	}
	for _, name := range sortedKeys(b.Blocks) {
		nb := b.Blocks[name]
		if !isIdentifier(name) {
			return fmt.Errorf("block %q: not an identifier", prefix+name)
		}
		if nb == nil || (nb.Nesting != NestingSingle && nb.Nesting != NestingList) {
			return fmt.Errorf("block %q: unknown nesting", prefix+name)
		}
		if err := nb.Block.validate(prefix + name + "."); err != nil {
			return err
		}
	}
	return nil
}

func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		case i > 0 && (r == '-' || r >= '0' && r <= '9'):
		default:
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
