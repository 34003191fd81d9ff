package config

import (
	"os"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// envFunc is env("NAME"): the value of an environment variable. An unset
// variable is an error that names it; the value never appears in an error.
var envFunc = function.New(&function.Spec{
	Description: "Returns the value of an environment variable; an unset variable is an error.",
	Params: []function.Parameter{{
		Name:        "name",
		Description: "The name of the environment variable.",
		Type:        cty.String,
	}},
	Type: function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		name := args[0].AsString()
		if name == "" {
			return cty.NilVal, function.NewArgErrorf(0, "the name of the environment variable is empty")
		}
		v, ok := os.LookupEnv(name)
		if !ok {
			return cty.NilVal, function.NewArgErrorf(0, "environment variable %s is not set", name)
		}
		return cty.StringVal(v), nil
	},
})

// evalContext is what expressions in a configuration may use: functions
// only, no variables, so that references such as source.local.prod are
// read as references and never evaluated.
func evalContext() *hcl.EvalContext {
	return &hcl.EvalContext{
		Functions: map[string]function.Function{"env": envFunc},
	}
}
