package faultnet

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// quantumPerSecond: a capped link sends pieces of rate/quantumPerSecond
	// bytes, so it wakes about this many times a second.
	quantumPerSecond = 100
	// credit is how far behind the schedule a capped link may fall and
	// catch up: it absorbs late timer wake-ups without letting an idle
	// link save up more than a short burst.
	credit = 20 * time.Millisecond
)

// link holds the faults of one direction, shared by every connection.
type link struct {
	bytes atomic.Int64

	mu      sync.Mutex
	latency time.Duration
	rate    int64 // bytes per second; 0 is unlimited
	stalled bool
	next    time.Time     // a capped link sends nothing before next
	changed chan struct{} // closed and replaced at every change
}

func newLink() *link { return &link{changed: make(chan struct{})} }

// set changes the link under its lock and wakes every waiting writer.
func (l *link) set(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
	close(l.changed)
	l.changed = make(chan struct{})
}

// plan decides what a writer holding n bytes that arrived at may do now:
// send the first send bytes, or wait for wait (forever when negative) or
// for changed to close, whichever comes first.
func (l *link) plan(now, at time.Time, n int) (send int, wait time.Duration, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stalled {
		return 0, -1, l.changed
	}
	if due := at.Add(l.latency); now.Before(due) {
		return 0, due.Sub(now), l.changed
	}
	if l.rate <= 0 {
		return n, 0, nil
	}
	if l.next.After(now) {
		return 0, l.next.Sub(now), l.changed
	}
	piece := min(int64(n), max(l.rate/quantumPerSecond, 1))
	start := l.next
	if floor := now.Add(-credit); start.Before(floor) {
		start = floor
	}
	l.next = start.Add(time.Duration(piece * int64(time.Second) / l.rate))
	return int(piece), 0, nil
}

// forward writes ch to dst as the link allows, counting what it wrote.
func (l *link) forward(c *conn, ch chunk, dst net.Conn) error {
	data := ch.data
	for len(data) > 0 {
		send, wait, changed := l.plan(time.Now(), ch.at, len(data))
		if send == 0 {
			if !c.sleep(wait, changed) {
				return net.ErrClosed
			}
			continue
		}
		n, err := dst.Write(data[:send])
		l.bytes.Add(int64(n))
		if err != nil {
			return err
		}
		data = data[send:]
	}
	return nil
}
