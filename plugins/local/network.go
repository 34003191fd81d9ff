package local

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"strings"

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

// compileNetwork checks a NetworkConfig: subnets, gateways and DNS servers
// must parse, and a rule must not move addresses between IPv4 and IPv6.
// Errors are of class ErrInvalidArgument.
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
		r.reIP = append(r.reIP, reIPRule{from: from.Masked(), to: to.Masked(), gateway: rule.Gateway, dns: append([]string(nil), rule.DNS...)})
	}
	return r, nil
}

// apply rewrites the NICs of vm: networks through the map, and every
// address inside a rule's from subnet to the same host part in its to
// subnet, with the rule's gateway and DNS servers. The first matching rule
// wins. An address whose host part does not fit the to subnet is an error
// of class ErrInvalidArgument, and vm is then left as it was.
func (r *netRules) apply(vm *sdk.VM) error {
	nics := make([]sdk.NIC, len(vm.NICs))
	for i, nic := range vm.NICs {
		nic.Addresses = append([]string(nil), nic.Addresses...)
		nic.DNS = append([]string(nil), nic.DNS...)
		if to, ok := r.networks[nic.Network]; ok {
			nic.Network = to
		}
		var matched *reIPRule
		for j, a := range nic.Addresses {
			for k := range r.reIP {
				rule := &r.reIP[k]
				na, ok, err := rule.move(a)
				if err != nil {
					return fmt.Errorf("re-ip nic %d of vm %q: %w", nic.Index, vm.Name, err)
				}
				if ok {
					nic.Addresses[j] = na
					if matched == nil {
						matched = rule
					}
					break
				}
			}
		}
		if matched != nil {
			if matched.gateway != "" {
				nic.Gateway = matched.gateway
			}
			if len(matched.dns) > 0 {
				nic.DNS = append([]string(nil), matched.dns...)
			}
		}
		nics[i] = nic
	}
	vm.NICs = nics
	return nil
}

// move rewrites one address ("10.1.0.5/24" or "10.1.0.5") when it lies in
// the rule's from subnet, keeping its prefix length.
func (rule *reIPRule) move(a string) (string, bool, error) {
	var addr netip.Addr
	bits := -1
	if strings.Contains(a, "/") {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return "", false, fmt.Errorf("address %q: %v: %w", a, err, errdefs.ErrInvalidArgument)
		}
		addr, bits = p.Addr(), p.Bits()
	} else {
		var err error
		if addr, err = netip.ParseAddr(a); err != nil {
			return "", false, fmt.Errorf("address %q: %v: %w", a, err, errdefs.ErrInvalidArgument)
		}
	}
	if !rule.from.Contains(addr) {
		return "", false, nil
	}
	host := maskBytes(addr.AsSlice(), rule.from.Bits(), false)
	if !allZero(maskBytes(host, rule.to.Bits(), true)) {
		return "", false, fmt.Errorf("address %s: host part does not fit in %s: %w", addr, rule.to, errdefs.ErrInvalidArgument)
	}
	net := rule.to.Addr().AsSlice()
	for i := range net {
		net[i] |= host[i]
	}
	na, _ := netip.AddrFromSlice(net)
	if bits < 0 {
		return na.String(), true, nil
	}
	return netip.PrefixFrom(na, bits).String(), true, nil
}

// maskBytes keeps the first bits bits of b (network part) when network is
// set, else the bits after them (host part).
func maskBytes(b []byte, bits int, network bool) []byte {
	out := make([]byte, len(b))
	for i := range b {
		var m byte
		switch n := bits - 8*i; {
		case n >= 8:
			m = 0xff
		case n > 0:
			m = ^byte(0xff >> n)
		}
		if !network {
			m = ^m
		}
		out[i] = b[i] & m
	}
	return out
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// macFor derives a stable, locally administered MAC for NIC i of a VM.
func macFor(vm string, i int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", vm, i))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}
