package config

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files of the config tests")

// The secret of the test environment: it must never appear in rendered
// diagnostics or dumps.
const testSecret = "hunter2-Do-Not-Print"

// testSchemas serves a "local" type of every kind (path required), a
// "vsphere" source and target, and a "hyperv" source; the local and vsphere
// sources report folders and tags, the hyperv one neither, and the vsphere
// target keeps at most 28 restore points.
func testSchemas() StaticComponents {
	local := &schema.Block{Attributes: map[string]*schema.Attribute{
		"path": {Type: cty.String, Required: true},
	}}
	vsphere := &schema.Block{
		Attributes: map[string]*schema.Attribute{
			"url":      {Type: cty.String, Required: true},
			"username": {Type: cty.String, Required: true},
			"password": {Type: cty.String, Required: true, Sensitive: true},
			"insecure": {Type: cty.Bool},
		},
		Blocks: map[string]*schema.NestedBlock{
			"placement": {Nesting: schema.NestingSingle, Block: schema.Block{Attributes: map[string]*schema.Attribute{
				"datacenter": {Type: cty.String, Required: true},
				"datastore":  {Type: cty.String},
			}}},
			"tag": {Nesting: schema.NestingList, Block: schema.Block{Attributes: map[string]*schema.Attribute{
				"key":   {Type: cty.String, Required: true},
				"value": {Type: cty.String, Sensitive: true},
			}}},
		},
	}
	selects := sdk.Capabilities{ChangeTracking: true, Folders: true, Tags: true}
	return StaticComponents{
		sdk.KindSource: {
			"local":   {Schema: local, Capabilities: selects},
			"vsphere": {Schema: vsphere, Capabilities: selects},
			"hyperv":  {Schema: local, Capabilities: sdk.Capabilities{ChangeTracking: true}},
		},
		sdk.KindTarget: {
			"local": {Schema: local},
			"vsphere": {Schema: vsphere, Limits: sdk.Limits{MaxRestorePoints: 28,
				MaxRestorePointsReason: "VMware supports 32 snapshots in a chain and ferry keeps room for its own"}},
		},
		sdk.KindRepository: {"local": {Schema: local}},
	}
}

// setTestEnv sets the variables the testdata refers to and makes sure
// FERRY_TEST_UNSET is not set.
func setTestEnv(t *testing.T) {
	t.Setenv("FERRY_TEST_USER", "administrator@vsphere.local")
	t.Setenv("FERRY_TEST_PASSWORD", testSecret)
	t.Setenv("FERRY_TEST_PATH", "/srv/ferry/meta")
	t.Setenv("FERRY_TEST_UNSET", "")
	unsetenv(t, "FERRY_TEST_UNSET")
}

// TestGolden loads each folder under testdata and compares the rendered
// diagnostics with diagnostics.golden and, for configurations without
// errors, a dump of the decoded configuration with config.golden. Run
// `go test ./config -run TestGolden -update` to rewrite them.
func TestGolden(t *testing.T) {
	setTestEnv(t)
	cases, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cases {
		if !c.IsDir() || c.Name() == "fuzz" { // fuzz: the seed corpus of the fuzz tests
			continue
		}
		n++
		t.Run(c.Name(), func(t *testing.T) {
			dir := filepath.Join("testdata", c.Name())
			cfg, diags := Load(dir, testSchemas())
			var out bytes.Buffer
			if len(diags) == 0 {
				out.WriteString("no diagnostics\n")
			} else if err := cfg.WriteDiagnostics(&out, diags, 100, false); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out.String(), testSecret) {
				t.Fatalf("the diagnostics print a sensitive value:\n%s", out.String())
			}
			compareGolden(t, filepath.Join(dir, "diagnostics.golden"), out.Bytes())
			errs := diags.HasErrors()
			if strings.HasPrefix(c.Name(), "valid") == errs {
				t.Errorf("errors: %v; a case named valid* must have none, any other must have some", errs)
			}
			if !errs {
				dump := dumpConfig(cfg)
				if strings.Contains(dump, testSecret) {
					t.Fatalf("the dump prints a sensitive value:\n%s", dump)
				}
				compareGolden(t, filepath.Join(dir, "config.golden"), []byte(dump))
			}
		})
	}
	if n < 20 {
		t.Fatalf("only %d golden cases", n)
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// dumpConfig renders a configuration as stable text, sensitive values
// hidden.
func dumpConfig(c *Config) string {
	var b strings.Builder
	for _, kind := range []struct {
		name   string
		blocks map[string]*PluginBlock
	}{{"source", c.Sources}, {"target", c.Targets}, {"repository", c.Repositories}} {
		for _, key := range slices.Sorted(maps.Keys(kind.blocks)) {
			pb := kind.blocks[key]
			fmt.Fprintf(&b, "%s (%s)\n", pb.Address(), pb.DeclRange)
			fmt.Fprintf(&b, "  config = %s\n", dumpValue(pb.Config, pb.Schema))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Proxies)) {
		p := c.Proxies[name]
		fmt.Fprintf(&b, "proxy %s (%s)\n  host %s port %d site %q max_tasks %d\n", p.Name, p.DeclRange, p.Host, p.Port, p.Site, p.MaxTasks)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Jobs)) {
		j := c.Jobs[name]
		fmt.Fprintf(&b, "job %s (%s)\n", j.Name, j.DeclRange)
		fmt.Fprintf(&b, "  source %s\n  target %s\n", addr(j.Source), addr(j.Target))
		fmt.Fprintf(&b, "  repository %s\n", addr(j.Repository))
		fmt.Fprintf(&b, "  vms %q\n", j.VMs)
		if len(j.Selectors) > 0 {
			fmt.Fprintf(&b, "  selectors %s\n", selectorList(j.Selectors))
		}
		if len(j.Exclude) > 0 {
			fmt.Fprintf(&b, "  exclude %s\n", selectorList(j.Exclude))
		}
		var proxies []string
		for _, p := range j.Proxies {
			proxies = append(proxies, p.Name)
		}
		fmt.Fprintf(&b, "  proxies %q\n", proxies)
		if j.Schedule.IsZero() {
			b.WriteString("  schedule on demand\n")
		} else {
			fmt.Fprintf(&b, "  schedule %q in %s\n", j.Schedule, j.Schedule.Location())
		}
		fmt.Fprintf(&b, "  quiesce %t replica_suffix %q\n", j.Quiesce, j.ReplicaSuffix)
		if j.CopyIndependentDisks {
			fmt.Fprintf(&b, "  copy_independent_disks true\n")
		}
		fmt.Fprintf(&b, "  retention %d restore points\n", j.Retention.RestorePoints)
		for _, m := range j.NetworkMap {
			fmt.Fprintf(&b, "  network %q -> %q\n", m.From, m.To)
		}
		for _, r := range j.ReIP {
			gw := "(none)"
			if r.Gateway.IsValid() {
				gw = r.Gateway.String()
			}
			fmt.Fprintf(&b, "  re-ip %s -> %s gateway %s dns %v\n", r.FromSubnet, r.ToSubnet, gw, r.DNS)
		}
		t := j.Transfer
		fmt.Fprintf(&b, "  transfer compression %s throttle %d B/s max_tasks %d block_size %d\n", t.Compression, t.Throttle, t.MaxTasks, t.BlockSize)
		fmt.Fprintf(&b, "  retry %d attempts, wait %s\n", j.Retry.Attempts, j.Retry.Wait)
	}
	for _, r := range c.TrafficRules {
		fmt.Fprintf(&b, "traffic_rule %s (%s)\n", r.Name, r.DeclRange)
		fmt.Fprintf(&b, "  from %s to %s bidirectional %t\n", endpointList(r.From), endpointList(r.To), r.Bidirectional)
		fmt.Fprintf(&b, "  throttle %d B/s encrypt %t max_connections %d\n", r.Throttle, r.Encrypt, r.MaxConnections)
		for _, w := range r.Windows {
			fmt.Fprintf(&b, "  window %s %02d:%02d-%02d:%02d %s (%s)\n", w.Days, w.Start/60, w.Start%60, w.End/60, w.End%60, w.Location, w.DeclRange)
		}
	}
	return b.String()
}

func endpointList(list []Endpoint) string {
	var parts []string
	for _, e := range list {
		parts = append(parts, fmt.Sprintf("%s (%s)", e, e.Range))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func selectorList(list []Selector) string {
	var parts []string
	for _, s := range list {
		parts = append(parts, fmt.Sprintf("%s %q (%s)", s.Kind, s.Value, s.Range))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func addr(pb *PluginBlock) string {
	if pb == nil {
		return "(none)"
	}
	return pb.Address()
}

// dumpValue renders a decoded value with sorted attributes, showing
// sensitive attributes of sch as (sensitive).
func dumpValue(v cty.Value, sch *schema.Block) string {
	switch {
	case v == cty.NilVal:
		return "(not decoded)"
	case v.IsNull():
		return "null"
	case v.Type().IsObjectType():
		var parts []string
		for _, name := range slices.Sorted(maps.Keys(v.Type().AttributeTypes())) {
			av := v.GetAttr(name)
			var text string
			switch {
			case sch != nil && sch.Attributes[name] != nil && sch.Attributes[name].Sensitive && !av.IsNull():
				text = "(sensitive)"
			case sch != nil && sch.Blocks[name] != nil:
				text = dumpValue(av, &sch.Blocks[name].Block)
			default:
				text = dumpValue(av, nil)
			}
			parts = append(parts, name+" = "+text)
		}
		return "{" + strings.Join(parts, ", ") + "}"
	case v.Type().IsListType() || v.Type().IsTupleType() || v.Type().IsSetType():
		var parts []string
		for it := v.ElementIterator(); it.Next(); {
			_, el := it.Element()
			parts = append(parts, dumpValue(el, sch))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case v.Type() == cty.String:
		return fmt.Sprintf("%q", v.AsString())
	case v.Type() == cty.Number:
		return v.AsBigFloat().Text('g', -1)
	case v.Type() == cty.Bool:
		return fmt.Sprint(v.True())
	}
	return v.GoString()
}
