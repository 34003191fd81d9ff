package traffic

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-dr/ferry/core/datamover"
)

const officeRules = `
traffic_rule "wan" {
  from     = ["site:prod"]
  to       = ["site:dr"]
  throttle = "20MB/s"
  window {
    days  = ["mon-fri"]
    hours = "08:00-18:00"
  }
}

traffic_rule "dr-in" {
  from            = ["*"]
  to              = ["site:dr"]
  max_connections = 4
}
`

// TestRegistryWindows: Update sets each rule's limiter to its throttle
// while a window is open and lifts it outside, and says when to call it
// next.
func TestRegistryWindows(t *testing.T) {
	rs := loadRules(t, officeRules)
	g := NewRegistry()
	// 2024-03-04 is a Monday.
	steps := []struct {
		now, next string
		rate      int64
	}{
		{"2024-03-04T07:00:00Z", "2024-03-04T08:00:00Z", 0},
		{"2024-03-04T08:00:00Z", "2024-03-04T18:00:00Z", 20e6},
		{"2024-03-04T12:34:56Z", "2024-03-04T18:00:00Z", 20e6},
		{"2024-03-04T18:00:00Z", "2024-03-05T08:00:00Z", 0},
		{"2024-03-08T18:00:00Z", "2024-03-11T08:00:00Z", 0}, // Friday evening to Monday
	}
	var wan *datamover.Limiter
	for _, s := range steps {
		next := g.Update(rs, at(t, s.now))
		if !next.Equal(at(t, s.next)) {
			t.Errorf("Update at %s: next at %v, want %s", s.now, next, s.next)
		}
		lim, lims := g.Link(Link{end("prod", ""), end("dr", "")}, at(t, s.now))
		if len(lims) != 2 || lim.MaxConnections != 4 {
			t.Fatalf("at %s: %+v, %d limiters", s.now, lim, len(lims))
		}
		if wan == nil {
			wan = lims[0]
		} else if lims[0] != wan {
			t.Errorf("at %s: the rule's limiter changed", s.now)
		}
		if got := wan.Rate(); got != s.rate {
			t.Errorf("at %s: rate %d, want %d", s.now, got, s.rate)
		}
		if lim.Throttle != s.rate {
			t.Errorf("at %s: Limits.Throttle %d, want %d", s.now, lim.Throttle, s.rate)
		}
		if lims[1].Rate() != 0 {
			t.Errorf("at %s: a rule without throttle limits to %d", s.now, lims[1].Rate())
		}
	}
}

// TestRegistryReload: a reload keeps the limiters of the rules that stay,
// at their new throttle, lifts those of rules that are gone, and makes
// limiters for new rules.
func TestRegistryReload(t *testing.T) {
	now := at(t, "2024-03-04T12:00:00Z")
	g := NewRegistry()
	if next := g.Update(loadRules(t, `
traffic_rule "wan" {
  from     = ["site:prod"]
  to       = ["site:dr"]
  throttle = "20MB/s"
}
traffic_rule "old" {
  from     = ["site:prod"]
  to       = ["*"]
  throttle = "1MB/s"
}`), now); !next.IsZero() {
		t.Errorf("rules without windows: next update at %v", next)
	}
	_, before := g.Link(Link{end("prod", ""), end("dr", "")}, now)
	if len(before) != 2 {
		t.Fatalf("%d limiters", len(before))
	}
	g.Update(loadRules(t, `
traffic_rule "wan" {
  from     = ["site:prod"]
  to       = ["site:dr"]
  throttle = "50MB/s"
}
traffic_rule "new" {
  from     = ["site:prod"]
  to       = ["*"]
  throttle = "2MB/s"
}`), now)
	lim, after := g.Link(Link{end("prod", ""), end("dr", "")}, now)
	switch {
	case len(after) != 2 || after[0] != before[0]:
		t.Fatalf("the limiter of a rule that stays was replaced")
	case before[0].Rate() != 50e6:
		t.Errorf("wan limits to %d after the reload, want 50 MB/s", before[0].Rate())
	case before[1].Rate() != 0:
		t.Errorf("the limiter of a rule that is gone limits to %d", before[1].Rate())
	case after[1] == before[1] || after[1].Rate() != 2e6:
		t.Errorf("the new rule's limiter is not new or limits to %d", after[1].Rate())
	case lim.Throttle != 2e6 || lim.ThrottledBy != "new":
		t.Errorf("limits %+v", lim)
	}
}

type counter struct{ n atomic.Int64 }

func (c *counter) Send(_ context.Context, frame []byte) error {
	c.n.Add(int64(len(frame)))
	return nil
}

// TestRegistryShared: tasks on different links that cross one rule share
// its rate equally, and a reload changes the rate under them. Runs on a
// synctest bubble's virtual clock.
func TestRegistryShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewRegistry()
		rule := func(rate string) string {
			return `
traffic_rule "wan" {
  from     = ["site:prod"]
  to       = ["site:dr"]
  throttle = "` + rate + `"
}`
		}
		slow, fast := loadRules(t, rule("1MB/s")), loadRules(t, rule("2MB/s"))
		g.Update(slow, time.Now())
		links := []Link{
			{end("prod", "10.1.0.1"), end("dr", "10.2.0.1")},
			{end("prod", "10.1.0.2"), end("dr", "10.2.0.2")},
		}
		counts := make([]*counter, len(links))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for i, l := range links {
			_, lims := g.Link(l, time.Now())
			counts[i] = &counter{}
			sink := datamover.Throttle(counts[i], lims...)
			size := []int{4 << 10, 256 << 10}[i]
			wg.Go(func() {
				frame := make([]byte, size)
				for sink.Send(ctx, frame) == nil {
				}
			})
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		half := []int64{counts[0].n.Load(), counts[1].n.Load()}
		g.Update(fast, time.Now())
		wg.Wait()
		for i, c := range counts {
			// 5 s at half of 1 MB/s, then 5 s at half of 2 MB/s; a
			// 256 KiB frame in flight at either end is not counted.
			if got := float64(half[i]); math.Abs(got-2.5e6) > 0.1*2.5e6 {
				t.Errorf("link %d: %.0f bytes in the first 5 s, want about 2.5 MB", i, got)
			}
			if got := float64(c.n.Load() - half[i]); math.Abs(got-5e6) > 0.1*5e6 {
				t.Errorf("link %d: %.0f bytes in the last 5 s, want about 5 MB", i, got)
			}
		}
	})
}

// TestKeepFollowsTheWindows: after the caller's first Update, Keep
// updates the rates when a window opens and when it closes, and says so.
func TestKeepFollowsTheWindows(t *testing.T) {
	rs := loadRules(t, officeRules)
	synctest.Test(t, func(t *testing.T) {
		// synctest's clock starts at 2000-01-01 00:00 UTC, a Saturday:
		// move to Monday 07:00, an hour before the window opens.
		time.Sleep(2*24*time.Hour + 7*time.Hour)
		g := NewRegistry()
		next := g.Update(rs, time.Now())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var changes atomic.Int32
		go g.Keep(ctx, rs, next, func() { changes.Add(1) })
		if got := g.Rates()["wan"]; got != 0 {
			t.Fatalf("before the window: rate %d", got)
		}
		time.Sleep(90 * time.Minute) // 08:30
		synctest.Wait()
		if got, n := g.Rates()["wan"], changes.Load(); got != 20_000_000 || n != 1 {
			t.Fatalf("in the window: rate %d after %d changes", got, n)
		}
		time.Sleep(10 * time.Hour) // 18:30
		synctest.Wait()
		if got, n := g.Rates()["wan"], changes.Load(); got != 0 || n != 2 {
			t.Fatalf("after the window: rate %d after %d changes", got, n)
		}
		cancel()
		synctest.Wait()
	})
}
