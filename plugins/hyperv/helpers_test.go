package hyperv

import (
	"context"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
)

// The switches of the test hosts: the networks of sdktest.DefaultVM, their
// "-dr" mappings, and the source VM's.
var testSwitches = []string{"prod-lan", "prod-backup", "prod-lan-dr", "prod-backup-dr", "LAN", "LAN-dr"}

func newSim(t testing.TB) *simhost.Host {
	t.Helper()
	h, err := simhost.Open(t.TempDir(), testSwitches...)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// sourceVM makes the conformance VM on h: generation 2, two small disks,
// the guest's Backup service on (so snapshots can be quiesced).
func sourceVM(t testing.TB, h *simhost.Host, name string) *host.VM {
	t.Helper()
	ctx := context.Background()
	v, err := h.CreateVM(ctx, host.VMSpec{Name: name, Generation: 2, CPUs: 2, MemoryMiB: 1024, SecureBoot: true,
		Disks: []host.DiskSpec{{Controller: "scsi", Location: 0, Capacity: 4 << 20}, {Controller: "scsi", Location: 1, Capacity: 1<<20 + 8<<10}},
		NICs:  []host.NICSpec{{Switch: "LAN", Guest: host.GuestNetwork{Addresses: []string{"10.1.0.5/24"}, Gateway: "10.1.0.1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SetGuestBackup(ctx, v.ID, true); err != nil {
		t.Fatal(err)
	}
	return v
}

func hostValue(addr string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{"host": cty.StringVal(addr)})
}

func targetValue(addr string) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{"host": cty.StringVal(addr), "storage_path": cty.NullVal(cty.String)})
}
