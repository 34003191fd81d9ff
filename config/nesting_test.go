package config

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

func TestDeepNestingIsRefusedNotParsed(t *testing.T) {
	t.Parallel()
	const n = 100000
	src := "repository \"local\" \"r\" {\n  path = " + strings.Repeat("(", n) + `"/x"` + strings.Repeat(")", n) + "\n}\n"
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"deep.hcl": []byte(src)}, testSchemas())
	if len(diags) != 1 || diags[0].Summary != "Configuration nested too deeply" {
		t.Fatalf("diagnostics %v, want one about the nesting", diags)
	}
	d := diags[0]
	if d.Subject == nil || d.Subject.Filename != "deep.hcl" || d.Subject.Start.Line != 2 ||
		!strings.Contains(d.Detail, "deep.hcl") || !strings.Contains(d.Detail, "line 2") {
		t.Fatalf("diagnostic %v does not name deep.hcl line 2", d)
	}
	var out strings.Builder
	if err := cfg.WriteDiagnostics(&out, diags, 80, false); err != nil {
		t.Fatal(err)
	}
	if out.Len() > 2000 {
		t.Fatalf("rendered diagnostic is %d bytes long: it shows the 200 KB line", out.Len())
	}
}

func TestCheckNesting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		src      string
		maxOK    int // the smallest limit that accepts src
		wantLine int // where a limit of maxOK-1 is exceeded
	}{
		{"flat", "a = 1\n", 0, 0},
		{"block", "b {\n  a = [1, (2)]\n}\n", 3, 2},
		{"brackets in a string", "a = \"(((([[[[{{{{\"\n", 1, 1},
		{"brackets in comments", "# ((((\n// [[[[\n/* {{{{\n*/ a = 1\n", 0, 0},
		{"interpolation", "a = \"${[[1]]}\"\n", 4, 1},
		{"escaped interpolation", "a = \"$${[[1]]}\"\n", 1, 1},
		{"heredoc", "a = <<EOT\n(((\n${[1]}\nEOT\nb = [1]\n", 3, 3},
		{"unary run", "a = !!!!true\n", 4, 1},
		{"not equal", "a = 1 != 2\n", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if d := checkNesting([]byte(tc.src), "t.hcl", tc.maxOK); d != nil {
				t.Fatalf("limit %d refused: %v", tc.maxOK, d)
			}
			if tc.maxOK == 0 {
				return
			}
			d := checkNesting([]byte(tc.src), "t.hcl", tc.maxOK-1)
			if d == nil {
				t.Fatalf("limit %d accepted", tc.maxOK-1)
			}
			if d.Subject.Start.Line != tc.wantLine {
				t.Fatalf("refused at line %d, want %d", d.Subject.Start.Line, tc.wantLine)
			}
		})
	}
}

// FuzzCheckNesting checks the nesting check on arbitrary input: it never
// panics; a refusal points into the file; its verdict is monotone in the
// limit; and wrapping an attribute's value in k parentheses deepens it by
// exactly k.
func FuzzCheckNesting(f *testing.F) {
	for _, s := range []string{"a = 1", "a = \"${[1]}\"", "a = <<EOT\n${x}\nEOT\n", "b {\n c = (1)\n}", "a = !!x", "# (\n"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, src []byte, k uint8) {
		depth := nestingDepth(t, src)
		if d := checkNesting(src, "f.hcl", depth); d != nil {
			t.Fatalf("refused at its own depth %d: %v", depth, d)
		}
		if depth > 0 {
			d := checkNesting(src, "f.hcl", depth-1)
			if d == nil {
				t.Fatalf("accepted below its depth %d", depth)
			}
			if d.Subject.Start.Byte > len(src) || d.Subject.Start.Line < 1 {
				t.Fatalf("refusal points outside the file: %v", d.Subject)
			}
		}
		// A file of one attribute that parses: wrap its value.
		file, diags := hclsyntax.ParseConfig(src, "f.hcl", hcl.InitialPos)
		if diags.HasErrors() {
			return
		}
		body := file.Body.(*hclsyntax.Body)
		if len(body.Attributes) != 1 || len(body.Blocks) != 0 {
			return
		}
		var expr string
		for _, a := range body.Attributes {
			expr = string(a.Expr.Range().SliceBytes(src))
		}
		n := int(k % 20)
		wrapped := "a = " + strings.Repeat("(", n) + expr + "\n" + strings.Repeat(")", n) + "\n"
		if got := nestingDepth(t, []byte(wrapped)); got != nestingDepth(t, []byte("a = "+expr+"\n"))+n {
			t.Fatalf("wrapping %q in %d parentheses gives depth %d", expr, n, got)
		}
	})
}

// nestingDepth is the smallest limit checkNesting accepts src under.
func nestingDepth(t *testing.T, src []byte) int {
	t.Helper()
	for limit := 0; limit <= len(src)+1; limit++ {
		if checkNesting(src, "f.hcl", limit) == nil {
			return limit
		}
	}
	t.Fatalf("no limit accepts %q", src)
	return 0
}
