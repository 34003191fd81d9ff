package config

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary file contents to the loader: it must never
// panic, every diagnostic must render, and a configuration without errors
// must be complete.
func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*", "*.hcl"))
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range seeds {
		src, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	schemas := testSchemas()
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, diags := LoadFiles("/cfg", map[string][]byte{"fuzz.hcl": src}, schemas)
		if cfg == nil {
			t.Fatal("nil Config")
		}
		for _, d := range diags {
			if d.Severity == 0 || d.Summary == "" {
				t.Fatalf("malformed diagnostic %#v", d)
			}
		}
		if err := cfg.WriteDiagnostics(io.Discard, diags, 80, false); err != nil {
			t.Fatal(err)
		}
		if diags.HasErrors() {
			return
		}
		for name, j := range cfg.Jobs {
			if j.Source == nil || j.Target == nil || len(j.VMs)+len(j.Selectors) == 0 {
				t.Fatalf("job %q decoded without errors but incomplete: %+v", name, j)
			}
			if j.Retention.RestorePoints < 1 {
				t.Fatalf("job %q keeps %d restore points", name, j.Retention.RestorePoints)
			}
			for _, r := range j.ReIP {
				if r.FromSubnet.Bits() != r.ToSubnet.Bits() || (r.Gateway.IsValid() && !r.ToSubnet.Contains(r.Gateway)) {
					t.Fatalf("job %q has an inconsistent re-IP rule %+v", name, r)
				}
			}
			if bs := j.Transfer.BlockSize; bs != 0 && (bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0) {
				t.Fatalf("job %q has block size %d", name, bs)
			}
		}
		for _, r := range cfg.TrafficRules {
			if len(r.From) == 0 || len(r.To) == 0 || r.Throttle < 0 || r.MaxConnections < 0 || len(r.Windows) > 0 && r.Throttle == 0 {
				t.Fatalf("traffic rule %q decoded without errors but inconsistent: %+v", r.Name, r)
			}
			for _, w := range r.Windows {
				if w.Days == 0 || w.Location == nil || w.Start < 0 || w.Start >= 24*60 || w.End <= 0 || w.End > 24*60 || w.Start == w.End {
					t.Fatalf("traffic rule %q has an inconsistent window %+v", r.Name, w)
				}
			}
		}
		for _, blocks := range []map[string]*PluginBlock{cfg.Sources, cfg.Targets, cfg.Repositories} {
			for key, pb := range blocks {
				if pb.Schema == nil || pb.Config.IsNull() {
					t.Fatalf("%s decoded without errors but has no configuration", key)
				}
			}
		}
	})
}
