package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
)

// Event is what the server tells the API's watchers of its sessions as
// they run (GET /v1/events, as server-sent events).
type Event struct {
	// Kind is session.started, vm.started, disk.started, disk.progress,
	// disk.finished, vm.finished, session.finished or notice.
	Kind    string    `json:"kind"`
	Time    time.Time `json:"time"`
	Session string    `json:"session"`
	Job     string    `json:"job"`
	VM      string    `json:"vm,omitempty"`
	Disk    *int      `json:"disk,omitempty"`
	Done    int64     `json:"done,omitempty"`  // bytes of the disk handled so far
	Total   int64     `json:"total,omitempty"` // bytes of the disk to handle
	Message string    `json:"message,omitempty"`
	Result  string    `json:"result,omitempty"`
	Error   string    `json:"error,omitempty"`
}

// progressEvery is how often a watcher hears a disk's progress at most.
const progressEvery = 250 * time.Millisecond

// watcherQueue is how many events wait for a slow watcher; beyond, its
// progress events are dropped (never the others: it is cut off instead).
const watcherQueue = 1024

// hub hands events to the watchers.
type hub struct {
	mu       sync.Mutex
	watchers map[*watcher]struct{}
	// stopped is closed when Serve returns: the watches end then, so
	// that the API's shutdown need not wait for them (every `ferry run`
	// that follows a session through the server holds one).
	stopped chan struct{}
}

// ended is closed when the server stops serving (at once when it has
// stopped and not served again).
func (h *hub) ended() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped == nil {
		h.stopped = make(chan struct{})
	}
	return h.stopped
}

// start opens the watches' end again when the server serves after a stop.
func (h *hub) start() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.stopped:
		h.stopped = nil
	default:
	}
}

// stop ends the watches of the server that stops, and those begun before
// it serves again.
func (h *hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped == nil {
		h.stopped = make(chan struct{})
	}
	select {
	case <-h.stopped:
	default:
		close(h.stopped)
	}
}

type watcher struct {
	job, session string
	events       chan Event
	gone         chan struct{} // closed when the hub cut it off
	last         map[string]time.Time
}

// Publish hands an event of a session to the API's watchers. It never
// blocks: progress a watcher has no room for is dropped, and a watcher
// that cannot take the other events is cut off (it may watch again).
func (s *Server) Publish(ev Event) {
	h := &s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers {
		if w.job != "" && w.job != ev.Job || w.session != "" && w.session != ev.Session {
			continue
		}
		if ev.Kind == "disk.progress" {
			key := fmt.Sprint(ev.Session, "/", ev.VM, "/", *ev.Disk)
			if t, ok := w.last[key]; ok && ev.Time.Sub(t) < progressEvery {
				continue
			}
			w.last[key] = ev.Time
		}
		select {
		case w.events <- ev:
		default:
			if ev.Kind != "disk.progress" {
				delete(h.watchers, w)
				close(w.gone)
			}
		}
	}
}

func (h *hub) add(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watchers == nil {
		h.watchers = map[*watcher]struct{}{}
	}
	h.watchers[w] = struct{}{}
}

func (h *hub) remove(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watchers, w)
}

// keepAlive is how often an idle event stream says it is alive.
const keepAlive = 15 * time.Second

// watch serves GET /v1/events: server-sent events of the sessions that
// run, of one job (?job=) or one session (?session=). A watch of one
// session ends when it does; of a session that ended already, it sends
// session.finished at once. Every watch ends when the server stops
// serving, after the sessions it stopped have told their end.
func (s *Server) watch(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "internal", "this connection cannot stream")
		return
	}
	wt := &watcher{job: r.URL.Query().Get("job"), session: r.URL.Query().Get("session"),
		events: make(chan Event, watcherQueue), gone: make(chan struct{}), last: map[string]time.Time{}}
	var ended *catalog.Session
	if wt.session != "" {
		sess, err := s.cat.Session(wt.session)
		if err != nil {
			writeCatalogError(w, err)
			return
		}
		if sess.Result != catalog.ResultRunning {
			ended = sess
		}
	}
	bye := s.hub.ended()
	s.hub.add(wt)
	defer s.hub.remove(wt)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	send := func(ev Event) bool {
		b, _ := json.Marshal(ev)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Kind, b); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	if ended != nil {
		send(Event{Kind: "session.finished", Time: ended.Ended, Session: ended.ID, Job: ended.Job, Result: string(ended.Result), Error: ended.Error})
		return
	}
	fmt.Fprint(w, ": watching\n\n")
	flusher.Flush()
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-wt.gone:
			fmt.Fprint(w, ": too slow: events were lost; watch again\n\n")
			flusher.Flush()
			return
		case <-bye:
			// What was published before the stop is told first.
			for len(wt.events) > 0 {
				if !send(<-wt.events) {
					return
				}
			}
			fmt.Fprint(w, ": the server stops\n\n")
			flusher.Flush()
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": alive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case ev := <-wt.events:
			if !send(ev) {
				return
			}
			if wt.session != "" && ev.Kind == "session.finished" {
				return
			}
		}
	}
}
