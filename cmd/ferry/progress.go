package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
)

// file is the file w writes to: w itself, or what ferry's buffered
// standard output writes to.
func file(w io.Writer) *os.File {
	if o, ok := w.(*output); ok {
		w = o.w
	}
	f, _ := w.(*os.File)
	return f
}

// isTerminal reports whether w writes to a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f := file(w)
	if f == nil {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// terminalWidth is the number of columns of the terminal w writes to; when
// that cannot be asked, $COLUMNS, and else 80.
func terminalWidth(w io.Writer) int {
	if f := file(w); f != nil {
		if n := columns(f); n > 0 {
			return n
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	return 80
}

// progress renders engine events: on a terminal, a live line per disk
// being copied (percent, rate, time left) and one for the whole session,
// under the lines of what finished; elsewhere plain lines at each step and
// every quarter of a disk.
type progress struct {
	w     io.Writer
	tty   bool
	width func() int // the terminal's columns, asked at each redraw
	mu    sync.Mutex
	live  map[string]*diskLine // by "vm/disk"
	drawn int                  // live lines on screen
	last  time.Time
	// interrupted reports whether the run was stopped by a signal; its
	// failures are then the interruption, not errors to show.
	interrupted func() bool
	vms         int // the VMs of the next session's job; 0 when selectors pick them
	sess        overall
}

// overall is the session as a whole, for its live line.
type overall struct {
	vms      int // 0: not known before the run
	started  time.Time
	vmsBegun int
	finished int64 // bytes of the disks finished
	known    int64 // bytes of the disks started so far
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
	return &progress{w: w, tty: isTerminal(w), width: func() int { return terminalWidth(w) }, live: map[string]*diskLine{}}
}

// expect says how many VMs the next session replicates (0: not known
// before it runs).
func (p *progress) expect(vms int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vms = vms
}

func (p *progress) event(ev engine.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// What an event printed shows now, on a terminal and in a log.
	defer flush(p.w)
	key := fmt.Sprintf("%s/%d", ev.VM, ev.Disk)
	switch ev.Kind {
	case engine.SessionStarted:
		p.sess = overall{vms: p.vms, started: ev.Time}
		p.print("job %s: session %s started", ev.Job, ev.Session)
	case engine.VMStarted:
		p.sess.vmsBegun++
		p.print("  %s: snapshot and replicate", ev.VM)
	case engine.DiskStarted:
		p.sess.known += ev.Total
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
		if l != nil {
			p.sess.finished += l.total
		}
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
		busy := ""
		if ev.Busy != nil {
			busy = "; busy: " + ev.Busy.String()
		}
		p.print("  %s disk %d: done (%s, %s in %s%s)", ev.VM, ev.Disk, ev.Mode, size(ev.Total), took.Round(time.Millisecond), busy)
	case engine.VMFinished:
		switch {
		case ev.Err != nil && p.stopped():
			p.print("  %s: interrupted; no new restore point", ev.VM)
		case ev.Err != nil:
			p.print("  %s: FAILED: %v", ev.VM, ev.Err)
		case ev.Result == catalog.ResultSkipped:
			p.print("  %s: skipped: %s", ev.VM, ev.Message)
		case ev.Result == catalog.ResultWarning:
			p.print("  %s: restore point created, with a warning: %s", ev.VM, ev.Message)
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

// redraw draws the live lines, each cut to the terminal's width: a line
// that wrapped would take two rows, and clearLive, counting one, would
// leave a stale row at every redraw.
func (p *progress) redraw() {
	p.clearLive()
	keys := make([]string, 0, len(p.live))
	for k := range p.live {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	now := time.Now()
	lines := make([]string, 0, len(keys)+1)
	for _, k := range keys {
		lines = append(lines, p.live[k].render(now))
	}
	if len(keys) > 0 {
		lines = append(lines, p.sess.render(now, p.live))
	}
	width := 80
	if p.width != nil {
		width = p.width()
	}
	for _, line := range lines {
		// One column short of the width: some terminals wrap at the last.
		fmt.Fprintln(p.w, cut(line, width-1))
	}
	p.drawn = len(lines)
	p.last = now
}

// cut shortens s to at most n characters.
func cut(s string, n int) string {
	if n < 1 || utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
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

// render is the session's line: which VM of how many, the bytes checked of
// those known, the rate since the session started and the time left. The
// bytes of the VMs not begun are guessed from those begun; when the job's
// selectors pick its VMs, their number is not known and there is no ETA.
func (s *overall) render(now time.Time, live map[string]*diskLine) string {
	done := s.finished
	for _, l := range live {
		done += l.done
	}
	line := fmt.Sprintf("  all: VM %d", s.vmsBegun)
	if s.vms > 0 {
		line += fmt.Sprintf(" of %d", s.vms)
	}
	line += fmt.Sprintf(", %s of %s checked", size(done), size(s.known))
	elapsed := now.Sub(s.started).Seconds()
	if elapsed <= 0.2 || done <= 0 {
		return line
	}
	bps := float64(done) / elapsed
	line += ", " + size(int64(bps)) + "/s"
	if s.vms == 0 || s.vmsBegun == 0 {
		return line
	}
	total := float64(s.known)
	if s.vmsBegun < s.vms {
		total = total * float64(s.vms) / float64(s.vmsBegun)
	}
	if left := (total - float64(done)) / bps; left >= 0 {
		line += ", ETA " + time.Duration(left*float64(time.Second)).Round(time.Second).String()
	}
	return line
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
