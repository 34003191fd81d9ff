package main

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
)

// savedProgress is one SaveProgress call.
type savedProgress struct {
	id string
	p  catalog.Progress
}

// fakeSaver hands each SaveProgress call to the test.
type fakeSaver chan savedProgress

func (f fakeSaver) SaveProgress(id string, p catalog.Progress) error {
	f <- savedProgress{id, p}
	return errors.New("the test's catalog keeps nothing") // logged, not fatal
}

func (f fakeSaver) next(t *testing.T) savedProgress {
	t.Helper()
	select {
	case s := <-f:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no progress was recorded")
		return savedProgress{}
	}
}

func TestSessionProgress(t *testing.T) {
	t.Parallel()
	saves := make(fakeSaver, 16)
	tick := make(chan time.Time)
	sp := startSessionProgress(saves, tick, hclog.NewNullLogger())
	defer sp.Close()

	sp.event(engine.Event{Kind: engine.SessionStarted, Session: "s1", Job: "web"})
	sp.event(engine.Event{Kind: engine.DiskStarted, Session: "s1", VM: "web-01", Disk: 0, Total: 400})
	sp.event(engine.Event{Kind: engine.DiskStarted, Session: "s1", VM: "web-01", Disk: 1, Total: 100})
	for _, done := range []int64{100, 200, 300} {
		sp.event(engine.Event{Kind: engine.DiskProgress, Session: "s1", VM: "web-01", Disk: 0, Done: done})
	}
	// Blocks and progress events write nothing; the tick writes their sum,
	// once.
	tick <- time.Now()
	want := savedProgress{"s1", catalog.Progress{Done: 300, Total: 500, Disks: 2}}
	if got := saves.next(t); got != want {
		t.Fatalf("at the tick: %+v, want %+v", got, want)
	}
	// A finished disk is written at once, without a tick.
	sp.event(engine.Event{Kind: engine.DiskFinished, Session: "s1", VM: "web-01", Disk: 1, Total: 100})
	want = savedProgress{"s1", catalog.Progress{Done: 400, Total: 500, Disks: 2, DisksDone: 1}}
	if got := saves.next(t); got != want {
		t.Fatalf("after a disk finished: %+v, want %+v", got, want)
	}
	// A tick with nothing new writes nothing: the next write is the VM's.
	tick <- time.Now()
	sp.event(engine.Event{Kind: engine.DiskFinished, Session: "s1", VM: "web-01", Disk: 0, Total: 400})
	sp.event(engine.Event{Kind: engine.VMFinished, Session: "s1", VM: "web-01"})
	got := saves.next(t)
	if got.p.DisksDone != 2 || got.p.Done != 500 {
		t.Fatalf("after the disks finished: %+v", got)
	}
	if got.p.VMsDone != 1 {
		// The VM came after the write of the disk: it has its own.
		got = saves.next(t)
	}
	want = savedProgress{"s1", catalog.Progress{Done: 500, Total: 500, Disks: 2, DisksDone: 2, VMsDone: 1}}
	if got != want {
		t.Fatalf("after the VM finished: %+v, want %+v", got, want)
	}
	// Once the session finished, nothing more about it.
	sp.event(engine.Event{Kind: engine.SessionFinished, Session: "s1"})
	sp.event(engine.Event{Kind: engine.DiskFinished, Session: "s1", VM: "web-02"})
	tick <- time.Now()
	sp.Close()
	select {
	case s := <-saves:
		t.Fatalf("a write after the session finished: %+v", s)
	default:
	}
}
