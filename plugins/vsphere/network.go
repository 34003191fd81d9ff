package vsphere

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// sameAddresses reports whether two NIC lists carry the same addresses.
func sameAddresses(a, b []sdk.NIC) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !slices.Equal(a[i].Addresses, b[i].Addresses) || a[i].Gateway != b[i].Gateway || !slices.Equal(a[i].DNS, b[i].DNS) {
			return false
		}
	}
	return true
}

// windowsGuest says whether a vSphere guest id is a Windows one.
func windowsGuest(guestID string) bool {
	g := strings.ToLower(guestID)
	return strings.HasPrefix(g, "win") || strings.Contains(g, "windows")
}

// hostname makes a host name from a VM name: letters, digits and hyphens,
// at most 15 characters on Windows (NetBIOS) and 63 elsewhere.
func hostname(name string, windows bool) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0:
			b.WriteByte('-')
		}
	}
	h := strings.Trim(b.String(), "-")
	limit := 63
	if windows {
		limit = 15
	}
	if len(h) > limit {
		h = strings.TrimRight(h[:limit], "-")
	}
	if h == "" {
		h = "replica"
	}
	return h
}

// customization builds the guest customization that gives a replica's
// guest its NICs' addresses: LinuxPrep for Linux guests, Sysprep for
// Windows ones (which also generalizes Windows: a new SID, the domain
// left). Each NIC gets its first IPv4 address (or DHCP when it has none),
// its IPv6 addresses, gateway and DNS servers. The host name is host.
func customization(guestID, host string, nics []sdk.NIC) (types.CustomizationSpec, []string, error) {
	var spec types.CustomizationSpec
	var warnings []string
	windows := windowsGuest(guestID)
	name := &types.CustomizationFixedName{Name: hostname(host, windows)}
	if windows {
		spec.Identity = &types.CustomizationSysprep{
			GuiUnattended:  types.CustomizationGuiUnattended{TimeZone: 85, AutoLogon: false},
			UserData:       types.CustomizationUserData{FullName: "ferry", OrgName: "ferry", ComputerName: name},
			Identification: types.CustomizationIdentification{JoinWorkgroup: "WORKGROUP"},
		}
	} else {
		spec.Identity = &types.CustomizationLinuxPrep{HostName: name, Domain: "localdomain"}
	}
	var dns []string
	for _, nic := range nics {
		ip := types.CustomizationIPSettings{Ip: &types.CustomizationDhcpIpGenerator{}}
		var v6 []types.CustomizationFixedIpV6
		v4 := 0
		for _, a := range nic.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return spec, nil, fmt.Errorf("nic %d address %q: %v: %w", nic.Index, a, err, errdefs.ErrInvalidArgument)
			}
			if p.Addr().Is4() {
				v4++
				if v4 > 1 {
					warnings = append(warnings, fmt.Sprintf("nic %d: guest customization sets one IPv4 address per NIC; %s is not applied", nic.Index, a))
					continue
				}
				ip.Ip = &types.CustomizationFixedIp{IpAddress: p.Addr().String()}
				ip.SubnetMask = netmask(p.Bits())
			} else {
				v6 = append(v6, types.CustomizationFixedIpV6{IpAddress: p.Addr().String(), SubnetMask: int32(p.Bits())})
			}
		}
		if nic.Gateway != "" {
			if gw, err := netip.ParseAddr(nic.Gateway); err == nil && gw.Is6() {
				if len(v6) > 0 {
					ip.IpV6Spec = &types.CustomizationIPSettingsIpV6AddressSpec{Gateway: []string{gw.String()}}
				}
			} else if err == nil {
				ip.Gateway = []string{gw.String()}
			}
		}
		if len(v6) > 0 {
			if ip.IpV6Spec == nil {
				ip.IpV6Spec = &types.CustomizationIPSettingsIpV6AddressSpec{}
			}
			for i := range v6 {
				ip.IpV6Spec.Ip = append(ip.IpV6Spec.Ip, &v6[i])
			}
		}
		ip.DnsServerList = slices.Clone(nic.DNS)
		for _, d := range nic.DNS {
			if !slices.Contains(dns, d) {
				dns = append(dns, d)
			}
		}
		spec.NicSettingMap = append(spec.NicSettingMap, types.CustomizationAdapterMapping{Adapter: ip})
	}
	spec.GlobalIPSettings = types.CustomizationGlobalIPSettings{DnsServerList: dns}
	return spec, warnings, nil
}

// netmask writes an IPv4 prefix length as a dotted mask.
func netmask(bits int) string {
	m := uint32(0)
	if bits > 0 {
		m = ^uint32(0) << (32 - bits)
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}
