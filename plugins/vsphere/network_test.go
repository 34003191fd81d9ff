package vsphere

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

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
