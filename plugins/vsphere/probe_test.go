package vsphere

import (
	"context"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
)

// TestProbeTransport: the source says direct where the datastore is
// mapped, network where it is not or where asked, and nothing where
// transport = "direct" cannot be; the target says direct where its
// datastore is mounted and nothing where it is not.
func TestProbeTransport(t *testing.T) {
	t.Parallel()
	s := vcsimtest.Start(t, vcsimtest.Options{Name: "prod"})
	s.CreateVM(t, vcsimtest.VMSpec{Name: "vm", Disks: []int64{1 << 20}})
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		mapped    bool
		transport string
		mode, why string
	}{
		{"auto, mapped", true, "", sdk.TransportDirect, "mapped"},
		{"auto, not mapped", false, "", sdk.TransportNetwork, `datastore "LocalDS_0" is not in local_datastore_paths`},
		{"network, mapped", true, TransportNetwork, sdk.TransportNetwork, `transport = "network"`},
		{"direct, not mapped", false, TransportDirect, "", `transport = "direct" but datastore "LocalDS_0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra := map[string]cty.Value{}
			if tc.transport != "" {
				extra["transport"] = cty.StringVal(tc.transport)
			}
			src := newTestSource(t, s, tc.mapped, extra)
			mode, why, err := src.ProbeTransport(ctx, "vm", -1)
			if err != nil || mode != tc.mode || !strings.Contains(why, tc.why) {
				t.Fatalf("probe = %q, %q, %v; want %q, %q", mode, why, err, tc.mode, tc.why)
			}
		})
	}
	dr := drSite(t)
	tgt := newTestTarget(t, dr, nil)
	if mode, why, err := tgt.ProbeTransport(ctx, "", -1); err != nil || mode != sdk.TransportDirect || !strings.Contains(why, "mounted here") {
		t.Fatalf("target probe = %q, %q, %v", mode, why, err)
	}
	tgt.c.cfg.Datastores = map[string]string{dr.Datastore: t.TempDir() + "/not-mounted"}
	if mode, why, err := tgt.ProbeTransport(ctx, "", -1); err != nil || mode != "" || !strings.Contains(why, "not mounted here") {
		t.Fatalf("target probe without the mount = %q, %q, %v", mode, why, err)
	}
}
