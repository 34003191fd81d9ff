package sdktest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var seedFlag = flag.Uint64("sdktest.seed", 0, "seed of the sdktest conformance suites' random choices (0: a new one per run)")

var (
	runSeedOnce sync.Once
	runSeed     uint64
)

// seed is the seed of this run: the -sdktest.seed flag, or one taken from
// the clock and logged by every failing check so the run can be repeated.
func seed() uint64 {
	runSeedOnce.Do(func() {
		runSeed = *seedFlag
		if runSeed == 0 {
			runSeed = uint64(time.Now().UnixNano())
		}
	})
	return runSeed
}

// newRand returns the random source of one check. It depends on the seed
// and the check's name only, so -run of one check repeats its choices.
func newRand(t *testing.T) *rand.Rand {
	s := seed()
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random choices from seed %d: repeat them with -sdktest.seed=%d", s, s)
		}
	})
	return rand.New(rand.NewPCG(s, h.Sum64()))
}

// uniqueName names an object a check creates, so that runs and checks
// never collide and leftovers are easy to recognise.
func uniqueName(rng *rand.Rand, what string) string {
	return fmt.Sprintf("sdktest-%s-%08x", what, rng.Uint32())
}

// defaultDeadline is how long a cancelled call or Stop may take to return
// when the fixture does not say.
const defaultDeadline = 10 * time.Second

func deadlineOr(d time.Duration) time.Duration {
	if d <= 0 {
		return defaultDeadline
	}
	return d
}

// promptly runs call and ends the check when it has not returned within d.
// A call that never returns is left behind; the check has failed anyway.
func promptly(t *testing.T, d time.Duration, what string, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		t.Fatalf("%s did not return within %v", what, d)
		return nil
	}
}

// canceledContext returns a context that is already cancelled.
func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// isCanceled reports whether err says that its call was cancelled: the
// class errdefs.ErrCanceled (which context.Canceled is), or a deadline.
func isCanceled(err error) bool {
	return errors.Is(err, errdefs.ErrCanceled) || errors.Is(err, context.DeadlineExceeded)
}

// expectCanceled checks one call made with a cancelled context: it must
// return within d with an error that says so.
func expectCanceled(t *testing.T, d time.Duration, what string, call func(ctx context.Context) error) {
	t.Helper()
	err := promptly(t, d, what+" with a cancelled context", func() error { return call(canceledContext()) })
	switch {
	case err == nil:
		t.Errorf("%s with a cancelled context returned no error", what)
	case !isCanceled(err):
		t.Errorf("%s with a cancelled context: got %v, want an error of class errdefs.ErrCanceled (context.Canceled)", what, err)
	}
}

// cleanupContext is the context of cleanup work, which runs after the
// check's own context is done.
func cleanupContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// checkStop is the Stop check every suite has: a component that implements
// sdk.Stopper must return from Stop, without error, within the deadline it
// is given.
func checkStop(t *testing.T, component any, d time.Duration) {
	s, ok := component.(sdk.Stopper)
	if !ok {
		t.Skip("the component does not implement sdk.Stopper")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	// The grace covers scheduling: Stop is told its deadline and must keep it.
	grace := d/10 + 250*time.Millisecond
	if err := promptly(t, d+grace, "Stop", func() error { return s.Stop(ctx) }); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// wantClass fails the check unless err belongs to class.
func wantClass(t *testing.T, what string, err, class error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: got no error, want one of class %q", what, errdefs.Class(class))
		return
	}
	if !errors.Is(err, class) {
		t.Errorf("%s: got %v (class %q), want class %q", what, err, errdefs.Class(err), errdefs.Class(class))
	}
}
