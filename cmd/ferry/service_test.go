package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestServiceArgs: install-service stores the global flags and the proxy
// flags given, as --name=value, folders made absolute; flags left at their
// defaults stay out, so a later ferry's defaults apply.
func TestServiceArgs(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config")
	t.Chdir(t.TempDir())
	wd, _ := filepath.Abs(".")
	abs := filepath.Join(wd, "p-dr") // absolute on every system
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"tls only", []string{"--tls", "ca/issued/p-dr"},
			[]string{"--tls=" + filepath.Join(wd, "ca", "issued", "p-dr")}},
		{"every flag", []string{"--tls", abs, "--listen", "10.0.0.5:7443", "--site", "dr", "--max-tasks", "8", "--plugins", "plugins"},
			[]string{"--listen=10.0.0.5:7443", "--max-tasks=8", "--plugins=" + filepath.Join(wd, "plugins"), "--site=dr", "--tls=" + abs}},
		{"a value that looks like a flag", []string{"--tls", abs, "--site", "-dr"},
			[]string{"--site=-dr", "--tls=" + abs}},
		{"a default given explicitly", []string{"--tls", abs, "--max-tasks", "4"},
			[]string{"--max-tasks=4", "--tls=" + abs}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := parseProxyFlags(tt.args)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := serviceArgs(cfg, "info", f.set)
			if err != nil {
				t.Fatal(err)
			}
			want := append([]string{"--config=" + cfg, "--log-level=info", "proxy"}, tt.want...)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("got  %q\nwant %q", got, want)
			}
			// What the service runs parses back to the same flags.
			back, err := parseProxyFlags(got[3:])
			if err != nil {
				t.Fatalf("the service's arguments do not parse: %v", err)
			}
			if again, err := serviceArgs(cfg, "info", back.set); err != nil || strings.Join(again, "\n") != strings.Join(got, "\n") {
				t.Fatalf("the service's arguments parse back to %q, %v", again, err)
			}
		})
	}
	if _, err := serviceArgs("config", "warn", nil); err == nil {
		t.Fatal("a relative configuration folder was stored")
	}
}

// parseProxyFlags parses args as the flags of 'ferry proxy' alone and
// checks them, as install-service does.
func parseProxyFlags(args []string) (*proxyFlags, error) {
	f := declareProxyFlags()
	if err := f.set.Parse(args); err != nil {
		return nil, err
	}
	return f, f.check(f.set.Args())
}
