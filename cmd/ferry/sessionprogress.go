package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
)

// progressEvery is how often a run records the progress of its sessions
// in the catalog, besides each disk and VM that finishes.
const progressEvery = time.Second

// progressSaver is the part of the catalog sessionProgress writes to.
type progressSaver interface {
	SaveProgress(id string, p catalog.Progress) error
}

// sessionProgress records how far the sessions of a run got in the
// catalog, so that `ferry status` (another process) shows a running
// session with its progress. It hears the engine's events and writes from
// a goroutine of its own: at most once a tick, and at once when a disk or
// a VM finishes; never once per block, and never in the event callback,
// which must be quick. A failed write is logged, not fatal: progress is
// for people to read, and the session's results are saved by the engine.
type sessionProgress struct {
	cat progressSaver
	log hclog.Logger

	mu   sync.Mutex
	runs map[string]*tally // by session id

	wake     chan struct{} // a disk or VM finished: write now
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// tally is what the events of one session added up to.
type tally struct {
	disks     map[string]*diskTally // by "vm/disk"
	disksDone int
	vmsDone   int
	dirty     bool // changed since the last write
}

type diskTally struct{ done, total int64 }

func (t *tally) progress() catalog.Progress {
	p := catalog.Progress{Disks: len(t.disks), DisksDone: t.disksDone, VMsDone: t.vmsDone}
	for _, d := range t.disks {
		p.Done += d.done
		p.Total += d.total
	}
	return p
}

// startSessionProgress starts recording; every tick of tick writes what
// changed. Close stops it.
func startSessionProgress(cat progressSaver, tick <-chan time.Time, log hclog.Logger) *sessionProgress {
	sp := &sessionProgress{
		cat:  cat,
		log:  log,
		runs: map[string]*tally{},
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go sp.loop(tick)
	return sp
}

// recordProgress starts recording the progress of the sessions whose
// events the returned function hears, passing them on to next. The
// returned stop ends the recording.
func recordProgress(cat progressSaver, log hclog.Logger, next func(engine.Event)) (events func(engine.Event), stop func()) {
	ticker := time.NewTicker(progressEvery)
	sp := startSessionProgress(cat, ticker.C, log)
	return func(ev engine.Event) {
			sp.event(ev)
			next(ev)
		}, func() {
			ticker.Stop()
			sp.Close()
		}
}

// event adds ev to its session's tally.
func (sp *sessionProgress) event(ev engine.Event) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if ev.Kind == engine.SessionStarted {
		sp.runs[ev.Session] = &tally{disks: map[string]*diskTally{}, dirty: true}
		return
	}
	t := sp.runs[ev.Session]
	if t == nil {
		return
	}
	key := fmt.Sprintf("%s/%d", ev.VM, ev.Disk)
	now := false
	switch ev.Kind {
	case engine.DiskStarted:
		t.disks[key] = &diskTally{total: ev.Total}
	case engine.DiskProgress:
		if d := t.disks[key]; d != nil {
			d.done = ev.Done
		}
	case engine.DiskFinished:
		if d := t.disks[key]; d != nil && ev.Err == nil {
			d.done = d.total
		}
		t.disksDone++
		now = true
	case engine.VMFinished:
		t.vmsDone++
		now = true
	case engine.SessionFinished:
		// The engine saves the session with its result; nothing to add.
		delete(sp.runs, ev.Session)
		return
	default:
		return
	}
	t.dirty = true
	if now {
		select {
		case sp.wake <- struct{}{}:
		default: // a write is already due
		}
	}
}

func (sp *sessionProgress) loop(tick <-chan time.Time) {
	defer close(sp.done)
	for {
		select {
		case <-sp.stop:
			return
		case <-tick:
		case <-sp.wake:
		}
		sp.flush()
	}
}

// flush writes the progress of the sessions that changed.
func (sp *sessionProgress) flush() {
	sp.mu.Lock()
	due := map[string]catalog.Progress{}
	for id, t := range sp.runs {
		if t.dirty {
			due[id] = t.progress()
			t.dirty = false
		}
	}
	sp.mu.Unlock()
	for id, p := range due {
		if err := sp.cat.SaveProgress(id, p); err != nil {
			sp.log.Warn("record the progress of the session", "session", id, "error", err)
		}
	}
}

// Close stops the recording and waits for a write in progress. Calling it
// again does nothing.
func (sp *sessionProgress) Close() {
	sp.stopOnce.Do(func() { close(sp.stop) })
	<-sp.done
}
