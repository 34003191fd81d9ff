package sdk_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestNetworkRulesTable(t *testing.T) {
	nic := func(network string, addrs ...string) sdk.NIC {
		return sdk.NIC{Network: network, Addresses: addrs, Gateway: "old-gw", DNS: []string{"old-dns"}}
	}
	tests := []struct {
		name    string
		cfg     sdk.NetworkConfig
		in      sdk.NIC
		want    sdk.NIC
		wantErr error
	}{
		{"map only", sdk.NetworkConfig{NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "dr"}}},
			nic("prod", "10.1.0.5/24"), nic("dr", "10.1.0.5/24"), nil},
		{"same prefix length", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/16", Gateway: "10.2.0.1", DNS: []string{"10.2.0.53"}}}},
			nic("prod", "10.1.7.5/24"), sdk.NIC{Network: "prod", Addresses: []string{"10.2.7.5/24"}, Gateway: "10.2.0.1", DNS: []string{"10.2.0.53"}}, nil},
		{"larger to subnet", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "192.168.1.0/24", ToSubnet: "10.0.0.0/8"}}},
			nic("p", "192.168.1.77/24"), nic("p", "10.0.0.77/24"), nil},
		{"bare address", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.9.0.0/16"}}},
			nic("p", "10.1.2.3"), nic("p", "10.9.2.3"), nil},
		{"ipv6", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "fd00:1::/64", ToSubnet: "fd00:2::/64", Gateway: "fd00:2::1"}}},
			nic("p", "fd00:1::7/64"), sdk.NIC{Network: "p", Addresses: []string{"fd00:2::7/64"}, Gateway: "fd00:2::1", DNS: []string{"old-dns"}}, nil},
		{"no match", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "198.51.100.0/24", ToSubnet: "203.0.113.0/24", Gateway: "203.0.113.1"}}},
			nic("p", "10.1.0.5/24"), nic("p", "10.1.0.5/24"), nil},
		{"first rule wins", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{
			{FromSubnet: "10.1.0.0/24", ToSubnet: "10.3.0.0/24", Gateway: "10.3.0.1"},
			{FromSubnet: "10.1.0.0/16", ToSubnet: "10.4.0.0/16", Gateway: "10.4.0.1"}}},
			nic("p", "10.1.0.5/24", "10.1.9.9/16"), sdk.NIC{Network: "p", Addresses: []string{"10.3.0.5/24", "10.4.9.9/16"}, Gateway: "10.3.0.1", DNS: []string{"old-dns"}}, nil},
		{"host part does not fit", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/24"}}},
			nic("p", "10.1.7.5/16"), sdk.NIC{}, errdefs.ErrInvalidArgument},
		{"bad from subnet", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/40", ToSubnet: "10.2.0.0/16"}}},
			sdk.NIC{}, sdk.NIC{}, errdefs.ErrInvalidArgument},
		{"bad to subnet", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "banana"}}},
			sdk.NIC{}, sdk.NIC{}, errdefs.ErrInvalidArgument},
		{"families differ", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "fd00::/64"}}},
			sdk.NIC{}, sdk.NIC{}, errdefs.ErrInvalidArgument},
		{"bad gateway", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/16", Gateway: "10.2.0"}}},
			sdk.NIC{}, sdk.NIC{}, errdefs.ErrInvalidArgument},
		{"bad dns", sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/16", DNS: []string{"x"}}}},
			sdk.NIC{}, sdk.NIC{}, errdefs.ErrInvalidArgument},
		{"empty map entry", sdk.NetworkConfig{NetworkMap: []sdk.NetworkMapping{{From: "prod"}}},
			sdk.NIC{}, sdk.NIC{}, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []sdk.NIC{tt.in}
			var got []sdk.NIC
			rules, err := sdk.CompileNetwork(tt.cfg)
			if err == nil {
				got, err = rules.Apply(in)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("a failed apply returned NICs: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("got %+v, want %+v", got[0], tt.want)
			}
			if !slices.Equal(in[0].Addresses, tt.in.Addresses) {
				t.Errorf("apply changed its input: %v", in[0].Addresses)
			}
		})
	}
}

func TestNetworkRules(t *testing.T) {
	t.Parallel()
	nics := []sdk.NIC{
		{Index: 0, Network: "prod", Addresses: []string{"10.1.7.21/24", "fd00:1::7/64"}, Gateway: "10.1.7.1", DNS: []string{"10.1.0.53"}},
		{Index: 1, Network: "backup", Addresses: []string{"172.16.3.7/16"}, Gateway: "172.16.0.1"},
		{Index: 2, Network: "mgmt", Addresses: []string{"192.168.5.5/24"}, Gateway: "192.168.5.1", DNS: []string{"192.168.5.2"}},
	}
	cfg := sdk.NetworkConfig{
		NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "dr"}, {From: "backup", To: "dr-backup"}, {From: "prod", To: "ignored"}},
		ReIP: []sdk.ReIPRule{
			{FromSubnet: "198.51.100.0/24", ToSubnet: "203.0.113.0/24", Gateway: "203.0.113.1"},
			{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/16", Gateway: "10.2.0.1", DNS: []string{"10.2.0.53"}},
			{FromSubnet: "10.1.7.0/24", ToSubnet: "10.9.9.0/24", Gateway: "10.9.9.1"},
			{FromSubnet: "fd00:1::/64", ToSubnet: "fd00:2::/64", Gateway: "fd00:2::1"},
			{FromSubnet: "172.16.0.0/16", ToSubnet: "172.17.0.0/16"},
		},
	}
	r, err := sdk.CompileNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Apply(nics)
	if err != nil {
		t.Fatal(err)
	}
	want := []sdk.NIC{
		// The first matching rule wins; gateway and DNS from the rule of the first moved address.
		{Index: 0, Network: "dr", Addresses: []string{"10.2.7.21/24", "fd00:2::7/64"}, Gateway: "10.2.0.1", DNS: []string{"10.2.0.53"}},
		// A rule without gateway or DNS keeps the NIC's.
		{Index: 1, Network: "dr-backup", Addresses: []string{"172.17.3.7/16"}, Gateway: "172.16.0.1"},
		// No rule, no mapping: unchanged.
		{Index: 2, Network: "mgmt", Addresses: []string{"192.168.5.5/24"}, Gateway: "192.168.5.1", DNS: []string{"192.168.5.2"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("apply:\n got %+v\nwant %+v", got, want)
	}
	if nics[0].Addresses[0] != "10.1.7.21/24" || nics[0].Network != "prod" {
		t.Fatal("apply changed its input")
	}
}

func TestNetworkRulesErrors(t *testing.T) {
	t.Parallel()
	bad := []sdk.NetworkConfig{
		{NetworkMap: []sdk.NetworkMapping{{From: "a"}}},
		{ReIP: []sdk.ReIPRule{{FromSubnet: "10.0.0.0/8", ToSubnet: "nope"}}},
		{ReIP: []sdk.ReIPRule{{FromSubnet: "10.0.0.0/8", ToSubnet: "fd00::/64"}}},
		{ReIP: []sdk.ReIPRule{{FromSubnet: "10.0.0.0/8", ToSubnet: "11.0.0.0/8", Gateway: "x"}}},
		{ReIP: []sdk.ReIPRule{{FromSubnet: "10.0.0.0/8", ToSubnet: "11.0.0.0/8", DNS: []string{"1.2.3"}}}},
	}
	for i, cfg := range bad {
		if _, err := sdk.CompileNetwork(cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("config %d: %v, want ErrInvalidArgument", i, err)
		}
	}
	// A host part that does not fit the smaller subnet.
	r, err := sdk.CompileNetwork(sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply([]sdk.NIC{{Addresses: []string{"10.1.7.21/16"}}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("moving 10.1.7.21 into a /24: %v", err)
	}
	if got, err := r.Apply([]sdk.NIC{{Addresses: []string{"10.1.0.21/16"}}}); err != nil || got[0].Addresses[0] != "10.2.0.21/16" {
		t.Fatalf("moving 10.1.0.21 into 10.2.0.0/24: %v, %v", got, err)
	}
}
