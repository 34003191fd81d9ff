package local

import (
	"errors"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestNetworkRules(t *testing.T) {
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
			vm := &sdk.VM{Name: "vm", NICs: []sdk.NIC{tt.in}}
			rules, err := compileNetwork(tt.cfg)
			if err == nil {
				err = rules.apply(vm)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				if rules != nil && !slices.Equal(vm.NICs[0].Addresses, tt.in.Addresses) {
					t.Errorf("a failed apply changed the VM: %v", vm.NICs[0].Addresses)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := vm.NICs[0]; !nicEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMACIsStableAndLocal(t *testing.T) {
	a, b := macFor("vm", 0), macFor("vm", 1)
	if a != macFor("vm", 0) || a == b || a[:3] != "02:" || len(a) != 17 {
		t.Errorf("macs %q %q", a, b)
	}
}
