//go:build linux

package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The change scenarios run a second time through `ferry server`, the way
// scheduled incrementals run: the server keeps its plugins and its
// catalog open between sessions, so a session pays neither the two
// processes' start nor their first touch of memory. Their figure is the
// session's own time (from its start to its end, as the server records
// it), against the same floors; the changes are new ones, of the same
// sizes, on the state the direct scenarios left.
var servedScenarios = scenarios[1:] // the change scenarios, not the full copy

// servedSeeds keeps the served scenarios' changes apart from the direct
// ones' (the same seed would write the same bytes again: no change at
// all for a digest run).
const servedSeeds = 1000

// ServedRun is the change scenarios run through ferry server.
type ServedRun struct {
	Scenarios []Scenario `json:"scenarios"`
	// WarmUp is the session run before them with no change, which starts
	// the server's plugins.
	WarmUp *FerryRun `json:"warm_up,omitempty"`
	Error  string    `json:"error,omitempty"` // the server could not start
	Log    string    `json:"server_log,omitempty"`
}

// servedAPI is a ferry server the bench started on its configuration.
type servedAPI struct {
	cmd   *exec.Cmd
	addr  string
	token string
	log   string
	done  chan error
}

// runServed starts ferry server on the configuration, runs one session
// without a change, then the served scenarios, and stops the server.
func (b *bench) runServed(ctx context.Context) *ServedRun {
	r := &ServedRun{}
	srv, err := b.startServer(ctx)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer func() {
		if err := srv.stop(); err != nil && r.Error == "" {
			r.Error = err.Error()
		}
		if r.Error != "" {
			if log, err := os.ReadFile(srv.log); err == nil {
				r.Log = string(log)
			}
		}
	}()
	sb := *b
	sb.jobs, sb.server, sb.seeds, sb.tag = []string{jobPlain}, srv, servedSeeds, "served-"
	b.logf("ferry server on %s: a session without a change starts its plugins", srv.addr)
	if r.WarmUp, err = sb.runFerry(ctx, jobPlain, spec{key: "warm-up", mode: "change-tracking"}); err != nil {
		r.Error = fmt.Sprintf("the first session through ferry server: %v", err)
		return r
	}
	for i, sp := range servedScenarios {
		sc := sb.tries(ctx, i+1, sp)
		r.Scenarios = append(r.Scenarios, sc)
		if sc.Error != "" {
			b.logf("through ferry server: %s failed: %s", sc.Name, sc.Error)
			break
		}
		b.logf("through ferry server: %s: session %s (the client's wall %s)", sc.Name, secs(sc.Ferry.Session), secs(sc.Ferry.Usage.Wall))
	}
	return r
}

// shortTries is how often a served scenario of at most 1% runs: a
// session of a tenth of a second moves by half with what else the
// machine does (three tries of the same code gave medians of 1.9x to
// 2.9x of their floor), so the median of five new changes is its figure.
const shortTries = 5

// tries runs scenario n (several times when it is short, each with a
// change of its own) and returns the median try, with every try's ratio.
func (b *bench) tries(ctx context.Context, n int, sp spec) Scenario {
	if sp.percent > 1 {
		return b.scenario(ctx, n, sp)
	}
	var runs []Scenario
	var ratios []float64
	for try := range shortTries {
		tb := *b
		tb.seeds += uint64(100 * try) // a change of its own
		sc := tb.scenario(ctx, n, sp)
		if sc.Error != "" {
			return sc
		}
		v, _ := sc.SessionOverFloor()
		runs, ratios = append(runs, sc), append(ratios, v)
	}
	order := make([]int, len(runs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, c int) int { return cmp.Compare(ratios[a], ratios[c]) })
	med := runs[order[len(order)/2]]
	med.Tries = ratios
	return med
}

var readyLine = regexp.MustCompile(`API on (http://\S+);`)

// startServer makes an operator token and starts ferry server on a free
// loopback port, in plaintext; it returns once the server serves.
func (b *bench) startServer(ctx context.Context) (*servedAPI, error) {
	out, err := exec.CommandContext(ctx, b.ferry, "-C", b.conf, "token", "create", "bench", "--role", "operator").Output()
	if err != nil {
		return nil, fmt.Errorf("ferry token create: %w", err)
	}
	token, _, _ := strings.Cut(string(out), "\n")
	srv := &servedAPI{token: strings.TrimSpace(token), log: filepath.Join(b.scratch, "server.log"), done: make(chan error, 1)}
	logf, err := os.Create(srv.log)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	srv.cmd = exec.Command(b.ferry, "-C", b.conf, "server", "--listen", "127.0.0.1:0", "--insecure-plaintext", "--skip-missed", "--max-sessions", "1")
	srv.cmd.Env = append(os.Environ(), "FERRY_PLUGIN_PATH="+b.cfg.Bin)
	srv.cmd.Stdout, srv.cmd.Stderr = logf, pw
	err = srv.cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		logf.Close()
		return nil, fmt.Errorf("start ferry server: %w", err)
	}
	go func() { srv.done <- srv.cmd.Wait() }()
	// Its standard error goes to the log, read until the server exits;
	// the ready line names the port.
	found := make(chan string, 1)
	go func() {
		defer logf.Close()
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		told := false
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if m := readyLine.FindStringSubmatch(sc.Text()); m != nil && !told {
				found <- m[1]
				told = true
			}
		}
		close(found)
	}()
	select {
	case addr, ok := <-found:
		if ok {
			srv.addr = addr
			return srv, nil
		}
	case <-time.After(time.Minute):
	case <-ctx.Done():
	}
	srv.stop()
	log, _ := os.ReadFile(srv.log)
	return nil, fmt.Errorf("ferry server did not say it serves: %s", strings.TrimSpace(string(log)))
}

// stop stops the server as an operator would (SIGTERM) and waits for it.
func (s *servedAPI) stop() error {
	if s.cmd.Process == nil {
		return nil
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			return fmt.Errorf("ferry server: %w", err)
		}
		if err != nil {
			return fmt.Errorf("ferry server stopped with %v", err)
		}
		return nil
	case <-time.After(time.Minute):
		s.cmd.Process.Kill()
		<-s.done
		return errors.New("ferry server did not stop within a minute of SIGTERM")
	}
}

// env is what a ferry command needs to go through the server.
func (s *servedAPI) env() []string {
	return []string{"FERRY_ADDR=" + s.addr, "FERRY_TOKEN=" + s.token}
}
