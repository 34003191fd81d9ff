package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/core/engine"
)

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress renders engine events: on a terminal, a live line per disk
// being copied (percent, rate, time left) under the lines of what
// finished; elsewhere plain lines at each step and every quarter of a disk.
type progress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	live  map[string]*diskLine // by "vm/disk"
	drawn int                  // live lines on screen
	last  time.Time
	// interrupted reports whether the run was stopped by a signal; its
	// failures are then the interruption, not errors to show.
	interrupted func() bool
}

type diskLine struct {
	vm      string
	disk    int
	mode    string
	done    int64
	total   int64
	started time.Time
	quarter int64
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: isTerminal(w), live: map[string]*diskLine{}}
}

func (p *progress) event(ev engine.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// What an event printed shows now, on a terminal and in a log.
	defer flush(p.w)
	key := fmt.Sprintf("%s/%d", ev.VM, ev.Disk)
	switch ev.Kind {
	case engine.SessionStarted:
		p.print("job %s: session %s started", ev.Job, ev.Session)
	case engine.VMStarted:
		p.print("  %s: snapshot and replicate", ev.VM)
	case engine.DiskStarted:
		p.live[key] = &diskLine{vm: ev.VM, disk: ev.Disk, mode: string(ev.Mode), total: ev.Total, started: ev.Time}
		if !p.tty {
			p.print("  %s disk %d: %s, %s to check", ev.VM, ev.Disk, ev.Mode, size(ev.Total))
		}
	case engine.DiskProgress:
		l := p.live[key]
		if l == nil {
			return
		}
		l.done = ev.Done
		if !p.tty {
			if q := quarter(l.done, l.total); q > l.quarter && q < 4 {
				l.quarter = q
				p.print("  %s disk %d: %d%%", ev.VM, ev.Disk, q*25)
			}
			return
		}
		if time.Since(p.last) > 100*time.Millisecond {
			p.redraw()
		}
	case engine.DiskFinished:
		l := p.live[key]
		delete(p.live, key)
		if ev.Err != nil && p.stopped() {
			p.print("  %s disk %d: interrupted", ev.VM, ev.Disk)
			return
		}
		if ev.Err != nil {
			p.print("  %s disk %d: failed: %v", ev.VM, ev.Disk, ev.Err)
			return
		}
		took := time.Duration(0)
		if l != nil {
			took = ev.Time.Sub(l.started)
		}
		p.print("  %s disk %d: done (%s, %s in %s)", ev.VM, ev.Disk, ev.Mode, size(ev.Total), took.Round(time.Millisecond))
	case engine.VMFinished:
		switch {
		case ev.Err != nil && p.stopped():
			p.print("  %s: interrupted; no new restore point", ev.VM)
		case ev.Err != nil:
			p.print("  %s: FAILED: %v", ev.VM, ev.Err)
		default:
			p.print("  %s: restore point created", ev.VM)
		}
	case engine.Notice:
		if ev.VM == "" {
			p.print("  note: %s", ev.Message)
		} else {
			p.print("  %s: note: %s", ev.VM, ev.Message)
		}
	case engine.SessionFinished:
		p.clearLive()
	}
}

func (p *progress) stopped() bool { return p.interrupted != nil && p.interrupted() }

func quarter(done, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return done * 4 / total
}

// print writes a permanent line, above the live ones on a terminal.
func (p *progress) print(format string, args ...any) {
	p.clearLive()
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.tty {
		p.redraw()
	}
}

func (p *progress) clearLive() {
	if p.tty && p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
		p.drawn = 0
	}
}

func (p *progress) redraw() {
	p.clearLive()
	keys := make([]string, 0, len(p.live))
	for k := range p.live {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		l := p.live[k]
		fmt.Fprintln(p.w, l.render(time.Now()))
	}
	p.drawn = len(keys)
	p.last = time.Now()
}

func (l *diskLine) render(now time.Time) string {
	pct := 100.0
	if l.total > 0 {
		pct = float64(l.done) * 100 / float64(l.total)
	}
	elapsed := now.Sub(l.started).Seconds()
	rate, eta := "", ""
	if elapsed > 0.2 && l.done > 0 {
		bps := float64(l.done) / elapsed
		rate = size(int64(bps)) + "/s"
		if left := float64(l.total-l.done) / bps; left >= 0 {
			eta = "ETA " + time.Duration(left*float64(time.Second)).Round(time.Second).String()
		}
	}
	bar := strings.Repeat("#", int(pct/5)) + strings.Repeat(".", 20-int(pct/5))
	return fmt.Sprintf("  %s disk %d [%s] %5.1f%% %s %s %s", l.vm, l.disk, bar, pct, l.mode, rate, eta)
}

// size renders a byte count for people.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
