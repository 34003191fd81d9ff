package bench

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/scheduler"
)

// logLine is a line of the server's JSON log as hclog writes it.
func logLine(at, msg string, kv ...string) string {
	s := fmt.Sprintf(`{"@level":"info","@message":%q,"@module":"ferry-server","@timestamp":"2026-12-06T%sZ"`, msg, at)
	for i := 0; i+1 < len(kv); i += 2 {
		s += fmt.Sprintf(",%q:%q", kv[i], kv[i+1])
	}
	return s + "}"
}

func TestParseServerLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want serverEvent
		ok   bool
	}{
		{"session starts", logLine("10:05:00.000393", msgStarts, "job", "s001", "why", "schedule"),
			serverEvent{Time: time.Date(2026, 12, 6, 10, 5, 0, 393000, time.UTC), Message: msgStarts, Job: "s001", Why: "schedule"}, true},
		{"session ended", logLine("10:05:03.5", msgEnded, "job", "s001", "result", "success", "session", "20261206T100500Z-0005"),
			serverEvent{Time: time.Date(2026, 12, 6, 10, 5, 3, 5e8, time.UTC), Message: msgEnded, Job: "s001", Result: "success"}, true},
		{"session failed", logLine("10:05:03", msgFailed, "job", "s002", "error", "open catalog: boom"),
			serverEvent{Time: time.Date(2026, 12, 6, 10, 5, 3, 0, time.UTC), Message: msgFailed, Job: "s002", Error: "open catalog: boom"}, true},
		{"the banner", "ferry server: 100 jobs; API on http://127.0.0.1:4100; stop with Ctrl-C or SIGTERM", serverEvent{}, false},
		{"no time", `{"@message":"session starts","job":"s001"}`, serverEvent{}, false},
		{"cut short", `{"@message":"session starts","@timestamp":"2026-12-06T10:05:00Z","jo`, serverEvent{}, false},
		{"empty", "", serverEvent{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseServerLine([]byte(tc.line))
			if ok != tc.ok || !got.Time.Equal(tc.want.Time) || got.Message != tc.want.Message || got.Job != tc.want.Job ||
				got.Why != tc.want.Why || got.Result != tc.want.Result || got.Error != tc.want.Error {
				t.Errorf("parseServerLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestServerLogReadsLinesInPieces feeds the log as a pipe would, in
// pieces that cut lines anywhere.
func TestServerLogReadsLinesInPieces(t *testing.T) {
	text := strings.Join([]string{
		"WARNING: ferry server serves its API WITHOUT TLS on 127.0.0.1:4100 (--insecure-plaintext): for development only",
		"ferry server: 2 jobs; API on http://127.0.0.1:4100; stop with Ctrl-C or SIGTERM",
		logLine("10:05:00.01", msgStarts, "job", "a", "why", "schedule"),
		logLine("10:05:00.02", msgSlot, "job", "b", "slots", "1"),
		logLine("10:05:01", "vm finished", "job", "a", "vm", "a-vm01", "result", "success"),
		logLine("10:05:02", msgEnded, "job", "a", "result", "success"),
		logLine("10:05:02.01", msgStarts, "job", "b", "why", "schedule"),
		logLine("10:05:03", msgFailed, "job", "b", "error", "boom"),
		logLine("10:10:00.01", msgStarts, "job", "a", "why", "schedule"),
		logLine("10:10:01", msgEnded, "job", "a", "result", "warning"),
	}, "\n") + "\n" + `{"@message":"half a line`
	var file strings.Builder
	l := newServerLog(&file)
	for i := 0; i < len(text); i += 37 {
		if _, err := l.Write([]byte(text[i:min(i+37, len(text))])); err != nil {
			t.Fatal(err)
		}
	}
	if file.String() != text {
		t.Error("the log file is not what the server wrote")
	}
	select {
	case <-l.ready:
	default:
		t.Fatal("the banner did not make the log ready")
	}
	if got := l.address(); got != "http://127.0.0.1:4100" {
		t.Errorf("address %q", got)
	}
	if evs := l.snapshot(); len(evs) != 8 {
		t.Errorf("%d events, want 8: %+v", len(evs), evs)
	}
	for runs, want := range map[int][2]int{1: {2, 3}, 2: {1, 3}, 3: {0, 3}} {
		if jobs, n := l.ended([]string{"a", "b"}, runs); jobs != want[0] || n != want[1] {
			t.Errorf("ended(%d runs) = %d jobs, %d sessions; want %v", runs, jobs, n, want)
		}
	}
	if tail := l.tail(); !strings.Contains(tail, `"warning"`) || !strings.HasSuffix(tail, "half a line") {
		t.Errorf("tail %q", tail)
	}
}

func TestAnalyzeSessions(t *testing.T) {
	parse := func(expr string) scheduler.Schedule {
		s, err := scheduler.Parse(expr, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// a and c at minutes 0, 5, ...; b at 1, 6, ... Due after 10:02:30:
	// a and c at 10:05 and 10:10, b at 10:06 and 10:11.
	schedules := map[string]scheduler.Schedule{"a": parse("0-59/5 * * * *"), "b": parse("1-59/5 * * * *"), "c": parse("every 5m")}
	ready := time.Date(2026, 12, 6, 10, 2, 30, 0, time.UTC)
	lines := []string{
		logLine("10:05:00.010", msgStarts, "job", "a", "why", "schedule"), // 10 ms
		logLine("10:05:00.012", msgSlot, "job", "c", "slots", "1"),
		logLine("10:05:03", msgEnded, "job", "a", "result", "success"),
		logLine("10:05:03.001", msgStarts, "job", "c", "why", "schedule"), // waited 3.001 s
		logLine("10:05:04", msgEnded, "job", "c", "result", "success"),
		logLine("10:06:01.5", msgStarts, "job", "b", "why", "schedule"), // 1.5 s
		logLine("10:06:02", msgEnded, "job", "b", "result", "warning"),
		logLine("10:06:30", msgStarts, "job", "b", "why", "queued"), // a second session for 10:06
		logLine("10:06:31", msgEnded, "job", "b", "result", "success"),
		logLine("10:07:00", msgStarts, "job", "a", "why", "asked"), // not the schedule's
		logLine("10:07:01", msgFailed, "job", "a", "error", "the target is gone"),
		logLine("10:10:00.005", msgStarts, "job", "a", "why", "schedule"), // 5 ms
		logLine("10:10:01", msgEnded, "job", "a", "result", "failed", "session", "x"),
		// c's slot line of 10:05 is older than its due time: c did not wait.
		logLine("10:10:02.5", msgStarts, "job", "c", "why", "schedule"), // 2.5 s
		logLine("10:10:04", msgStopped, "job", "c", "error", "context canceled"),
		// b's run of 10:11 never starts.
	}
	var events []serverEvent
	for _, l := range lines {
		e, ok := parseServerLine([]byte(l))
		if !ok {
			t.Fatalf("line %q", l)
		}
		events = append(events, e)
	}
	st, failures := analyzeSessions(events, schedules, ready, 2)
	want := ServerSessions{Expected: 6, Started: 7, Ended: 7, Succeeded: 3, Warnings: 1, Failed: 2, Stopped: 1,
		Missed: 1, Unexpected: 2, Queued: 1, Waited: 1, Waves: 2, Latest: "c due 10:10:00",
		Delay:       Spread{N: 4, P50: 10 * time.Millisecond, P99: 2500 * time.Millisecond, Max: 2500 * time.Millisecond},
		WaitedDelay: Spread{N: 1, P50: 3001 * time.Millisecond, P99: 3001 * time.Millisecond, Max: 3001 * time.Millisecond},
		Handoff:     Spread{N: 1, P50: time.Millisecond, P99: time.Millisecond, Max: time.Millisecond}} // a's end at 10:05:03
	if st != want {
		t.Errorf("analyzeSessions:\n got %+v\nwant %+v", st, want)
	}
	if len(failures) != 2 || failures[0] != "a: the target is gone" || failures[1] != "a: session ended with result failed" {
		t.Errorf("failures %q", failures)
	}

	// Nothing in the log: every due time is missed.
	st, _ = analyzeSessions(nil, schedules, ready, 2)
	if st.Missed != 6 || st.Started != 0 || st.Delay.N != 0 {
		t.Errorf("an empty log: %+v", st)
	}
}

func TestSpreadOf(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got, want := spreadOf(ds), (Spread{N: 100, P50: 50 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}); got != want {
		t.Errorf("spreadOf(1..100 ms) = %+v, want %+v", got, want)
	}
	if got := spreadOf([]time.Duration{7}); got != (Spread{N: 1, P50: 7, P99: 7, Max: 7}) {
		t.Errorf("spreadOf(one) = %+v", got)
	}
	if got := spreadOf(nil); got != (Spread{}) {
		t.Errorf("spreadOf(none) = %+v", got)
	}
}

func TestHandoffs(t *testing.T) {
	at := func(s float64) time.Time { return time.Unix(1000, 0).Add(time.Duration(s * float64(time.Second))) }
	ends := []time.Time{at(1), at(5), at(9)}
	got := handoffs([]time.Time{at(0.5), at(1.002), at(4.999), at(7), at(20)}, ends)
	want := []time.Duration{500 * time.Millisecond, 2 * time.Millisecond, time.Millisecond, 2 * time.Second, 11 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("handoffs = %v, want %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d > time.Microsecond || d < -time.Microsecond {
			t.Errorf("handoff %d = %v, want %v", i, got[i], want[i])
		}
	}
	if got := handoffs([]time.Time{at(1)}, nil); got != nil {
		t.Errorf("handoffs without an end = %v", got)
	}
}

func TestSplitBusy(t *testing.T) {
	var events []serverEvent
	for _, l := range []string{
		logLine("10:05:00", msgStarts, "job", "a", "why", "schedule"),
		logLine("10:05:01", msgStarts, "job", "b", "why", "schedule"),
		logLine("10:05:02", msgEnded, "job", "a", "result", "success"),
		logLine("10:05:03", msgFailed, "job", "b", "error", "boom"),   // none runs from here
		logLine("10:06:00", msgStarts, "job", "a", "why", "schedule"), // runs to the end
	} {
		e, _ := parseServerLine([]byte(l))
		events = append(events, e)
	}
	at := func(hms string) time.Time {
		t, _ := time.Parse(time.RFC3339, "2026-12-06T"+hms+"Z")
		return t
	}
	calls := []apiCall{
		{at("10:04:59"), 1}, {at("10:05:00"), 2}, {at("10:05:02"), 3}, {at("10:05:03"), 4},
		{at("10:05:30"), 5}, {at("10:06:00"), 6}, {at("10:30:00"), 7},
	}
	busy, idle := splitBusy(calls, events)
	if fmt.Sprint(busy) != "[2ns 3ns 6ns 7ns]" || fmt.Sprint(idle) != "[1ns 4ns 5ns]" {
		t.Errorf("splitBusy: busy %v, idle %v", busy, idle)
	}
}
