package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/pki"
	"github.com/ferry-dr/ferry/core/proxy"
)

// A run greets its proxies before its plugins check the configuration:
// warmProxies reads the proxy blocks without any plugin, and the
// workspace adopts that pool only when the configuration declares the
// same proxies.
func TestProxiesAreGreetedBeforeThePluginsStart(t *testing.T) {
	dir := t.TempDir()
	if err := pki.InitCA(pki.CADir(dir), pki.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	hcl := `
source "no-such-plugin" "prod" {
  path = "/nowhere"
}
proxy "b" {
  address = "127.0.0.1:1"
  site    = "dr"
}
proxy "a" {
  address   = "127.0.0.1:2"
  max_tasks = 3
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	early := warmProxies(dir, hclog.NewNullLogger())
	if early == nil {
		t.Fatal("no early pool for a configuration with two proxies")
	}
	want := []proxy.Member{{Name: "a", Address: "127.0.0.1:2", MaxTasks: 3}, {Name: "b", Address: "127.0.0.1:1", Site: "dr", MaxTasks: config.DefaultProxyMaxTasks}}
	if !slices.Equal(early.members, want) {
		t.Fatalf("early members %+v, want %+v", early.members, want)
	}

	same := &workspace{cfg: &config.Config{Proxies: map[string]*config.Proxy{
		"a": {Name: "a", Address: "127.0.0.1:2", MaxTasks: 3},
		"b": {Name: "b", Address: "127.0.0.1:1", Site: "dr", MaxTasks: config.DefaultProxyMaxTasks},
	}}}
	same.adopt(early)
	if same.pool != early.pool {
		t.Error("the workspace did not adopt the pool of its own proxies")
	}
	early.pool.Close()

	other := &workspace{cfg: &config.Config{Proxies: map[string]*config.Proxy{
		"a": {Name: "a", Address: "127.0.0.1:9", MaxTasks: 3},
	}}}
	early = warmProxies(dir, hclog.NewNullLogger())
	other.adopt(early)
	if other.pool != nil {
		t.Error("the workspace adopted a pool of other proxies than its configuration's")
	}

	if err := os.WriteFile(filepath.Join(dir, "main.hcl"), []byte(`source "no-such-plugin" "prod" {}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if early := warmProxies(dir, hclog.NewNullLogger()); early != nil {
		t.Errorf("an early pool for a configuration without proxies: %+v", early.members)
	}
}
