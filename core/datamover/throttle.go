package datamover

import (
	"container/heap"
	"context"
	"math"
	"sync"
	"time"
)

// Limiter paces bytes to a rate shared by every flow that draws on it: the
// disk tasks of one job, or all the tasks crossing one network link.
//
// Its token bucket holds at most BurstWindow worth of bytes (MinBurst at
// least), so that short transfers do not pass unthrottled and the rate
// holds within a few percent over seconds. A request larger than the burst
// is granted in steps of at most the burst. Waiting requests are served in
// the order of start-time fair queueing: each flow's bytes are tagged in
// turn, so flows that keep sending get equal shares of the rate whatever
// their frame sizes, and a flow sending large frames is not starved by one
// sending many small ones (nor the reverse).
//
// A Limiter is safe for concurrent use; its rate may change while flows
// wait (SetRate).
type Limiter struct {
	mu    sync.Mutex
	b     bucket
	timer *time.Timer
	// timerAt is when timer fires; zero when no timer is armed. gen
	// tells the armed timer from stopped ones that fire all the same.
	timerAt time.Time
	gen     uint64
}

// BurstWindow and MinBurst size a limiter's bucket: BurstWindow of bytes
// at its rate, at least MinBurst. MinBurst keeps steps from getting tiny at
// low rates; the number of steps a flow waits for stays at about one per
// BurstWindow whatever the rate.
const (
	BurstWindow = 50 * time.Millisecond
	MinBurst    = 1 << 10
)

// NewLimiter returns a limiter for bytesPerSecond; zero or less means no
// limit until SetRate sets one.
func NewLimiter(bytesPerSecond int64) *Limiter {
	l := &Limiter{}
	l.b.init(bytesPerSecond, time.Now())
	return l
}

// Rate returns the limit in bytes per second; 0 for none.
func (l *Limiter) Rate() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(l.b.rate)
}

// SetRate changes the limit to bytesPerSecond, or lifts it when that is
// zero or less. Time already passed counts at the old rate; waiting
// requests are served at the new one from now on.
func (l *Limiter) SetRate(bytesPerSecond int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.b.setRate(bytesPerSecond, now)
	l.dispatch(now)
}

// Flow is one stream of requests on a limiter, such as one disk task. The
// limiter shares its rate equally among the flows that wait.
type Flow struct {
	l *Limiter
	f flowState
}

// NewFlow returns a new flow drawing on l.
func (l *Limiter) NewFlow() *Flow { return &Flow{l: l} }

// Wait returns when n bytes may pass, or with ctx's error when ctx ends
// first; bytes granted before that are spent. It may be called from
// several goroutines at once.
func (f *Flow) Wait(ctx context.Context, n int) error {
	for n > 0 {
		step, err := f.waitStep(ctx, n)
		if err != nil {
			return err
		}
		n -= step
	}
	return nil
}

// waitStep waits for the next step of n bytes and returns its size.
func (f *Flow) waitStep(ctx context.Context, n int) (int, error) {
	l := f.l
	l.mu.Lock()
	now := time.Now()
	r := l.b.add(&f.f, l.b.step(n), now)
	r.ready = make(chan struct{})
	l.dispatch(now)
	l.mu.Unlock()
	select {
	case <-r.ready:
		return r.n, nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if r.index < 0 { // granted meanwhile
		return r.n, nil
	}
	l.b.remove(r)
	l.dispatch(time.Now())
	return 0, ctx.Err()
}

// dispatch grants what the bucket allows at now and arms the timer for the
// next grant. l.mu is held.
func (l *Limiter) dispatch(now time.Time) {
	granted, next := l.b.grant(now)
	for _, r := range granted {
		close(r.ready)
	}
	if next.Equal(l.timerAt) {
		return
	}
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	l.gen++
	l.timerAt = next
	if !next.IsZero() {
		gen := l.gen
		l.timer = time.AfterFunc(next.Sub(now), func() { l.fire(gen) })
	}
}

func (l *Limiter) fire(gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen {
		return
	}
	l.timer, l.timerAt = nil, time.Time{}
	l.dispatch(time.Now())
}

// throttled is a Sink that keeps what it passes on under a limiter's rate.
type throttled struct {
	next Sink
	flow *Flow
}

// Throttle limits what reaches next to the rate of each of lims, as one
// flow of each: several sinks throttled by one limiter share its rate
// equally. A frame waits on the limiters in the order given; one larger
// than a limiter's burst waits for its full size there in steps. Nil
// limiters limit nothing.
func Throttle(next Sink, lims ...*Limiter) Sink {
	for i := len(lims) - 1; i >= 0; i-- {
		if lims[i] != nil {
			next = &throttled{next: next, flow: lims[i].NewFlow()}
		}
	}
	return next
}

func (t *throttled) Send(ctx context.Context, frame []byte) error {
	if err := t.flow.Wait(ctx, len(frame)); err != nil {
		return err
	}
	return t.next.Send(ctx, frame)
}

// bucket is the limiter's decision, with time passed in: how many bytes
// may pass when, and in which order waiting requests are served. It is
// not safe for concurrent use.
//
// Order is start-time fair queueing: a request's start tag is the later of
// the virtual time (the start tag of the latest grant) and its flow's
// finish tag (the start tag of the flow's latest request plus its size);
// the smallest start tag is served first, ties in arrival order. A flow
// that keeps sending thus gets its turn after as many bytes as each other
// busy flow, and an idle flow saves up no credit.
type bucket struct {
	rate   float64 // bytes per second; 0 for no limit
	burst  float64
	tokens float64
	last   time.Time // when tokens was right
	vtime  float64
	queue  requests
	seq    uint64
}

type flowState struct {
	finish float64
}

type request struct {
	flow  *flowState
	n     int
	start float64
	seq   uint64
	index int // in the queue; -1 once out of it
	ready chan struct{}
}

// tolerance absorbs the rounding of refills: a wake-up computed to the
// nanosecond may find a hair less than it waited for.
const tolerance = 1e-6

func (b *bucket) init(bytesPerSecond int64, now time.Time) {
	b.last = now
	b.setRate(bytesPerSecond, now)
	b.tokens = b.burst
}

// burstFor is the bucket size for rate bytes per second.
func burstFor(rate float64) float64 {
	return max(rate*BurstWindow.Seconds(), MinBurst)
}

func (b *bucket) setRate(bytesPerSecond int64, now time.Time) {
	b.refill(now)
	wasLimited := b.rate > 0
	b.rate = max(float64(bytesPerSecond), 0)
	if b.rate == 0 {
		b.burst = 0
		return
	}
	b.burst = burstFor(b.rate)
	if !wasLimited {
		b.tokens = b.burst
	}
	b.tokens = min(b.tokens, b.burst)
}

func (b *bucket) refill(now time.Time) {
	if now.After(b.last) {
		if b.rate > 0 {
			b.tokens = min(b.burst, b.tokens+b.rate*now.Sub(b.last).Seconds())
		}
		b.last = now
	}
}

// step is the size of the next request for n bytes: at most the burst.
func (b *bucket) step(n int) int {
	if b.rate == 0 || float64(n) <= b.burst {
		return n
	}
	return int(b.burst)
}

// add queues a request for n bytes of flow f.
func (b *bucket) add(f *flowState, n int, now time.Time) *request {
	b.refill(now)
	r := &request{flow: f, n: n, start: max(b.vtime, f.finish), seq: b.seq}
	b.seq++
	f.finish = r.start + float64(n)
	heap.Push(&b.queue, r)
	return r
}

// remove takes a request that will not be granted out of the queue.
func (b *bucket) remove(r *request) {
	heap.Remove(&b.queue, r.index)
	if r.flow.finish == r.start+float64(r.n) {
		// The flow's latest request: its bytes are not owed.
		r.flow.finish = r.start
	}
}

// grant takes from the queue, in order, the requests that may pass at now,
// and returns them with the time the next one may; the zero time when
// none waits. A request needs its size in tokens, or a full bucket when
// it is larger (after the rate dropped); the tokens may then go negative,
// to be paid back before the next grant.
func (b *bucket) grant(now time.Time) (granted []*request, next time.Time) {
	b.refill(now)
	for b.queue.Len() > 0 {
		r := b.queue[0]
		if b.rate > 0 {
			need := min(float64(r.n), b.burst)
			if b.tokens+tolerance < need {
				wait := math.Ceil((need - b.tokens) / b.rate * float64(time.Second))
				return granted, now.Add(time.Duration(wait))
			}
			b.tokens -= float64(r.n)
		}
		heap.Pop(&b.queue)
		b.vtime = r.start
		granted = append(granted, r)
	}
	return granted, time.Time{}
}

// requests is a heap of requests by start tag, then arrival.
type requests []*request

func (q requests) Len() int { return len(q) }
func (q requests) Less(i, j int) bool {
	if q[i].start != q[j].start {
		return q[i].start < q[j].start
	}
	return q[i].seq < q[j].seq
}
func (q requests) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *requests) Push(x any) {
	r := x.(*request)
	r.index = len(*q)
	*q = append(*q, r)
}
func (q *requests) Pop() any {
	old := *q
	r := old[len(old)-1]
	old[len(old)-1] = nil
	r.index = -1
	*q = old[:len(old)-1]
	return r
}
