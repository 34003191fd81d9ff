package scheduler

import (
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics and that every schedule it
// accepts answers Next with a time strictly later, or never.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"* * * * *", "*/15 2 * * *", "0 9-17/4 * * MON-FRI", "30 6 1 JAN,jul *",
		"0 0 29 2 *", "0 0 */31 * MON", "5/20 * * * 7", "@hourly", "@weekly",
		"every 15m", "every 1h30m", "CRON_TZ=Europe/Berlin 30 2 * * *",
		"TZ=America/New_York 15 * * * *", "CRON_TZ=Australia/Lord_Howe */15 * * * *",
		"0 0 30 2 *", "1,,2 * * * *", "every 30s", "",
	} {
		f.Add(seed, int64(1711846800)) // 2024-03-31 01:00 UTC, Berlin's spring forward
		f.Add(seed, int64(1729990800)) // 2024-10-27 01:00 UTC, Berlin's fall back
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		f.Fatal(err)
	}
	const span = 400 * 366 * 24 * 3600 // keep after within years 1770-2170
	f.Fuzz(func(t *testing.T, expr string, secs int64) {
		s, err := Parse(expr, berlin)
		if err != nil {
			if s != (Schedule{}) {
				t.Fatalf("Parse(%q) failed but returned %v", expr, s)
			}
			return
		}
		after := time.Unix(secs%span, secs&0x3fffffff)
		next := s.Next(after)
		if !next.IsZero() && !next.After(after) {
			t.Fatalf("Parse(%q).Next(%s) = %s, not after it", expr, after, next)
		}
	})
}
