package scheduler

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// cronSpec is a parsed five-field cron expression. Each field is a bit set:
// bit n is set when the value n matches.
type cronSpec struct {
	minute, hour, dom, month, dow uint64
	// domStar and dowStar record a day field that starts with "*": Vixie
	// cron then requires both day fields to match instead of either.
	domStar, dowStar bool
	// hourStar records an hour field that starts with "*": such schedules
	// also run in a repeated hour when the clock falls back.
	hourStar bool
}

type cronField struct {
	name     string
	min, max int
	names    []string // names[i] stands for min+i
}

var cronFields = [5]cronField{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day-of-month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}},
	// 7 is Sunday too; it is folded onto 0 after parsing.
	{name: "day-of-week", min: 0, max: 7, names: []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}},
}

// parseCron parses the five fields of a cron expression. The returned
// error's Expr is left for the caller to fill in.
func parseCron(words []string) (*cronSpec, *ParseError) {
	var sets [5]uint64
	for i, f := range cronFields {
		set, err := f.parse(words[i])
		if err != nil {
			return nil, &ParseError{Field: f.name, Value: words[i], Reason: err.Error()}
		}
		sets[i] = set
	}
	dow := sets[4]
	if dow&(1<<7) != 0 {
		dow = dow&^(1<<7) | 1
	}
	c := &cronSpec{
		minute: sets[0], hour: sets[1], dom: sets[2], month: sets[3], dow: dow,
		domStar:  strings.HasPrefix(words[2], "*"),
		dowStar:  strings.HasPrefix(words[4], "*"),
		hourStar: strings.HasPrefix(words[1], "*"),
	}
	ref := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	if c.nextCivil(ref, ref.AddDate(searchYears, 0, 0)).IsZero() {
		// Only a restricted day-of-month with day-of-week "*" can fail:
		// any other combination matches some day within a few years.
		return nil, &ParseError{Field: "day-of-month", Value: words[2],
			Reason: fmt.Sprintf("no month in the month field %q has such a day, so the schedule never runs", words[3])}
	}
	return c, nil
}

// parse reads one field: a comma-separated list of items, each "*", a
// value, or a range, optionally followed by /step.
func (f cronField) parse(text string) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(text, ",") {
		if item == "" {
			return 0, fmt.Errorf("empty list item")
		}
		rng, stepText, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q is not a positive number", stepText)
			}
			step = n
		}
		lo, hi := f.min, f.max
		if f.name == "day-of-week" {
			hi = 6 // 7 repeats Sunday: */2 and MON/2 must not count it twice
		}
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = f.value(a); err != nil {
				return 0, err
			}
			if hi, err = f.value(b); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("range %s-%s runs backwards", a, b)
			}
		default:
			v, err := f.value(rng)
			if err != nil {
				return 0, err
			}
			lo = v
			if !hasStep {
				hi = v
			}
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

// value reads a number or, where the field has them, a name.
func (f cronField) value(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("missing value")
	}
	for i, n := range f.names {
		if strings.EqualFold(s, n) {
			return f.min + i, nil
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || strings.HasPrefix(s, "+") || strings.HasPrefix(s, "-") {
		if f.names != nil {
			return 0, fmt.Errorf("%q is neither a number nor a name (%s-%s)", s, f.names[0], f.names[len(f.names)-1])
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < f.min || n > f.max {
		return 0, fmt.Errorf("%d is out of range %d-%d", n, f.min, f.max)
	}
	return n, nil
}

func has(set uint64, v int) bool { return set&(1<<uint(v)) != 0 }

// nextSet returns the smallest member of set that is >= v, or -1.
func nextSet(set uint64, v int) int {
	rest := set >> uint(v)
	if rest == 0 {
		return -1
	}
	return v + bits.TrailingZeros64(rest)
}

// dayMatches applies Vixie cron's rule for the two day fields.
func (c *cronSpec) dayMatches(t time.Time) bool {
	dom, dow := has(c.dom, t.Day()), has(c.dow, int(t.Weekday()))
	if c.domStar || c.dowStar {
		return dom && dow
	}
	return dom || dow
}

func (c *cronSpec) matches(civil time.Time) bool {
	return has(c.month, int(civil.Month())) && c.dayMatches(civil) &&
		has(c.hour, civil.Hour()) && has(c.minute, civil.Minute())
}

// nextCivil returns the first wall-clock minute at or after t that the
// fields match, or the zero time when there is none before limit. Wall
// clock times are represented in UTC, where every minute exists once; t
// must be a whole minute.
func (c *cronSpec) nextCivil(t, limit time.Time) time.Time {
	for t.Before(limit) {
		y, mo, d := t.Date()
		switch {
		case !has(c.month, int(mo)):
			t = time.Date(y, mo+1, 1, 0, 0, 0, 0, time.UTC)
		case !c.dayMatches(t):
			t = time.Date(y, mo, d+1, 0, 0, 0, 0, time.UTC)
		default:
			h := nextSet(c.hour, t.Hour())
			if h < 0 {
				t = time.Date(y, mo, d+1, 0, 0, 0, 0, time.UTC)
				continue
			}
			if h > t.Hour() {
				t = time.Date(y, mo, d, h, 0, 0, 0, time.UTC)
			}
			m := nextSet(c.minute, t.Minute())
			if m < 0 {
				t = time.Date(y, mo, d, t.Hour()+1, 0, 0, 0, time.UTC)
				continue
			}
			return time.Date(y, mo, d, t.Hour(), m, 0, 0, time.UTC)
		}
	}
	return time.Time{}
}

// next returns the first instant strictly after after at which the
// schedule runs in loc, or the zero time.
func (c *cronSpec) next(after time.Time, loc *time.Location) time.Time {
	start := civilOf(after.In(loc)).Truncate(time.Minute)
	limit := start.AddDate(searchYears, 0, 0)
	var best time.Time
	// Wall times map to instants in order (a gap maps to its end, a
	// repeated time to its first occurrence), so the first match whose
	// instant lies after after is the answer, except for second
	// occurrences in a repeated hour, handled below.
	for t := start; ; t = t.Add(time.Minute) {
		t = c.nextCivil(t, limit)
		if t.IsZero() {
			break
		}
		if at := firstInstant(t, loc); at.After(after) {
			best = at
			break
		}
	}
	if c.hourStar {
		limitAt := firstInstant(limit, loc)
		if r := c.nextRepeated(after, best, limitAt, loc); !r.IsZero() {
			best = r
		}
	}
	return best
}

// nextRepeated returns the first instant strictly after after and before
// best (or limit, when best is zero) that lies in an hour repeated by a
// fall-back transition and whose wall time matches, or the zero time.
func (c *cronSpec) nextRepeated(after, best, limit time.Time, loc *time.Location) time.Time {
	end := best
	if end.IsZero() {
		end = limit
	}
	// Start a day early: after may lie inside a repeated hour whose
	// transition came before it.
	t := after.Add(-24 * time.Hour).In(loc)
	for {
		_, zoneEnd := t.ZoneBounds()
		if zoneEnd.IsZero() || !zoneEnd.Before(end) {
			return time.Time{}
		}
		_, before := t.Zone()
		next := zoneEnd.In(loc)
		_, afterOff := next.Zone()
		if fold := time.Duration(before-afterOff) * time.Second; fold > 0 {
			for at := next; at.Before(next.Add(fold)) && at.Before(end); at = at.Add(time.Minute) {
				if at.After(after) && c.matches(civilOf(at)) {
					return at
				}
			}
		}
		t = next
	}
}

// civilOf returns t's wall clock reading as a time in UTC.
func civilOf(t time.Time) time.Time {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	return time.Date(y, mo, d, h, mi, s, t.Nanosecond(), time.UTC)
}

// firstInstant returns the first instant at which loc's wall clock reads
// civil (a time in UTC standing for a wall clock reading). A reading the
// clock skips (a spring-forward gap) maps to the first instant after the
// gap.
func firstInstant(civil time.Time, loc *time.Location) time.Time {
	u := civil.Unix()
	// The offsets in force around the reading: a transition near it shows
	// up as two different offsets.
	var offsets []int
	for _, probe := range []int64{u - 86400, u, u + 86400} {
		_, off := time.Unix(probe, 0).In(loc).Zone()
		offsets = append(offsets, off)
	}
	var best time.Time
	minOff := offsets[0]
	for _, off := range offsets {
		minOff = min(minOff, off)
		at := time.Unix(u-int64(off), int64(civil.Nanosecond())).In(loc)
		if civilOf(at).Equal(civil) && (best.IsZero() || at.Before(best)) {
			best = at
		}
	}
	if !best.IsZero() {
		return best
	}
	// In a gap: read with the offset from before the gap, the reading
	// lands after the transition; the zone that starts there starts at the
	// end of the gap.
	at := time.Unix(u-int64(minOff), 0).In(loc)
	if start, _ := at.ZoneBounds(); !start.IsZero() {
		return start.In(loc)
	}
	return at
}
