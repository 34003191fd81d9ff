package datamover

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestBusyCountsOverlapsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var b Busy
		b.Start()
		time.Sleep(10 * time.Millisecond)
		b.Start() // a second worker: the stage is no busier
		time.Sleep(10 * time.Millisecond)
		b.Stop()
		time.Sleep(10 * time.Millisecond)
		b.Stop()
		time.Sleep(50 * time.Millisecond) // idle
		b.Start()
		time.Sleep(5 * time.Millisecond)
		if got := b.Total(); got != 35*time.Millisecond {
			t.Fatalf("while busy: %v, want 35ms", got)
		}
		b.Stop()
		time.Sleep(time.Second)
		if got := b.Total(); got != 35*time.Millisecond {
			t.Fatalf("after: %v, want 35ms", got)
		}
	})
}

func TestBottleneck(t *testing.T) {
	tests := []struct {
		s    Stages
		want string
	}{
		{Stages{}, ""},
		{Stages{Source: 90, Proxy: 40, Network: 3, Target: 12}, "source"},
		{Stages{Source: 10, Proxy: 95, Network: 3, Target: 12}, "proxy"},
		{Stages{Source: 10, Proxy: 20, Network: 99, Target: 12}, "network"},
		{Stages{Source: 10, Proxy: 20, Network: 30, Target: 80}, "target"},
		{Stages{Source: 50, Target: 50}, "source"}, // ties go to the earlier stage
	}
	for _, tt := range tests {
		if got := tt.s.Bottleneck(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.s, got, tt.want)
		}
	}
	for _, p := range []struct {
		busy, elapsed time.Duration
		want          int
	}{{0, time.Second, 0}, {time.Second, 0, 0}, {500 * time.Millisecond, time.Second, 50}, {2 * time.Second, time.Second, 100}} {
		if got := Percent(p.busy, p.elapsed); got != p.want {
			t.Errorf("Percent(%v, %v) = %d, want %d", p.busy, p.elapsed, got, p.want)
		}
	}
}
