package vsphere

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// netRules is a NetworkConfig checked and ready to apply.
type netRules struct {
	networks map[string]string
	reIP     []reIPRule
}

type reIPRule struct {
	from, to netip.Prefix
	gateway  string
	dns      []string
}

// compileNetwork checks a NetworkConfig: names present, subnets, gateways
// and DNS servers that parse, rules that stay in one address family.
// Errors are ErrInvalidArgument.
func compileNetwork(cfg sdk.NetworkConfig) (*netRules, error) {
	r := &netRules{networks: map[string]string{}}
	for _, m := range cfg.NetworkMap {
		if m.From == "" || m.To == "" {
			return nil, fmt.Errorf("network map %q -> %q: both names are required: %w", m.From, m.To, errdefs.ErrInvalidArgument)
		}
		if _, dup := r.networks[m.From]; !dup {
			r.networks[m.From] = m.To
		}
	}
	for i, rule := range cfg.ReIP {
		from, err := netip.ParsePrefix(rule.FromSubnet)
		if err != nil {
			return nil, fmt.Errorf("re-ip rule %d: from subnet %q: %v: %w", i, rule.FromSubnet, err, errdefs.ErrInvalidArgument)
		}
		to, err := netip.ParsePrefix(rule.ToSubnet)
		if err != nil {
			return nil, fmt.Errorf("re-ip rule %d: to subnet %q: %v: %w", i, rule.ToSubnet, err, errdefs.ErrInvalidArgument)
		}
		if from.Addr().Is4() != to.Addr().Is4() {
			return nil, fmt.Errorf("re-ip rule %d: %s and %s are not of one address family: %w", i, from, to, errdefs.ErrInvalidArgument)
		}
		if rule.Gateway != "" {
			if _, err := netip.ParseAddr(rule.Gateway); err != nil {
				return nil, fmt.Errorf("re-ip rule %d: gateway %q: %v: %w", i, rule.Gateway, err, errdefs.ErrInvalidArgument)
			}
		}
		for _, d := range rule.DNS {
			if _, err := netip.ParseAddr(d); err != nil {
				return nil, fmt.Errorf("re-ip rule %d: dns %q: %v: %w", i, d, err, errdefs.ErrInvalidArgument)
			}
		}
		r.reIP = append(r.reIP, reIPRule{from: from.Masked(), to: to.Masked(), gateway: rule.Gateway, dns: slices.Clone(rule.DNS)})
	}
	return r, nil
}

// network maps a source network name to the target's.
func (r *netRules) network(name string) string {
	if to, ok := r.networks[name]; ok {
		return to
	}
	return name
}

// apply returns the NICs with networks mapped and addresses moved: an
// address inside a rule's from subnet (the first such rule wins) moves to
// the same host part in its to subnet, keeping its prefix length; the NIC
// takes the gateway and DNS servers of the rule that moved its first moved
// address. A host part that does not fit the to subnet is ErrInvalidArgument.
func (r *netRules) apply(nics []sdk.NIC) ([]sdk.NIC, error) {
	out := cloneNICs(nics)
	for i := range out {
		nic := &out[i]
		nic.Network = r.network(nic.Network)
		var first *reIPRule
		for j, a := range nic.Addresses {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return nil, fmt.Errorf("nic %d address %q: %v: %w", nic.Index, a, err, errdefs.ErrInvalidArgument)
			}
			for k := range r.reIP {
				rule := &r.reIP[k]
				if !rule.from.Contains(p.Addr()) {
					continue
				}
				moved, err := moveAddr(p.Addr(), rule.from, rule.to)
				if err != nil {
					return nil, fmt.Errorf("nic %d address %s: %v: %w", nic.Index, a, err, errdefs.ErrInvalidArgument)
				}
				nic.Addresses[j] = netip.PrefixFrom(moved, p.Bits()).String()
				if first == nil {
					first = rule
				}
				break
			}
		}
		if first != nil {
			if first.gateway != "" {
				nic.Gateway = first.gateway
			}
			if len(first.dns) > 0 {
				nic.DNS = slices.Clone(first.dns)
			}
		}
	}
	return out, nil
}

// moveAddr keeps the host part of addr (relative to from) and puts it in
// to.
func moveAddr(addr netip.Addr, from, to netip.Prefix) (netip.Addr, error) {
	bits := addr.BitLen()
	a := new(big.Int).SetBytes(addr.AsSlice())
	host := new(big.Int).Sub(a, new(big.Int).SetBytes(from.Addr().AsSlice()))
	room := new(big.Int).Lsh(big.NewInt(1), uint(bits-to.Bits()))
	if host.Cmp(room) >= 0 {
		return netip.Addr{}, fmt.Errorf("its host part does not fit in %s", to)
	}
	n := new(big.Int).Add(new(big.Int).SetBytes(to.Addr().AsSlice()), host)
	b := n.FillBytes(make([]byte, bits/8))
	out, _ := netip.AddrFromSlice(b)
	return out, nil
}

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
