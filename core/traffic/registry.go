package traffic

import (
	"context"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/datamover"
)

// Registry holds one limiter per traffic rule, so that every task crossing
// a rule's link draws on the same rate, and keeps their rates in step with
// the rules' windows and with reloads of the configuration.
//
// A task takes the limiters of the rules matching its link when it starts
// (Link) and keeps them: rates change under it, the set of rules it draws
// on does not. A Registry is safe for concurrent use.
type Registry struct {
	mu       sync.Mutex
	rules    []*config.TrafficRule
	limiters map[string]*datamover.Limiter // by rule name
}

// NewRegistry returns a registry without rules; call Update to give it
// some.
func NewRegistry() *Registry {
	return &Registry{limiters: map[string]*datamover.Limiter{}}
}

// Update takes the rules of the configuration (again, after a reload) and
// sets each rule's limiter to its throttle at now: the throttle while one
// of its windows is open, no limit otherwise. A rule that is gone has its
// limiter lifted, so that the tasks holding it run on. It returns when to
// call Update next, when a window opens or closes; the zero time when no
// window ever does.
func (g *Registry) Update(rules []*config.TrafficRule, now time.Time) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	kept := make(map[string]*datamover.Limiter, len(rules))
	var next time.Time
	for _, r := range rules {
		rate := int64(0)
		if r.ThrottleActive(now) {
			rate = r.Throttle
		}
		lim := g.limiters[r.Name]
		if lim == nil {
			lim = datamover.NewLimiter(rate)
		} else if lim.Rate() != rate {
			lim.SetRate(rate)
		}
		kept[r.Name] = lim
		if n := r.NextChange(now); !n.IsZero() && (next.IsZero() || n.Before(next)) {
			next = n
		}
	}
	for name, lim := range g.limiters {
		if kept[name] == nil {
			lim.SetRate(0)
		}
	}
	g.rules, g.limiters = rules, kept
	return next
}

// Link returns the limits the rules impose on link at now, and the
// limiters of the matching rules, in the order of Limits.Rules, for the
// task to draw on (see datamover.Throttle). A matching rule without a
// throttle open at now has a limiter all the same, without limit, so that
// a window opening or a reload adding a throttle reaches running tasks.
func (g *Registry) Link(link Link, now time.Time) (Limits, []*datamover.Limiter) {
	g.mu.Lock()
	defer g.mu.Unlock()
	lim := Evaluate(g.rules, link, now)
	lims := make([]*datamover.Limiter, len(lim.Rules))
	for i, name := range lim.Rules {
		lims[i] = g.limiters[name]
	}
	return lim, lims
}

// Keep applies rules again at every window change until ctx ends, calling
// changed (when not nil) after each update. next is what the caller's own
// first Update returned (the rates must be set before the first task
// starts, so the caller makes that one).
func (g *Registry) Keep(ctx context.Context, rules []*config.TrafficRule, next time.Time, changed func()) {
	for !next.IsZero() {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		next = g.Update(rules, time.Now())
		if changed != nil {
			changed()
		}
	}
}

// Rates returns the rate of every rule now, by name: 0 for a rule whose
// throttle is not in force.
func (g *Registry) Rates() map[string]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[string]int64, len(g.limiters))
	for name, lim := range g.limiters {
		out[name] = lim.Rate()
	}
	return out
}
