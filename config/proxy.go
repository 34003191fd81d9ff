package config

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

var proxySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "address", Required: true},
		{Name: "site"},
		{Name: "max_tasks"},
	},
}

// decodeProxy decodes a proxy block. The proxy is returned even when its
// body has problems, so that jobs naming it are not reported again.
func (l *loader) decodeProxy(b *hcl.Block) *Proxy {
	p := &Proxy{Name: b.Labels[0], MaxTasks: DefaultProxyMaxTasks, DeclRange: b.DefRange}
	content, diags := b.Body.Content(proxySchema)
	l.diags = append(l.diags, diags...)
	if attr, ok := content.Attributes["address"]; ok {
		if s, ok := evalString(attr, l.ctx, &l.diags); ok {
			host, port, err := parseAddress(s)
			if err != nil {
				l.errorf(attr.Expr.Range(), "Invalid proxy address", "%s; a proxy address is host:port, like 10.0.0.10:7443 or proxy1.example.com:7443.", err)
			} else {
				p.Address, p.Host, p.Port = s, host, port
			}
		}
	}
	if attr, ok := content.Attributes["site"]; ok {
		p.Site, _ = evalString(attr, l.ctx, &l.diags)
	}
	if attr, ok := content.Attributes["max_tasks"]; ok {
		if n, set, ok := evalInt(attr, l.ctx, &l.diags); ok && set {
			if n < 1 {
				l.errorf(attr.Expr.Range(), "Invalid max_tasks", "A proxy needs at least 1 task slot; max_tasks is %d.", n)
			} else {
				p.MaxTasks = n
			}
		}
	}
	return p
}

// parseAddress splits host:port and checks both parts. The host is an IP
// address (IPv6 in brackets) or a DNS name.
func parseAddress(s string) (string, uint16, error) {
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return "", 0, fmt.Errorf("%q has no port", s)
		}
		if strings.Contains(err.Error(), "too many colons") {
			return "", 0, fmt.Errorf("%q is not host:port (write an IPv6 address in brackets, like [fd00::10]:7443)", s)
		}
		return "", 0, fmt.Errorf("%q is not host:port", s)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q has no host", s)
	}
	if !validHost(host) {
		return "", 0, fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 || strings.HasPrefix(portText, "+") {
		return "", 0, fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, portText)
	}
	return host, uint16(port), nil
}

func validHost(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Zone() == "" || a.Is6()
	}
	if len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}
