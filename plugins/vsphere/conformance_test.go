package vsphere

import (
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// prodSite starts a source site with the VM the suites play with, in a
// folder with two tags, and a tag no VM carries.
func prodSite(t *testing.T) *vcsimtest.Site {
	return prodSiteWith(t, vcsimtest.Options{Name: "prod", CBTWindow: 1 << 20})
}

func prodSiteWith(t *testing.T, opts vcsimtest.Options) *vcsimtest.Site {
	s := vcsimtest.Start(t, opts)
	s.CreateVM(t, vcsimtest.VMSpec{Name: "sdktest-vm", Disks: []int64{4 << 20, 1<<20 + 8<<10}, CPUs: 2, MemoryMB: 512, PoweredOn: true, Tools: true,
		NICs:   []vcsimtest.NICSpec{{Network: "VM Network", Addresses: []string{"10.1.0.5/24"}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.53"}}},
		Folder: "conformance/web"})
	s.Tag(t, "sdktest-vm", "tier", "gold")
	s.Tag(t, "sdktest-vm", "backup", "daily")
	s.CreateTag(t, "tier", "silver")
	return s
}

func sourceFixture(s *vcsimtest.Site, src sdk.Source) sdktest.SourceFixture {
	return sdktest.SourceFixture{
		New:          func(*testing.T) sdk.Source { return src },
		Capabilities: SourceCapabilities,
		VM:           "sdktest-vm",
		Folder:       "/DC0/vm/conformance/web",
		Tags:         []string{"backup/daily", "tier/gold"},
		Write: func(t *testing.T, vm string, disk int, off int64, data []byte) {
			s.Write(t, vm, disk, off, data)
		},
		ResetChangeTracking: func(t *testing.T, vm string, disk int) { s.ResetCBT(t, vm) },
	}
}

// TestConformanceSourceDirect: the datastore is mapped, disks are read from
// their flat files (direct storage access).
func TestConformanceSourceDirect(t *testing.T) {
	t.Parallel()
	s := prodSite(t)
	sdktest.RunSource(t, sourceFixture(s, newTestSource(t, s, true, nil)))
}

// TestConformanceSourceNetwork: no mapping, disks are read with ranged GETs
// on the datastore HTTP interface.
func TestConformanceSourceNetwork(t *testing.T) {
	t.Parallel()
	s := prodSite(t)
	fx := sourceFixture(s, newTestSource(t, s, false, nil))
	fx.Capabilities.Failback = false // failback writes through the mount (TestFailbackNeedsTheMount)
	sdktest.RunSource(t, fx)
}

// TestConformanceSourceHotAdd: transport = "hotadd", disks attached to a
// proxy VM and read as the block devices its (faked) guest shows. The site
// gives snapshots taken while others exist delta disks, as ESXi does: the
// suite holds several snapshots at once, which only HotAdd can read. The
// proxy is left as it was.
func TestConformanceSourceHotAdd(t *testing.T) {
	t.Parallel()
	s := prodSiteWith(t, vcsimtest.Options{Name: "prod", CBTWindow: 1 << 20, DeltaChains: true})
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "ferry-proxy"})
	fx := sourceFixture(s, hotaddSource(t, s, false, pinned(p), "", 30*time.Second, nil))
	fx.Capabilities.Failback = false // failback writes through the mount (TestFailbackNeedsTheMount)
	sdktest.RunSource(t, fx)
	noneAttached(t, s, p)
}

// TestConformanceTarget runs the target suite with crashes: a crashed
// target is dropped without closing anything and a new one is connected.
// Test VMs get the site's isolated port group; their guests' writes are
// the harness's writes into the test VM's live disk.
func TestConformanceTarget(t *testing.T) {
	t.Parallel()
	outer := t
	s := drSite(t)
	isolated := map[string]cty.Value{"isolated_network": cty.StringVal(drIsolated)}
	cur := newTestTarget(t, s, isolated)
	sdktest.RunTarget(t, sdktest.TargetFixture{
		New:          func(*testing.T) sdk.Target { return cur },
		Capabilities: TargetCapabilities,
		// The crashed instance is dropped, not stopped; the new one lives
		// as long as the whole suite.
		Crash: func(*testing.T) {
			cur.crashed()
			cur = newTestTarget(outer, s, isolated)
		},
		IsolatedNetwork: drIsolated,
		WriteTest: func(t *testing.T, id string, disk int, off int64, data []byte) {
			s.Write(t, testNamePrefix+id, disk, off, data)
		},
		// The running replica's guest writes, seen by the site's
		// change tracking double.
		WriteFailedOver: func(t *testing.T, replica string, disk int, off int64, data []byte) {
			s.Write(t, replica, disk, off, data)
		},
		MakeVM: plainVMMaker(s),
	})
}

// plainVMMaker makes, for the mapping checks, a powered-off VM of the
// site that is no replica, its disks holding the given bytes, as a VM
// restored from a backup would.
func plainVMMaker(s *vcsimtest.Site) func(t *testing.T, name string, disks [][]byte) {
	return func(t *testing.T, name string, disks [][]byte) {
		t.Helper()
		sizes := make([]int64, len(disks))
		for i, d := range disks {
			sizes[i] = int64(len(d))
		}
		s.CreateVM(t, vcsimtest.VMSpec{Name: name, Disks: sizes, NICs: []vcsimtest.NICSpec{{Network: "VM Network"}}})
		for i, d := range disks {
			s.WriteUntracked(t, name, i, 0, d)
		}
	}
}

func TestConformancePlugin(t *testing.T) {
	t.Parallel()
	sdktest.RunPlugin(t, Plugin())
}
