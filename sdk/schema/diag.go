package schema

import (
	"fmt"
	"strings"

	"github.com/zclconf/go-cty/cty"
)

// Severity of a diagnostic.
type Severity int

const (
	Error Severity = iota + 1
	Warning
)

// Diagnostic is a problem a plugin found in a configuration value. Path
// names the attribute it is about (empty: the block as a whole).
type Diagnostic struct {
	Severity Severity
	Summary  string
	Detail   string
	Path     cty.Path
}

// Diagnostics is a list of diagnostics; a nil list means all is well.
type Diagnostics []Diagnostic

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool {
	for _, d := range ds {
		if d.Severity == Error {
			return true
		}
	}
	return false
}

// Errorf appends an error about the attribute at path.
func (ds *Diagnostics) Errorf(path cty.Path, summary, detailFormat string, args ...any) {
	*ds = append(*ds, Diagnostic{Severity: Error, Summary: summary, Detail: fmt.Sprintf(detailFormat, args...), Path: path})
}

// Err returns the diagnostics' errors as one error, or nil when there are
// none.
func (ds Diagnostics) Err() error {
	var msgs []string
	for _, d := range ds {
		if d.Severity != Error {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		if p := FormatPath(d.Path); p != "" {
			msg = p + ": " + msg
		}
		msgs = append(msgs, msg)
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

// FormatPath renders a path as an HCL traversal: retention.restore_points,
// nic[1], labels["site"].
func FormatPath(p cty.Path) string {
	var b strings.Builder
	for _, step := range p {
		switch s := step.(type) {
		case cty.GetAttrStep:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s.Name)
		case cty.IndexStep:
			switch s.Key.Type() {
			case cty.Number:
				bf := s.Key.AsBigFloat()
				i, _ := bf.Int64()
				fmt.Fprintf(&b, "[%d]", i)
			case cty.String:
				fmt.Fprintf(&b, "[%q]", s.Key.AsString())
			}
		}
	}
	return b.String()
}
