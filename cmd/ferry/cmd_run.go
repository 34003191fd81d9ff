package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/traffic"
)

func init() {
	register(&command{
		name: "run",
		summary: `Run one session of each named job now.

For each VM of the job: snapshot it at the source, copy what changed since
the last restore point (everything on the first run) to its replica, create
a restore point, remove the snapshot, and apply retention. Progress is shown
live on a terminal and as plain lines otherwise; --json prints a summary of
each session when it ends. Exit status 1 means a job or one of its VMs
failed. Interrupting (Ctrl-C) stops cleanly, with exit status 130: earlier
restore points stay intact and the next run resumes.

Through a ferry server (--server or FERRY_ADDR) the server runs the jobs:
ferry run asks it to, follows each session until it ends (a run asked
while the job's session runs is queued, and followed when it begins) and
shows it as above, with the same exit status. Ctrl-C then stops following,
not the session, and exits 130.`,
		usage: "ferry [--config DIR] run [--json] JOB...",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print a JSON summary of each session")
			return func(e *env, args []string) error { return runRun(e, args, *asJSON) }
		},
		complete: completeJobs,
	})
}

// sessionSummary is the --json form of a session.
type sessionSummary struct {
	*catalog.Session
	Totals catalog.Totals `json:"totals"`
}

func runRun(e *env, args []string, asJSON bool) error {
	if len(args) == 0 {
		return usagef("name at least one job")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one ends ferry at once, as
		// killing it would; the crash tests show that is safe too.
		<-ctx.Done()
		stop()
	}()
	if c, err := e.remote(); err != nil {
		return err
	} else if c != nil {
		return runRemote(ctx, e, c, args, asJSON)
	}
	interrupted := &interruptedError{msg: "earlier restore points are intact, the next run resumes"}
	early := warmProxies(e.configDir, e.log)
	w, err := openWorkspace(ctx, e)
	if err == nil {
		w.adopt(early)
	} else if early != nil {
		early.pool.Close()
	}
	if err != nil && ctx.Err() != nil {
		return interrupted
	}
	if err != nil {
		return err
	}
	defer w.Close()
	for _, name := range args {
		if _, err := w.job(name); err != nil {
			return err
		}
	}
	if ctl, err := w.cat.Controller(); err != nil {
		return err
	} else if ctl != nil {
		// The server would refuse each session; say at once how to run.
		how := "stop it first"
		if ctl.Address != "" {
			how = fmt.Sprintf("set FERRY_ADDR=%s (or --server) to run it through the server, or stop the server first", ctl.Address)
		}
		return fmt.Errorf("%s runs the jobs of this configuration: %s", ctl, how)
	}
	eng := w.engine()
	var pool *proxy.Pool
	if len(w.cfg.Proxies) > 0 {
		if pool, err = w.proxyPool(); err != nil {
			return err
		}
		defer pool.Close()
		eng.Proxies = pool
	}
	if len(w.cfg.TrafficRules) > 0 {
		// The rules' windows open and close while the jobs run.
		reg := traffic.NewRegistry()
		rctx, stopRules := context.WithCancel(ctx)
		defer stopRules()
		var changed func()
		if pool != nil {
			pool.Traffic = reg
			changed = pool.PushRates
		}
		next := reg.Update(w.cfg.TrafficRules, time.Now())
		go reg.Keep(rctx, w.cfg.TrafficRules, next, changed)
		eng.Traffic = reg
	}
	out := e.stdout
	if asJSON {
		out = e.stderr
	}
	p := newProgress(out)
	p.interrupted = func() bool { return ctx.Err() != nil }
	events, stopRecording := recordProgress(w.cat, e.log, p.event)
	defer stopRecording()
	eng.Events = events
	failed := false
	for _, name := range args {
		if ctx.Err() != nil {
			return interrupted // before the next job
		}
		job, _ := w.job(name)
		if job.Selects() {
			p.expect(0) // the selectors pick the VMs when it runs
		} else {
			p.expect(len(job.VMs))
		}
		start := time.Now()
		sess, err := eng.Run(ctx, job)
		if ctx.Err() != nil && (err != nil || sess == nil || sess.Result == catalog.ResultFailed) {
			// What failed, failed because of the signal: no error to
			// show but what the interruption means. (A session that
			// finished before the signal reads as usual.)
			if asJSON && sess != nil {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(sessionSummary{Session: sess, Totals: sess.Totals()}); err != nil {
					return err
				}
			}
			return interrupted
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "ferry run: %v\n", err)
			failed = true
		}
		if sess == nil {
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
		summary(out, name, sess, time.Since(start))
	}
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}

// summary is the line that ends a session's run.
func summary(out io.Writer, job string, sess *catalog.Session, took time.Duration) {
	t := sess.Totals()
	var also string
	if t.Skipped > 0 {
		also += fmt.Sprintf(", %d skipped", t.Skipped)
	}
	fmt.Fprintf(out, "job %s: %s in %s: %d VMs (%d failed%s), %s checked, %s read, %s sent, %s written",
		job, sess.Result, took.Round(time.Millisecond), t.VMs, t.Failed, also,
		size(t.Size), size(t.BytesRead), size(t.BytesSent), size(t.BytesWritten))
	if t.DigestDisks > 0 {
		fmt.Fprintf(out, "; %d of %d disks compared by digests (read whole)", t.DigestDisks, t.Disks)
	}
	fmt.Fprintln(out)
}
