//go:build linux

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-dr/ferry/scheduler"
)

// The server at scale (issue 13): ServerJobs jobs of ServerVMs VMs each,
// one source site, one target site and one repository folder of the local
// plugin, on schedules of ServerEvery spread over its minutes, run by one
// `ferry server` (plaintext on loopback, its default --max-sessions) for
// the first runs and one full cycle.
const (
	ServerJobs  = 100
	ServerVMs   = 10
	ServerEvery = 5 * time.Minute
	// serverDisk is each VM's disk; serverPieces pieces of serverPiece
	// bytes of generated data are written into it, spread over it, before
	// the first run.
	serverDisk   = 4 << 20
	serverPieces = 4
	serverPiece  = 64 << 10
	// serverRuns is how many scheduled sessions of each job the bench
	// waits for: the first runs (full copies) and one cycle after them
	// (incremental, with nothing changed).
	serverRuns = 2
	// serverAPIEvery is how often GET /v1/jobs is called, serverSampleEvery
	// how often the server's process tree is sampled.
	serverAPIEvery    = 200 * time.Millisecond
	serverSampleEvery = proxySampleEvery
	// serverGuard is how long before the first due time the server must
	// be ready at the latest: due times are counted from the moment it
	// is, so none may fall while it starts.
	serverGuard     = 15 * time.Second
	serverReady     = 60 * time.Second
	serverStopGrace = 30 * time.Second
	// serverLate is how long after the last due time the bench waits for
	// the sessions of the window to end.
	serverLate = 5 * time.Minute
)

// ServerSpace is the room the server run needs for jobs × vms VMs: their
// data in the source, the replica and its restore points' undo stores,
// and the snapshots' layers, twice for the catalog, logs and folders.
func ServerSpace(jobs, vms int) int64 {
	return int64(jobs*vms) * serverPieces * serverPiece * 3 * 2
}

// serverSchedules spreads jobs over every: when every is a whole number of
// minutes that divides an hour, job i runs at minute i mod every of each
// period (cron "M-59/P * * * *"), since every schedules all run at the
// Unix epoch plus multiples of their interval and cron's finest field is
// the minute; otherwise every job has "every D" and they fall due at once.
// It returns each job's expression and how they are spread.
func serverSchedules(jobs int, every time.Duration) ([]string, string) {
	exprs := make([]string, jobs)
	p := int(every / time.Minute)
	if every%time.Minute == 0 && 60%p == 0 {
		for i := range exprs {
			exprs[i] = fmt.Sprintf("%d-59/%d * * * *", i%p, p)
			if p == 1 {
				exprs[i] = "* * * * *"
			}
		}
		if p == 1 {
			return exprs, "every minute (* * * * *)"
		}
		return exprs, fmt.Sprintf("every %dm staggered by minute (M-59/%d * * * *, M = job mod %d)", p, p, p)
	}
	for i := range exprs {
		exprs[i] = "every " + every.String()
	}
	return exprs, fmt.Sprintf("every %s, all at once (not whole minutes dividing an hour: no stagger)", every)
}

// serverJobName is job i's name: fixed width, so that no name is a
// prefix of another (the engine finds a killed run's leftover snapshots
// by the job's name prefix).
func serverJobName(i, jobs int) string {
	return fmt.Sprintf("s%0*d", len(strconv.Itoa(jobs)), i+1)
}

// scaleRun is one server run being made.
type scaleRun struct {
	cfg     Config
	logf    func(string, ...any)
	run     *ServerRun
	scratch string
	prod    string
	conf    string
	ferry   string
	names   []string
	vms     map[string][]string
	exprs   map[string]string
	scheds  map[string]scheduler.Schedule
}

// runServerScale sets up the jobs, runs the server through the window and
// measures it. A run that cannot be made, or in which a session fails,
// has Error set.
func runServerScale(ctx context.Context, cfg Config, logf func(string, ...any)) *ServerRun {
	jobs, vms, every := cfg.ServerJobs, cfg.ServerVMs, cfg.ServerEvery
	r := &ServerRun{Jobs: jobs, VMsPerJob: vms, DiskBytes: serverDisk, DataBytes: serverPieces * serverPiece,
		Every: every, Runs: serverRuns, MaxSessions: serverMaxSessions}
	s := &scaleRun{cfg: cfg, logf: logf, run: r}
	if err := s.do(ctx); err != nil {
		r.Error = err.Error()
		logf("server: %s", r.Error)
	}
	if s.scratch != "" && !cfg.Keep {
		os.RemoveAll(s.scratch)
	}
	return r
}

// serverMaxSessions is the server's default --max-sessions, which the
// bench keeps (core/server DefaultMaxSessions; bench does not import the
// server).
const serverMaxSessions = 4

func (s *scaleRun) do(ctx context.Context) error {
	r, cfg := s.run, s.cfg
	switch {
	case r.Jobs < 1 || r.VMsPerJob < 1:
		return fmt.Errorf("%d jobs of %d VMs: want at least one of each", r.Jobs, r.VMsPerJob)
	case r.Every < scheduler.MinEvery || r.Every%time.Second != 0:
		return fmt.Errorf("schedules every %s: want whole seconds, at least %s", r.Every, scheduler.MinEvery)
	}
	s.ferry = filepath.Join(cfg.Bin, "ferry")
	for _, p := range []string{s.ferry, filepath.Join(cfg.Bin, "ferry-plugin-local")} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w (run make build, or give -bin)", p, err)
		}
	}
	dir := cfg.Dir
	if dir == "" {
		dir = os.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("scratch folder: %w", err)
	}
	free, err := freeSpace(dir)
	if err != nil {
		return err
	}
	if need := ServerSpace(r.Jobs, r.VMsPerJob); free < need {
		return fmt.Errorf("%w: %d VMs need about %s in %s, and %s is free", ErrNoSpace, r.Jobs*r.VMsPerJob, FormatBytes(need), dir, FormatBytes(free))
	}
	if s.scratch, err = os.MkdirTemp(dir, "ferry-bench-server-"); err != nil {
		return fmt.Errorf("scratch folder: %w", err)
	}
	t := time.Now()
	if err := s.setup(ctx); err != nil {
		return err
	}
	r.SetupSeconds = time.Since(t).Seconds()
	out, err := exec.CommandContext(ctx, s.ferry, "-C", s.conf, "token", "create", "bench", "--role", "read").Output()
	if err != nil {
		return fmt.Errorf("ferry token create: %w", err)
	}
	token := strings.TrimSpace(string(out))
	if err := s.awaitGap(ctx); err != nil {
		return err
	}
	return s.serve(ctx, token)
}

// setup makes the VMs and writes the configuration.
func (s *scaleRun) setup(ctx context.Context) error {
	r := s.run
	s.prod = filepath.Join(s.scratch, "prod")
	s.conf = filepath.Join(s.scratch, "config")
	if err := os.MkdirAll(s.conf, 0o755); err != nil {
		return err
	}
	exprs, how := serverSchedules(r.Jobs, r.Every)
	r.Schedules = how
	s.vms, s.exprs, s.scheds = map[string][]string{}, map[string]string{}, map[string]scheduler.Schedule{}
	var all []string
	for i := range r.Jobs {
		name := serverJobName(i, r.Jobs)
		s.names = append(s.names, name)
		sched, err := scheduler.Parse(exprs[i], nil)
		if err != nil {
			return err
		}
		s.exprs[name], s.scheds[name] = exprs[i], sched
		for v := range r.VMsPerJob {
			vm := fmt.Sprintf("%s-vm%02d", name, v+1)
			s.vms[name] = append(s.vms[name], vm)
			all = append(all, vm)
		}
	}
	s.logf("server: making %d VMs of %s (%s of data each) in %s", len(all), FormatBytes(serverDisk), FormatBytes(r.DataBytes), s.prod)
	// All VMs' data is one generated image, each VM a slice of it.
	img, err := NewImage(s.cfg.Seed+13, int64(len(all))*r.DataBytes, DiskMix)
	if err != nil {
		return err
	}
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 2 * runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := s.makeVM(ctx, img, all[i], int64(i)*r.DataBytes); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range all {
		if ctx.Err() != nil || len(errs) > 0 {
			break
		}
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.conf, "main.hcl"), []byte(s.hcl()), 0o644)
}

// makeVM creates a VM with its disk and writes serverPieces pieces of the
// image from off into it, spread over the disk, straight into the file:
// the first run copies it whole.
func (s *scaleRun) makeVM(ctx context.Context, img *Image, name string, off int64) error {
	if err := cli(ctx, nil, nil, "vm", "create", s.prod, name, "--disk", strconv.Itoa(serverDisk)); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(s.prod, name, "disk0.img"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, serverPiece)
	for k := range int64(serverPieces) {
		if _, err := img.ReadAt(buf, off+k*serverPiece); err != nil {
			return err
		}
		if _, err := f.WriteAt(buf, k*(serverDisk/serverPieces)); err != nil {
			return fmt.Errorf("write vm %s: %w", name, err)
		}
	}
	return f.Close()
}

// hcl is the configuration: one source, target and repository, a job per
// name with its VMs and schedule.
func (s *scaleRun) hcl() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by ferry-bench: the server at scale (issue 13).
source "local" "prod"     { path = %q }
target "local" "dr"       { path = %q }
repository "local" "meta" { path = %q }
`, s.prod, filepath.Join(s.scratch, "dr"), filepath.Join(s.scratch, "meta"))
	for _, name := range s.names {
		vms, _ := json.Marshal(s.vms[name])
		fmt.Fprintf(&b, `
job %q {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = %s
  schedule   = %q
  retention { restore_points = 2 }
}
`, name, vms, s.exprs[name])
	}
	return b.String()
}

// awaitGap waits, if it must, until the first due time of any job is at
// least serverGuard away, so that none falls while the server starts.
func (s *scaleRun) awaitGap(ctx context.Context) error {
	guard := min(serverGuard, s.run.Every/2)
	for {
		now := time.Now()
		first := s.firstDue(now)
		if first.Sub(now) >= guard {
			return nil
		}
		s.logf("server: a run falls due at %s: starting the server after it", first.UTC().Format("15:04:05"))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(first) + time.Second):
		}
	}
}

// firstDue is the earliest due time of any job after t.
func (s *scaleRun) firstDue(t time.Time) time.Time {
	var first time.Time
	for _, sched := range s.scheds {
		if n := sched.Next(t); first.IsZero() || n.Before(first) {
			first = n
		}
	}
	return first
}

// serve starts the server, measures it until every job's first runs
// ended, stops it and reads its log.
func (s *scaleRun) serve(ctx context.Context, token string) error {
	r := s.run
	logPath := filepath.Join(s.scratch, "server.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	if s.cfg.Keep {
		r.Log = logPath
	}
	log := newServerLog(logFile)
	cmd := exec.Command(s.ferry, "-C", s.conf, "server", "--insecure-plaintext", "--listen", "127.0.0.1:0",
		"--max-sessions", strconv.Itoa(r.MaxSessions))
	cmd.Env = append(os.Environ(), "FERRY_PLUGIN_PATH="+s.cfg.Bin)
	cmd.Stderr = log // not a terminal: the server logs JSON
	// Pdeathsig: a harness killed mid-run leaves no server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ferry server: %w", err)
	}
	exited := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(exited) }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()
	select {
	case <-log.ready:
	case <-exited:
		return fmt.Errorf("ferry server ended before it listened: %v: %s", werr, log.tail())
	case <-time.After(serverReady):
		return fmt.Errorf("ferry server did not listen within %s: %s", serverReady, log.tail())
	case <-ctx.Done():
		return ctx.Err()
	}
	ready := time.Now()
	if first := s.firstDue(started); first.Before(ready.Add(time.Second)) {
		return fmt.Errorf("a run fell due at %s while the server started (it took %s): its start cannot be told; run again",
			first.UTC().Format("15:04:05"), secs(ready.Sub(started)))
	}
	pid := cmd.Process.Pid
	s.logf("server: ferry server (pid %d) ready in %s on %s; %d jobs on %s", pid, secs(ready.Sub(started)), log.address(), r.Jobs, r.Schedules)

	// The window: the API in a loop, the tree sampled, until every job's
	// runs ended.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	var calls []apiCall
	go func() { defer wg.Done(); r.API, calls = pollAPI(log.address(), token, r.Jobs, stop) }()
	smp := &sampler{root: pid, peaks: map[int]*ProcPeak{}}
	go func() {
		defer wg.Done()
		t := time.NewTicker(serverSampleEvery)
		defer t.Stop()
		for {
			smp.sample()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	cpu0, _ := procCPU(pid)
	tree0, bench0 := treeCPU(pid), selfCPU()
	werr2 := s.await(ctx, log, exited, ready)
	close(stop)
	wg.Wait()
	r.Window = time.Since(ready)
	smp.sample()
	r.Memory = treeMemory(smp, pid)
	if rss, _, ok := memStatus(pid); ok {
		r.Memory.End = rss
	}
	if cpu, err := procCPU(pid); err == nil {
		r.Memory.CPU = cpu - cpu0
	}
	r.Memory.TreeCPU, r.Memory.BenchCPU = treeCPU(pid)-tree0, selfCPU()-bench0
	r.Memory.Every = serverSampleEvery
	// What the log holds is read on every path: a run that went wrong
	// shows how far it came.
	analyze := func() {
		events := log.snapshot()
		r.Sessions, r.Failures = analyzeSessions(events, s.scheds, ready, r.Runs)
		busy, idle := splitBusy(calls, events)
		r.API.Busy, r.API.Idle = spreadOf(busy), spreadOf(idle)
	}
	if werr2 != nil {
		analyze()
		return werr2
	}

	// SIGTERM: no new session; those of a later run in flight stop.
	t := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		stopped = true
	case <-time.After(serverStopGrace):
		analyze()
		return fmt.Errorf("ferry server did not stop within %s of SIGTERM: %s", serverStopGrace, log.tail())
	}
	r.Stop = time.Since(t)
	analyze()
	if werr != nil {
		return fmt.Errorf("ferry server after SIGTERM: %w: %s", werr, log.tail())
	}
	if n := r.Sessions.Failed; n > 0 {
		return fmt.Errorf("%d sessions failed: the figures do not count", n)
	}
	s.logf("server: %d sessions in %s; start delay %s; %d waited for a slot; server peak %s; GET /v1/jobs while sessions ran %s",
		r.Sessions.Started, secs(r.Window), r.Sessions.Delay, r.Sessions.Waited, FormatBytes(r.Memory.Peak), r.API.Busy)
	return nil
}

// await waits until every job has had its runs end, saying how far it is
// every 30 s; an error when the server ends, ctx ends or the sessions do
// not end within serverLate of the last due time.
func (s *scaleRun) await(ctx context.Context, log *serverLog, exited <-chan struct{}, ready time.Time) error {
	r := s.run
	var last time.Time
	for _, sched := range s.scheds {
		d := ready
		for range r.Runs {
			d = sched.Next(d)
		}
		if d.After(last) {
			last = d
		}
	}
	deadline := last.Add(serverLate)
	s.logf("server: waiting for %d sessions of %d jobs, the last due at %s", r.Jobs*r.Runs, r.Jobs, last.UTC().Format("15:04:05"))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	said := time.Now()
	for {
		done, n := log.ended(s.names, r.Runs)
		if done == len(s.names) {
			return nil
		}
		if time.Since(said) >= 30*time.Second {
			s.logf("server: %d sessions ended; %d of %d jobs done", n, done, len(s.names))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return fmt.Errorf("ferry server ended during the run: %s", log.tail())
		case <-tick.C:
			if time.Now().After(deadline) {
				return fmt.Errorf("the sessions did not end within %s of the last due time: %d of %d jobs done: %s", serverLate, done, len(s.names), log.tail())
			}
		}
	}
}

// treeMemory is the server's and its tree's memory from the sampler.
func treeMemory(smp *sampler, pid int) ServerMemory {
	m := ServerMemory{TreeRSS: smp.treeMax}
	for _, p := range smp.peaks {
		m.TreeHWM += p.HWM
		if p.PID == pid {
			m.Peak = p.HWM
		}
		m.Procs = append(m.Procs, *p)
	}
	sort.Slice(m.Procs, func(i, j int) bool { return m.Procs[i].PID < m.Procs[j].PID })
	return m
}

// treeCPU is the CPU time of pid and the processes below it now.
func treeCPU(pid int) time.Duration {
	var sum time.Duration
	for _, p := range descendants(pid) {
		if cpu, err := procCPU(p); err == nil {
			sum += cpu
		}
	}
	return sum
}

// selfCPU is this process's own user and system time (the server, not
// waited for yet, is not in it).
func selfCPU() time.Duration {
	cpu, _ := procCPU(os.Getpid())
	return cpu
}

// pollAPI calls GET /v1/jobs with token every serverAPIEvery until stop,
// timing each answer to its last byte; an answer that is not 200 with
// the jobs is an error. It returns the figures and every answered call.
func pollAPI(base, token string, jobs int, stop <-chan struct{}) (APILatency, []apiCall) {
	a := APILatency{Every: serverAPIEvery}
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var calls []apiCall
	var lat []time.Duration
	tick := time.NewTicker(serverAPIEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			a.Latency = spreadOf(lat)
			return a, calls
		case <-tick.C:
		}
		a.Requests++
		at := time.Now()
		d, err := getJobs(client, base, token, jobs)
		if err != nil {
			a.Errors++
			if a.FirstError == "" {
				a.FirstError = err.Error()
			}
			continue
		}
		calls = append(calls, apiCall{At: at, Latency: d})
		lat = append(lat, d)
	}
}

// getJobs makes one GET /v1/jobs and checks it lists jobs jobs.
func getJobs(client *http.Client, base, token string, jobs int) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/v1/jobs", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	t := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /v1/jobs: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var list []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return 0, fmt.Errorf("GET /v1/jobs: %w", err)
	}
	if len(list) != jobs {
		return 0, fmt.Errorf("GET /v1/jobs: %d jobs, want %d", len(list), jobs)
	}
	return d, nil
}
