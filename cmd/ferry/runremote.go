package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/server/client"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// `ferry run` through a ferry server: the server runs the jobs (it holds
// them); the command asks it to, follows each session the asks started
// until it ends, and shows it as a local run does. Ctrl-C stops following,
// not the sessions.

// followEvery is how often a followed session is read again when the
// server's events say nothing (they wake the reader at once: see kicks);
// followProgressEvery how often its progress is shown while it runs.
var (
	followEvery         = 500 * time.Millisecond
	followProgressEvery = 15 * time.Second
)

// remoteAsk is a run asked of the server: which session of the job it
// follows.
type remoteAsk struct {
	job string
	// after is, until the session is known, the job's session the run
	// comes after ("": the job had none): the run's is the first begun
	// after it.
	after   string
	queued  bool
	session string // once known
}

func runRemote(ctx context.Context, e *env, c *client.Client, args []string, asJSON bool) error {
	out := e.stdout
	if asJSON {
		out = e.stderr
	}
	for _, name := range args {
		if err := remoteJob(ctx, c, name); err != nil {
			return err
		}
	}
	// Every job is asked first: the server runs them at once, as its task
	// slots allow; they are followed in the order named.
	asks := make([]*remoteAsk, 0, len(args))
	for _, name := range args {
		a, err := askRun(ctx, c, name)
		if err != nil {
			return err
		}
		asks = append(asks, a)
		if a.queued {
			fmt.Fprintf(out, "job %s: a run of it is under way on ferry server at %s: this one is queued and starts when that one ends\n", name, c.Address())
		}
	}
	flush(out)
	failed := false
	for _, a := range asks {
		sess, err := follow(ctx, c, a, out)
		if ctx.Err() != nil {
			msg := "stopped following; the sessions go on on ferry server at " + c.Address()
			if a.session != "" {
				msg = fmt.Sprintf("stopped following session %s of job %s: it goes on on ferry server at %s ('ferry session %s' shows it)", a.session, a.job, c.Address(), a.session)
			}
			return &interruptedError{msg: msg}
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "ferry run: job %s: %v\n", a.job, remoteError(err))
			failed = true
			continue
		}
		if sess.Result != catalog.ResultSuccess {
			failed = true
		}
		if asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(sessionSummary{Session: sess, Totals: sess.Totals()}); err != nil {
				return err
			}
			continue
		}
		summary(out, a.job, sess, sess.Ended.Sub(sess.Started))
	}
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}

// askRun asks the server to run a job; its answer names the run's
// session, or the session the run comes after.
func askRun(ctx context.Context, c *client.Client, name string) (*remoteAsk, error) {
	asked, err := c.Run(ctx, name)
	if err != nil {
		return nil, remoteError(err)
	}
	return &remoteAsk{job: name, after: asked.After, queued: asked.Queued, session: asked.Session}, nil
}

// follow waits for the session of an ask to begin and then to end,
// telling out of its VMs as they finish; it returns the ended session.
func follow(ctx context.Context, c *client.Client, a *remoteAsk, out io.Writer) (*catalog.Session, error) {
	tick := time.NewTicker(followEvery)
	defer tick.Stop()
	watching, stop := context.WithCancel(ctx)
	defer stop()
	kick := kicks(watching, c, a.job)
	wait := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			return nil
		case <-kick:
			return nil
		}
	}
	// Transient failures to reach the server (a restart) are borne for a
	// while; the session runs on regardless.
	const bear = 60
	misses := 0
	bore := func(err error) bool {
		if !errors.Is(err, errdefs.ErrUnavailable) || misses >= bear {
			return false
		}
		misses++
		return true
	}
	// Queued, or waiting for a session slot: the run's session is the
	// first of the job's begun after a.after.
	for a.session == "" {
		id, done, err := begun(ctx, c, a)
		switch {
		case err != nil && !bore(err):
			return nil, err
		case done != nil:
			return nil, done
		case id != "":
			a.session, misses = id, 0
			continue
		}
		if err := wait(); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(out, "job %s: session %s runs on ferry server at %s; following it (Ctrl-C stops following, not the session)\n", a.job, a.session, c.Address())
	flush(out)
	shown := map[string]bool{}
	lastProgress := time.Now()
	for {
		s, err := c.Session(ctx, a.session)
		if err != nil && !bore(err) {
			return nil, err
		}
		if err == nil {
			misses = 0
			for _, vm := range s.VMs {
				if vm.Result == catalog.ResultRunning || shown[vm.VM] {
					continue
				}
				shown[vm.VM] = true
				line := fmt.Sprintf("  %s: %s", vm.VM, vm.Result)
				if vm.RestorePoint != "" {
					line += ", restore point " + vm.RestorePoint
				}
				if vm.Error != "" {
					line += ": " + vm.Error
				}
				fmt.Fprintln(out, line)
			}
			if s.Result != catalog.ResultRunning {
				flush(out)
				return s, nil
			}
			if time.Since(lastProgress) >= followProgressEvery && s.Progress != nil {
				fmt.Fprintf(out, "job %s: %s\n", a.job, runningLine(s))
				lastProgress = time.Now()
			}
			flush(out)
		}
		if err := wait(); err != nil {
			return nil, err
		}
	}
}

// kicks watches the server's events of a job's sessions while ctx lasts
// and signals on the channel when one began, a VM of one finished or one
// ended, and once the watch is taken (so that nothing that happened
// before it is left to the next tick). A short session is then shown as
// soon as it ends, not up to followEvery later. A watch that fails or
// ends leaves the reader to its ticks.
func kicks(ctx context.Context, c *client.Client, job string) <-chan struct{} {
	kick := make(chan struct{}, 1)
	signal := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	go c.Watch(ctx, job, "", signal, func(kind string) bool {
		switch kind {
		case "session.started", "vm.finished", "session.finished":
			signal()
		}
		return true
	})
	return kick
}

// begun returns the id of the ask's session once it has begun: the first
// of the job's sessions begun after a.after. done is set when the job's
// runs ended without one (the run failed before its session began).
func begun(ctx context.Context, c *client.Client, a *remoteAsk) (id string, done error, err error) {
	// The job first: when nothing of it runs or waits, a session the run
	// began is in the list read after.
	js, err := c.Job(ctx, a.job)
	if err != nil {
		return "", nil, err
	}
	recent, err := c.Sessions(ctx, a.job, 20)
	if err != nil {
		return "", nil, err
	}
	for i, s := range recent { // newest first
		if s.ID == a.after {
			if i > 0 {
				return recent[i-1].ID, nil, nil
			}
			break
		}
		if i == len(recent)-1 && a.after == "" {
			return s.ID, nil, nil
		}
	}
	if js.Running || js.Queued {
		return "", nil, nil
	}
	why := "the run ended before its session began"
	if js.Last != nil && js.Last.Error != "" {
		why += ": " + js.Last.Error
	}
	return "", errors.New(why), nil
}
