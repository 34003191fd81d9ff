package traffic

import (
	"net/netip"
	"time"

	"github.com/ferry-dr/ferry/config"
)

// End is one end of a link: the site it is in and its address, either of
// which may be unknown.
type End struct {
	Site string     // "" when unknown
	Addr netip.Addr // the zero Addr when unknown
}

// Link is the way disk data takes: from the end that sends it (a source
// proxy) to the end that receives it (a target proxy).
type Link struct {
	From, To End
}

// Limits are what the rules matching a link impose at a time.
type Limits struct {
	// Throttle is the lowest throttle among the matching rules whose
	// window is open, in bytes per second; 0 for none.
	Throttle int64
	// ThrottledBy names the rule Throttle comes from; "" when none.
	ThrottledBy string
	// Encrypt is set when a matching rule requires encryption.
	Encrypt bool
	// MaxConnections is the smallest max_connections of the matching
	// rules; 0 for no cap.
	MaxConnections int
	// Rules names every matching rule, windows open or not, in the
	// order of the configuration: for the session log.
	Rules []string
}

// Evaluate returns the limits rules impose on link at now.
func Evaluate(rules []*config.TrafficRule, link Link, now time.Time) Limits {
	var lim Limits
	for _, r := range rules {
		if !Matches(r, link) {
			continue
		}
		lim.Rules = append(lim.Rules, r.Name)
		if r.ThrottleActive(now) && (lim.Throttle == 0 || r.Throttle < lim.Throttle) {
			lim.Throttle, lim.ThrottledBy = r.Throttle, r.Name
		}
		lim.Encrypt = lim.Encrypt || r.Encrypt
		if r.MaxConnections > 0 && (lim.MaxConnections == 0 || r.MaxConnections < lim.MaxConnections) {
			lim.MaxConnections = r.MaxConnections
		}
	}
	return lim
}

// Matches reports whether rule r covers link: its sending end matches an
// entry of r's from and its receiving end one of r's to, or the reverse
// for a bidirectional rule.
func Matches(r *config.TrafficRule, link Link) bool {
	return matchesAny(r.From, link.From) && matchesAny(r.To, link.To) ||
		r.Bidirectional && matchesAny(r.From, link.To) && matchesAny(r.To, link.From)
}

func matchesAny(eps []config.Endpoint, end End) bool {
	for _, e := range eps {
		if matches(e, end) {
			return true
		}
	}
	return false
}

// matches reports whether endpoint e names end. An unknown site or
// address matches nothing but "*".
func matches(e config.Endpoint, end End) bool {
	switch {
	case e.Any:
		return true
	case e.Site != "":
		return end.Site == e.Site
	case end.Addr.IsValid():
		return e.Prefix.Contains(end.Addr.Unmap().WithZone(""))
	}
	return false
}
