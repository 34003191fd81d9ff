package config

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk/schema"
)

// PathRange returns the source range of what path names inside body: an
// attribute's value, an element or key of a list or object written
// literally, or a nested block (path steps name blocks by type, and blocks
// that may repeat by index: label[1].key). When only a leading part of path
// exists it returns that part's range and ok false; when nothing of it
// exists, path is empty or body is not native HCL syntax, the zero range
// and ok false.
func PathRange(body hcl.Body, path cty.Path) (rng hcl.Range, ok bool) {
	rng, _, ok = walkPath(body, path)
	return rng, ok
}

// pathRangeOr is PathRange with a range to use when nothing of path exists.
func pathRangeOr(body hcl.Body, path cty.Path, fallback hcl.Range) hcl.Range {
	if rng, found, _ := walkPath(body, path); found {
		return rng
	}
	return fallback
}

// walkPath follows path into body: rng is the deepest range found (found
// says whether there was one), complete whether all of path was.
func walkPath(body hcl.Body, path cty.Path) (rng hcl.Range, found, complete bool) {
	sb, isSyntax := body.(*hclsyntax.Body)
	if !isSyntax || sb == nil || len(path) == 0 {
		return hcl.Range{}, false, false
	}
	for i := 0; i < len(path); {
		step, isAttr := path[i].(cty.GetAttrStep)
		if !isAttr {
			return rng, found, false
		}
		i++
		if attr, ok := sb.Attributes[step.Name]; ok {
			return walkExpr(attr.Expr, path[i:])
		}
		var blocks []*hclsyntax.Block
		for _, b := range sb.Blocks {
			if b.Type == step.Name {
				blocks = append(blocks, b)
			}
		}
		if len(blocks) == 0 {
			return rng, found, false
		}
		b := blocks[0]
		if i < len(path) {
			if idx, isIndex := path[i].(cty.IndexStep); isIndex {
				n, ok := index(idx, len(blocks))
				if !ok {
					return blocks[0].DefRange(), true, false
				}
				b = blocks[n]
				i++
			}
		}
		rng, found = b.DefRange(), true
		sb = b.Body
	}
	return rng, found, true
}

// walkExpr follows the rest of a path into a literal list or object.
func walkExpr(expr hclsyntax.Expression, path cty.Path) (hcl.Range, bool, bool) {
	rng := expr.Range()
	for _, step := range path {
		var next hclsyntax.Expression
		switch e := expr.(type) {
		case *hclsyntax.TupleConsExpr:
			if idx, ok := step.(cty.IndexStep); ok {
				if n, ok := index(idx, len(e.Exprs)); ok {
					next = e.Exprs[n]
				}
			}
		case *hclsyntax.ObjectConsExpr:
			var key string
			switch s := step.(type) {
			case cty.GetAttrStep:
				key = s.Name
			case cty.IndexStep:
				if s.Key.Type() == cty.String && s.Key.IsKnown() && !s.Key.IsNull() {
					key = s.Key.AsString()
				}
			}
			for _, item := range e.Items {
				if k, ok := objectKey(item.KeyExpr); ok && key != "" && k == key {
					next = item.ValueExpr
					break
				}
			}
		}
		if next == nil {
			return rng, true, false
		}
		expr, rng = next, next.Range()
	}
	return rng, true, true
}

func index(step cty.IndexStep, n int) (int, bool) {
	k := step.Key
	if k.Type() != cty.Number || !k.IsKnown() || k.IsNull() {
		return 0, false
	}
	i, acc := k.AsBigFloat().Int64()
	if acc != 0 || i < 0 || i >= int64(n) {
		return 0, false
	}
	return int(i), true
}

func objectKey(expr hclsyntax.Expression) (string, bool) {
	if kw := hcl.ExprAsKeyword(expr); kw != "" {
		return kw, true
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() || v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return "", false
	}
	return v.AsString(), true
}

// ConvertDiagnostics turns diagnostics about the configuration in body,
// which name attributes by path (a plugin's, for example), into HCL
// diagnostics pointing at the source. A diagnostic whose path cannot be
// followed to its end points at the deepest part that exists, or at
// declRange, and names the path in its detail.
func ConvertDiagnostics(body hcl.Body, declRange hcl.Range, ds schema.Diagnostics) hcl.Diagnostics {
	var out hcl.Diagnostics
	for _, d := range ds {
		rng, found, complete := walkPath(body, d.Path)
		if !found {
			rng = declRange
		}
		detail := d.Detail
		if !complete && len(d.Path) > 0 {
			if detail == "" {
				detail = fmt.Sprintf("At %s.", schema.FormatPath(d.Path))
			} else {
				detail = fmt.Sprintf("%s (at %s)", detail, schema.FormatPath(d.Path))
			}
		}
		sev := hcl.DiagError
		if d.Severity == schema.Warning {
			sev = hcl.DiagWarning
		}
		out = append(out, &hcl.Diagnostic{Severity: sev, Summary: d.Summary, Detail: detail, Subject: rng.Ptr()})
	}
	return out
}
