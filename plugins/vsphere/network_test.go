package vsphere

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

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
	r, err := compileNetwork(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.apply(nics)
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
		if _, err := compileNetwork(cfg); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("config %d: %v, want ErrInvalidArgument", i, err)
		}
	}
	// A host part that does not fit the smaller subnet.
	r, err := compileNetwork(sdk.NetworkConfig{ReIP: []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.apply([]sdk.NIC{{Addresses: []string{"10.1.7.21/16"}}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("moving 10.1.7.21 into a /24: %v", err)
	}
	if got, err := r.apply([]sdk.NIC{{Addresses: []string{"10.1.0.21/16"}}}); err != nil || got[0].Addresses[0] != "10.2.0.21/16" {
		t.Fatalf("moving 10.1.0.21 into 10.2.0.0/24: %v, %v", got, err)
	}
}

func TestCustomizationLinux(t *testing.T) {
	t.Parallel()
	nics := []sdk.NIC{
		{Network: "dr", Addresses: []string{"10.2.7.21/24", "fd00:2::7/64"}, Gateway: "10.2.0.1", DNS: []string{"10.2.0.53", "10.2.0.54"}},
		{Network: "dr-backup"},
		{Network: "v6", Addresses: []string{"fd00:3::9/48"}, Gateway: "fd00:3::1", DNS: []string{"10.2.0.53"}},
	}
	spec, warnings, err := customization("otherLinux64Guest", "web-01.example", nics)
	if err != nil || len(warnings) != 0 {
		t.Fatal(err, warnings)
	}
	prep, ok := spec.Identity.(*types.CustomizationLinuxPrep)
	if !ok {
		t.Fatalf("identity %T, want LinuxPrep", spec.Identity)
	}
	if name := prep.HostName.(*types.CustomizationFixedName).Name; name != "web-01-example" {
		t.Errorf("host name %q", name)
	}
	if len(spec.NicSettingMap) != 3 {
		t.Fatalf("%d NIC settings, want one per NIC", len(spec.NicSettingMap))
	}
	a := spec.NicSettingMap[0].Adapter
	if ip, ok := a.Ip.(*types.CustomizationFixedIp); !ok || ip.IpAddress != "10.2.7.21" || a.SubnetMask != "255.255.255.0" ||
		!reflect.DeepEqual(a.Gateway, []string{"10.2.0.1"}) || !reflect.DeepEqual(a.DnsServerList, []string{"10.2.0.53", "10.2.0.54"}) {
		t.Errorf("nic 0: %+v (ip %+v)", a, a.Ip)
	}
	if a.IpV6Spec == nil || len(a.IpV6Spec.Ip) != 1 || a.IpV6Spec.Ip[0].(*types.CustomizationFixedIpV6).IpAddress != "fd00:2::7" ||
		a.IpV6Spec.Ip[0].(*types.CustomizationFixedIpV6).SubnetMask != 64 {
		t.Errorf("nic 0 IPv6: %+v", a.IpV6Spec)
	}
	if _, ok := spec.NicSettingMap[1].Adapter.Ip.(*types.CustomizationDhcpIpGenerator); !ok {
		t.Errorf("nic 1 without addresses: %T, want DHCP", spec.NicSettingMap[1].Adapter.Ip)
	}
	v6 := spec.NicSettingMap[2].Adapter
	if _, ok := v6.Ip.(*types.CustomizationDhcpIpGenerator); !ok || v6.IpV6Spec == nil || !reflect.DeepEqual(v6.IpV6Spec.Gateway, []string{"fd00:3::1"}) || len(v6.Gateway) != 0 {
		t.Errorf("nic 2 IPv6 only: %+v %+v", v6, v6.IpV6Spec)
	}
	if !reflect.DeepEqual(spec.GlobalIPSettings.DnsServerList, []string{"10.2.0.53", "10.2.0.54"}) {
		t.Errorf("global DNS %v", spec.GlobalIPSettings.DnsServerList)
	}
}

func TestCustomizationWindows(t *testing.T) {
	t.Parallel()
	spec, warnings, err := customization("windows2019srv_64Guest", "sql-server-production-01", []sdk.NIC{
		{Addresses: []string{"10.2.0.5/16", "10.2.0.6/16"}, Gateway: "10.2.0.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	prep, ok := spec.Identity.(*types.CustomizationSysprep)
	if !ok {
		t.Fatalf("identity %T, want Sysprep", spec.Identity)
	}
	if name := prep.UserData.ComputerName.(*types.CustomizationFixedName).Name; name != "sql-server-prod" {
		t.Errorf("computer name %q, want 15 characters at most", name)
	}
	if len(warnings) != 1 {
		t.Errorf("a second IPv4 address must be reported as not applied: %v", warnings)
	}
	if _, _, err := customization("otherLinux64Guest", "x", []sdk.NIC{{Addresses: []string{"10.0.0.1"}}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("an address without prefix: %v", err)
	}
}

func TestNetmaskAndHostname(t *testing.T) {
	t.Parallel()
	for bits, want := range map[int]string{0: "0.0.0.0", 8: "255.0.0.0", 20: "255.255.240.0", 32: "255.255.255.255"} {
		if got := netmask(bits); got != want {
			t.Errorf("netmask(%d) = %s, want %s", bits, got, want)
		}
	}
	for in, want := range map[string]string{"web_01": "web-01", "--": "replica", "a b.c": "a-b-c"} {
		if got := hostname(in, false); got != want {
			t.Errorf("hostname(%q) = %q, want %q", in, got, want)
		}
	}
}
