package vsphere

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// configValue builds a configuration value of a block's type: the given
// attributes, every other one null, as the host decodes a block.
func configValue(b *schema.Block, attrs map[string]cty.Value) cty.Value {
	vals := map[string]cty.Value{}
	for name, a := range b.Attributes {
		if v, ok := attrs[name]; ok {
			vals[name] = v
		} else {
			vals[name] = cty.NullVal(a.Type)
		}
	}
	return cty.ObjectVal(vals)
}

// siteConfig is the configuration of a block for a site, verified TLS with
// its certificate file; mapped adds local_datastore_paths for the site's
// datastores (direct storage access).
func siteConfig(s *vcsimtest.Site, mapped bool, extra map[string]cty.Value) map[string]cty.Value {
	attrs := map[string]cty.Value{}
	for k, v := range s.Attributes() {
		attrs[k] = cty.StringVal(v)
	}
	if mapped {
		m := map[string]cty.Value{}
		for ds, p := range s.Datastores {
			m[ds] = cty.StringVal(p)
		}
		attrs["local_datastore_paths"] = cty.MapVal(m)
	}
	for k, v := range extra {
		attrs[k] = v
	}
	return attrs
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "vsphere", Level: hclog.Warn, Output: testWriter{t}})
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// newTestSource connects a source to a site.
func newTestSource(t testing.TB, s *vcsimtest.Site, mapped bool, extra map[string]cty.Value) *Source {
	t.Helper()
	cfg, err := decodeSource(configValue(sourceSchema(), siteConfig(s, mapped, extra)))
	if err != nil {
		t.Fatal(err)
	}
	src, err := newSource(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Stop(context.Background()) })
	return src
}

// drSite starts a target site with the networks the target suite's VM
// uses and the ones its default network map maps them to.
func drSite(t *testing.T) *vcsimtest.Site {
	return vcsimtest.Start(t, vcsimtest.Options{Name: "dr", Networks: drNetworks})
}

// drIsolated is the DR site's isolated port group for test VMs, and
// "sdktest-lab" the network the target suite maps a test VM's first NIC to.
var drNetworks = []string{"prod-lan", "prod-backup", "prod-lan-dr", "prod-backup-dr", "DR Network", drIsolated, "sdktest-lab"}

const drIsolated = "DR Isolated"

// hotaddDRSite is drSite for replicas written through HotAdd: a revert
// puts the snapshot's data back, as vSphere does for what ESXi wrote.
func hotaddDRSite(t *testing.T) *vcsimtest.Site {
	return vcsimtest.Start(t, vcsimtest.Options{Name: "dr", Networks: drNetworks, RevertData: true})
}

// newTestTarget connects a target to a site: the cluster, the site's
// datastore mapped.
func newTestTarget(t testing.TB, s *vcsimtest.Site, extra map[string]cty.Value) *Target {
	t.Helper()
	attrs := map[string]cty.Value{"datastore": cty.StringVal(s.Datastore), "cluster": cty.StringVal("DC0_C0")}
	for k, v := range extra {
		attrs[k] = v
	}
	cfg, err := decodeTarget(configValue(targetSchema(), siteConfig(s, true, attrs)))
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := newTarget(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tgt.Stop(context.Background()) })
	return tgt
}

// crashed drops what a target's process holds that dies with it: the
// replicas' locks (the kernel releases a dead process's locks). The target
// is not used again.
func (t *Target) crashed() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, r := range t.replicas {
		if r.lockF != nil {
			r.lockF.Close()
		}
	}
}

// oneDiskReplica creates a replica named name of the test source VM with
// its first disk only.
func oneDiskReplica(t testing.TB, tgt *Target, name string) *sdk.Replica {
	t.Helper()
	vm := sourceVM()
	vm.Disks = vm.Disks[:1]
	r, err := tgt.CreateReplica(context.Background(), sdk.ReplicaRequest{Name: name, VM: vm})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writeReplica writes data at off of disk 0 of a replica through a writer
// of its own, opened for a disk of size (0 keeps the size).
func writeReplica(t testing.TB, tgt *Target, id string, size, off int64, data string) {
	t.Helper()
	w, err := tgt.OpenReplicaDisk(context.Background(), id, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte(data), off); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
