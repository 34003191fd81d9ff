package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/recovery"
	"github.com/ferry-dr/ferry/scheduler"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Runner runs one session of a job until it ends or ctx is cancelled, as
// `ferry run` does (engine.Engine.Run). It calls began with the session's
// id once the session has begun (the engine's SessionStarted), so that the
// server can tell who asked for the run which session to follow; a run
// that ends before its session begins never calls it.
type Runner func(ctx context.Context, job *config.Job, began func(session string)) (*catalog.Session, error)

// Options tune a Server.
type Options struct {
	// MaxSessions is how many sessions run at once, of all jobs; a run
	// that falls due while they all run waits for one to end. 0 means
	// DefaultMaxSessions.
	MaxSessions int
	// SkipMissed turns off the run at start of a job whose run fell due
	// while no server ran (by default it runs once, whatever the number of
	// runs missed), and the test at start of a plan whose scheduled test
	// did.
	SkipMissed bool
	// RPOEvery is how often the RPO of every job is checked, besides after
	// each session; 0 means a minute.
	RPOEvery time.Duration
	// KeepSessions is how long the catalog keeps a session after it ended
	// (the last and the last successful of each job stay); 0 keeps them
	// all. Old ones are deleted at start and every hour.
	KeepSessions time.Duration
}

// DefaultMaxSessions is how many sessions run at once unless told.
const DefaultMaxSessions = 4

// Server runs the jobs of a configuration at their schedules: one session
// of a job at a time (a run that falls due while its last one runs is
// queued once, never stacked), at most Options.MaxSessions at once. It
// watches every job's RPO. It is safe for concurrent use.
type Server struct {
	run  Runner
	cat  *catalog.Catalog
	log  hclog.Logger
	opts Options
	// Ended is called after every session, from the session's goroutine;
	// nil does nothing. Set before Serve.
	Ended func(job string, s *catalog.Session, err error)
	// Alarm is called when a VM's RPO is breached or the breach ends;
	// nil does nothing. Set before Serve.
	Alarm func(a RPOAlarm)
	// Failover fails VMs over for the API; nil refuses. Set before Serve.
	Failover FailoverFunc
	// Failback fails VMs back for the API (one VM's, or a plan's); nil
	// refuses. Set before Serve.
	Failback FailbackFunc
	// Tests runs the test VMs of test failovers for the API (the
	// engine's); nil refuses tests. Set before Serve.
	Tests recovery.Tests
	// Tested is called after each test the server ran, of a failover
	// plan (asked through the API, or at the plan's test_schedule) or of
	// one VM (asked through the API), from
	// the test's goroutine, with the test and its error; nil does
	// nothing. Set before Serve.
	Tested func(t *PlanTest, err error)
	// Plan works out the plans of jobs for the API; nil refuses. Set
	// before Serve.
	Plan PlanFunc
	// Controller is who this server is, as its claim on the catalog's
	// jobs says (the status's scheduled_by). Set before Serve.
	Controller catalog.Controller
	// Ready is called by Serve once it knows the configuration's jobs
	// and has resumed the runs queued before it started, before it
	// schedules anything: an API that begins to answer there never
	// finds a job of the configuration unknown. Nil does nothing. Set
	// before Serve.
	Ready func()

	slots chan struct{} // one value per slot in use
	wake  chan struct{}
	hub   hub

	// slotq are the runs waiting for a slot, in the order they began to
	// wait: a slot that frees goes to the first. Guarded by mu.
	slotq []*slotWaiter

	mu       sync.Mutex
	jobs     map[string]*job
	plans    map[string]*config.FailoverPlan // the configuration's, by name
	dir      string                          // the configuration folder
	started  time.Time
	sessions sync.WaitGroup
	serving  bool
	ctx      context.Context          // Serve's, while it runs
	testing  map[string]bool          // the plans under test
	tests    map[string]*testSchedule // the plans with a test_schedule
	testRuns sync.WaitGroup           // the scheduled tests that run
	rpo      map[rpoKey]*RPOState
}

// job is a job as the server schedules it.
type job struct {
	cfg      *config.Job
	next     time.Time // the next run due; zero: on demand only
	running  bool      // a session runs or waits for a slot, or a failover runs
	waiting  bool      // for a slot
	queued   bool      // another run is due once this one ends
	cur      *run      // the run under way; nil when none, or a failover
	removed  bool      // gone from the configuration
	owed     bool      // the catalog records a run owed (catalog.QueuedRun)
	last     *catalog.Session
	lastErr  error
	lastDone time.Time
}

// run is one run of a job, from its start until its session ends.
type run struct {
	session string // its session's id, once begun
	// keep is set when the run is recorded as owed in the catalog until
	// its session begins: a run queued, asked, or waiting for a slot. A
	// scheduled run that begins at once is not: the missed-run rule
	// covers it.
	keep bool
	err  error // why it ended before its session began
	// settled is closed once the session began, the run waits for a
	// slot, or it ended: what RunNow waits for to answer.
	settled chan struct{}
}

// slotWaiter is a run waiting for a session slot.
type slotWaiter struct {
	j   *job
	got chan struct{} // closed when the slot is its
}

// Why a run starts: said in the log, and kept with a run owed.
const (
	whySchedule = "schedule"
	whyMissed   = "missed"
	whyAsked    = "asked"
	whyQueued   = "queued"
	whyRestart  = "queued before the server stopped"
)

// settle closes r.settled once. Callers hold s.mu.
func (r *run) settle() {
	select {
	case <-r.settled:
	default:
		close(r.settled)
	}
}

// New returns a server that runs sessions with run and reads the catalog
// cat (sessions, restore points).
func New(run Runner, cat *catalog.Catalog, log hclog.Logger, opts Options) *Server {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	if opts.RPOEvery <= 0 {
		opts.RPOEvery = time.Minute
	}
	return &Server{run: run, cat: cat, log: log, opts: opts,
		slots: make(chan struct{}, opts.MaxSessions), wake: make(chan struct{}, 1),
		jobs: map[string]*job{}, rpo: map[rpoKey]*RPOState{}}
}

// Serve schedules the jobs of cfg until ctx ends, then stops the sessions
// that run (as Ctrl-C stops `ferry run`) and returns once they ended.
func (s *Server) Serve(ctx context.Context, cfg *config.Config) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("the server already serves")
	}
	s.serving, s.ctx, s.started = true, ctx, time.Now()
	s.mu.Unlock()
	s.hub.start()
	s.Reload(cfg)
	s.resume(ctx)
	if s.Ready != nil {
		s.Ready()
	}
	s.missed(ctx)
	s.missedTests(ctx)
	rpoTick := time.NewTicker(s.opts.RPOEvery)
	defer rpoTick.Stop()
	s.checkRPO()
	expireTick := time.NewTicker(time.Hour)
	defer expireTick.Stop()
	s.expire()
	for {
		timer, stop := s.due(ctx)
		select {
		case <-ctx.Done():
			stop()
			s.log.Info("stopping: no new sessions or tests; waiting for the running ones to stop")
			s.sessions.Wait()
			s.testRuns.Wait()
			s.mu.Lock()
			s.serving, s.ctx = false, nil
			s.mu.Unlock()
			s.hub.stop()
			return nil
		case <-timer:
		case <-s.wake:
		case <-rpoTick.C:
			s.checkRPO()
		case <-expireTick.C:
			s.expire()
		}
		stop()
	}
}

// Reload takes a new configuration: a job's next run follows its schedule
// now, a new job is scheduled, a job gone from it is not scheduled any
// more (a session of it that runs ends as it would; its replicas stay);
// its failover plans replace the old ones, and a plan's changed
// test_schedule applies from now.
func (s *Server) Reload(cfg *config.Config) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plans, s.dir = cfg.FailoverPlans, cfg.Dir
	s.reloadTests(cfg.FailoverPlans, now)
	for name, j := range s.jobs {
		if _, ok := cfg.Jobs[name]; !ok {
			if j.queued {
				s.log.Info("job removed from the configuration: its queued run is dropped", "job", name)
			}
			j.removed, j.queued, j.next = true, false, time.Time{}
			s.persist(j, "")
			if !j.running {
				delete(s.jobs, name)
			}
			s.log.Info("job removed from the configuration: no longer scheduled", "job", name)
		}
	}
	for name, c := range cfg.Jobs {
		j := s.jobs[name]
		if j == nil {
			j = &job{}
			s.jobs[name] = j
		}
		old := j.cfg
		j.cfg, j.removed = c, false
		if old == nil || old.Schedule.String() != c.Schedule.String() || !sameZone(old.Schedule, c.Schedule) {
			j.next = next(c.Schedule, now)
		}
	}
	s.poke()
}

func sameZone(a, b scheduler.Schedule) bool {
	return a.Location().String() == b.Location().String()
}

// next is the first run of sched after t; zero for a job run on demand.
func next(sched scheduler.Schedule, t time.Time) time.Time {
	if sched.IsZero() {
		return time.Time{}
	}
	return sched.Next(t)
}

// resume starts the runs the catalog says are owed (queued, asked, or
// waiting for a slot when the last server stopped), in the order they
// were queued, each once. The run of a job the configuration no longer
// has is dropped.
func (s *Server) resume(ctx context.Context) {
	owed, err := s.cat.QueuedRuns()
	if err != nil {
		s.log.Error("read the runs queued before the server stopped: they do not run", "error", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range owed {
		j := s.jobs[q.Job]
		if j == nil {
			s.log.Info("a run queued before the server stopped is dropped: the job is no longer in the configuration", "job", q.Job, "queued", q.Queued.Format(time.RFC3339))
			if err := s.cat.UnqueueRun(q.Job); err != nil {
				s.log.Warn("forget the dropped run", "job", q.Job, "error", err)
			}
			continue
		}
		s.log.Info("a run queued before the server stopped: running it now", "job", q.Job, "queued", q.Queued.Format(time.RFC3339), "why", q.Why)
		j.owed = true
		s.start(ctx, j, whyRestart)
	}
}

// persist brings the catalog's record of the run owed to j up to date: a
// run is owed while one is queued, or while the run under way has not
// begun its session and is kept (asked, queued, or waiting for a slot).
// While the server stops nothing changes: what is owed stays recorded for
// the next start. Callers hold s.mu.
func (s *Server) persist(j *job, why string) {
	if s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	owed := j.queued || j.cur != nil && j.cur.session == "" && j.cur.keep
	if owed == j.owed {
		return
	}
	name := j.cfg.Name
	var err error
	if owed {
		err = s.cat.QueueRun(name, why)
	} else {
		err = s.cat.UnqueueRun(name)
	}
	if err != nil {
		s.log.Warn("record the run owed to the job: a restart meanwhile would not know it", "job", name, "owed", owed, "error", err)
		return
	}
	j.owed = owed
}

// missed runs, once, each scheduled job whose run fell due since its last
// session began while no server ran it. A job whose queued run resumed
// (resume) runs only that.
func (s *Server) missed(ctx context.Context) {
	if s.opts.SkipMissed {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.jobs)) {
		j := s.jobs[name]
		if j.cfg.Schedule.IsZero() || j.running {
			continue
		}
		last, err := s.cat.Sessions(name, 1)
		if err != nil {
			s.log.Warn("read the job's last session", "job", name, "error", err)
			continue
		}
		if len(last) == 0 {
			continue // never run: its first run is at its schedule
		}
		if due := j.cfg.Schedule.Next(last[0].Started); !due.After(now) {
			s.log.Info("a run fell due while no server ran: running it now", "job", name, "due", due.Format(time.RFC3339), "last_session", last[0].ID)
			s.start(ctx, j, whyMissed)
		}
	}
}

// due starts the runs and tests that fell due and returns a timer for the
// next one.
func (s *Server) due(ctx context.Context) (<-chan time.Time, func()) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var earliest time.Time
	for _, name := range slices.Sorted(maps.Keys(s.jobs)) {
		j := s.jobs[name]
		if !j.next.IsZero() && !j.next.After(now) {
			switch {
			case j.waiting:
				// The run waiting for a slot has not begun its session: it
				// is the run due.
			case j.running:
				if !j.queued {
					s.log.Info("run due while the last one runs: queued", "job", name)
				}
				j.queued = true
				s.persist(j, whySchedule)
			default:
				s.start(ctx, j, whySchedule)
			}
			j.next = j.cfg.Schedule.Next(now)
		}
		if !j.next.IsZero() && (earliest.IsZero() || j.next.Before(earliest)) {
			earliest = j.next
		}
	}
	if t := s.dueTests(ctx, now); !t.IsZero() && (earliest.IsZero() || t.Before(earliest)) {
		earliest = t
	}
	if earliest.IsZero() {
		return nil, func() {}
	}
	t := time.NewTimer(earliest.Sub(now))
	return t.C, func() { t.Stop() }
}

// poke wakes Serve's loop to look at the jobs again.
func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// ErrUnknownJob is returned by RunNow for a job the configuration does
// not declare.
var ErrUnknownJob = errors.New("no such job")

// Asked is what a run asked of the server became (RunNow): the answer of
// POST /v1/jobs/{name}/run.
type Asked struct {
	Job string `json:"job"`
	// Started is set when the run asked is the job's next session: it
	// began (Session), or it waits for a session slot (WaitingForSlot).
	Started bool `json:"started"`
	// Queued is set when a session (or a failover) of the job runs: the
	// run starts once that ends. It is queued once, however often asked.
	Queued bool `json:"queued"`
	// WaitingForSlot is set when the run waits for one of the
	// Options.MaxSessions slots; it begins its session when it gets one.
	WaitingForSlot bool `json:"waiting_for_slot,omitempty"`
	// Session is the id of the run's session, when it began already.
	Session string `json:"session,omitempty"`
	// After is, when Session is not known yet, the job's session the run
	// comes after: the one that runs, or (behind a failover, or waiting
	// for a slot) the job's last one; "" when the job never had one. The
	// run's session is the first of the job's sessions begun after it.
	After string `json:"after,omitempty"`
}

// RunNow runs a job now, or once its running session (or failover) ends:
// queued once, never stacked. A run asked while the job's run waits for a
// slot is that run. When the run starts now, RunNow waits until its
// session began (or the run waits for a slot) to say which session it is;
// a run that ends before its session began is an error.
func (s *Server) RunNow(ctx context.Context, name string) (Asked, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	asked := Asked{Job: name}
	var mine *run // the run started for this ask
	for {
		j := s.jobs[name]
		if j == nil || j.removed {
			return asked, fmt.Errorf("%w %q", ErrUnknownJob, name)
		}
		if s.ctx == nil || s.ctx.Err() != nil {
			return asked, fmt.Errorf("the server is stopping: %w", errdefs.ErrUnavailable)
		}
		r := j.cur
		switch {
		case mine != nil && (r != mine || mine.session != ""):
			if mine.session == "" {
				return asked, mine.failedToBegin(name)
			}
			asked.Session = mine.session
			return asked, nil
		case mine != nil && j.waiting:
			asked.WaitingForSlot, asked.After = true, s.lastSession(name)
			return asked, nil
		case !j.running:
			s.start(s.ctx, j, whyAsked)
			mine, asked.Started = j.cur, true
		case r == nil: // a failover runs
			j.queued, asked.Queued, asked.After = true, true, s.lastSession(name)
			s.persist(j, whyAsked)
			return asked, nil
		case j.waiting:
			// The run waiting for a slot has not begun its session: it
			// is the run asked.
			asked.Started, asked.WaitingForSlot, asked.After = true, true, s.lastSession(name)
			return asked, nil
		case r.session != "":
			j.queued, asked.Queued, asked.After = true, true, r.session
			s.persist(j, whyAsked)
			return asked, nil
		}
		// A run has just started (this ask's, or another that has not
		// begun its session yet): wait until its session began, it waits
		// for a slot, or it ended; then look again.
		settled := j.cur.settled
		s.mu.Unlock()
		select {
		case <-settled:
		case <-ctx.Done():
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			return asked, ctx.Err()
		}
	}
}

// failedToBegin is the error of a run that ended before its session
// began.
func (r *run) failedToBegin(job string) error {
	if r.err == nil {
		return fmt.Errorf("job %q: the run ended before its session began", job)
	}
	return fmt.Errorf("job %q: the run ended before its session began: %w", job, r.err)
}

// lastSession is the id of the job's newest session; "" when it has
// none, or the catalog cannot say (the asker then follows the job's next
// session).
func (s *Server) lastSession(job string) string {
	last, err := s.cat.Sessions(job, 1)
	if err != nil {
		s.log.Warn("read the job's last session", "job", job, "error", err)
	}
	if len(last) == 0 {
		return ""
	}
	return last[0].ID
}

// start runs a session of j in the background, in a slot free now or
// once one frees for it. Callers hold s.mu.
func (s *Server) start(ctx context.Context, j *job, why string) {
	if ctx.Err() != nil {
		return
	}
	j.running, j.queued = true, false
	r := &run{settled: make(chan struct{}), keep: why != whySchedule && why != whyMissed}
	j.cur = r
	cfg := j.cfg
	var w *slotWaiter
	select {
	case s.slots <- struct{}{}:
	default:
		w = &slotWaiter{j: j, got: make(chan struct{})}
		s.slotq = append(s.slotq, w)
		j.waiting, r.keep = true, true
		r.settle()
		s.log.Info("every session slot is taken: the run waits for one", "job", cfg.Name, "slots", cap(s.slots))
	}
	s.persist(j, why)
	s.sessions.Add(1)
	go func() {
		defer s.sessions.Done()
		if w != nil {
			select {
			case <-w.got:
			case <-ctx.Done():
				s.mu.Lock()
				if !s.unwait(w) {
					s.release() // the slot came as the server stopped
				}
				j.running, j.waiting, j.cur = false, false, nil
				r.err = ctx.Err()
				s.mu.Unlock()
				return
			}
		}
		s.log.Info("session starts", "job", cfg.Name, "why", why)
		began := func(session string) {
			s.mu.Lock()
			defer s.mu.Unlock()
			r.session = session
			r.settle()
			s.persist(j, why)
		}
		sess, err := s.run(ctx, cfg, began)
		s.ended(ctx, j, cfg.Name, r, sess, err)
	}()
}

// release frees a session slot: it goes to the run that waits longest
// for one, if any. Callers hold s.mu.
func (s *Server) release() {
	if len(s.slotq) == 0 {
		<-s.slots
		return
	}
	w := s.slotq[0]
	s.slotq = s.slotq[1:]
	w.j.waiting = false
	close(w.got)
}

// unwait takes w out of the runs waiting for a slot; false when it is not
// there any more (a slot went to it). Callers hold s.mu.
func (s *Server) unwait(w *slotWaiter) bool {
	i := slices.Index(s.slotq, w)
	if i < 0 {
		return false
	}
	s.slotq = slices.Delete(s.slotq, i, i+1)
	return true
}

// ended records the end of r, a run of j (named name), and starts the run
// queued meanwhile. The name is the one the run began with: a reload may
// replace j.cfg meanwhile, under s.mu.
func (s *Server) ended(ctx context.Context, j *job, name string, r *run, sess *catalog.Session, err error) {
	switch {
	case err != nil && ctx.Err() != nil:
		s.log.Info("session stopped with the server", "job", name, "error", err)
	case err != nil:
		s.log.Error("session failed", "job", name, "error", err)
	case sess != nil:
		s.log.Info("session ended", "job", name, "session", sess.ID, "result", sess.Result)
	}
	// The job's state first, so that whoever hears of the end (Ended)
	// finds the job no longer running.
	s.mu.Lock()
	s.release()
	if r.session == "" && sess != nil {
		r.session = sess.ID // a Runner that did not say when it began
	}
	r.err = err
	r.settle()
	j.running, j.cur = false, nil
	j.last, j.lastErr, j.lastDone = sess, err, time.Now()
	switch {
	case j.removed:
		s.persist(j, "")
		delete(s.jobs, name)
	case j.queued && ctx.Err() == nil:
		s.start(ctx, j, whyQueued)
	default:
		s.persist(j, "")
	}
	s.mu.Unlock()
	if s.Ended != nil {
		s.Ended(name, sess, err)
	}
	s.checkRPO()
}

// expire deletes the sessions older than Options.KeepSessions.
func (s *Server) expire() {
	if s.opts.KeepSessions <= 0 {
		return
	}
	n, err := s.cat.ExpireSessions(time.Now().Add(-s.opts.KeepSessions))
	switch {
	case err != nil:
		s.log.Warn("delete old sessions", "error", err)
	case n > 0:
		s.log.Info("deleted old sessions", "sessions", n, "kept_for", s.opts.KeepSessions)
	}
}
