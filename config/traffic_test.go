package config

import (
	"testing"
	"time"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustWindow(t *testing.T, days []string, hours, zone string) TrafficWindow {
	t.Helper()
	w := TrafficWindow{Days: AllWeekdays, End: minutesPerDay, Location: time.UTC}
	if days != nil {
		w.Days = 0
		for _, d := range days {
			set, err := parseDays(d)
			if err != nil {
				t.Fatal(err)
			}
			w.Days |= set
		}
	}
	if hours != "" {
		var err error
		if w.Start, w.End, err = parseHours(hours); err != nil {
			t.Fatal(err)
		}
	}
	if zone != "" {
		w.Location = mustZone(t, zone)
	}
	return w
}

func TestParseDays(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want "" for an error
	}{
		{"mon", "mon"},
		{"Monday", "mon"},
		{"SUN", "sun"},
		{"mon-fri", "mon-fri"},
		{"fri-mon", "mon,fri-sun"},
		{"sat-sun", "sat,sun"},
		{"sun-sat", "mon-sun"},
		{"wed-wed", "wed"},
		{" tue - thu ", "tue-thu"},
		{"mon-", ""},
		{"-fri", ""},
		{"mon-fri-sat", ""},
		{"weekend", ""},
		{"", ""},
	} {
		got, err := parseDays(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("parseDays(%q) = %s, want an error", tt.in, got)
		case tt.want != "" && err != nil:
			t.Errorf("parseDays(%q): %v", tt.in, err)
		case tt.want != "" && got.String() != tt.want:
			t.Errorf("parseDays(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseHours(t *testing.T) {
	for _, tt := range []struct {
		in         string
		start, end int
		bad        bool
	}{
		{in: "08:00-18:00", start: 8 * 60, end: 18 * 60},
		{in: "8:30-9:05", start: 8*60 + 30, end: 9*60 + 5},
		{in: "22:00-06:00", start: 22 * 60, end: 6 * 60},
		{in: "00:00-24:00", start: 0, end: 24 * 60},
		{in: "18:00-24:00", start: 18 * 60, end: 24 * 60},
		{in: " 08:00 - 18:00 ", start: 8 * 60, end: 18 * 60},
		{in: "24:00-06:00", bad: true},
		{in: "08:00-08:00", bad: true},
		{in: "08:00", bad: true},
		{in: "08:60-09:00", bad: true},
		{in: "8-18", bad: true},
		{in: "+8:00-18:00", bad: true},
		{in: "08:0-18:00", bad: true},
		{in: "123:00-18:00", bad: true},
	} {
		start, end, err := parseHours(tt.in)
		switch {
		case tt.bad && err == nil:
			t.Errorf("parseHours(%q) = %d, %d, want an error", tt.in, start, end)
		case !tt.bad && err != nil:
			t.Errorf("parseHours(%q): %v", tt.in, err)
		case !tt.bad && (start != tt.start || end != tt.end):
			t.Errorf("parseHours(%q) = %d, %d, want %d, %d", tt.in, start, end, tt.start, tt.end)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"site:prod", "site:prod"},
		{"site:branch office", "site:branch office"},
		{"*", "*"},
		{"10.1.0.0/16", "10.1.0.0/16"},
		{"10.1.0.7", "10.1.0.7/32"},
		{"fd00::/8", "fd00::/8"},
		{"2001:db8::1", "2001:db8::1/128"},
		{"site:", ""},
		{"10.1.0.1/16", ""},
		{"::ffff:10.0.0.1", ""},
		{"::ffff:10.0.0.0/104", ""},
		{"fe80::1%eth0", ""},
		{"prod", ""},
		{"", ""},
	} {
		got, err := parseEndpoint(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("parseEndpoint(%q) = %s, want an error", tt.in, got)
		case tt.want != "" && err != nil:
			t.Errorf("parseEndpoint(%q): %v", tt.in, err)
		case tt.want != "" && got.String() != tt.want:
			t.Errorf("parseEndpoint(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestWindowOpen: days and hours on the window's wall clock, across
// midnight, and on the days clocks change.
func TestWindowOpen(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	office := mustWindow(t, []string{"mon-fri"}, "08:00-18:00", "Europe/Paris")
	night := mustWindow(t, []string{"fri"}, "22:00-06:00", "")
	weekend := mustWindow(t, []string{"sat-sun"}, "", "America/New_York")
	springGap := mustWindow(t, nil, "02:30-04:00", "Europe/Paris")
	fallBack := mustWindow(t, nil, "02:00-02:30", "Europe/Paris")
	for _, tt := range []struct {
		name string
		w    TrafficWindow
		t    string
		open bool
	}{
		// 2024-03-01 is a Friday. Paris is UTC+1 in winter.
		{"office opens", office, "2024-03-01T07:00:00Z", true},
		{"office before", office, "2024-03-01T06:59:59Z", false},
		{"office closes", office, "2024-03-01T17:00:00Z", false},
		{"office last minute", office, "2024-03-01T16:59:59Z", true},
		{"office on saturday", office, "2024-03-02T10:00:00Z", false},
		{"office in summer time", office, "2024-07-01T06:00:00Z", true},
		{"office before summer opening", office, "2024-07-01T05:59:00Z", false},
		{"night friday late", night, "2024-03-01T23:00:00Z", true},
		{"night runs into saturday", night, "2024-03-02T05:59:00Z", true},
		{"night ends saturday", night, "2024-03-02T06:00:00Z", false},
		{"night not thursday late", night, "2024-02-29T23:00:00Z", false},
		{"night not friday early", night, "2024-03-01T05:00:00Z", false},
		{"night not saturday late", night, "2024-03-02T23:00:00Z", false},
		// New York is UTC-5 in winter: Saturday starts at 05:00Z.
		{"weekend not yet in new york", weekend, "2024-03-02T04:59:00Z", false},
		{"weekend in new york", weekend, "2024-03-02T05:00:00Z", true},
		{"weekend ends in new york", weekend, "2024-03-04T04:59:00Z", true},
		{"monday in new york", weekend, "2024-03-04T05:00:00Z", false},
		// Paris skips 02:00-03:00 on 2024-03-31: the window opens at 03:00
		// (01:00Z) and closes at 04:00 (02:00Z).
		{"spring gap before", springGap, "2024-03-31T00:59:00Z", false},
		{"spring gap opens at the jump", springGap, "2024-03-31T01:00:00Z", true},
		{"spring gap closes", springGap, "2024-03-31T02:00:00Z", false},
		// Paris repeats 02:00-03:00 on 2024-10-27: 00:00Z and 01:00Z.
		{"fall back first pass", fallBack, "2024-10-27T00:15:00Z", true},
		{"fall back between", fallBack, "2024-10-27T00:45:00Z", false},
		{"fall back second pass", fallBack, "2024-10-27T01:15:00Z", true},
	} {
		if got := tt.w.Open(at(tt.t)); got != tt.open {
			t.Errorf("%s: Open(%s) = %t", tt.name, tt.t, got)
		}
	}
}

// TestWindowNextChange: the next change is where Open changes, and Open
// does not change before it.
func TestWindowNextChange(t *testing.T) {
	windows := map[string]TrafficWindow{
		"office":  mustWindow(t, []string{"mon-fri"}, "08:00-18:00", "Europe/Paris"),
		"night":   mustWindow(t, []string{"fri"}, "22:00-06:00", "Australia/Lord_Howe"),
		"weekend": mustWindow(t, []string{"sat-sun"}, "", "America/New_York"),
		"evening": mustWindow(t, nil, "18:00-24:00", "Europe/Paris"),
		"gap":     mustWindow(t, nil, "02:30-04:00", "Europe/Paris"),
		"repeat":  mustWindow(t, nil, "02:00-02:30", "Europe/Paris"),
	}
	start := time.Date(2024, 3, 25, 0, 0, 0, 0, time.UTC) // a week with a change of clocks in Europe
	for name, w := range windows {
		now := start
		changes := 0
		for now.Before(start.Add(14 * 24 * time.Hour)) {
			next := w.NextChange(now)
			if next.IsZero() || !next.After(now) {
				t.Fatalf("%s: NextChange(%v) = %v", name, now, next)
			}
			// Open holds until next (checked every 10 minutes).
			for c := now.Add(10 * time.Minute); c.Before(next); c = c.Add(10 * time.Minute) {
				if w.Open(c) != w.Open(now) {
					t.Fatalf("%s: Open changes at %v, before NextChange(%v) = %v", name, c, now, next)
				}
			}
			if w.Open(next) == w.Open(now) {
				t.Fatalf("%s: Open(%v) is Open(%v) = %t", name, next, now, w.Open(now))
			}
			changes++
			now = next
		}
		if changes < 2 {
			t.Errorf("%s: %d changes in two weeks", name, changes)
		}
	}
	always := mustWindow(t, nil, "", "")
	if n := always.NextChange(start); !n.IsZero() {
		t.Errorf("a window open all week changes at %v", n)
	}
}
