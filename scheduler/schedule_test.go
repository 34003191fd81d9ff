package scheduler

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func mustLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestNext(t *testing.T) {
	tests := []struct {
		name  string
		expr  string
		zone  string // the loc argument of Parse; "" is nil (UTC)
		after string // RFC 3339, with the offset that says which occurrence is meant
		want  string // RFC 3339 in the schedule's zone; "" for never
	}{
		// Plain cron in UTC.
		{"every minute", "* * * * *", "", "2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"},
		{"strictly after, mid-minute", "* * * * *", "", "2024-01-01T00:00:30Z", "2024-01-01T00:01:00Z"},
		{"step in the hour", "*/15 * * * *", "", "2024-01-01T10:07:00Z", "2024-01-01T10:15:00Z"},
		{"step rolls over the hour", "*/15 * * * *", "", "2024-01-01T10:45:00Z", "2024-01-01T11:00:00Z"},
		{"daily at 2, just ran", "0 2 * * *", "", "2024-01-01T02:00:00Z", "2024-01-02T02:00:00Z"},
		{"range with step and weekday names", "0 9-17/4 * * MON-FRI", "", "2024-01-05T18:00:00Z", "2024-01-08T09:00:00Z"},
		{"lists and month names", "30 6 1 JAN,jul *", "", "2024-01-01T06:30:00Z", "2024-07-01T06:30:00Z"},
		{"start with step", "5/20 * * * *", "", "2024-01-01T00:26:00Z", "2024-01-01T00:45:00Z"},
		{"day fields or (Vixie)", "0 0 13 * FRI", "", "2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z"},
		{"day fields or, the 13th", "0 0 13 * FRI", "", "2024-01-12T00:00:00Z", "2024-01-13T00:00:00Z"},
		{"day fields and when one starts with *", "0 0 */10 * MON", "", "2024-01-01T00:00:00Z", "2024-03-11T00:00:00Z"},
		{"sunday as 7", "0 0 * * 7", "", "2024-01-01T00:00:00Z", "2024-01-07T00:00:00Z"},
		{"weekday range through 7", "0 0 * * 5-7", "", "2024-01-06T00:00:00Z", "2024-01-07T00:00:00Z"},
		{"leap day from a leap year", "0 0 29 2 *", "", "2024-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"leap day ahead", "0 0 29 2 *", "", "2023-01-01T00:00:00Z", "2024-02-29T00:00:00Z"},
		{"leap day across 2100", "0 0 29 2 *", "", "2096-03-01T00:00:00Z", "2104-02-29T00:00:00Z"},
		{"31st skips short months", "0 0 31 * *", "", "2024-01-31T00:00:00Z", "2024-03-31T00:00:00Z"},
		{"30th skips february", "0 0 30 * *", "", "2024-01-30T00:00:00Z", "2024-03-30T00:00:00Z"},
		{"last minute of the year", "59 23 31 12 *", "", "2024-12-31T23:59:00Z", "2025-12-31T23:59:00Z"},
		{"first of a month that is a monday", "0 0 */31 * MON", "", "2024-01-01T00:00:00Z", "2024-04-01T00:00:00Z"},
		{"hourly", "@hourly", "", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"},
		{"daily", "@daily", "", "2024-01-01T10:00:00Z", "2024-01-02T00:00:00Z"},
		{"weekly is sunday midnight", "@weekly", "", "2024-01-01T10:00:00Z", "2024-01-07T00:00:00Z"},
		{"monthly", "@monthly", "", "2024-01-31T10:00:00Z", "2024-02-01T00:00:00Z"},
		{"yearly", "@yearly", "", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"},

		// every: anchored to the epoch.
		{"every 15m mid-slot", "every 15m", "", "2024-01-01T10:07:30Z", "2024-01-01T10:15:00Z"},
		{"every 15m on a slot", "every 15m", "", "2024-01-01T10:15:00Z", "2024-01-01T10:30:00Z"},
		{"every 7h from the epoch", "every 7h", "", "1970-01-01T00:00:00Z", "1970-01-01T07:00:00Z"},
		{"every 7h is anchored", "every 7h", "", "2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z"},
		{"every 1h30m", "every 1h30m", "", "2024-01-01T00:00:00Z", "2024-01-01T01:30:00Z"},
		{"every before the epoch", "every 15m", "", "1969-12-31T23:59:00Z", "1970-01-01T00:00:00Z"},
		{"every in a zone keeps its instants", "every 2h", "Europe/Berlin", "2024-03-31T00:30:00Z", "2024-03-31T04:00:00+02:00"},

		// Europe/Berlin: 2024-03-31 02:00 CET -> 03:00 CEST; 2024-10-27 03:00 CEST -> 02:00 CET.
		{"berlin winter", "0 2 * * *", "Europe/Berlin", "2024-01-01T00:00:00Z", "2024-01-01T02:00:00+01:00"},
		{"berlin time in the gap runs after it", "30 2 * * *", "Europe/Berlin", "2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00"},
		{"berlin gap run is not repeated", "30 2 * * *", "Europe/Berlin", "2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"},
		{"berlin gap times collapse into one run", "*/15 2 * * *", "Europe/Berlin", "2024-03-31T01:50:00+01:00", "2024-03-31T03:00:00+02:00"},
		{"berlin after the collapsed run", "*/15 2 * * *", "Europe/Berlin", "2024-03-31T03:00:00+02:00", "2024-04-01T02:00:00+02:00"},
		{"berlin hourly over the gap", "0 * * * *", "Europe/Berlin", "2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00"},
		{"berlin hourly after the gap", "0 * * * *", "Europe/Berlin", "2024-03-31T03:00:00+02:00", "2024-03-31T04:00:00+02:00"},
		{"berlin 03:30 exists on the gap day", "30 3 * * *", "Europe/Berlin", "2024-03-31T01:00:00+01:00", "2024-03-31T03:30:00+02:00"},
		{"berlin repeated time, first occurrence", "30 2 * * *", "Europe/Berlin", "2024-10-27T00:00:00+02:00", "2024-10-27T02:30:00+02:00"},
		{"berlin repeated time runs once", "30 2 * * *", "Europe/Berlin", "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"},
		{"berlin in the second pass, already ran", "30 2 * * *", "Europe/Berlin", "2024-10-27T02:10:00+01:00", "2024-10-28T02:30:00+01:00"},
		{"berlin fixed minutes in the second pass", "*/20 2 * * *", "Europe/Berlin", "2024-10-27T02:10:00+01:00", "2024-10-28T02:00:00+01:00"},
		{"berlin hourly runs in the repeated hour", "0 * * * *", "Europe/Berlin", "2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"},
		{"berlin hourly after the repeated hour", "0 * * * *", "Europe/Berlin", "2024-10-27T02:00:00+01:00", "2024-10-27T03:00:00+01:00"},
		{"berlin half past, repeated hour", "30 * * * *", "Europe/Berlin", "2024-10-27T02:30:00+02:00", "2024-10-27T02:30:00+01:00"},
		{"berlin step crosses into the repeated hour", "*/20 * * * *", "Europe/Berlin", "2024-10-27T02:50:00+02:00", "2024-10-27T02:00:00+01:00"},
		{"berlin every minute in the second pass", "* * * * *", "Europe/Berlin", "2024-10-27T02:10:00+01:00", "2024-10-27T02:11:00+01:00"},
		{"berlin 03:00 after fall back", "0 3 * * *", "Europe/Berlin", "2024-10-27T02:30:00+01:00", "2024-10-27T03:00:00+01:00"},
		{"berlin hourly restricted to 2-3 o'clock", "0 */2 * * *", "Europe/Berlin", "2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"},
		{"CRON_TZ overrides loc", "CRON_TZ=Europe/Berlin 0 2 * * *", "", "2024-01-01T00:00:00Z", "2024-01-01T02:00:00+01:00"},
		{"TZ prefix", "TZ=America/New_York 0 2 * * *", "Europe/Berlin", "2024-01-01T00:00:00Z", "2024-01-01T02:00:00-05:00"},

		// America/New_York: 2024-03-10 02:00 EST -> 03:00 EDT; 2024-11-03 02:00 EDT -> 01:00 EST.
		{"new york gap", "30 2 * * *", "America/New_York", "2024-03-10T00:00:00-05:00", "2024-03-10T03:00:00-04:00"},
		{"new york daily across spring forward", "0 12 * * *", "America/New_York", "2024-03-09T12:00:00-05:00", "2024-03-10T12:00:00-04:00"},
		{"new york repeated 01:30 first", "30 1 * * *", "America/New_York", "2024-11-03T00:00:00-04:00", "2024-11-03T01:30:00-04:00"},
		{"new york repeated 01:30 once", "30 1 * * *", "America/New_York", "2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"},
		{"new york hourly in the repeated hour", "15 * * * *", "America/New_York", "2024-11-03T01:15:00-04:00", "2024-11-03T01:15:00-05:00"},
		{"new york midnight after fall back", "0 0 * * *", "America/New_York", "2024-11-02T00:00:00-04:00", "2024-11-03T00:00:00-04:00"},
		{"new york next midnight", "0 0 * * *", "America/New_York", "2024-11-03T00:00:00-04:00", "2024-11-04T00:00:00-05:00"},

		// Australia/Lord_Howe shifts by 30 minutes: 2024-04-07 02:00 (+11) -> 01:30 (+10:30).
		{"lord howe half-hour repeat", "*/15 * * * *", "Australia/Lord_Howe", "2024-04-07T01:45:00+11:00", "2024-04-07T01:30:00+10:30"},
		{"lord howe fixed time once", "45 1 * * *", "Australia/Lord_Howe", "2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var loc *time.Location
			if tt.zone != "" {
				loc = mustLoad(t, tt.zone)
			}
			s, err := Parse(tt.expr, loc)
			if err != nil {
				t.Fatal(err)
			}
			after := mustTime(t, tt.after)
			got := s.Next(after)
			gotText := ""
			if !got.IsZero() {
				gotText = got.Format(time.RFC3339)
			}
			if gotText != tt.want {
				t.Fatalf("Next(%s) = %q, want %q", tt.after, gotText, tt.want)
			}
			if !got.IsZero() && !got.After(after) {
				t.Fatalf("Next(%s) = %s is not after it", tt.after, gotText)
			}
		})
	}
}

// TestRunsPerYear walks a year of runs and counts them, which catches runs
// that DST handling loses or doubles.
func TestRunsPerYear(t *testing.T) {
	tests := []struct {
		name, expr, zone string
		want             int
	}{
		{"daily in berlin", "30 2 * * *", "Europe/Berlin", 366},
		{"hourly in berlin follows real hours", "0 * * * *", "Europe/Berlin", 366 * 24},
		{"every 15 minutes in berlin", "*/15 * * * *", "Europe/Berlin", 366 * 24 * 4},
		{"fixed quarter hours at 2 in berlin", "*/15 2 * * *", "Europe/Berlin", 366*4 - 4 + 1},
		{"daily in new york", "30 1 * * *", "America/New_York", 366},
		{"weekdays in new york", "0 9 * * MON-FRI", "America/New_York", 262},
		{"every 15m", "every 15m", "Europe/Berlin", 366 * 24 * 4},
		{"leap day", "0 0 29 2 *", "UTC", 1},
		{"31st", "0 0 31 * *", "UTC", 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc := mustLoad(t, tt.zone)
			s, err := Parse(tt.expr, loc)
			if err != nil {
				t.Fatal(err)
			}
			// The year 2024 in the zone, as [start, end).
			start := time.Date(2024, 1, 1, 0, 0, 0, 0, loc).Add(-time.Nanosecond)
			end := time.Date(2025, 1, 1, 0, 0, 0, 0, loc)
			n := 0
			for at := s.Next(start); !at.IsZero() && at.Before(end); {
				n++
				next := s.Next(at)
				if !next.After(at) {
					t.Fatalf("Next(%s) = %s", at, next)
				}
				at = next
			}
			if n != tt.want {
				t.Fatalf("%d runs in 2024, want %d", n, tt.want)
			}
		})
	}
}

func TestNextNeverMatches(t *testing.T) {
	// Parse rejects February 30, so build the fields by hand: Next must
	// give up after its bound and say never.
	spec := &cronSpec{minute: 1, hour: 1, dom: 1 << 30, month: 1 << 2, dow: 0x7f, dowStar: true}
	s := Schedule{expr: "0 0 30 2 *", loc: time.UTC, cron: spec}
	start := time.Now()
	if got := s.Next(mustTime(t, "2024-01-01T00:00:00Z")); !got.IsZero() {
		t.Fatalf("Next = %s, want never", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Next took %s to find nothing", d)
	}
	if got := (Schedule{}).Next(time.Now()); !got.IsZero() {
		t.Fatalf("zero Schedule: Next = %s, want never", got)
	}
}

func TestNextEveryOverflow(t *testing.T) {
	s, err := Parse("every 1h", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Next(time.Unix(1<<63-1, 0)); !got.IsZero() {
		t.Fatalf("Next at the end of time = %s, want never", got)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name  string
		expr  string
		field string // wanted ParseError.Field; "-" when Parse must succeed
		value string
		in    string // substring of the reason
		str   string // String() on success
	}{
		{name: "cron", expr: "0 2 * * *", field: "-", str: "0 2 * * *"},
		{name: "white space normalised", expr: "  0  2 *\t* * ", field: "-", str: "0 2 * * *"},
		{name: "zone prefix kept out of String", expr: "CRON_TZ=Europe/Berlin 0 2 * * *", field: "-", str: "0 2 * * *"},
		{name: "every", expr: "every 15m", field: "-", str: "every 15m"},
		{name: "every upper case", expr: "EVERY 2h", field: "-", str: "EVERY 2h"},
		{name: "every with @", expr: "@every 90m", field: "-", str: "@every 90m"},
		{name: "every with a zone", expr: "CRON_TZ=Europe/Berlin every 1h", field: "-", str: "every 1h"},
		{name: "macro", expr: "@Daily", field: "-", str: "@Daily"},
		{name: "31st in may", expr: "0 0 31 4,5 *", field: "-", str: "0 0 31 4,5 *"},
		{name: "feb 30 with a weekday runs on the weekday", expr: "0 0 30 2 MON", field: "-", str: "0 0 30 2 MON"},

		{name: "empty", expr: "   ", field: "", in: "empty schedule"},
		{name: "four fields", expr: "0 2 * *", field: "", in: "4 fields"},
		{name: "six fields", expr: "0 0 2 * * *", field: "", in: "6 fields"},
		{name: "minute out of range", expr: "60 * * * *", field: "minute", value: "60", in: "60 is out of range 0-59"},
		{name: "hour out of range", expr: "0 24 * * *", field: "hour", value: "24", in: "out of range 0-23"},
		{name: "day zero", expr: "0 0 0 * *", field: "day-of-month", value: "0", in: "out of range 1-31"},
		{name: "month 13", expr: "0 0 1 13 *", field: "month", value: "13", in: "out of range 1-12"},
		{name: "weekday 8", expr: "0 0 * * 8", field: "day-of-week", value: "8", in: "out of range 0-7"},
		{name: "bad month name", expr: "0 0 1 JANUARY *", field: "month", value: "JANUARY", in: "neither a number nor a name (JAN-DEC)"},
		{name: "bad day name", expr: "0 0 * * FUN", field: "day-of-week", value: "FUN", in: "(SUN-SAT)"},
		{name: "name in minutes", expr: "MON * * * *", field: "minute", value: "MON", in: `"MON" is not a number`},
		{name: "backwards range", expr: "0 5-1 * * *", field: "hour", value: "5-1", in: "runs backwards"},
		{name: "step zero", expr: "*/0 * * * *", field: "minute", value: "*/0", in: "step \"0\" is not a positive number"},
		{name: "step missing", expr: "*/ * * * *", field: "minute", value: "*/", in: "not a positive number"},
		{name: "empty list item", expr: "1,,2 * * * *", field: "minute", value: "1,,2", in: "empty list item"},
		{name: "negative", expr: "-1 * * * *", field: "minute", value: "-1", in: "missing value"},
		{name: "plus sign", expr: "+1 * * * *", field: "minute", value: "+1", in: "not a number"},
		{name: "quartz question mark", expr: "0 0 ? * MON", field: "day-of-month", value: "?", in: "not a number"},
		{name: "february 30", expr: "0 0 30 2 *", field: "day-of-month", value: "30", in: "never runs"},
		{name: "31st of short months", expr: "0 0 31 4,6,9,11 *", field: "day-of-month", value: "31", in: `no month in the month field "4,6,9,11" has such a day`},
		{name: "one field", expr: "15", field: "", in: "1 field;"},
		{name: "unknown macro", expr: "@fortnightly", field: "", in: "unknown macro @fortnightly"},
		{name: "macro with more", expr: "@daily 5", field: "", in: "nothing may follow @daily"},
		{name: "every without duration", expr: "every", field: "interval", in: "want one duration"},
		{name: "every with two", expr: "every 15m 2h", field: "interval", value: "15m 2h", in: "want one duration"},
		{name: "every bad duration", expr: "every 1d", field: "interval", value: "1d", in: "not a duration"},
		{name: "every too short", expr: "every 500ms", field: "interval", value: "500ms", in: "shorter than the minimum of 1s"},
		{name: "every negative", expr: "every -5m", field: "interval", value: "-5m", in: "shorter than the minimum"},
		{name: "every fraction of a second", expr: "every 1m0.5s", field: "interval", value: "1m0.5s", in: "whole number of seconds"},
		{name: "unknown zone", expr: "CRON_TZ=Mars/Olympus 0 2 * * *", field: "time zone", value: "Mars/Olympus", in: "unknown time zone"},
		{name: "local zone", expr: "CRON_TZ=Local 0 2 * * *", field: "time zone", value: "Local", in: "depends on the machine"},
		{name: "empty zone", expr: "CRON_TZ= 0 2 * * *", field: "time zone", in: "empty zone name"},
		{name: "zone alone", expr: "CRON_TZ=UTC", field: "", in: "nothing after the time zone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.expr, nil)
			if tt.field == "-" {
				if err != nil {
					t.Fatal(err)
				}
				if s.String() != tt.str {
					t.Fatalf("String() = %q, want %q", s.String(), tt.str)
				}
				if s.IsZero() {
					t.Fatal("parsed schedule is zero")
				}
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %v, want a *ParseError", tt.expr, err)
			}
			if pe.Field != tt.field || pe.Value != tt.value || !strings.Contains(pe.Reason, tt.in) || pe.Expr != tt.expr {
				t.Fatalf("Parse(%q) = %#v, want field %q, value %q, reason with %q", tt.expr, pe, tt.field, tt.value, tt.in)
			}
			if !strings.HasPrefix(err.Error(), "parse schedule ") {
				t.Fatalf("error %q does not name the operation", err)
			}
		})
	}
}

func TestScheduleLocation(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	tests := []struct {
		name string
		expr string
		loc  *time.Location
		want string
	}{
		{"nil is UTC", "0 2 * * *", nil, "UTC"},
		{"loc argument", "0 2 * * *", berlin, "Europe/Berlin"},
		{"prefix wins", "CRON_TZ=America/New_York 0 2 * * *", berlin, "America/New_York"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.expr, tt.loc)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Location().String(); got != tt.want {
				t.Fatalf("Location() = %s, want %s", got, tt.want)
			}
		})
	}
}
