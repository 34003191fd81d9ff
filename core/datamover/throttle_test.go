package datamover

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// The tests of the bucket run on a virtual clock: a simulation passes the
// time in and jumps to the next grant, so ten seconds take microseconds
// and the outcome is exact. The tests of Limiter and Throttle run in a
// synctest bubble, whose clock is virtual too.

var epoch = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// simTask sends frames of the given sizes, in turn, one at a time, in
// steps as Flow.Wait does.
type simTask struct {
	frames  []int
	flow    flowState
	next    int // index in frames
	cur     int // size of the frame being sent
	left    int // bytes of it not yet granted
	pending *request

	granted int64     // bytes granted
	sent    int64     // bytes of whole frames that passed
	last    time.Time // when the latest whole frame passed
}

// simulate runs tasks on b from now until the next grant would come at or
// after until, and returns until.
func simulate(b *bucket, tasks []*simTask, now, until time.Time) time.Time {
	owner := map[*flowState]*simTask{}
	for _, t := range tasks {
		owner[&t.flow] = t
	}
	for {
		for _, t := range tasks {
			if t.pending != nil {
				continue
			}
			if t.left == 0 {
				t.cur = t.frames[t.next%len(t.frames)]
				t.next++
				t.left = t.cur
			}
			t.pending = b.add(&t.flow, b.step(t.left), now)
		}
		granted, next := b.grant(now)
		for _, r := range granted {
			t := owner[r.flow]
			t.pending = nil
			t.left -= r.n
			t.granted += int64(r.n)
			if t.left == 0 {
				t.sent += int64(t.cur)
				t.last = now
			}
		}
		if len(granted) == 0 {
			if next.IsZero() || !next.Before(until) {
				return until
			}
			now = next
		}
	}
}

func within(t *testing.T, what string, got, want, tolerance float64) {
	t.Helper()
	if math.Abs(got-want) > tolerance*want {
		t.Errorf("%s: %.0f, want %.0f ± %.0f%%", what, got, want, tolerance*100)
	}
}

func newBucket(rate int64) *bucket {
	b := &bucket{}
	b.init(rate, epoch)
	return b
}

// TestBucketAccuracy: one task sending frames of mixed sizes for at least
// ten seconds gets the rate within 5%, measured from the start to when its
// last whole frame passed.
func TestBucketAccuracy(t *testing.T) {
	mixed := []int{4 << 10, 4 << 20, 64 << 10, 1 << 20, 12 << 10, 300 << 10, 2<<20 + 17}
	for _, tt := range []struct {
		name   string
		rate   int64
		frames []int
	}{
		{"1MB/s 4KiB", 1e6, []int{4 << 10}},
		{"1MB/s 4MiB", 1e6, []int{4 << 20}},
		{"1MB/s mixed", 1e6, mixed},
		{"100MB/s 4KiB", 100e6, []int{4 << 10}},
		{"100MB/s 4MiB", 100e6, []int{4 << 20}},
		{"100MB/s mixed", 100e6, mixed},
		{"8KB/s 1MiB", 8e3, []int{1 << 20}},
		{"10GB/s mixed", 10e9, mixed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBucket(tt.rate)
			task := &simTask{frames: tt.frames}
			want := float64(tt.rate) * 10
			now := epoch
			for float64(task.sent) < want {
				now = simulate(b, []*simTask{task}, now, now.Add(time.Second))
			}
			elapsed := task.last.Sub(epoch).Seconds()
			within(t, "bytes per second", float64(task.sent)/elapsed, float64(tt.rate), 0.05)
			if float64(task.cur) < want/20 && elapsed < 9.5 {
				t.Errorf("%d bytes passed in %.2fs", task.sent, elapsed)
			}
		})
	}
}

// TestBucketShortTransfer: a transfer much smaller than the old 4 MiB burst
// is paced too; only the burst passes at once.
func TestBucketShortTransfer(t *testing.T) {
	b := newBucket(1e6)
	task := &simTask{frames: []int{1 << 20}}
	simulate(b, []*simTask{task}, epoch, epoch.Add(10*time.Second))
	if task.sent == 0 {
		t.Fatal("nothing passed")
	}
	if got, want := task.last.Sub(epoch), time.Duration(float64(1<<20-b.burst)/1e6*float64(time.Second)); got < want {
		t.Errorf("1 MiB passed in %v at 1 MB/s, want at least %v", got, want)
	}
	if b.burst > 50e3 {
		t.Errorf("burst at 1 MB/s is %.0f bytes, more than 50 ms worth", b.burst)
	}
}

// TestBucketFairness: flows that keep sending share the rate equally
// whatever their frame sizes.
func TestBucketFairness(t *testing.T) {
	for _, tt := range []struct {
		name string
		rate int64
		a, b []int
	}{
		{"4MiB against 4KiB at 1MB/s", 1e6, []int{4 << 20}, []int{4 << 10}},
		{"4MiB against 4KiB at 100MB/s", 100e6, []int{4 << 20}, []int{4 << 10}},
		{"1MiB against 64KiB at 10MB/s", 10e6, []int{1 << 20}, []int{64 << 10}},
		{"odd sizes", 3e6, []int{1000003}, []int{777, 5000, 123456}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBucket(tt.rate)
			a, c := &simTask{frames: tt.a}, &simTask{frames: tt.b}
			simulate(b, []*simTask{a, c}, epoch, epoch.Add(10*time.Second))
			total := float64(a.granted + c.granted)
			within(t, "total bytes", total, float64(tt.rate)*10, 0.05)
			within(t, "first flow's bytes", float64(a.granted), total/2, 0.05)
			within(t, "second flow's bytes", float64(c.granted), total/2, 0.05)
		})
	}
}

// TestBucketLateFlow: a flow that joins late gets no less than the others
// from then on, and one that was idle saved up no credit.
func TestBucketLateFlow(t *testing.T) {
	b := newBucket(1e6)
	a, c := &simTask{frames: []int{4 << 20}}, &simTask{frames: []int{4 << 10}}
	now := simulate(b, []*simTask{a}, epoch, epoch.Add(5*time.Second))
	before := a.granted
	simulate(b, []*simTask{a, c}, now, epoch.Add(15*time.Second))
	within(t, "late flow's bytes", float64(c.granted), 5e6, 0.05)
	within(t, "early flow's bytes after", float64(a.granted-before), 5e6, 0.05)
}

// TestBucketSetRate: a rate change applies from when it is made, whether
// it lowers the rate, raises it, lifts it or sets one again.
func TestBucketSetRate(t *testing.T) {
	for _, tt := range []struct {
		name         string
		first, later int64 // 0 for no limit
	}{
		{"down", 100e6, 1e6},
		{"up", 1e6, 100e6},
		{"set", 0, 2e6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBucket(tt.first)
			task := &simTask{frames: []int{4 << 10, 4 << 20, 256 << 10}}
			mid := epoch.Add(5 * time.Second)
			if tt.first == 0 {
				// Unlimited, a task would never stop: set the rate at once.
				b.setRate(tt.later, epoch)
				mid = epoch
			} else {
				simulate(b, []*simTask{task}, epoch, mid)
				within(t, "bytes before the change", float64(task.granted), float64(tt.first)*5, 0.05)
				b.setRate(tt.later, mid)
			}
			before := task.granted
			simulate(b, []*simTask{task}, mid, mid.Add(5*time.Second))
			within(t, "bytes after the change", float64(task.granted-before), float64(tt.later)*5, 0.05)
		})
	}
}

// TestBucketLift: lifting the limit grants everything waiting at once,
// and a large request queued before the rate dropped still passes.
func TestBucketLift(t *testing.T) {
	b := newBucket(100e6)
	var f flowState
	b.grant(epoch)
	b.tokens = 0
	big := b.add(&f, b.step(4<<20), epoch)
	b.setRate(1e3, epoch)
	granted, next := b.grant(epoch)
	if len(granted) != 0 || next.IsZero() {
		t.Fatalf("granted %d at once, next at %v", len(granted), next)
	}
	if wait := next.Sub(epoch); wait > 2*time.Second {
		t.Errorf("a request larger than the new burst waits %v for a full bucket", wait)
	}
	b.setRate(0, epoch)
	small := b.add(&f, 10, epoch)
	granted, next = b.grant(epoch)
	if len(granted) != 2 || granted[0] != big || granted[1] != small || !next.IsZero() {
		t.Errorf("unlimited: granted %d, next %v", len(granted), next)
	}
}

// TestBucketRemove: a cancelled request leaves no debt on its flow.
func TestBucketRemove(t *testing.T) {
	b := newBucket(1e6)
	var f, g flowState
	b.grant(epoch)
	b.tokens = 0
	r := b.add(&f, 40e3, epoch)
	b.remove(r)
	if f.finish != 0 || b.queue.Len() != 0 {
		t.Fatalf("finish %v, queue %d after remove", f.finish, b.queue.Len())
	}
	b.add(&g, 1000, epoch)
	b.add(&f, 1000, epoch)
	granted, _ := b.grant(epoch.Add(time.Second))
	if len(granted) != 2 {
		t.Errorf("granted %d of 2", len(granted))
	}
}

type countSink struct{ n atomic.Int64 }

func (s *countSink) Send(_ context.Context, frame []byte) error {
	s.n.Add(int64(len(frame)))
	return nil
}

// TestThrottleShared: two disks throttled by one limiter, one sending
// large frames and one small ones from several goroutines, share its rate
// equally, and the rate holds within 5% over ten seconds.
func TestThrottleShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate = 1e6
		lim := NewLimiter(rate)
		var big, small countSink
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		send := func(s Sink, size int) {
			frame := make([]byte, size)
			for ctx.Err() == nil {
				s.Send(ctx, frame)
			}
		}
		wg.Go(func() { send(Throttle(&big, lim), 4<<20) })
		smallSink := Throttle(&small, lim)
		for range 3 {
			wg.Go(func() { send(smallSink, 4<<10) })
		}
		wg.Wait()
		// A large frame passes whole once all its steps are granted (8 s
		// at half the rate): the small frames show the share, the total
		// shows nothing passed beyond the rate.
		total := float64(big.n.Load() + small.n.Load())
		within(t, "small frames' bytes", float64(small.n.Load()), rate*10/2, 0.05)
		if total > rate*10*1.05 {
			t.Errorf("%.0f bytes passed in 10s at %d B/s", total, int(rate))
		}
	})
}

// TestLimiterSetRateWakes: a flow waiting at a low rate is served at once
// when the limit is lifted, and at the new rate when it is raised.
func TestLimiterSetRateWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := NewLimiter(1000)
		var sink countSink
		s := Throttle(&sink, lim)
		start := time.Now()
		done := make(chan error)
		go func() { done <- s.Send(t.Context(), make([]byte, 1<<20)) }()
		time.Sleep(time.Second)
		synctest.Wait()
		lim.SetRate(10e6)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 1200*time.Millisecond {
			t.Errorf("1 MiB took %v after the rate went from 1 KB/s to 10 MB/s", d)
		}
		go func() { done <- s.Send(t.Context(), make([]byte, 1<<20)) }()
		synctest.Wait()
		lim.SetRate(0)
		synctest.Wait()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if lim.Rate() != 0 {
			t.Errorf("rate %d after lifting", lim.Rate())
		}
	})
}

// TestLimiterCancel: a cancelled wait returns the context's error, and the
// flows that keep waiting are served as if it had never asked.
func TestLimiterCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := NewLimiter(1e6)
		first, second := lim.NewFlow(), lim.NewFlow()
		if err := first.Wait(t.Context(), int(burstFor(1e6))); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error)
		go func() { errc <- first.Wait(ctx, 4<<20) }()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled wait: %v", err)
		}
		start := time.Now()
		if err := second.Wait(t.Context(), 100e3); err != nil {
			t.Fatal(err)
		}
		// The first flow's granted step was spent: 100 KB needs 100 ms
		// more, plus the remainder of what the first flow took.
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("100 KB at 1 MB/s took %v after a cancelled wait", d)
		}
	})
}

func TestThrottleNil(t *testing.T) {
	var sink countSink
	if s := Throttle(&sink, nil); s != Sink(&sink) {
		t.Error("Throttle with a nil limiter wraps the sink")
	}
}
