package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestValidateJSON: --json lists every problem on standard output, with
// where it is, and exits 1 as validate does; a configuration without
// problems is [].
func TestValidateJSON(t *testing.T) {
	t.Parallel()
	bad := t.TempDir()
	hcl := "job \"web\" {\n  vms = [\"web-01\"]\n}\n\nproxy \"p1\" {\n"
	if err := os.WriteFile(filepath.Join(bad, "main.hcl"), []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		code int
		want []diagnostic
	}{
		{name: "a problem", dir: bad, code: exitFailure, want: []diagnostic{{Severity: "error", Summary: "Unclosed configuration block",
			File: filepath.Join(bad, "main.hcl"), Line: 5, Column: 12}}},
		{name: "no configuration", dir: filepath.Join(bad, "none"), code: exitFailure, want: []diagnostic{{Severity: "error", Summary: "Cannot read the configuration folder"}}},
		{name: "all is well", dir: noJobs(t), code: exitOK, want: []diagnostic{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, out, errb := ferryRun("validate", "--json", "-C", tt.dir)
			var got []diagnostic
			if err := json.Unmarshal([]byte(out), &got); err != nil || code != tt.code || errb != "" || got == nil {
				t.Fatalf("exit %d, %v\nstdout:\n%s\nstderr:\n%s", code, err, out, errb)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d problems, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, d := range got {
				if d.Detail == "" && len(tt.want) > 0 {
					t.Errorf("problem %d has no detail", i)
				}
				d.Detail = ""
				if d != tt.want[i] {
					t.Errorf("problem %d: %+v, want %+v", i, d, tt.want[i])
				}
			}
		})
	}
}
