//go:build linux

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
)

// SampleEvery is how often /proc is read while a tool runs.
const SampleEvery = 10 * time.Millisecond

// spawnEnv, set to 1, makes a ferry-bench process the spawner of one
// measured run (see ServeSpawn).
const spawnEnv = "FERRY_BENCH_SPAWN"

// ServeSpawn, called first thing by a main, returns at once unless the
// process was started as a spawner: then it runs the command in
// os.Args[1:], writes the command's resource usage as JSON on file
// descriptor 3 and exits with the command's status.
//
// Go starts children with vfork, and Linux carries the peak resident set
// of the memory a process had before exec into its ru_maxrss: every tool
// the harness started directly would report at least the harness's own
// peak. A small fresh process in between keeps that floor at its own few
// MiB.
func ServeSpawn() {
	if os.Getenv(spawnEnv) != "1" {
		return
	}
	os.Unsetenv(spawnEnv)
	// Pdeathsig follows the thread that started the child.
	runtime.LockOSThread()
	report := os.NewFile(3, "report")
	// Only the spawner reports: the command must not hold the pipe open.
	syscall.CloseOnExec(3)
	var res spawnResult
	code := 1
	if len(os.Args) < 2 {
		res.Error = "spawn: no command"
	} else {
		cmd := exec.Command(os.Args[1], os.Args[2:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		start := time.Now()
		err := cmd.Run()
		res.Wall = time.Since(start)
		if ps := cmd.ProcessState; ps != nil {
			res.fill(ps)
			code = ps.ExitCode()
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int(ws.Signal()) // as a shell reports it
			}
		}
		if err != nil {
			res.Error = err.Error()
		}
	}
	if report != nil {
		json.NewEncoder(report).Encode(res)
		report.Close()
	}
	os.Exit(code)
}

// spawnResult is what a spawner reports of its command.
type spawnResult struct {
	Wall      time.Duration `json:"wall_ns"`
	User      time.Duration `json:"user_ns"`
	Sys       time.Duration `json:"sys_ns"`
	MaxRSS    int64         `json:"max_rss_bytes"`
	DiskRead  int64         `json:"disk_read_bytes"`
	DiskWrite int64         `json:"disk_write_bytes"`
	Error     string        `json:"error,omitempty"`
}

// fill takes the usage of a waited-for process and the descendants it
// waited for.
func (r *spawnResult) fill(ps *os.ProcessState) {
	r.User, r.Sys = ps.UserTime(), ps.SystemTime()
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		r.MaxRSS = ru.Maxrss << 10 // KiB on Linux
		r.DiskRead = ru.Inblock * 512
		r.DiskWrite = ru.Oublock * 512
	}
}

// measurer runs tools and measures them.
type measurer struct {
	// spawner is an executable that calls ServeSpawn first (ferry-bench
	// itself); empty starts tools directly, and their MaxRSS then starts
	// at this process's peak.
	spawner string
}

// run runs args to their end with env added to the environment and
// measures them. It returns what the command printed on standard output
// and standard error; the error holds the end of standard error when the
// command fails.
func (m measurer) run(ctx context.Context, args, env []string) (Usage, []byte, []byte, error) {
	name, argv := args[0], args[1:]
	var report, w *os.File
	if m.spawner != "" {
		r, pw, err := os.Pipe()
		if err != nil {
			return Usage{}, nil, nil, fmt.Errorf("spawn %s: %w", args[0], err)
		}
		defer r.Close()
		defer pw.Close()
		report, w = r, pw
		name, argv = m.spawner, args
		env = append(env, spawnEnv+"=1")
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, argv...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if w != nil {
		cmd.ExtraFiles = []*os.File{w}
	}
	busy0, _ := cpuBusy()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Usage{}, nil, nil, fmt.Errorf("start %s: %w", args[0], err)
	}
	if w != nil {
		w.Close() // the spawner holds it now: EOF comes when it ends
	}
	s := &sampler{root: cmd.Process.Pid, skipRoot: report != nil, peaks: map[int]*ProcPeak{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(SampleEvery)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var res spawnResult
	var rerr error
	if report != nil {
		// Read before waiting: the spawner writes just before it exits.
		b, err := io.ReadAll(report)
		if err == nil && len(b) > 0 {
			err = json.Unmarshal(b, &res)
		}
		rerr = err
	}
	werr := cmd.Wait()
	wall := time.Since(start)
	busy1, busyOK := cpuBusy()
	close(stop)
	wg.Wait()

	if report == nil {
		res = spawnResult{Wall: wall}
		if cmd.ProcessState != nil {
			res.fill(cmd.ProcessState)
		}
	} else if rerr == nil && res.Wall == 0 {
		rerr = fmt.Errorf("the spawner %s reported nothing", m.spawner)
	}
	if werr == nil && res.Error != "" {
		werr = errors.New(res.Error)
	}
	u := Usage{Wall: res.Wall, User: res.User, Sys: res.Sys, MaxRSS: res.MaxRSS, DiskRead: res.DiskRead, DiskWrite: res.DiskWrite, TreeRSS: s.treeMax}
	if busyOK && busy0 > 0 {
		// The spawner's own few milliseconds count as other.
		u.OtherCPU = max(busy1-busy0-u.CPU(), 0)
	}
	for _, p := range s.peaks {
		u.Procs = append(u.Procs, *p)
	}
	sort.Slice(u.Procs, func(i, j int) bool { return u.Procs[i].PID < u.Procs[j].PID })
	if werr != nil {
		return u, stdout.Bytes(), stderr.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), werr, lastLines(stderr.String(), 12))
	}
	if rerr != nil {
		return u, stdout.Bytes(), stderr.Bytes(), fmt.Errorf("%s: usage report: %w", strings.Join(args, " "), rerr)
	}
	return u, stdout.Bytes(), stderr.Bytes(), ctx.Err()
}

// cpuBusy is the time all CPUs spent busy since boot (user, nice, system,
// irq, softirq, steal), from /proc/stat.
func cpuBusy() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // not idle (4) nor iowait (5)
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	const userHZ = 100 // USER_HZ, fixed at 100 on Linux for /proc/stat
	return time.Duration(ticks) * time.Second / userHZ, true
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sampler follows a process tree through /proc.
type sampler struct {
	root     int
	skipRoot bool // the root is a spawner, not part of what is measured
	peaks    map[int]*ProcPeak
	treeMax  int64
}

func (s *sampler) sample() {
	var sum int64
	for _, pid := range descendants(s.root) {
		if s.skipRoot && pid == s.root {
			continue
		}
		rss, hwm, ok := memStatus(pid)
		if !ok {
			continue
		}
		sum += rss
		p := s.peaks[pid]
		if p == nil {
			p = &ProcPeak{PID: pid}
			s.peaks[pid] = p
		}
		// Named each time: a child seen between fork and exec still runs
		// its parent's executable.
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
			p.Name = filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
		} else if p.Name == "" {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			p.Name = strings.TrimSpace(string(b))
		}
		p.HWM = max(p.HWM, hwm)
	}
	s.treeMax = max(s.treeMax, sum)
}

// descendants lists pid and every process below it. Children are listed
// per thread, since any thread of a Go program may fork.
func descendants(pid int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// memStatus reads a process's resident set and its peak, in bytes.
func memStatus(pid int) (rss, hwm int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, found := strings.Cut(line, ":")
		if !found || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		kib, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		if key == "VmRSS" {
			rss = kib << 10
		} else {
			hwm = kib << 10
		}
	}
	return rss, hwm, true
}
