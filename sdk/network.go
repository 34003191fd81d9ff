package sdk

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// NetworkRules is a NetworkConfig checked and ready to apply to NICs.
// Targets share it so that a network map and re-IP rules mean the same on
// every hypervisor.
type NetworkRules struct {
	networks map[string]string
	reIP     []reIPRule
}

type reIPRule struct {
	from, to netip.Prefix
	gateway  string
	dns      []string
}

// CompileNetwork checks a NetworkConfig: both names of a mapping present,
// subnets, gateways and DNS servers that parse, rules that stay in one
// address family. Errors are of class errdefs.ErrInvalidArgument. When a
// network is mapped twice, the first mapping wins.
func CompileNetwork(cfg NetworkConfig) (*NetworkRules, error) {
	r := &NetworkRules{networks: map[string]string{}}
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

// Network maps a source network name to the target's.
func (r *NetworkRules) Network(name string) string {
	if to, ok := r.networks[name]; ok {
		return to
	}
	return name
}

// Apply returns copies of the NICs with networks mapped and addresses
// moved: an address ("10.1.0.5/24" or a bare "10.1.0.5") inside a rule's
// from subnet (the first such rule wins) moves to the same host part in its
// to subnet, keeping its prefix length; the NIC takes the gateway and DNS
// servers of the rule that moved its first moved address. A host part
// that does not fit the to subnet is errdefs.ErrInvalidArgument, and then
// nothing is returned.
func (r *NetworkRules) Apply(nics []NIC) ([]NIC, error) {
	out := make([]NIC, len(nics))
	for i, nic := range nics {
		nic.Addresses = slices.Clone(nic.Addresses)
		nic.DNS = slices.Clone(nic.DNS)
		nic.Network = r.Network(nic.Network)
		var first *reIPRule
		for j, a := range nic.Addresses {
			addr, bits, err := parseAddress(a)
			if err != nil {
				return nil, fmt.Errorf("nic %d address %q: %v: %w", nic.Index, a, err, errdefs.ErrInvalidArgument)
			}
			for k := range r.reIP {
				rule := &r.reIP[k]
				if !rule.from.Contains(addr) {
					continue
				}
				moved, err := moveAddr(addr, rule.from, rule.to)
				if err != nil {
					return nil, fmt.Errorf("nic %d address %s: %v: %w", nic.Index, a, err, errdefs.ErrInvalidArgument)
				}
				nic.Addresses[j] = moved.String()
				if bits >= 0 {
					nic.Addresses[j] = netip.PrefixFrom(moved, bits).String()
				}
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
		out[i] = nic
	}
	return out, nil
}

// parseAddress parses "10.1.0.5/24" (bits 24) or "10.1.0.5" (bits -1).
func parseAddress(a string) (netip.Addr, int, error) {
	if strings.Contains(a, "/") {
		p, err := netip.ParsePrefix(a)
		return p.Addr(), p.Bits(), err
	}
	addr, err := netip.ParseAddr(a)
	return addr, -1, err
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
	out, _ := netip.AddrFromSlice(n.FillBytes(make([]byte, bits/8)))
	return out, nil
}
