package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// The helpers below evaluate one attribute of the host's own blocks and
// convert it to a Go value. Each reports its problems into diags and
// returns ok false after a problem; a null value counts as absent (ok
// true, set false).

func evalValue(attr *hcl.Attribute, ctx *hcl.EvalContext, typ cty.Type, diags *hcl.Diagnostics) (v cty.Value, set, ok bool) {
	v, ds := attr.Expr.Value(ctx)
	*diags = append(*diags, ds...)
	if ds.HasErrors() {
		return cty.NilVal, false, false
	}
	if v.IsNull() {
		return v, false, true
	}
	if !v.IsWhollyKnown() {
		// No unknown values exist without variables; keep the check so a
		// future function that returns one cannot panic the conversions.
		*diags = append(*diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Value not known",
			Detail:   fmt.Sprintf("The value of %q must be known when the configuration is read.", attr.Name),
			Subject:  attr.Expr.Range().Ptr(),
		})
		return cty.NilVal, false, false
	}
	cv, err := convert.Convert(v, typ)
	if err != nil {
		*diags = append(*diags, &hcl.Diagnostic{
			Severity:    hcl.DiagError,
			Summary:     "Incorrect attribute value type",
			Detail:      fmt.Sprintf("Inappropriate value for attribute %q: %s.", attr.Name, err),
			Subject:     attr.Expr.Range().Ptr(),
			Expression:  attr.Expr,
			EvalContext: ctx,
		})
		return cty.NilVal, false, false
	}
	return cv, true, true
}

func evalString(attr *hcl.Attribute, ctx *hcl.EvalContext, diags *hcl.Diagnostics) (string, bool) {
	v, set, ok := evalValue(attr, ctx, cty.String, diags)
	if !ok || !set {
		return "", ok
	}
	return v.AsString(), true
}

func evalBool(attr *hcl.Attribute, ctx *hcl.EvalContext, diags *hcl.Diagnostics) (bool, bool) {
	v, set, ok := evalValue(attr, ctx, cty.Bool, diags)
	if !ok || !set {
		return false, ok
	}
	return v.True(), true
}

// evalInt reads a whole number; set is false for null.
func evalInt(attr *hcl.Attribute, ctx *hcl.EvalContext, diags *hcl.Diagnostics) (n int, set, ok bool) {
	v, set, ok := evalValue(attr, ctx, cty.Number, diags)
	if !ok || !set {
		return 0, set, ok
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	switch {
	case !bf.IsInt():
		*diags = append(*diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid " + attr.Name,
			Detail:   fmt.Sprintf("%s must be a whole number; it is %s.", attr.Name, bf.Text('g', 10)),
			Subject:  attr.Expr.Range().Ptr(),
		})
		return 0, true, false
	case acc != 0 || i > math.MaxInt32 || i < math.MinInt32:
		*diags = append(*diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid " + attr.Name,
			Detail:   fmt.Sprintf("%s is out of range; it is %s.", attr.Name, bf.Text('g', 10)),
			Subject:  attr.Expr.Range().Ptr(),
		})
		return 0, true, false
	}
	return int(i), true, true
}

// stringAt is a string from a list, with the range of the element that
// gave it.
type stringAt struct {
	Value string
	Range hcl.Range
}

// evalStringList reads a list of strings. When the attribute is written as
// a list ([...]) each element keeps its own range; otherwise all elements
// get the attribute's.
func evalStringList(attr *hcl.Attribute, ctx *hcl.EvalContext, diags *hcl.Diagnostics) ([]stringAt, bool) {
	if exprs, ds := hcl.ExprList(attr.Expr); !ds.HasErrors() {
		out := make([]stringAt, 0, len(exprs))
		ok := true
		for i, e := range exprs {
			el := &hcl.Attribute{Name: fmt.Sprintf("%s[%d]", attr.Name, i), Expr: e, Range: e.Range()}
			v, set, good := evalValue(el, ctx, cty.String, diags)
			if good && !set {
				*diags = append(*diags, nullElement(attr, e.Range()))
			}
			if !good || !set {
				ok = false
				continue
			}
			out = append(out, stringAt{Value: v.AsString(), Range: e.Range()})
		}
		return out, ok
	}
	v, set, ok := evalValue(attr, ctx, cty.List(cty.String), diags)
	if !ok || !set {
		return nil, ok
	}
	var out []stringAt
	for it := v.ElementIterator(); it.Next(); {
		_, el := it.Element()
		if el.IsNull() {
			*diags = append(*diags, nullElement(attr, attr.Expr.Range()))
			return nil, false
		}
		out = append(out, stringAt{Value: el.AsString(), Range: attr.Expr.Range()})
	}
	return out, true
}

func nullElement(attr *hcl.Attribute, rng hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Incorrect attribute value type",
		Detail:   fmt.Sprintf("Inappropriate value for attribute %q: elements must not be null.", attr.Name),
		Subject:  rng.Ptr(),
	}
}

// evalDuration reads a duration such as "90m" or "1h30m" (Go's notation,
// and "d" for days); set is false for null. what names it in the error.
func evalDuration(attr *hcl.Attribute, ctx *hcl.EvalContext, what string, diags *hcl.Diagnostics) (d time.Duration, set, ok bool) {
	v, set, ok := evalValue(attr, ctx, cty.String, diags)
	if !ok || !set {
		return 0, set, ok
	}
	d, err := ParseDuration(v.AsString())
	if err != nil || d <= 0 {
		r := attr.Expr.Range()
		*diags = append(*diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid " + what, Subject: &r,
			Detail: fmt.Sprintf("%q is not a positive duration: write it as 30m, 4h, 1h30m or 2d.", v.AsString())})
		return 0, true, false
	}
	return d, true, true
}

// ParseDuration is time.ParseDuration with days: "2d", "1d12h", as the
// configuration's durations are written.
func ParseDuration(s string) (time.Duration, error) {
	days, rest, found := strings.Cut(s, "d")
	if !found {
		return time.ParseDuration(s)
	}
	n, err := strconv.Atoi(days)
	if err != nil || n < 0 || n > 36500 {
		return 0, fmt.Errorf("bad days in %q", s)
	}
	d := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		more, err := time.ParseDuration(rest)
		if err != nil {
			return 0, err
		}
		d += more
	}
	return d, nil
}
