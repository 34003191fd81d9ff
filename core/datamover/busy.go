package datamover

import (
	"sync"
	"time"
)

// Busy measures how long at least one of some concurrent operations was
// under way: the time a stage of the data path was busy, however many
// workers it had. The zero value is ready; it is safe for concurrent use.
type Busy struct {
	mu     sync.Mutex
	active int
	since  time.Time
	total  time.Duration
}

// Start marks the start of one operation.
func (b *Busy) Start() {
	b.mu.Lock()
	if b.active == 0 {
		b.since = time.Now()
	}
	b.active++
	b.mu.Unlock()
}

// Stop marks the end of one operation Start began.
func (b *Busy) Stop() {
	b.mu.Lock()
	b.active--
	if b.active == 0 {
		b.total += time.Since(b.since)
	}
	b.mu.Unlock()
}

// Total is the time so far during which an operation was under way.
func (b *Busy) Total() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.total
	if b.active > 0 {
		t += time.Since(b.since)
	}
	return t
}

// Stages says how busy each stage of moving a disk was, as Veeam's
// bottleneck statistics do: the time each was at work, in percent of the
// disk's time. The busiest stage is the bottleneck: the one to make
// faster (or the one a throttle holds back, for the network).
type Stages struct {
	Source  int // reading the source disk
	Proxy   int // the source data mover's CPU: digests, comparison, compression
	Network int // sending: the link, its throttles, and the target's pace
	Target  int // writing the replica disk and making it durable
}

// Percent is busy as a whole percentage of elapsed (at most 100).
func Percent(busy, elapsed time.Duration) int {
	if elapsed <= 0 || busy <= 0 {
		return 0
	}
	return int(min(100, busy*100/elapsed))
}

// Bottleneck names the busiest stage: "source", "proxy", "network" or
// "target"; "" when none was busy.
func (s Stages) Bottleneck() string {
	name, most := "", 0
	for _, st := range []struct {
		name string
		p    int
	}{{"source", s.Source}, {"proxy", s.Proxy}, {"network", s.Network}, {"target", s.Target}} {
		if st.p > most {
			name, most = st.name, st.p
		}
	}
	return name
}
