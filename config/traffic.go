package config

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// TrafficRule is a traffic_rule block: limits on the disk data that
// crosses a network link, between sites or address ranges, such as a WAN
// between the production and the DR site. Several rules may match one
// link; the strictest of each limit applies (see core/traffic).
type TrafficRule struct {
	Name string
	// From and To are the ends of the link the rule covers: data going
	// from an endpoint of From to one of To.
	From, To []Endpoint
	// Bidirectional makes the rule cover data going from To to From too,
	// as after a failover when replication runs back.
	Bidirectional bool
	// Throttle caps the rate of all the data crossing the link together,
	// in bytes per second; 0 for no cap. It applies while a window is
	// open, or always when Windows is empty.
	Throttle int64
	Windows  []TrafficWindow
	// Encrypt requires data crossing the link to be encrypted, whatever
	// the windows.
	Encrypt bool
	// MaxConnections caps the connections one task opens across the link;
	// 0 for no cap. It applies whatever the windows.
	MaxConnections int

	DeclRange hcl.Range
}

// ThrottleActive reports whether r's throttle applies at t: r has one and
// no windows, or one of its windows is open.
func (r *TrafficRule) ThrottleActive(t time.Time) bool {
	if r.Throttle == 0 {
		return false
	}
	if len(r.Windows) == 0 {
		return true
	}
	for _, w := range r.Windows {
		if w.Open(t) {
			return true
		}
	}
	return false
}

// NextChange returns the first instant after t at which one of r's windows
// opens or closes (ThrottleActive may then change); the zero time when
// none ever does.
func (r *TrafficRule) NextChange(t time.Time) time.Time {
	var next time.Time
	if r.Throttle == 0 {
		return next
	}
	for _, w := range r.Windows {
		if n := w.NextChange(t); !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	return next
}

// Endpoint is one end of a link as a traffic rule names it: a site, an
// address range, or anything.
type Endpoint struct {
	// Site is the site's name for "site:<name>"; "" otherwise. Sites are
	// free-form: a proxy's site, or a name the host gives a place.
	Site string
	// Prefix is the address range for a subnet or address; the zero
	// Prefix otherwise. An address is a prefix of its full length.
	Prefix netip.Prefix
	// Any is set for "*", which matches every end.
	Any   bool
	Range hcl.Range
}

// String returns the endpoint as written in the configuration's terms:
// site:prod, 10.1.0.0/16, 10.0.0.7/32 or *.
func (e Endpoint) String() string {
	switch {
	case e.Any:
		return "*"
	case e.Site != "":
		return "site:" + e.Site
	}
	return e.Prefix.String()
}

// TrafficWindow is when a traffic rule's throttle applies: from Start to
// End on each of Days, read on the wall clock of Location. A window whose
// End is not after its Start runs past midnight, to End on the next day:
// on Friday, 22:00-06:00 lasts until Saturday 06:00.
//
// Times are wall-clock minutes: on the day clocks go forward, a window
// starting in the skipped hour opens when the clock has passed its start;
// on the day they go back, the repeated hour is inside a window twice.
type TrafficWindow struct {
	Days       Weekdays
	Start, End int // minutes after midnight; End up to 24*60
	Location   *time.Location
	DeclRange  hcl.Range
}

const minutesPerDay = 24 * 60

// Open reports whether the window is open at t.
func (w TrafficWindow) Open(t time.Time) bool {
	local := t.In(w.Location)
	day := local.Weekday()
	m := local.Hour()*60 + local.Minute()
	if w.Start < w.End {
		return w.Days.Has(day) && w.Start <= m && m < w.End
	}
	// Past midnight: the late part of a listed day, or the early part of
	// the day after one.
	return w.Days.Has(day) && m >= w.Start || w.Days.Has((day+6)%7) && m < w.End
}

// NextChange returns the first instant after t at which Open changes; the
// zero time when it never does.
func (w TrafficWindow) NextChange(t time.Time) time.Time {
	if w.Days == AllWeekdays && w.Start == 0 && w.End == minutesPerDay {
		return time.Time{}
	}
	local := t.In(w.Location)
	y, mo, d := local.Date()
	open := w.Open(t)
	// Open changes only at a start or an end on the wall clock; one of
	// the next 8 days' (a week, and a day for a change of clocks) changes
	// it unless nothing ever does.
	var candidates []time.Time
	for off := 0; off <= 8; off++ {
		for _, m := range []int{w.Start, w.End} {
			if c := wallInstant(y, mo, d+off, m, w.Location); c.After(t) {
				candidates = append(candidates, c)
			}
		}
	}
	slices.SortFunc(candidates, time.Time.Compare)
	for _, c := range candidates {
		if w.Open(c) != open {
			return c
		}
	}
	return time.Time{}
}

// wallInstant returns the first instant at which the wall clock of loc
// reads at least m minutes after midnight of the given day: that time, or
// the end of the gap it falls in when the clocks skip it.
func wallInstant(y int, mo time.Month, d, m int, loc *time.Location) time.Time {
	want := time.Date(y, mo, d, 0, m, 0, 0, time.UTC)
	wall := func(t time.Time) time.Time {
		l := t.In(loc)
		return time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), 0, time.UTC)
	}
	c := time.Date(y, mo, d, 0, m, 0, 0, loc)
	if wall(c).Equal(want) {
		return c
	}
	// In a gap (time.Date then picks either side of it): bisect for the
	// jump. Clocks do not go back within hours of a jump forward.
	// Zones change on whole seconds.
	lo, hi := c.Unix()-6*3600, c.Unix()+6*3600
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if wall(time.Unix(mid, 0)).Before(want) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return time.Unix(hi, 0).In(loc)
}

// Weekdays is a set of days of the week: bit i for time.Weekday(i).
type Weekdays uint8

// AllWeekdays holds every day.
const AllWeekdays Weekdays = 1<<7 - 1

// Has reports whether d is in the set.
func (w Weekdays) Has(d time.Weekday) bool { return w&(1<<d) != 0 }

// String lists the days in order from Monday, ranges shortened: "mon-fri",
// "sat,sun", "mon-sun".
func (w Weekdays) String() string {
	var parts []string
	for i := 0; i < 7; {
		if !w.Has(weekOrder[i]) {
			i++
			continue
		}
		j := i
		for j+1 < 7 && w.Has(weekOrder[j+1]) {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, dayNames[i])
		case j == i+1:
			parts = append(parts, dayNames[i], dayNames[j])
		default:
			parts = append(parts, dayNames[i]+"-"+dayNames[j])
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// dayNames are the names days are written with, from Monday, the first day
// of the week in ISO 8601 and in the ranges users write (mon-fri).
var (
	dayNames  = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	weekOrder = []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}
)

var (
	trafficRuleSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "from", Required: true},
			{Name: "to", Required: true},
			{Name: "bidirectional"},
			{Name: "throttle"},
			{Name: "encrypt"},
			{Name: "max_connections"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "window"}},
	}
	windowSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "days"},
		{Name: "hours"},
		{Name: "time_zone"},
	}}
)

// decodeTrafficRule decodes a traffic_rule block; ok is false after a
// problem, and the rule is then left out of the configuration: a half-read
// rule could throttle the wrong link.
func (l *loader) decodeTrafficRule(b *hcl.Block) (*TrafficRule, bool) {
	r := &TrafficRule{Name: b.Labels[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(trafficRuleSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	attrs := content.Attributes
	for _, end := range []struct {
		name string
		dst  *[]Endpoint
	}{{"from", &r.From}, {"to", &r.To}} {
		a, present := attrs[end.name]
		if !present {
			continue
		}
		eps, good := l.endpoints(r, a)
		*end.dst = eps
		ok = ok && good
	}
	if a, present := attrs["bidirectional"]; present {
		var good bool
		r.Bidirectional, good = evalBool(a, l.ctx, &l.diags)
		ok = ok && good
	}
	if a, present := attrs["encrypt"]; present {
		var good bool
		r.Encrypt, good = evalBool(a, l.ctx, &l.diags)
		ok = ok && good
	}
	if a, present := attrs["throttle"]; present {
		if s, good := evalString(a, l.ctx, &l.diags); !good {
			ok = false
		} else if s != "" {
			if rate, err := parseRate(s); err != nil {
				l.errorf(a.Expr.Range(), "Invalid throttle", "%s.", err)
				ok = false
			} else {
				r.Throttle = rate
			}
		}
	}
	if a, present := attrs["max_connections"]; present {
		n, set, good := evalInt(a, l.ctx, &l.diags)
		switch {
		case !good:
			ok = false
		case set && n < 1:
			l.errorf(a.Expr.Range(), "Invalid max_connections", "A task needs at least 1 connection; max_connections is %d. Leave the attribute out for no cap.", n)
			ok = false
		case set:
			r.MaxConnections = n
		}
	}
	for _, blk := range content.Blocks {
		w, good := l.trafficWindow(blk)
		ok = ok && good
		if good {
			r.Windows = append(r.Windows, w)
		}
	}
	if _, throttled := attrs["throttle"]; !throttled && len(content.Blocks) > 0 {
		l.errorf(content.Blocks[0].DefRange, "Window without throttle",
			"Traffic rule %q has a window but no throttle: a window says when the throttle applies (encrypt and max_connections always do). Add a throttle or remove the window.", r.Name)
		ok = false
	}
	if ok && r.Throttle == 0 && !r.Encrypt && r.MaxConnections == 0 {
		l.diags = append(l.diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Traffic rule without effect",
			Detail:   fmt.Sprintf("Traffic rule %q sets no throttle, encrypt or max_connections: it matches links but limits nothing.", r.Name),
			Subject:  b.DefRange.Ptr(),
		})
	}
	return r, ok
}

// endpoints reads from or to: a non-empty list of "site:<name>", subnets,
// addresses and "*".
func (l *loader) endpoints(r *TrafficRule, a *hcl.Attribute) ([]Endpoint, bool) {
	list, ok := evalStringList(a, l.ctx, &l.diags)
	if !ok {
		return nil, false
	}
	if len(list) == 0 {
		l.errorf(a.Expr.Range(), "Empty "+a.Name, `Traffic rule %q: %s names no end of the link. List sites ("site:prod"), subnets ("10.1.0.0/16") or addresses, or "*" for any.`, r.Name, a.Name)
		return nil, false
	}
	seen := map[string]hcl.Range{}
	var out []Endpoint
	for _, s := range list {
		e, err := parseEndpoint(s.Value)
		if err != nil {
			l.errorf(s.Range, "Invalid "+a.Name, "%s.%s", err, l.siteHint(s.Value))
			ok = false
			continue
		}
		e.Range = s.Range
		if first, dup := seen[e.String()]; dup {
			l.errorf(s.Range, "Duplicate "+a.Name, "%s is already listed at %s.", e, first)
			ok = false
			continue
		}
		seen[e.String()] = s.Range
		out = append(out, e)
	}
	return out, ok
}

// siteHint suggests site:<name> for an entry that looks like a bare site
// name, naming the closest site a proxy declares when there is one.
func (l *loader) siteHint(s string) string {
	if s == "" || strings.ContainsAny(s, ":/. ") {
		return ""
	}
	sites := map[string]bool{}
	for _, p := range l.cfg.Proxies {
		if p.Site != "" {
			sites[p.Site] = true
		}
	}
	if best := suggest(s, slices.Sorted(maps.Keys(sites))); best != "" {
		return fmt.Sprintf(" Did you mean %q?", "site:"+best)
	}
	return fmt.Sprintf(" A site is written %q.", "site:"+s)
}

// parseEndpoint reads one entry of from or to.
func parseEndpoint(s string) (Endpoint, error) {
	switch {
	case s == "*":
		return Endpoint{Any: true}, nil
	case strings.HasPrefix(s, "site:"):
		name := strings.TrimPrefix(s, "site:")
		if strings.TrimSpace(name) == "" {
			return Endpoint{}, fmt.Errorf("%q names no site", s)
		}
		return Endpoint{Site: name}, nil
	case strings.Contains(s, "/"):
		p, err := parseSubnet(s)
		if err != nil {
			return Endpoint{}, err
		}
		return Endpoint{Prefix: p}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return Endpoint{}, fmt.Errorf(`%q is not "site:<name>", a subnet in CIDR notation, an IP address or "*"`, s)
	}
	if a.Is4In6() {
		return Endpoint{}, fmt.Errorf("%q is an IPv4-mapped IPv6 address; write it as IPv4", s)
	}
	return Endpoint{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
}

// trafficWindow decodes a window block; every attribute is optional: all
// days, the whole day, UTC.
func (l *loader) trafficWindow(b *hcl.Block) (TrafficWindow, bool) {
	w := TrafficWindow{Days: AllWeekdays, End: minutesPerDay, Location: time.UTC, DeclRange: b.DefRange}
	content, diags := b.Body.Content(windowSchema)
	l.diags = append(l.diags, diags...)
	ok := !diags.HasErrors()
	attrs := content.Attributes
	if a, present := attrs["days"]; present {
		list, good := evalStringList(a, l.ctx, &l.diags)
		ok = ok && good
		if good && len(list) == 0 {
			l.errorf(a.Expr.Range(), "Invalid days", "The list of days is empty. Leave days out for every day.")
			ok = false
		}
		var days Weekdays
		for _, s := range list {
			d, err := parseDays(s.Value)
			if err != nil {
				l.errorf(s.Range, "Invalid days", "%s.%s", err, dayHint(s.Value))
				ok = false
				continue
			}
			days |= d
		}
		if days != 0 {
			w.Days = days
		}
	}
	if a, present := attrs["hours"]; present {
		if s, good := evalString(a, l.ctx, &l.diags); !good {
			ok = false
		} else if start, end, err := parseHours(s); err != nil {
			l.errorf(a.Expr.Range(), "Invalid hours", "%s.", err)
			ok = false
		} else {
			w.Start, w.End = start, end
		}
	}
	if a, present := attrs["time_zone"]; present {
		if name, good := evalString(a, l.ctx, &l.diags); !good {
			ok = false
		} else if loc, detail := loadTimeZone(name); loc == nil {
			l.errorf(a.Expr.Range(), "Invalid time_zone", "%s", detail)
			ok = false
		} else {
			w.Location = loc
		}
	}
	return w, ok
}

// parseDays reads a day ("mon", "Monday") or a range of days ("mon-fri",
// "fri-mon" across the weekend).
func parseDays(s string) (Weekdays, error) {
	first, last, isRange := strings.Cut(s, "-")
	i, err := dayIndex(s, first)
	if err != nil {
		return 0, err
	}
	j := i
	if isRange {
		if j, err = dayIndex(s, last); err != nil {
			return 0, err
		}
	}
	var w Weekdays
	for k := i; ; k = (k + 1) % 7 {
		w |= 1 << weekOrder[k]
		if k == j {
			return w, nil
		}
	}
}

func dayIndex(whole, name string) (int, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	for i, d := range dayNames {
		full := strings.ToLower(weekOrder[i].String())
		if n == d || n == full {
			return i, nil
		}
	}
	if whole != name {
		return 0, fmt.Errorf(`%q in %q is not a day; write mon, tue, wed, thu, fri, sat or sun, or a range such as "mon-fri"`, name, whole)
	}
	return 0, fmt.Errorf(`%q is not a day; write mon, tue, wed, thu, fri, sat or sun, or a range such as "mon-fri"`, name)
}

// dayHint offers the day closest to the first part of s that is not one,
// or the range a common word stands for.
func dayHint(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "weekend", "weekends":
		return ` Did you mean "sat-sun"?`
	case "weekdays", "workdays":
		return ` Did you mean "mon-fri"?`
	}
	for _, part := range strings.Split(s, "-") {
		n := strings.ToLower(strings.TrimSpace(part))
		if _, err := dayIndex(n, n); err == nil {
			continue
		}
		if hint := didYouMeanQuoted(n, dayNames); hint != "" {
			return hint
		}
		if len(n) > 3 && slices.Contains(dayNames, n[:3]) {
			return didYouMeanQuoted(n[:3], dayNames) // "thursdya"
		}
		return ""
	}
	return ""
}

// parseHours reads "HH:MM-HH:MM" into minutes after midnight. The end may
// be 24:00; an end not after the start means the next day.
func parseHours(s string) (start, end int, err error) {
	const form = `hours are "HH:MM-HH:MM" on a 24-hour clock (00:00 to 24:00), such as "08:00-18:00", or "22:00-06:00" across midnight`
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, fmt.Errorf("%q is not a range of times; %s", s, form)
	}
	if start, err = parseClock(a, false); err != nil {
		return 0, 0, fmt.Errorf("%s in %q; %s", err, s, form)
	}
	if end, err = parseClock(b, true); err != nil {
		return 0, 0, fmt.Errorf("%s in %q; %s", err, s, form)
	}
	if start == end {
		return 0, 0, fmt.Errorf("%q starts and ends at the same time; leave hours out for the whole day", s)
	}
	return start, end, nil
}

// parseClock reads HH:MM; 24:00 only when end is set.
func parseClock(s string, end bool) (int, error) {
	t := strings.TrimSpace(s)
	h, m, found := strings.Cut(t, ":")
	if !found || len(h) < 1 || len(h) > 2 || len(m) != 2 {
		return 0, fmt.Errorf("%q is not a time of day", t)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	switch {
	case err1 != nil || err2 != nil || hh < 0 || mm < 0 || strings.ContainsAny(t, "+-"):
		return 0, fmt.Errorf("%q is not a time of day", t)
	case hh == 24 && mm == 0 && end:
		return minutesPerDay, nil
	case hh > 23 || mm > 59:
		return 0, fmt.Errorf("%q is not a time of day", t)
	}
	return hh*60 + mm, nil
}

// loadTimeZone reads an IANA zone name, or says why it cannot. It
// refuses Local, whose meaning depends on the machine: a configuration
// means the same on every control plane and proxy.
func loadTimeZone(name string) (*time.Location, string) {
	switch {
	case strings.TrimSpace(name) == "":
		return nil, "The time zone is empty. Leave time_zone out for UTC, or use an IANA name such as Europe/Paris."
	case strings.EqualFold(name, "Local"):
		return nil, "The zone Local depends on the machine; use an IANA name such as Europe/Paris."
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Sprintf("%q is not a known time zone; use an IANA name such as Europe/Paris or America/New_York.", name)
	}
	return loc, ""
}
