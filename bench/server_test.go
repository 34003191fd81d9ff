//go:build linux

package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/scheduler"
)

func TestServerSchedules(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 30, 0, time.UTC)
	for _, tc := range []struct {
		every time.Duration
		// want is job 7's expression; first its first run after 10:00:30
		// when staggered (an every schedule runs at multiples of its
		// interval since the epoch).
		want  string
		first string
	}{
		{5 * time.Minute, "2-59/5 * * * *", "10:02:00"},
		{15 * time.Minute, "7-59/15 * * * *", "10:07:00"},
		{time.Minute, "* * * * *", ""},
		{7 * time.Minute, "every 7m0s", ""}, // 7 does not divide 60
		{20 * time.Second, "every 20s", ""},
		{2 * time.Hour, "every 2h0m0s", ""},
	} {
		exprs, how := serverSchedules(10, tc.every)
		if len(exprs) != 10 || exprs[7] != tc.want {
			t.Errorf("every %s: job 7 has %q, want %q", tc.every, exprs[7], tc.want)
			continue
		}
		if got := strings.Contains(how, "staggered"); got != (tc.first != "") {
			t.Errorf("every %s: %q, want staggered %v", tc.every, how, tc.first != "")
		}
		sched, err := scheduler.Parse(exprs[7], nil)
		if err != nil {
			t.Errorf("every %s: %v", tc.every, err)
			continue
		}
		first := sched.Next(at)
		if !first.After(at) || first.Sub(at) > tc.every {
			t.Errorf("every %s: first run %s", tc.every, first)
		}
		if tc.first != "" && first.Format("15:04:05") != tc.first {
			t.Errorf("every %s: first run %s, want %s", tc.every, first.Format("15:04:05"), tc.first)
		}
		if got := sched.Next(first).Sub(first); got != tc.every {
			t.Errorf("every %s: runs %s apart", tc.every, got)
		}
	}
}

func TestServerJobName(t *testing.T) {
	for _, tc := range []struct {
		i, jobs int
		want    string
	}{{0, 100, "s001"}, {99, 100, "s100"}, {0, 10, "s01"}, {9, 10, "s10"}, {0, 1, "s1"}} {
		if got := serverJobName(tc.i, tc.jobs); got != tc.want {
			t.Errorf("serverJobName(%d, %d) = %q, want %q", tc.i, tc.jobs, got, tc.want)
		}
	}
}
