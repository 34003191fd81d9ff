package config

import (
	"os"
	"strings"
	"testing"
)

func TestEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string // set for the test; FERRY_T_UNSET is always unset
		path    string            // the source's path expression
		want    string            // the decoded path, when there is no error
		wantErr string            // a substring of the one diagnostic
	}{
		{"set", map[string]string{"FERRY_T_DIR": "/srv/a"}, `env("FERRY_T_DIR")`, "/srv/a", ""},
		{"set but empty", map[string]string{"FERRY_T_DIR": ""}, `env("FERRY_T_DIR")`, "", ""},
		{"in a template", map[string]string{"FERRY_T_DIR": "/srv"}, `"${env("FERRY_T_DIR")}/meta"`, "/srv/meta", ""},
		{"unset", nil, `env("FERRY_T_UNSET")`, "", "environment variable FERRY_T_UNSET is not set"},
		{"empty name", nil, `env("")`, "", "the name of the environment variable is empty"},
		{"no argument", nil, `env()`, "", "Not enough function arguments"},
		{"number name converts", map[string]string{"1": "x"}, `env(1)`, "x", ""},
		{"list name", nil, `env(["A"])`, "", "string required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("FERRY_T_UNSET", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			unsetenv(t, "FERRY_T_UNSET")
			src := `source "local" "prod" { path = ` + tt.path + ` }`
			cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
			if tt.wantErr != "" {
				if len(diags) != 1 || !strings.Contains(diags[0].Summary+": "+diags[0].Detail, tt.wantErr) {
					t.Fatalf("diagnostics %v, want one with %q", diags, tt.wantErr)
				}
				if diags[0].Subject == nil || diags[0].Subject.Start.Line != 1 {
					t.Fatalf("diagnostic has no place: %v", diags[0])
				}
				return
			}
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			if got := cfg.Sources["local.prod"].Config.GetAttr("path").AsString(); got != tt.want {
				t.Fatalf("path = %q, want %q", got, tt.want)
			}
		})
	}
}

// unsetenv unsets a variable that t.Setenv has registered for restoring.
func unsetenv(t *testing.T, name string) {
	t.Helper()
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}
