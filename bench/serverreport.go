package bench

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// ServerRun is `ferry server` at scale (issue 13): many jobs of a few small
// VMs each on staggered schedules, run by one server for the first runs
// and one full cycle, while the bench reads its log, samples its memory
// and calls its API.
type ServerRun struct {
	Jobs      int   `json:"jobs"`
	VMsPerJob int   `json:"vms_per_job"`
	DiskBytes int64 `json:"disk_bytes"` // each VM's one disk
	DataBytes int64 `json:"data_bytes"` // written into each disk before the first run
	// Every is the schedules' period, Schedules how they are spread
	// within it.
	Every     time.Duration `json:"every_ns"`
	Schedules string        `json:"schedules"`
	// MaxSessions is the server's --max-sessions.
	MaxSessions int `json:"max_sessions"`
	// Runs is how many scheduled sessions of each job the bench waits for:
	// the first runs (full copies) and one full cycle after them.
	Runs         int     `json:"runs_per_job"`
	SetupSeconds float64 `json:"setup_s"`
	// Window is from the server's start to the end of the last session
	// the bench waited for: the figures below are of that time.
	Window   time.Duration  `json:"window_ns"`
	Sessions ServerSessions `json:"sessions"`
	Memory   ServerMemory   `json:"memory"`
	API      APILatency     `json:"api"`
	// Stop is how long the server took to exit after SIGTERM.
	Stop time.Duration `json:"stop_ns"`
	// Failures are the first errors of the sessions that failed.
	Failures []string `json:"failures,omitempty"`
	Log      string   `json:"log,omitempty"` // the server's log, kept with -keep
	Error    string   `json:"error,omitempty"`
}

// ServerSessions is what the server's log says of the sessions.
type ServerSessions struct {
	// Expected is jobs × runs: the scheduled sessions the window holds.
	Expected int `json:"expected"`
	Started  int `json:"started"`
	// Ended counts every session that ended, by result: Succeeded,
	// Warnings, Failed (a failed result, or an error), and Stopped by the
	// server's stop (a later run in flight at the end: not a failure).
	Ended     int `json:"ended"`
	Succeeded int `json:"succeeded"`
	Warnings  int `json:"warnings"`
	Failed    int `json:"failed"`
	Stopped   int `json:"stopped"`
	// Missed are due times of the window with no session; Unexpected are
	// sessions that match no due time, or a second one for a due time.
	Missed     int `json:"missed"`
	Unexpected int `json:"unexpected"`
	// Queued are sessions that started after their job's previous one
	// ended (a run due while it ran); Waited those that waited for a
	// session slot, the server's "slot is taken" line before them.
	Queued int `json:"queued"`
	Waited int `json:"waited_for_slot"`
	// Delay is the start delay (the "session starts" line's time less the
	// due time) of the sessions that did not wait for a slot; WaitedDelay
	// that of those that did.
	Delay       Spread `json:"delay"`
	WaitedDelay Spread `json:"waited_delay"`
	// Handoff is, for each session that waited, the time between its
	// start and the nearest end of a session of any job: the slot it
	// took was freed then (the server frees a slot just before it logs
	// the end, so the start may come first).
	Handoff Spread `json:"slot_handoff"`
	// Latest is the session behind Delay.Max: "JOB due HH:MM:SS".
	Latest string `json:"latest,omitempty"`
	// Waves is how many jobs fell due at the same instant, at most.
	Waves int `json:"largest_wave"`
}

// ServerMemory is the server's memory and CPU during the window.
type ServerMemory struct {
	// Peak is the server process's own peak resident set (VmHWM): the
	// goal's figure. End is its resident set at the end of the window.
	Peak int64 `json:"peak_bytes"`
	End  int64 `json:"end_bytes"`
	// TreeRSS is the largest sum of the resident sets of the server and
	// its plugin processes seen by sampling; TreeHWM the sum of each
	// one's peak (a bound from above, since they need not peak at once).
	TreeRSS int64 `json:"tree_rss_bytes"`
	TreeHWM int64 `json:"tree_hwm_bytes"`
	// Procs are the processes of the tree seen, the server included.
	Procs []ProcPeak `json:"procs,omitempty"`
	// CPU is the server's user and system time in the window; TreeCPU
	// that of the server and its plugin processes (those alive at the
	// window's end); BenchCPU the bench's own (sampling, calling the API,
	// reading the log), which shares the machine with them.
	CPU      time.Duration `json:"cpu_ns"`
	TreeCPU  time.Duration `json:"tree_cpu_ns"`
	BenchCPU time.Duration `json:"bench_cpu_ns"`
	// Every is how often /proc was sampled.
	Every time.Duration `json:"sample_every_ns"`
}

// APILatency is GET /v1/jobs called in a loop during the window.
type APILatency struct {
	Every      time.Duration `json:"every_ns"`
	Requests   int           `json:"requests"`
	Errors     int           `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	// Latency is of every answer; Busy of those to requests made while
	// at least one session ran (the goal's), Idle of the others.
	Latency Spread `json:"latency"`
	Busy    Spread `json:"busy"`
	Idle    Spread `json:"idle"`
}

// Spread is the distribution of some durations.
type Spread struct {
	N   int           `json:"n"`
	P50 time.Duration `json:"p50_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// spreadOf is the nearest-rank percentiles of ds (which it sorts).
func spreadOf(ds []time.Duration) Spread {
	if len(ds) == 0 {
		return Spread{}
	}
	slices.Sort(ds)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(ds))+0.999999) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	return Spread{N: len(ds), P50: rank(0.50), P99: rank(0.99), Max: ds[len(ds)-1]}
}

func (s Spread) String() string {
	if s.N == 0 {
		return "none"
	}
	return fmt.Sprintf("p50 %s, p99 %s, max %s (%d)", ms(s.P50), ms(s.P99), ms(s.Max), s.N)
}

// ms writes a duration for these figures: milliseconds below a second.
func ms(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return secs(d)
}

// The goals of issue 13.
const (
	ServerStartLimit   = 2 * time.Second
	ServerMemoryLimit  = 256 << 20
	ServerAPIP99Limit  = 50 * time.Millisecond
	serverStartName    = "server: sessions start on time"
	serverMemoryName   = "server: memory of the ferry server process"
	serverAPIName      = "server: GET /v1/jobs while sessions run"
	serverSkippedGoals = "skipped (-server=false)"
)

// serverGoals are the server's goals: every session starts within
// ServerStartLimit of its due time, or waits for a slot (the log says so)
// and starts within ServerStartLimit of one's release; none is missed;
// the server process's peak resident set under ServerMemoryLimit; GET
// /v1/jobs, called while sessions run, answers at p99 under
// ServerAPIP99Limit, and no call fails.
func serverGoals(s *ServerRun) []Goal {
	startWant := fmt.Sprintf("≤ %s after its due time, or waiting for a slot", secs(ServerStartLimit))
	memWant := fmt.Sprintf("< %s (its own VmHWM)", FormatBytes(ServerMemoryLimit))
	apiWant := fmt.Sprintf("p99 < %s", ms(ServerAPIP99Limit))
	if s == nil {
		return []Goal{
			{Name: serverStartName, Want: startWant, Measured: serverSkippedGoals, Skipped: true},
			{Name: serverMemoryName, Want: memWant, Measured: serverSkippedGoals, Skipped: true},
			{Name: serverAPIName, Want: apiWant, Measured: serverSkippedGoals, Skipped: true},
		}
	}
	if s.Error != "" {
		return []Goal{
			{Name: serverStartName, Want: startWant, Measured: "not measured"},
			{Name: serverMemoryName, Want: memWant, Measured: "not measured"},
			{Name: serverAPIName, Want: apiWant, Measured: "not measured"},
		}
	}
	ss := s.Sessions
	start := Goal{Name: fmt.Sprintf("%s (%d jobs × %d VMs)", serverStartName, s.Jobs, s.VMsPerJob), Want: startWant,
		Value: ss.Delay.Max.Seconds(), Limit: ServerStartLimit.Seconds()}
	start.Pass = ss.Missed == 0 && ss.Unexpected == 0 && ss.Delay.Max <= ServerStartLimit && ss.Handoff.Max <= ServerStartLimit && ss.Delay.N+ss.Waited > 0
	start.Measured = fmt.Sprintf("max %s, p99 %s of %d; %d waited for a slot (up to %s), each started %s at most from a slot's release",
		ms(ss.Delay.Max), ms(ss.Delay.P99), ss.Delay.N, ss.Waited, ms(ss.WaitedDelay.Max), ms(ss.Handoff.Max))
	if ss.Missed > 0 || ss.Unexpected > 0 {
		start.Measured += fmt.Sprintf("; %d due times without a session, %d sessions without a due time", ss.Missed, ss.Unexpected)
	}
	m := s.Memory
	mem := Goal{Name: serverMemoryName, Want: memWant, Value: float64(m.Peak), Limit: ServerMemoryLimit,
		Pass:     m.Peak > 0 && m.Peak < ServerMemoryLimit,
		Measured: fmt.Sprintf("%s (with its plugin processes %s)", FormatBytes(m.Peak), FormatBytes(m.TreeRSS))}
	a := s.API
	api := Goal{Name: serverAPIName, Want: apiWant, Value: a.Busy.P99.Seconds(), Limit: ServerAPIP99Limit.Seconds(),
		Pass:     a.Busy.N > 0 && a.Errors == 0 && a.Busy.P99 < ServerAPIP99Limit,
		Measured: a.Busy.String() + " while sessions ran"}
	if a.Errors > 0 {
		api.Measured += fmt.Sprintf("; %d of %d failed: %s", a.Errors, a.Requests, a.FirstError)
	}
	return []Goal{start, mem, api}
}

// writeServer writes the server run's figures.
func (r *Report) writeServer(b *strings.Builder) {
	s := r.Server
	if s == nil {
		return
	}
	fmt.Fprintf(b, "\nferry server at scale (issue 13): %d jobs × %d VMs (%s disks, %s of data each), %s, --max-sessions %d, %d runs per job\n",
		s.Jobs, s.VMsPerJob, FormatBytes(s.DiskBytes), FormatBytes(s.DataBytes), s.Schedules, s.MaxSessions, s.Runs)
	if s.Error != "" {
		fmt.Fprintf(b, "  FAILED: %s\n", s.Error)
	}
	for _, f := range s.Failures {
		fmt.Fprintf(b, "  failed session: %s\n", f)
	}
	if s.Window == 0 {
		return
	}
	ss := s.Sessions
	fmt.Fprintf(b, "  setup %.1fs; window %s (the server's start to the last awaited session's end); stop after SIGTERM %s\n",
		s.SetupSeconds, secs(s.Window), secs(s.Stop))
	fmt.Fprintf(b, "  sessions: %d started (%d expected), %d ended: %d success, %d warning, %d failed, %d stopped by the server's stop; %d missed, %d unexpected, %d queued\n",
		ss.Started, ss.Expected, ss.Ended, ss.Succeeded, ss.Warnings, ss.Failed, ss.Stopped, ss.Missed, ss.Unexpected, ss.Queued)
	fmt.Fprintf(b, "  start delay, due time to the \"session starts\" line: %s", ss.Delay)
	if ss.Latest != "" {
		fmt.Fprintf(b, "; the latest %s", ss.Latest)
	}
	fmt.Fprintf(b, "\n  waited for a slot (up to %d jobs due at once): %d, %s; from a slot's release to the start: %s\n", ss.Waves, ss.Waited, ss.WaitedDelay, ss.Handoff)
	m := s.Memory
	fmt.Fprintf(b, "  memory: the server %s peak (VmHWM), %s at the end; with its plugin processes %s (largest sampled sum, every %s), %s summing each one's peak\n",
		FormatBytes(m.Peak), FormatBytes(m.End), FormatBytes(m.TreeRSS), secs(m.Every), FormatBytes(m.TreeHWM))
	if s.Window > 0 {
		share := func(d time.Duration) string {
			return fmt.Sprintf("%s (%.0f%% of a CPU)", secs(d), 100*d.Seconds()/s.Window.Seconds())
		}
		fmt.Fprintf(b, "  CPU in the window: the server %s, with its plugin processes %s; the bench itself %s\n", share(m.CPU), share(m.TreeCPU), share(m.BenchCPU))
	}
	a := s.API
	fmt.Fprintf(b, "  GET /v1/jobs every %s: %d requests, %d errors; while sessions ran %s; while none ran %s; all %s\n",
		secs(a.Every), a.Requests, a.Errors, a.Busy, a.Idle, a.Latency)
	if a.FirstError != "" {
		fmt.Fprintf(b, "  first API error: %s\n", a.FirstError)
	}
	if s.Log != "" {
		fmt.Fprintf(b, "  the server's log: %s\n", s.Log)
	}
}
