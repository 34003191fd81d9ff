package traffic

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/config"
)

// loadRules reads traffic_rule blocks written in HCL.
func loadRules(t *testing.T, src string) []*config.TrafficRule {
	t.Helper()
	cfg, diags := config.LoadFiles("/cfg", map[string][]byte{"rules.hcl": []byte(src)}, nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return cfg.TrafficRules
}

const rules = `
traffic_rule "wan" {
  from          = ["site:prod", "10.1.0.0/16"]
  to            = ["site:dr", "10.2.0.0/16"]
  bidirectional = true
  throttle      = "20MB/s"
  encrypt       = true
  window {
    days      = ["mon-fri"]
    hours     = "08:00-18:00"
    time_zone = "Europe/Paris"
  }
}

# Tighter at night on weekdays, across midnight, New York time.
traffic_rule "night" {
  from     = ["10.1.0.0/16", "fd00:1::/48"]
  to       = ["*"]
  throttle = "5MB/s"
  window {
    days      = ["mon-thu"]
    hours     = "22:00-06:00"
    time_zone = "America/New_York"
  }
}

traffic_rule "branch" {
  from            = ["10.1.5.0/24", "fd00:1:0:5::/64"]
  to              = ["site:dr"]
  max_connections = 2
  throttle        = "1MB/s"
}

traffic_rule "lan" {
  from            = ["10.1.5.7"]
  to              = ["10.1.5.0/24"]
  max_connections = 1
}
`

func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func end(site, addr string) End {
	e := End{Site: site}
	if addr != "" {
		e.Addr = netip.MustParseAddr(addr)
	}
	return e
}

func TestEvaluate(t *testing.T) {
	rs := loadRules(t, rules)
	prod, dr := end("prod", ""), end("dr", "")
	// 2024-03-04 is a Monday; Paris is UTC+1 and New York UTC-5 in
	// winter. Europe changes clocks on 2024-03-31, the US on 2024-03-10.
	const (
		mondayNoonParis = "2024-03-04T11:00:00Z"
		saturdayNoon    = "2024-03-09T11:00:00Z"
	)
	for _, tt := range []struct {
		name     string
		link     Link
		time     string
		throttle int64
		by       string
		encrypt  bool
		maxConns int
		rules    []string
	}{
		{name: "sites in office hours", link: Link{prod, dr}, time: mondayNoonParis,
			throttle: 20e6, by: "wan", encrypt: true, rules: []string{"wan"}},
		{name: "sites on saturday", link: Link{prod, dr}, time: saturdayNoon,
			encrypt: true, rules: []string{"wan"}},
		{name: "office closes at 18:00 Paris", link: Link{prod, dr}, time: "2024-03-04T17:00:00Z",
			encrypt: true, rules: []string{"wan"}},
		{name: "office in summer time opens at 06:00Z", link: Link{prod, dr}, time: "2024-04-01T06:00:00Z",
			throttle: 20e6, by: "wan", encrypt: true, rules: []string{"wan"}},
		{name: "reverse of a bidirectional rule", link: Link{dr, prod}, time: mondayNoonParis,
			throttle: 20e6, by: "wan", encrypt: true, rules: []string{"wan"}},
		{name: "unrelated sites", link: Link{end("lab", ""), dr}, time: mondayNoonParis},
		{name: "unknown ends", link: Link{}, time: mondayNoonParis},
		{name: "address in a subnet", link: Link{end("", "10.1.3.4"), end("", "10.2.0.9")}, time: mondayNoonParis,
			throttle: 20e6, by: "wan", encrypt: true, rules: []string{"wan", "night"}},
		{name: "IPv4-mapped address", link: Link{end("", "::ffff:10.1.3.4"), end("", "10.2.0.9")}, time: mondayNoonParis,
			throttle: 20e6, by: "wan", encrypt: true, rules: []string{"wan", "night"}},
		{name: "night rule: * matches an unknown end", link: Link{end("", "10.1.3.4"), End{}}, time: "2024-03-05T04:00:00Z",
			throttle: 5e6, by: "night", rules: []string{"night"}},
		{name: "night runs into friday", link: Link{end("", "10.1.3.4"), End{}}, time: "2024-03-08T10:59:00Z",
			throttle: 5e6, by: "night", rules: []string{"night"}},
		{name: "night not from thursday morning", link: Link{end("", "10.1.3.4"), End{}}, time: "2024-03-04T10:00:00Z",
			rules: []string{"night"}},
		{name: "night not friday night", link: Link{end("", "10.1.3.4"), End{}}, time: "2024-03-09T04:00:00Z",
			rules: []string{"night"}},
		// After the US change (2024-03-10), New York is UTC-4: 22:00 is 02:00Z.
		{name: "night in US summer time", link: Link{end("", "10.1.3.4"), End{}}, time: "2024-03-12T02:00:00Z",
			throttle: 5e6, by: "night", rules: []string{"night"}},
		{name: "before night in US summer time", link: Link{end("", "10.1.3.4"), End{}}, time: "2024-03-12T01:59:00Z",
			rules: []string{"night"}},
		{name: "lowest open throttle wins", link: Link{end("prod", "10.1.5.9"), dr}, time: "2024-03-05T04:00:00Z",
			throttle: 1e6, by: "branch", encrypt: true, maxConns: 2, rules: []string{"wan", "night", "branch"}},
		{name: "IPv6 branch", link: Link{end("", "fd00:1:0:5::9"), end("dr", "fd00:2::1")}, time: saturdayNoon,
			throttle: 1e6, by: "branch", maxConns: 2, rules: []string{"night", "branch"}},
		{name: "IPv6 outside the branch", link: Link{end("", "fd00:1:0:6::9"), end("dr", "")}, time: saturdayNoon,
			rules: []string{"night"}},
		{name: "smallest max_connections", link: Link{end("", "10.1.5.7"), end("dr", "10.1.5.8")}, time: saturdayNoon,
			throttle: 1e6, by: "branch", encrypt: true, maxConns: 1, rules: []string{"wan", "night", "branch", "lan"}},
		{name: "one-way rule in reverse", link: Link{end("", "10.1.5.8"), end("", "10.1.5.7")}, time: saturdayNoon,
			rules: []string{"night"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Evaluate(rs, tt.link, at(t, tt.time))
			if got.Throttle != tt.throttle || got.ThrottledBy != tt.by || got.Encrypt != tt.encrypt ||
				got.MaxConnections != tt.maxConns || !slices.Equal(got.Rules, tt.rules) {
				t.Errorf("Evaluate = %+v, want throttle %d by %q encrypt %t max_connections %d rules %q",
					got, tt.throttle, tt.by, tt.encrypt, tt.maxConns, tt.rules)
			}
		})
	}
}

func TestEvaluateNoRules(t *testing.T) {
	if got := Evaluate(nil, Link{end("prod", "10.0.0.1"), end("dr", "10.0.0.2")}, time.Now()); got.Throttle != 0 || got.Encrypt || got.MaxConnections != 0 || got.Rules != nil {
		t.Errorf("Evaluate without rules = %+v", got)
	}
}
