package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
)

// Notice is what a webhook is sent: one event.
type Notice struct {
	Event string    `json:"event"` // one of config.WebhookEvents
	Time  time.Time `json:"time"`
	Job   string    `json:"job"`
	VM    string    `json:"vm,omitempty"`
	// Session is the session that ended (session.ended), or the id of the
	// session a VM failed in (vm.failed).
	Session   *catalog.Session `json:"session,omitempty"`
	SessionID string           `json:"session_id,omitempty"`
	Error     string           `json:"error,omitempty"`
	// RPO is the VM's state, for rpo.breached and rpo.recovered.
	RPO *RPONotice `json:"rpo,omitempty"`
	// Plan and Test are the failover plan tested and the result its test
	// kept, for test.passed and test.failed; a test of one VM alone has
	// no Plan, and names the VM's Job and VM.
	Plan string              `json:"plan,omitempty"`
	Test *catalog.TestResult `json:"test,omitempty"`
}

// RPONotice is a VM's RPO state in a Notice.
type RPONotice struct {
	RPOSeconds float64    `json:"rpo_seconds"`
	AgeSeconds float64    `json:"age_seconds"`
	Newest     *time.Time `json:"newest_point,omitempty"`
}

// Webhooks posts notices to the configuration's webhooks: JSON bodies
// signed with HMAC-SHA256 of the webhook's secret (header
// X-Ferry-Signature-256: sha256=<hex>), each from a queue of its own,
// retried with backoff on a network error or an answer 5xx, 408 or 429.
// Send never blocks: a webhook whose queue is full loses the notice, and
// says so in the log.
type Webhooks struct {
	log    hclog.Logger
	client *http.Client
	// Backoff is the wait before the second attempt, doubled before each
	// later one; Attempts bounds them. Set before the first Configure.
	Backoff  time.Duration
	Attempts int

	mu    sync.Mutex
	hooks map[string]*hook
}

type hook struct {
	cfg    config.Webhook
	queue  chan Notice
	cancel context.CancelFunc
	done   chan struct{}
}

// queueSize is how many notices wait for a webhook at most.
const queueSize = 256

// NewWebhooks returns Webhooks with none configured.
func NewWebhooks(log hclog.Logger) *Webhooks {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Webhooks{log: log, client: &http.Client{Timeout: 30 * time.Second}, Backoff: time.Second, Attempts: 6, hooks: map[string]*hook{}}
}

// Configure takes the webhooks of a configuration: a new or changed one
// starts, one gone stops (what its queue held is dropped).
func (w *Webhooks) Configure(hooks []*config.Webhook) {
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := map[string]bool{}
	for _, c := range hooks {
		keep[c.Name] = true
		if h := w.hooks[c.Name]; h != nil {
			if h.cfg.URL == c.URL && h.cfg.Secret == c.Secret && fmt.Sprint(h.cfg.Events) == fmt.Sprint(c.Events) {
				continue
			}
			h.stop()
		}
		ctx, cancel := context.WithCancel(context.Background())
		h := &hook{cfg: *c, queue: make(chan Notice, queueSize), cancel: cancel, done: make(chan struct{})}
		w.hooks[c.Name] = h
		go w.deliver(ctx, h)
	}
	for name, h := range w.hooks {
		if !keep[name] {
			h.stop()
			delete(w.hooks, name)
		}
	}
}

func (h *hook) stop() {
	h.cancel()
	<-h.done
}

// Close stops every webhook.
func (w *Webhooks) Close() { w.Configure(nil) }

// Send queues n for every webhook that wants its event.
func (w *Webhooks) Send(n Notice) {
	if n.Time.IsZero() {
		n.Time = time.Now().UTC()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, h := range w.hooks {
		if !h.cfg.Wants(n.Event) {
			continue
		}
		select {
		case h.queue <- n:
		default:
			w.log.Warn("webhook queue full: notice dropped", "webhook", name, "event", n.Event, "job", n.Job)
		}
	}
}

func (w *Webhooks) deliver(ctx context.Context, h *hook) {
	defer close(h.done)
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-h.queue:
			w.post(ctx, h, n)
		}
	}
}

// post delivers one notice, retrying as the type's doc says.
func (w *Webhooks) post(ctx context.Context, h *hook, n Notice) {
	body, err := json.Marshal(n)
	if err != nil {
		w.log.Error("encode a webhook notice", "webhook", h.cfg.Name, "error", err)
		return
	}
	sig := signature(h.cfg.Secret, body)
	id := newDeliveryID()
	wait := w.Backoff
	for attempt := 1; ; attempt++ {
		retry, err := w.send(ctx, h, n.Event, id, sig, body)
		if err == nil {
			return
		}
		if !retry || attempt >= w.Attempts {
			w.log.Warn("webhook not delivered", "webhook", h.cfg.Name, "event", n.Event, "job", n.Job, "attempts", attempt, "error", err)
			return
		}
		w.log.Debug("webhook delivery failed; trying again", "webhook", h.cfg.Name, "event", n.Event, "attempt", attempt, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// send makes one attempt; retry says whether another may succeed.
func (w *Webhooks) send(ctx context.Context, h *hook, event, id, sig string, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ferry-server")
	req.Header.Set("X-Ferry-Event", event)
	req.Header.Set("X-Ferry-Delivery", id)
	req.Header.Set("X-Ferry-Signature-256", sig)
	resp, err := w.client.Do(req)
	if err != nil {
		return true, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c >= 500 || c == http.StatusRequestTimeout || c == http.StatusTooManyRequests:
		return true, fmt.Errorf("answered %d", c)
	default:
		return false, fmt.Errorf("answered %d", c)
	}
}

func newDeliveryID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Notices turns what a server sees into webhook notices: Ended, Alarm and
// Tested are a Server's hooks.
type Notices struct{ W *Webhooks }

// Ended sends session.ended, and vm.failed for each VM that failed.
func (n Notices) Ended(job string, s *catalog.Session, err error) {
	note := Notice{Event: "session.ended", Job: job, Session: s}
	if err != nil {
		note.Error = err.Error()
	}
	n.W.Send(note)
	if s == nil {
		return
	}
	for _, vm := range s.VMs {
		if vm.Result == catalog.ResultFailed {
			n.W.Send(Notice{Event: "vm.failed", Job: job, VM: vm.VM, SessionID: s.ID, Error: vm.Error})
		}
	}
}

// Alarm sends rpo.breached or rpo.recovered.
func (n Notices) Alarm(a RPOAlarm) {
	event := "rpo.recovered"
	if a.Breached {
		event = "rpo.breached"
	}
	n.W.Send(Notice{Event: event, Job: a.Job, VM: a.VM, RPO: &RPONotice{RPOSeconds: a.RPO.Seconds(), AgeSeconds: a.Age.Seconds(), Newest: a.Newest}})
}

// Tested sends test.passed, or test.failed with the test's error: of a
// failover plan (Plan), or of one VM tested alone (Job and VM).
func (n Notices) Tested(t *PlanTest, err error) {
	note := Notice{Event: "test.passed", Plan: t.Plan, Job: t.Job, VM: t.VM, Test: &t.TestResult}
	if err != nil {
		note.Event, note.Error = "test.failed", err.Error()
	}
	n.W.Send(note)
}

// Verify checks a body against its X-Ferry-Signature-256 header: what a
// receiver does (and the tests).
func Verify(secret string, body []byte, header string) bool {
	return hmac.Equal([]byte(signature(secret, body)), []byte(header))
}

// signature is the X-Ferry-Signature-256 of body: sha256=<hex HMAC>.
func signature(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
