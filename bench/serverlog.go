package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/scheduler"
)

// The server's log lines the scenario reads (core/server).
const (
	msgStarts   = "session starts"
	msgSlot     = "every session slot is taken: the run waits for one"
	msgEnded    = "session ended"
	msgFailed   = "session failed"
	msgStopped  = "session stopped with the server"
	whySchedule = "schedule"
	whyQueued   = "queued"
)

// serverEvent is one JSON line of the server's log.
type serverEvent struct {
	Time    time.Time
	Message string
	Job     string
	Why     string
	Result  string
	Error   string
}

// parseServerLine reads a line of the server's JSON log (hclog); false
// for a line that is not JSON (the server's banner) or has no time.
func parseServerLine(line []byte) (serverEvent, bool) {
	var l struct {
		Time    string `json:"@timestamp"`
		Message string `json:"@message"`
		Job     string `json:"job"`
		Why     string `json:"why"`
		Result  string `json:"result"`
		Error   string `json:"error"`
	}
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &l) != nil {
		return serverEvent{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, l.Time)
	if err != nil {
		return serverEvent{}, false
	}
	return serverEvent{Time: t, Message: l.Message, Job: l.Job, Why: l.Why, Result: l.Result, Error: l.Error}, true
}

// ended reports whether e ends a session, whatever its result.
func (e serverEvent) ended() bool {
	return e.Message == msgEnded || e.Message == msgFailed || e.Message == msgStopped
}

// analyzeSessions matches the sessions of the log with the due times of
// each job's schedule after ready (the server's start): each "session
// starts" belongs to the latest due time at or before it. Of each job the
// first runs due times must have a session; a session for which the
// job's "slot is taken" line came between its due time and its start
// waited for a slot. It returns the figures and the first failures.
func analyzeSessions(events []serverEvent, schedules map[string]scheduler.Schedule, ready time.Time, runs int) (ServerSessions, []string) {
	st := ServerSessions{Expected: len(schedules) * runs}
	dues := map[string][]time.Time{} // each job's due times after ready, as far as needed
	taken := map[string][]bool{}     // whether a session matched each
	slotAt := map[string]time.Time{} // each job's last "slot is taken" line
	waves := map[time.Time]int{}     // jobs due at each instant
	dueUpTo := func(job string, t time.Time) []time.Time {
		sched := schedules[job]
		ds := dues[job]
		for {
			from := ready
			if len(ds) > 0 {
				from = ds[len(ds)-1]
			}
			if len(ds) >= runs && from.After(t) {
				break
			}
			next := sched.Next(from)
			if next.IsZero() {
				break
			}
			ds = append(ds, next)
			taken[job] = append(taken[job], false)
			if len(ds) <= runs {
				waves[next]++
			}
		}
		dues[job] = ds
		return ds
	}
	for job := range schedules {
		dueUpTo(job, ready)
	}
	var delays, waited []time.Duration
	var waitedAt, endAt []time.Time
	var latest time.Duration
	var failures []string
	for _, e := range events {
		switch {
		case e.Message == msgSlot:
			slotAt[e.Job] = e.Time
		case e.Message == msgStarts:
			st.Started++
			if e.Why == whyQueued {
				st.Queued++
			}
			if _, ok := schedules[e.Job]; !ok || (e.Why != whySchedule && e.Why != whyQueued) {
				st.Unexpected++
				continue
			}
			ds := dueUpTo(e.Job, e.Time)
			i := sort.Search(len(ds), func(i int) bool { return ds[i].After(e.Time) }) - 1
			if i < 0 || taken[e.Job][i] {
				st.Unexpected++
				continue
			}
			taken[e.Job][i] = true
			delay := e.Time.Sub(ds[i])
			if at, ok := slotAt[e.Job]; ok && !at.Before(ds[i]) && !at.After(e.Time) {
				st.Waited++
				waited = append(waited, delay)
				waitedAt = append(waitedAt, e.Time)
				continue
			}
			if delay > latest || len(delays) == 0 {
				latest = delay
				st.Latest = fmt.Sprintf("%s due %s", e.Job, ds[i].UTC().Format("15:04:05"))
			}
			delays = append(delays, delay)
		case e.ended():
			st.Ended++
			endAt = append(endAt, e.Time)
			switch {
			case e.Message == msgStopped:
				st.Stopped++
			case e.Message == msgFailed || e.Result == "failed":
				st.Failed++
				what := e.Error
				if what == "" {
					what = "session ended with result " + e.Result
				}
				if len(failures) < 5 {
					failures = append(failures, e.Job+": "+what)
				}
			case e.Result == "warning":
				st.Warnings++
			default:
				st.Succeeded++
			}
		}
	}
	for job := range schedules {
		for i, ok := range taken[job] {
			if i < runs && !ok {
				st.Missed++
			}
		}
	}
	for _, n := range waves {
		st.Waves = max(st.Waves, n)
	}
	st.Delay, st.WaitedDelay, st.Handoff = spreadOf(delays), spreadOf(waited), spreadOf(handoffs(waitedAt, endAt))
	return st, failures
}

// handoffs is, for each start, how far it is from the nearest end (ends
// sorted); none when no session ended.
func handoffs(starts, ends []time.Time) []time.Duration {
	if len(ends) == 0 {
		return nil
	}
	var out []time.Duration
	for _, t := range starts {
		i := sort.Search(len(ends), func(i int) bool { return !ends[i].Before(t) })
		best := time.Duration(1<<63 - 1)
		if i < len(ends) {
			best = ends[i].Sub(t)
		}
		if i > 0 {
			best = min(best, t.Sub(ends[i-1]))
		}
		out = append(out, best)
	}
	return out
}

// apiCall is one call of the API: when it was made and how long its
// answer took.
type apiCall struct {
	At      time.Time
	Latency time.Duration
}

// splitBusy sorts the calls' latencies into those made while at least
// one session ran, by the log's "session starts" and ends, and the
// others.
func splitBusy(calls []apiCall, events []serverEvent) (busy, idle []time.Duration) {
	type span struct{ from, to time.Time }
	var spans []span
	running := 0
	for _, e := range events {
		switch {
		case e.Message == msgStarts:
			if running == 0 {
				spans = append(spans, span{from: e.Time})
			}
			running++
		case e.ended() && running > 0:
			running--
			if running == 0 {
				spans[len(spans)-1].to = e.Time
			}
		}
	}
	if running > 0 {
		spans[len(spans)-1].to = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	for _, c := range calls {
		i := sort.Search(len(spans), func(i int) bool { return spans[i].to.After(c.At) })
		if i < len(spans) && !c.At.Before(spans[i].from) {
			busy = append(busy, c.Latency)
		} else {
			idle = append(idle, c.Latency)
		}
	}
	return busy, idle
}

// serverLog is the server's standard error as it runs: it copies every
// byte to w (the kept log file) and reads the lines as they come: the
// banner with the API's address, and the JSON events. It is safe for
// concurrent use.
type serverLog struct {
	w io.Writer

	mu     sync.Mutex
	part   []byte // a line not ended yet
	events []serverEvent
	ends   map[string]int // sessions ended, per job
	last   []string       // the last lines, for an error message
	url    string
	ready  chan struct{} // closed when the banner with the address came
}

func newServerLog(w io.Writer) *serverLog {
	return &serverLog{w: w, ends: map[string]int{}, ready: make(chan struct{})}
}

// bannerAPI is in the line the server prints once it listens:
// "ferry server: N jobs; API on http://ADDR; stop with Ctrl-C or SIGTERM".
const bannerAPI = "; API on "

func (l *serverLog) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.line(bytes.TrimSpace(l.part[:i]))
		l.part = l.part[i+1:]
	}
	return n, err
}

// line reads one line. Callers hold l.mu.
func (l *serverLog) line(line []byte) {
	if len(l.last) == serverLogTail {
		l.last = l.last[1:]
	}
	l.last = append(l.last, string(line))
	if e, ok := parseServerLine(line); ok {
		l.events = append(l.events, e)
		if e.ended() {
			l.ends[e.Job]++
		}
		return
	}
	if _, rest, ok := strings.Cut(string(line), bannerAPI); ok && l.url == "" {
		l.url, _, _ = strings.Cut(rest, ";")
		close(l.ready)
	}
}

// address is the API's base URL, once ready is closed.
func (l *serverLog) address() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.url
}

// ended is how many jobs of names have had at least runs sessions end,
// and how many sessions ended in all.
func (l *serverLog) ended(names []string, runs int) (jobs, sessions int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range names {
		if l.ends[name] >= runs {
			jobs++
		}
		sessions += l.ends[name]
	}
	return jobs, sessions
}

// snapshot is a copy of the events read so far.
func (l *serverLog) snapshot() []serverEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]serverEvent(nil), l.events...)
}

// serverLogTail is how many of the last lines an error message quotes.
const serverLogTail = 8

// tail is the last lines of the log, for an error message.
func (l *serverLog) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append(l.last[:len(l.last):len(l.last)], string(l.part)), "\n")
}
