package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

var siteSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "site"}}}

// decodePluginBlock decodes a source, target or repository block against
// the schema of the plugin that serves its type. The block is returned
// even when it does not decode, so that jobs referring to it are not
// reported again.
func (l *loader) decodePluginBlock(kind sdk.Kind, b *hcl.Block) *PluginBlock {
	pb := &PluginBlock{
		Kind:      kind,
		Type:      b.Labels[0],
		Name:      b.Labels[1],
		Body:      b.Body,
		DeclRange: b.DefRange,
	}
	typeRange := b.LabelRanges[0]
	if l.schemas == nil {
		l.errorf(typeRange, fmt.Sprintf("Unknown %s type", kind),
			"No plugin serves %s %q: no plugins are installed.", kind, pb.Type)
		return pb
	}
	sch, err := l.schemas.Schema(kind, pb.Type)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		detail := fmt.Sprintf("No installed plugin serves %s %q.", kind, pb.Type)
		if lister, ok := l.schemas.(TypeLister); ok {
			known := lister.Types(kind)
			if len(known) == 0 {
				detail += fmt.Sprintf(" No installed plugin serves any %s.", kind)
			} else {
				detail += fmt.Sprintf(" Known %s types: %s.", kind, strings.Join(known, ", "))
				detail += didYouMean(pb.Type, known)
			}
		}
		l.errorf(typeRange, fmt.Sprintf("Unknown %s type", kind), "%s", detail)
		return pb
	case err != nil:
		l.errorf(typeRange, "Cannot read plugin schema", "Reading the schema of %s %q failed: %s.", kind, pb.Type, err)
		return pb
	case sch == nil:
		l.errorf(typeRange, "Invalid plugin schema", "The plugin serving %s %q declares no schema. This is a bug in the plugin.", kind, pb.Type)
		return pb
	}
	if err := sch.Validate(); err != nil {
		l.errorf(typeRange, "Invalid plugin schema",
			"The plugin serving %s %q declares a schema that cannot describe a block: %s. This is a bug in the plugin.", kind, pb.Type, err)
		return pb
	}
	pb.Schema = sch
	if ci, ok := l.schemas.(ComponentInfos); ok {
		if info, err := ci.ComponentInfo(kind, pb.Type); err == nil {
			pb.Info = &info
		}
	}
	body := b.Body
	if _, owned := sch.Attributes["site"]; !owned {
		// site is ferry's, not the plugin's: where the block's storage is,
		// for placing disk tasks on proxies.
		content, remain, diags := b.Body.PartialContent(siteSchema)
		l.diags = append(l.diags, diags...)
		if attr, ok := content.Attributes["site"]; ok {
			pb.Site, _ = evalString(attr, l.ctx, &l.diags)
		}
		body = remain
	}
	val, diags := hcldec.Decode(body, sch.Spec(), l.ctx)
	sensitive := sensitiveRanges(b.Body, sch)
	l.cfg.sensitive = append(l.cfg.sensitive, sensitive...)
	hideSensitive(diags, sensitive)
	l.diags = append(l.diags, diags...)
	if !diags.HasErrors() {
		pb.Config = resolvePaths(val, sch, l.cfg.Dir)
	}
	return pb
}

// resolvePaths makes the relative values of path attributes absolute
// against the configuration folder dir, in nested blocks too.
func resolvePaths(val cty.Value, sch *schema.Block, dir string) cty.Value {
	if val.IsNull() || !val.IsKnown() || !val.Type().IsObjectType() {
		return val
	}
	attrs := val.AsValueMap()
	for name, a := range sch.Attributes {
		v, ok := attrs[name]
		if !a.Path || !ok || v.IsNull() || !v.IsKnown() || !v.Type().Equals(cty.String) {
			continue
		}
		if p := v.AsString(); p != "" && !filepath.IsAbs(p) {
			attrs[name] = cty.StringVal(filepath.Join(dir, p))
		}
	}
	for name, nb := range sch.Blocks {
		v, ok := attrs[name]
		if !ok || v.IsNull() || !v.IsKnown() {
			continue
		}
		if nb.Nesting == schema.NestingList {
			if v.LengthInt() == 0 {
				continue
			}
			var items []cty.Value
			for it := v.ElementIterator(); it.Next(); {
				_, item := it.Element()
				items = append(items, resolvePaths(item, &nb.Block, dir))
			}
			attrs[name] = cty.ListVal(items)
		} else {
			attrs[name] = resolvePaths(v, &nb.Block, dir)
		}
	}
	if len(attrs) == 0 {
		return val
	}
	return cty.ObjectVal(attrs)
}

// sensitiveRanges returns the ranges of the values of sensitive attributes
// in body, nested blocks included.
func sensitiveRanges(body hcl.Body, sch *schema.Block) []hcl.Range {
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return nil
	}
	var out []hcl.Range
	for name, a := range sch.Attributes {
		if attr, ok := sb.Attributes[name]; ok && a.Sensitive {
			out = append(out, attr.Expr.Range())
		}
	}
	for _, nb := range sb.Blocks {
		if inner, ok := sch.Blocks[nb.Type]; ok {
			out = append(out, sensitiveRanges(nb.Body, &inner.Block)...)
		}
	}
	return out
}

// hideSensitive keeps diagnostics about sensitive values from carrying the
// expression and its context, from which a diagnostic writer may print
// values.
func hideSensitive(diags hcl.Diagnostics, sensitive []hcl.Range) {
	for _, d := range diags {
		if d.Subject == nil {
			continue
		}
		for _, r := range sensitive {
			if r.Filename == d.Subject.Filename && r.ContainsOffset(d.Subject.Start.Byte) {
				d.Expression, d.EvalContext = nil, nil
			}
		}
	}
}

// unparsedSensitiveRanges returns the ranges of what may be sensitive
// values in a file that does not parse, for masking in the snippets of its
// syntax errors (a password with a missing quote is a syntax error on the
// password's line). Without a syntax tree it works on HCL's tokens: the
// sensitive attribute names are those of the schemas of the plugin blocks
// the file declares, and an attribute of such a name anywhere in the file
// is masked from its "=" to the end of its line (a broken string may run
// on further: all of it is masked).
func (l *loader) unparsedSensitiveRanges(src []byte, filename string) []hcl.Range {
	if l.schemas == nil {
		return nil
	}
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	names := map[string]bool{}
	for i := 0; i+3 < len(tokens); i++ {
		kind := sdk.Kind(tokens[i].Bytes)
		if tokens[i].Type != hclsyntax.TokenIdent || (kind != sdk.KindSource && kind != sdk.KindTarget && kind != sdk.KindRepository) ||
			tokens[i+1].Type != hclsyntax.TokenOQuote || tokens[i+2].Type != hclsyntax.TokenQuotedLit || tokens[i+3].Type != hclsyntax.TokenCQuote {
			continue
		}
		if sch, err := l.schemas.Schema(kind, string(tokens[i+2].Bytes)); err == nil && sch != nil {
			sensitiveNames(sch, names)
		}
	}
	var out []hcl.Range
	for i := 0; i+1 < len(tokens); i++ {
		if tokens[i].Type != hclsyntax.TokenIdent || !names[string(tokens[i].Bytes)] || tokens[i+1].Type != hclsyntax.TokenEqual {
			continue
		}
		r := hcl.Range{Filename: filename, Start: tokens[i+1].Range.End, End: tokens[i+1].Range.End}
		depth := 0
	value:
		for _, tok := range tokens[i+2:] {
			switch tok.Type {
			case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen,
				hclsyntax.TokenOQuote, hclsyntax.TokenOHeredoc,
				hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
				depth++
			case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
				hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
				if depth == 0 {
					break value // the end of the enclosing block
				}
				depth--
			case hclsyntax.TokenNewline, hclsyntax.TokenEOF:
				if depth == 0 {
					break value
				}
			}
			r.End = tok.Range.End
		}
		out = append(out, r)
	}
	return out
}

// sensitiveNames adds the names of the sensitive attributes of sch and its
// nested blocks to names.
func sensitiveNames(sch *schema.Block, names map[string]bool) {
	for name, a := range sch.Attributes {
		if a.Sensitive {
			names[name] = true
		}
	}
	for _, nb := range sch.Blocks {
		sensitiveNames(&nb.Block, names)
	}
}
