package config

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// MaxNesting is how deep brackets, braces, parentheses, strings, templates
// and chains of unary operators may nest in a configuration file. The HCL
// parser recurses once per level and a file nested 100,000 deep overflows
// its stack, which no recover catches; real configurations nest a few
// levels.
const MaxNesting = 100

// MaxFileSize is the largest configuration file Load reads.
const MaxFileSize = 4 << 20

// checkNesting returns a diagnostic when src nests deeper than limit, at the
// token where it does. It runs HCL's scanner, which does not recurse, so
// that the depth is the one the parser would see: a bracket in a string
// or a comment does not count, one in a template interpolation does.
func checkNesting(src []byte, filename string, limit int) *hcl.Diagnostic {
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.InitialPos)
	depth, unary := 0, 0
	for _, tok := range tokens {
		switch tok.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen,
			hclsyntax.TokenOQuote, hclsyntax.TokenOHeredoc,
			hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			depth++
			unary = 0
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen,
			hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			depth = max0(depth - 1)
			unary = 0
		case hclsyntax.TokenBang, hclsyntax.TokenMinus:
			unary++
		case hclsyntax.TokenNewline, hclsyntax.TokenComment:
		default:
			unary = 0
		}
		if depth+unary > limit {
			r := tok.Range
			return &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Configuration nested too deeply",
				Detail: fmt.Sprintf("%s nests brackets, braces, parentheses, strings or operators more than %d deep at line %d, column %d; ferry reads at most %d levels.",
					filename, limit, r.Start.Line, r.Start.Column, limit),
				// The file is not parsed, so the diagnostic renders
				// without a snippet: its line may be megabytes long.
				Subject: &r,
			}
		}
	}
	return nil
}

func max0(n int) int { return max(n, 0) }
