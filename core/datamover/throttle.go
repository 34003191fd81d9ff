package datamover

import (
	"context"

	"golang.org/x/time/rate"
)

// throttled is a Sink that keeps what it passes on under a rate.
type throttled struct {
	next Sink
	lim  *rate.Limiter
}

// Throttle limits what reaches next to bytesPerSecond. Frames larger than
// the burst wait for their full size in burst-sized steps. Several disks
// sharing a limiter share its rate.
func Throttle(next Sink, lim *rate.Limiter) Sink {
	if lim == nil {
		return next
	}
	return &throttled{next: next, lim: lim}
}

// NewLimiter returns a limiter for a rate in bytes per second, with a burst
// large enough for a frame of the default read size.
func NewLimiter(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSecond), max(256<<10, DefaultReadSize+64<<10))
}

func (t *throttled) Send(ctx context.Context, frame []byte) error {
	for n := len(frame); n > 0; {
		step := min(n, t.lim.Burst())
		if err := t.lim.WaitN(ctx, step); err != nil {
			return err
		}
		n -= step
	}
	return t.next.Send(ctx, frame)
}
