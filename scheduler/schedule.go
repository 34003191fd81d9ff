package scheduler

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // CRON_TZ= must work on machines without a zoneinfo database
)

// searchYears bounds the search for the next run. Every schedule Parse
// accepts runs at least once in any window of this length: the rarest
// satisfiable cron days are February 29 (every 8 years across a century
// that is not a leap year) and "the 1st of a month when it is a Monday"
// (at most 12 years apart).
const searchYears = 15

// MinEvery is the shortest interval an every schedule accepts: a second,
// the resolution of schedules (short intervals serve tests and labs; a
// run of a job that is still running when its next run falls due is
// queued once, never stacked).
const MinEvery = time.Second

// Schedule says when a job runs. The zero Schedule never runs.
//
// A Schedule is an immutable value, safe for concurrent use.
type Schedule struct {
	expr  string
	loc   *time.Location
	every time.Duration // > 0 for every schedules
	cron  *cronSpec     // non-nil for cron schedules and macros
}

// ParseError is the error Parse returns. It says which part of the
// expression is wrong and why.
type ParseError struct {
	Expr   string // the expression as given to Parse
	Field  string // "minute", "hour", "day-of-month", "month", "day-of-week", "time zone", "interval"; "" for the expression as a whole
	Value  string // the offending text, "" when the expression as a whole is wrong
	Reason string
}

func (e *ParseError) Error() string {
	switch {
	case e.Field != "" && e.Value != "":
		return fmt.Sprintf("parse schedule %q: %s %q: %s", e.Expr, e.Field, e.Value, e.Reason)
	case e.Field != "":
		return fmt.Sprintf("parse schedule %q: %s: %s", e.Expr, e.Field, e.Reason)
	default:
		return fmt.Sprintf("parse schedule %q: %s", e.Expr, e.Reason)
	}
}

var macros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// Parse reads a schedule expression:
//
//   - five cron fields, "minute hour day-of-month month day-of-week", each a
//     list of values, ranges (1-5) and steps (*/15, 10-50/20, 5/15 meaning
//     5-max/15); months may be named JAN-DEC and days SUN-SAT, Sunday is 0
//     or 7. When both day fields are restricted a day matches if either
//     does; when one of them starts with "*" both must match (Vixie cron).
//   - a macro: @hourly, @daily (@midnight), @weekly, @monthly, @yearly
//     (@annually).
//   - "every <duration>" (or "@every <duration>"), such as every 15m or
//     every 1h30m: at least MinEvery, a whole number of seconds.
//
// Cron expressions and macros may start with CRON_TZ=<zone> (or TZ=<zone>),
// an IANA zone name such as Europe/Berlin, which overrides loc. loc is the
// zone of the wall clock the cron fields are read in; nil means UTC, so that
// a configuration means the same on every control plane. Every schedules do
// not depend on a zone.
//
// Parse rejects cron expressions that can never run, such as 0 0 30 2 *.
// Its errors are *ParseError.
func Parse(expr string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	fail := func(field, value, reason string) (Schedule, error) {
		return Schedule{}, &ParseError{Expr: expr, Field: field, Value: value, Reason: reason}
	}
	words := strings.Fields(expr)
	if len(words) == 0 {
		return fail("", "", "empty schedule; want cron fields (0 2 * * *), a macro (@daily) or every <duration> (every 15m)")
	}
	if zone, ok := zonePrefix(words[0]); ok {
		l, err := loadZone(zone)
		if err != nil {
			return fail("time zone", zone, err.Error())
		}
		loc = l
		words = words[1:]
		if len(words) == 0 {
			return fail("", "", "nothing after the time zone")
		}
	}
	norm := strings.Join(words, " ")
	switch {
	case strings.EqualFold(words[0], "every") || strings.EqualFold(words[0], "@every"):
		if len(words) != 2 {
			return fail("interval", strings.Join(words[1:], " "), "want one duration, like every 15m or every 1h30m")
		}
		d, err := time.ParseDuration(words[1])
		switch {
		case err != nil:
			return fail("interval", words[1], "not a duration; use h, m and s, like 15m, 2h or 1h30m")
		case d < MinEvery:
			return fail("interval", words[1], fmt.Sprintf("shorter than the minimum of %s", MinEvery))
		case d%time.Second != 0:
			return fail("interval", words[1], "not a whole number of seconds")
		}
		return Schedule{expr: norm, loc: loc, every: d}, nil
	case strings.HasPrefix(words[0], "@"):
		fields, ok := macros[strings.ToLower(words[0])]
		if !ok {
			return fail("", "", fmt.Sprintf("unknown macro %s; want @hourly, @daily, @weekly, @monthly or @yearly", words[0]))
		}
		if len(words) != 1 {
			return fail("", "", fmt.Sprintf("nothing may follow %s", words[0]))
		}
		spec, perr := parseCron(strings.Fields(fields))
		if perr != nil {
			perr.Expr = expr
			return Schedule{}, perr
		}
		return Schedule{expr: norm, loc: loc, cron: spec}, nil
	}
	if len(words) != 5 {
		n := fmt.Sprintf("%d fields", len(words))
		if len(words) == 1 {
			n = "1 field"
		}
		return fail("", "", n+"; a cron expression has 5: minute hour day-of-month month day-of-week")
	}
	spec, perr := parseCron(words)
	if perr != nil {
		perr.Expr = expr
		return Schedule{}, perr
	}
	return Schedule{expr: norm, loc: loc, cron: spec}, nil
}

func zonePrefix(word string) (string, bool) {
	for _, p := range []string{"CRON_TZ=", "TZ="} {
		if len(word) >= len(p) && strings.EqualFold(word[:len(p)], p) {
			return word[len(p):], true
		}
	}
	return "", false
}

func loadZone(name string) (*time.Location, error) {
	switch {
	case name == "":
		return nil, fmt.Errorf("empty zone name; use an IANA name such as Europe/Berlin")
	case strings.EqualFold(name, "Local"):
		return nil, fmt.Errorf("the zone Local depends on the machine; use an IANA name such as Europe/Berlin")
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone; use an IANA name such as Europe/Berlin or America/New_York")
	}
	return l, nil
}

// IsZero reports whether s is the zero Schedule, which never runs.
func (s Schedule) IsZero() bool { return s.every == 0 && s.cron == nil }

// String returns the expression s was parsed from, with the time zone
// prefix and runs of white space normalised away.
func (s Schedule) String() string { return s.expr }

// Location returns the zone s reads its cron fields in, and in which Next
// returns its times; nil for the zero Schedule.
func (s Schedule) Location() *time.Location { return s.loc }

// Next returns the first run strictly after after, in s's zone, or the zero
// time when s never runs again (within the search bound of 15 years, which
// every schedule Parse accepts satisfies).
//
// Cron schedules follow the wall clock of their zone:
//
//   - A wall time that does not exist because the clock springs forward
//     (02:30 on the last Sunday of March in Europe/Berlin) runs at the first
//     instant after the gap (03:00 CEST), as Vixie cron does. Several missed
//     times collapse into that one run.
//   - A wall time that exists twice because the clock falls back runs once,
//     at its first occurrence, when the hour field is fixed (0 2 * * * runs
//     once a day). When the hour field starts with "*" (hourly and finer)
//     the schedule follows elapsed time instead and also runs in the
//     repeated hour, so 0 * * * * keeps running every real hour.
//
// Every schedules run at the Unix epoch plus whole multiples of their
// interval: every 15m runs at :00, :15, :30 and :45 UTC and every 7h at the
// same instants on every control plane, whenever it was started.
func (s Schedule) Next(after time.Time) time.Time {
	switch {
	case s.every > 0:
		return nextEvery(s.every, after).In(s.loc)
	case s.cron != nil:
		return s.cron.next(after, s.loc)
	}
	return time.Time{}
}

// nextEvery returns the first multiple of d since the epoch strictly after
// after, or the zero time when that is beyond what time.Time holds.
func nextEvery(d time.Duration, after time.Time) time.Time {
	step := int64(d / time.Second)
	secs := after.Unix()
	k := secs / step
	if secs%step != 0 && secs < 0 {
		k-- // floor division
	}
	if k > (1<<63-1)/step-1 {
		return time.Time{}
	}
	return time.Unix((k+1)*step, 0)
}
