package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/core/pluginhost"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

func pathCfg(p string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(p)})
}

// TestLocalPluginConformance runs the sdk's conformance suites on the local
// plugin through its real binary: go-plugin handshake, gRPC, a separate
// process.
func TestLocalPluginConformance(t *testing.T) {
	h := pluginhost.New(pluginhost.Options{Dirs: []string{bin}})
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("stop the plugin: %v", err)
		}
	})
	ctx := context.Background()

	t.Run("source", func(t *testing.T) {
		site := t.TempDir()
		local(t, nil, "vm", "create", site, "conform", "--disk", "4MiB", "--disk", "1032KiB")
		src, caps, err := h.Source(ctx, "local", pathCfg(site))
		if err != nil {
			t.Fatal(err)
		}
		sdktest.RunSource(t, sdktest.SourceFixture{
			New:          func(*testing.T) sdk.Source { return src },
			Capabilities: caps,
			VM:           "conform",
			Write: func(t *testing.T, vm string, disk int, off int64, data []byte) {
				local(t, data, "vm", "write", site, vm, fmt.Sprint(disk), fmt.Sprint(off))
			},
			ResetChangeTracking: func(t *testing.T, vm string, disk int) {
				f, err := os.OpenFile(filepath.Join(site, vm, fmt.Sprintf("disk%d.img", disk)), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteAt([]byte("changed behind ferry's back"), 12345); err != nil {
					t.Fatal(err)
				}
			},
		})
	})
	t.Run("target", func(t *testing.T) {
		// The isolated network is named, so the setting is seen to cross
		// to the plugin (without it the plugin has a default one).
		root := t.TempDir()
		cfg := cty.ObjectVal(map[string]cty.Value{"path": cty.StringVal(root), "isolated_network": cty.StringVal("e2e-isolated")})
		tgt, caps, err := h.Target(ctx, "local", cfg)
		if err != nil {
			t.Fatal(err)
		}
		// VMs to map replicas onto are made as a user would: vm create,
		// then their content written.
		makeVM := func(t *testing.T, name string, disks [][]byte) {
			args := []string{"vm", "create", root, name}
			for _, d := range disks {
				args = append(args, "--disk", fmt.Sprint(len(d)))
			}
			local(t, nil, args...)
			for i, d := range disks {
				local(t, d, "vm", "write", root, name, fmt.Sprint(i), "0")
			}
		}
		sdktest.RunTarget(t, sdktest.TargetFixture{New: func(*testing.T) sdk.Target { return tgt }, Capabilities: caps, VM: sdktest.DefaultVM(),
			IsolatedNetwork: "e2e-isolated", MakeVM: makeVM})
	})
	t.Run("repository", func(t *testing.T) {
		repo, err := h.Repository(ctx, "local", pathCfg(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		sdktest.RunRepository(t, sdktest.RepositoryFixture{New: func(*testing.T) sdk.Repository { return repo }})
	})
}

func TestPluginsCommand(t *testing.T) {
	cfg := t.TempDir()
	r := ferry(t, cfg, "plugins", "--json")
	if r.code != 0 {
		t.Fatalf("ferry plugins: %s", r)
	}
	var rows []struct {
		Name       string
		Version    string
		Components []struct {
			Kind, Type   string
			Capabilities []string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatal(err)
	}
	// bin holds the local and the Hyper-V plugins, sorted by name.
	if len(rows) != 2 || rows[0].Name != "hyperv" || len(rows[0].Components) != 2 ||
		rows[1].Name != "local" || rows[1].Version == "" || len(rows[1].Components) != 3 {
		t.Fatalf("ferry plugins --json = %s", r.stdout)
	}
	human := ferry(t, cfg, "plugins").stdout
	if !strings.Contains(human, `source "local" (change-tracking, direct-data, folders, tags, failback)`) ||
		!strings.Contains(human, `target "local" (direct-data, re-ip, test-failover, failback`) {
		t.Fatalf("ferry plugins:\n%s", human)
	}
}

func TestValidateCommand(t *testing.T) {
	cfg := t.TempDir()
	os.WriteFile(filepath.Join(cfg, "sites.hcl"), []byte(`
source "local" "prod" { path = "/srv/prod" }
target "local" "dr" {
  path  = "/srv/dr"
  speed = "fast"
}
`), 0o644)
	os.WriteFile(filepath.Join(cfg, "jobs.hcl"), []byte(`
job "web" {
  source    = source.local.prd
  target    = target.local.dr
  vms       = ["web-01"]
  schedule  = "every 15 fortnights"
  retention { restore_points = 0 }
}
`), 0o644)
	r := ferry(t, cfg, "validate")
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("validate of a bad configuration: %s", r)
	}
	for _, want := range []string{
		"sites.hcl line 5", `"speed"`, // the plugin's schema rejects an unknown attribute
		"jobs.hcl line 3", "source.local.prd", "source.local.prod", // a dangling reference, with a suggestion
		"jobs.hcl line 6", // the schedule
		"jobs.hcl line 7", // retention below one
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("diagnostics lack %q:\n%s", want, r.stderr)
		}
	}

	good := t.TempDir()
	os.WriteFile(filepath.Join(good, "main.hcl"), []byte(`
source "local" "prod" { path = "prod" }
target "local" "dr"   { path = "dr" }
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01"]
}
`), 0o644)
	if r := ferry(t, good, "validate"); r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("validate of a good configuration: %s", r)
	}
	// The plugin's own checks come back with a position too.
	os.WriteFile(filepath.Join(good, "main.hcl"), []byte(`
source "local" "prod" { path = "" }
`), 0o644)
	if r := ferry(t, good, "validate"); r.code != 1 || !strings.Contains(r.stderr, "main.hcl line 2") {
		t.Fatalf("validate of a value the plugin rejects: %s", r)
	}
}
