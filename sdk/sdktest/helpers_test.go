package sdktest

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

func ext(off, n int64) sdk.Extent { return sdk.Extent{Offset: off, Length: n} }

func TestCheckExtents(t *testing.T) {
	tests := []struct {
		name string
		exts []sdk.Extent
		want string // part of the error; "" for none
	}{
		{"none", nil, ""},
		{"sorted and touching", []sdk.Extent{ext(0, 10), ext(10, 5), ext(20, 80)}, ""},
		{"empty extent", []sdk.Extent{ext(0, 10), ext(12, 0)}, "is empty"},
		{"negative offset", []sdk.Extent{ext(-1, 5)}, "outside the disk"},
		{"past the end", []sdk.Extent{ext(90, 11)}, "outside the disk"},
		{"overlap", []sdk.Extent{ext(0, 10), ext(9, 5)}, "overlaps"},
		{"out of order", []sdk.Extent{ext(50, 10), ext(0, 5)}, "out of order"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkExtents(tt.exts, 100)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("checkExtents = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestFirstUncovered(t *testing.T) {
	exts := []sdk.Extent{ext(10, 10), ext(20, 5), ext(40, 10)}
	tests := []struct {
		name    string
		want    sdk.Extent
		off     int64
		missing bool
	}{
		{"inside one", ext(12, 3), 0, false},
		{"across touching extents", ext(15, 10), 0, false},
		{"exactly one", ext(40, 10), 0, false},
		{"starts before", ext(9, 3), 9, true},
		{"runs into a gap", ext(22, 5), 25, true},
		{"ends past the last", ext(45, 6), 50, true},
		{"in a gap", ext(30, 1), 30, true},
		{"after all", ext(60, 1), 60, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, missing := firstUncovered(exts, tt.want)
			if missing != tt.missing || off != tt.off {
				t.Errorf("firstUncovered(%v) = %d, %v; want %d, %v", tt.want, off, missing, tt.off, tt.missing)
			}
		})
	}
}

func TestFirstUncoveredNonZero(t *testing.T) {
	data := make([]byte, 10000)
	data[5000], data[9999] = 1, 2
	tests := []struct {
		name    string
		exts    []sdk.Extent
		off     int64
		missing bool
	}{
		{"all covered", []sdk.Extent{ext(0, 10000)}, 0, false},
		{"both bytes covered", []sdk.Extent{ext(4096, 4096), ext(9990, 10)}, 0, false},
		{"none", nil, 5000, true},
		{"last byte missed", []sdk.Extent{ext(5000, 1), ext(9000, 999)}, 9999, true},
		{"first missed by one", []sdk.Extent{ext(5001, 4999)}, 5000, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			off, missing := firstUncoveredNonZero(data, tt.exts)
			if missing != tt.missing || off != tt.off {
				t.Errorf("firstUncoveredNonZero = %d, %v; want %d, %v", off, missing, tt.off, tt.missing)
			}
		})
	}
}

func TestDiffBytes(t *testing.T) {
	a := make([]byte, 10000)
	b := slices.Clone(a)
	if msg := diffBytes(a, b, 0); msg != "" {
		t.Fatalf("equal slices: %q", msg)
	}
	b[4097] = 0xee
	b[9000] = 1
	msg := diffBytes(a, b, 1<<20)
	for _, want := range []string{"offset 1052673 (0x101001)", "want ee", "2 of 3 blocks"} {
		if !strings.Contains(msg, want) {
			t.Errorf("diffBytes = %q, want it to contain %q", msg, want)
		}
	}
	if msg := diffBytes(a[:5], b, 0); !strings.Contains(msg, "got 5 bytes, want 10000") {
		t.Errorf("lengths differ: %q", msg)
	}
}

func TestBlockExtents(t *testing.T) {
	size := int64(3*memBlockSize + 100)
	got := blockExtents([]int64{3, 0, 1, 7}, size)
	want := []sdk.Extent{ext(0, 2*memBlockSize), ext(3*memBlockSize, 100)}
	if !slices.Equal(got, want) {
		t.Errorf("blockExtents = %v, want %v", got, want)
	}
}

func TestApplyNetwork(t *testing.T) {
	vm := sdk.VM{NICs: []sdk.NIC{
		{Index: 0, Network: "prod", Addresses: []string{"10.1.0.5/24", "192.168.1.9/24"}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.53"}},
		{Index: 1, Network: "backup", Addresses: []string{"fd00:1::7/64"}},
		{Index: 2, Network: "other", Addresses: []string{"172.16.200.3/20"}, Gateway: "172.16.192.1"},
	}}
	net := sdk.NetworkConfig{
		NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "dr"}, {From: "backup", To: "dr-backup"}},
		ReIP: []sdk.ReIPRule{
			{FromSubnet: "10.1.0.0/16", ToSubnet: "10.201.0.0/16", Gateway: "10.201.0.1", DNS: []string{"10.201.0.53", "10.201.0.54"}},
			{FromSubnet: "fd00:1::/64", ToSubnet: "fd00:99::/64", Gateway: "fd00:99::1"},
			{FromSubnet: "172.16.192.0/20", ToSubnet: "172.31.0.0/20"},
		},
	}
	if err := applyNetwork(&vm, net); err != nil {
		t.Fatal(err)
	}
	want := []sdk.NIC{
		{Index: 0, Network: "dr", Addresses: []string{"10.201.0.5/24", "192.168.1.9/24"}, Gateway: "10.201.0.1", DNS: []string{"10.201.0.53", "10.201.0.54"}},
		{Index: 1, Network: "dr-backup", Addresses: []string{"fd00:99::7/64"}, Gateway: "fd00:99::1"},
		{Index: 2, Network: "other", Addresses: []string{"172.31.8.3/20"}, Gateway: "172.16.192.1"},
	}
	if msg := diffNICs(vm.NICs, want); msg != "" {
		t.Error(msg)
	}
	bad := sdk.VM{NICs: []sdk.NIC{{Addresses: []string{"10.0.0.1/8"}}}}
	for _, rule := range []sdk.ReIPRule{
		{FromSubnet: "10.0.0.0/8", ToSubnet: "11.0.0.0/16"},
		{FromSubnet: "10.0.0.0/8", ToSubnet: "fd00::/8"},
		{FromSubnet: "ten", ToSubnet: "11.0.0.0/8"},
	} {
		if err := applyNetwork(&bad, sdk.NetworkConfig{ReIP: []sdk.ReIPRule{rule}}); err == nil {
			t.Errorf("rule %+v accepted", rule)
		}
	}
}

func TestAddHostBit(t *testing.T) {
	tests := []struct {
		addr string
		bit  int
		want string
	}{
		{"10.1.0.5", 8, "10.1.1.5"},
		{"10.1.255.5", 8, "10.2.0.5"},
		{"172.16.3.7", 16, "172.17.3.7"},
		{"fd00:1::7", 64, "fd00:1:0:1::7"},
		{"255.255.255.0", 8, ""},
	}
	for _, tt := range tests {
		got, ok := addHostBit(netip.MustParseAddr(tt.addr), tt.bit)
		if tt.want == "" {
			if ok {
				t.Errorf("addHostBit(%s, %d) = %v, want an overflow", tt.addr, tt.bit, got)
			}
			continue
		}
		if !ok || got.String() != tt.want {
			t.Errorf("addHostBit(%s, %d) = %v, %v; want %s", tt.addr, tt.bit, got, ok, tt.want)
		}
	}
}

func TestPathInSchema(t *testing.T) {
	b := memPlugin().Sources["mem"].Schema
	tests := []struct {
		name string
		path cty.Path
		ok   bool
	}{
		{"block itself", nil, true},
		{"attribute", cty.GetAttrPath("label"), true},
		{"into a map attribute", cty.GetAttrPath("tags").Index(cty.StringVal("site")), true},
		{"nested single block", cty.GetAttrPath("limits").GetAttr("max_mib"), true},
		{"nested list block", cty.GetAttrPath("disk").IndexInt(2).GetAttr("size"), true},
		{"unknown attribute", cty.GetAttrPath("nope"), false},
		{"unknown nested attribute", cty.GetAttrPath("limits").GetAttr("nope"), false},
		{"list block by key", cty.GetAttrPath("disk").Index(cty.StringVal("a")), false},
		{"index on the body", cty.Path{cty.IndexStep{Key: cty.NumberIntVal(0)}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pathInSchema(b, tt.path)
			if (err == nil) != tt.ok {
				t.Errorf("pathInSchema(%s) = %v, want ok %v", schema.FormatPath(tt.path), err, tt.ok)
			}
		})
	}
}
