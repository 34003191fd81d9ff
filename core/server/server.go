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
	"github.com/ferry-dr/ferry/scheduler"
)

// Runner runs one session of a job until it ends or ctx is cancelled, as
// `ferry run` does (engine.Engine.Run).
type Runner func(ctx context.Context, job *config.Job) (*catalog.Session, error)

// Options tune a Server.
type Options struct {
	// MaxSessions is how many sessions run at once, of all jobs; a run
	// that falls due while they all run waits for one to end. 0 means
	// DefaultMaxSessions.
	MaxSessions int
	// SkipMissed turns off the run at start of a job whose run fell due
	// while no server ran (by default it runs once, whatever the number of
	// runs missed).
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
	// Plan works out the plans of jobs for the API; nil refuses. Set
	// before Serve.
	Plan PlanFunc
	// Controller is who this server is, as its claim on the catalog's
	// jobs says (the status's scheduled_by). Set before Serve.
	Controller catalog.Controller

	slots chan struct{}
	wake  chan struct{}
	hub   hub

	mu       sync.Mutex
	jobs     map[string]*job
	started  time.Time
	sessions sync.WaitGroup
	serving  bool
	ctx      context.Context // Serve's, while it runs
	rpo      map[rpoKey]*RPOState
}

// job is a job as the server schedules it.
type job struct {
	cfg      *config.Job
	next     time.Time // the next run due; zero: on demand only
	running  bool      // a session runs or waits for a slot
	waiting  bool      // for a slot
	queued   bool      // another run is due once this one ends
	removed  bool      // gone from the configuration
	last     *catalog.Session
	lastErr  error
	lastDone time.Time
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
	s.Reload(cfg)
	s.missed(ctx)
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
			s.log.Info("stopping: no new sessions; waiting for the running ones to stop")
			s.sessions.Wait()
			s.mu.Lock()
			s.serving, s.ctx = false, nil
			s.mu.Unlock()
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
// more (a session of it that runs ends as it would; its replicas stay).
func (s *Server) Reload(cfg *config.Config) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, j := range s.jobs {
		if _, ok := cfg.Jobs[name]; !ok {
			j.removed, j.queued, j.next = true, false, time.Time{}
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

// missed runs, once, each scheduled job whose run fell due since its last
// session began while no server ran it.
func (s *Server) missed(ctx context.Context) {
	if s.opts.SkipMissed {
		return
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(s.jobs)) {
		j := s.jobs[name]
		if j.cfg.Schedule.IsZero() {
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
			s.start(ctx, j, "missed")
		}
	}
}

// due starts the runs that fell due and returns a timer for the next one.
func (s *Server) due(ctx context.Context) (<-chan time.Time, func()) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var earliest time.Time
	for _, name := range slices.Sorted(maps.Keys(s.jobs)) {
		j := s.jobs[name]
		if !j.next.IsZero() && !j.next.After(now) {
			if j.running {
				if !j.queued {
					s.log.Info("run due while the last one runs: queued", "job", name)
				}
				j.queued = true
			} else {
				s.start(ctx, j, "schedule")
			}
			j.next = j.cfg.Schedule.Next(now)
		}
		if !j.next.IsZero() && (earliest.IsZero() || j.next.Before(earliest)) {
			earliest = j.next
		}
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

// RunNow runs a job now, or once its running session ends (queued once).
// It reports whether the run starts now.
func (s *Server) RunNow(name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[name]
	if j == nil || j.removed {
		return false, fmt.Errorf("%w %q", ErrUnknownJob, name)
	}
	if s.ctx == nil || s.ctx.Err() != nil {
		return false, errors.New("the server is stopping")
	}
	if j.running {
		j.queued = true
		return false, nil
	}
	s.start(s.ctx, j, "asked")
	return true, nil
}

// start runs a session of j in the background. Callers hold s.mu.
func (s *Server) start(ctx context.Context, j *job, why string) {
	if ctx.Err() != nil {
		return
	}
	j.running, j.queued = true, false
	cfg := j.cfg
	s.sessions.Add(1)
	go func() {
		defer s.sessions.Done()
		select {
		case s.slots <- struct{}{}:
		default:
			s.mu.Lock()
			j.waiting = true
			s.mu.Unlock()
			s.log.Info("every session slot is taken: the run waits for one", "job", cfg.Name, "slots", cap(s.slots))
			select {
			case s.slots <- struct{}{}:
			case <-ctx.Done():
				s.mu.Lock()
				j.running, j.waiting = false, false
				s.mu.Unlock()
				return
			}
			s.mu.Lock()
			j.waiting = false
			s.mu.Unlock()
		}
		s.log.Info("session starts", "job", cfg.Name, "why", why)
		sess, err := s.run(ctx, cfg)
		<-s.slots
		s.ended(ctx, j, sess, err)
	}()
}

// ended records a session's end and starts the run queued meanwhile.
func (s *Server) ended(ctx context.Context, j *job, sess *catalog.Session, err error) {
	name := j.cfg.Name
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
	j.running = false
	j.last, j.lastErr, j.lastDone = sess, err, time.Now()
	if j.removed {
		delete(s.jobs, name)
	} else if j.queued && ctx.Err() == nil {
		s.start(ctx, j, "queued")
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
