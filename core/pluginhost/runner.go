package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/hashicorp/go-plugin/runner"
)

// waitDelay bounds how long ferry waits, once a plugin process has exited,
// for its stdout and stderr to reach end of file. A child the plugin
// started may hold them open for as long as it lives (a "sleep 86400 &");
// go-plugin reads both pipes to the end before it waits for the process,
// so without a bound stopping such a plugin would take a day.
const waitDelay = time.Second

// maxStdoutLine is the longest stdout line go-plugin is shown; the rest of
// a longer line is dropped. go-plugin reads stdout with a bufio.Scanner of
// 64 KiB tokens and stops reading at a longer line, after which the plugin
// blocks on its next write. The handshake line (with its certificate) is
// far shorter.
const maxStdoutLine = 16 << 10

// procRunner starts a plugin for go-plugin (a runner.Runner) in place of
// go-plugin's own: the plugin gets its own process group, killed whole when
// the plugin is killed or exits, and the waits on its output are bounded
// by exec.Cmd.WaitDelay. Its pipes are drained by exec's copying goroutines
// whatever go-plugin does with them.
type procRunner struct {
	cmd            *exec.Cmd
	stdout, stderr *io.PipeReader
	outW, errW     *io.PipeWriter

	pid     int
	done    chan struct{} // closed when cmd.Wait has returned
	waitErr error
}

var _ runner.Runner = (*procRunner)(nil)

// newProcRunner prepares cmd to be started by go-plugin; cmd must not be
// started and must have no Stdout or Stderr set.
func newProcRunner(cmd *exec.Cmd) *procRunner {
	r := &procRunner{cmd: cmd, done: make(chan struct{})}
	r.stdout, r.outW = io.Pipe()
	r.stderr, r.errW = io.Pipe()
	cmd.Stdout = &lineCap{w: r.outW, max: maxStdoutLine}
	cmd.Stderr = &drainWriter{w: r.errW}
	cmd.WaitDelay = waitDelay
	ownProcessGroup(cmd)
	return r
}

// Start starts the plugin and a goroutine that waits for it: exec's
// WaitDelay applies only while somebody waits, and go-plugin waits only
// after the pipes reached end of file.
func (r *procRunner) Start(context.Context) error {
	if err := r.cmd.Start(); err != nil {
		r.outW.Close()
		r.errW.Close()
		return err
	}
	r.pid = r.cmd.Process.Pid
	go func() {
		err := r.cmd.Wait()
		if errors.Is(err, exec.ErrWaitDelay) {
			// The plugin exited cleanly; a child of it held its output.
			err = nil
		}
		// Whatever the plugin left behind in its group goes with it.
		killGroup(r.pid)
		r.waitErr = err
		r.outW.Close()
		r.errW.Close()
		close(r.done)
	}()
	return nil
}

// Wait waits for the plugin to exit and for its output to be read or
// abandoned (at most waitDelay after the exit).
func (r *procRunner) Wait(ctx context.Context) error {
	select {
	case <-r.done:
		return r.waitErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill kills the plugin's whole process group. It may be called more than
// once, and after the plugin exited.
func (r *procRunner) Kill(context.Context) error {
	select {
	case <-r.done:
		// Already reaped, and its group killed: the group id may be
		// reused by now.
		return nil
	default:
	}
	killGroup(r.pid)
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill plugin %s (pid %d): %w", r.cmd.Path, r.pid, err)
	}
	return nil
}

func (r *procRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *procRunner) Name() string          { return r.cmd.Path }

func (r *procRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}

// Diagnose adds nothing: startError explains go-plugin's failures.
func (r *procRunner) Diagnose(context.Context) string { return "" }

func (r *procRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *procRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

// drainWriter passes writes on until the first error and then discards
// them, so the plugin's pipe is read to the end even when nobody reads what
// comes out of it: a plugin never blocks on a full pipe.
type drainWriter struct {
	w   io.Writer
	err error
}

func (d *drainWriter) Write(p []byte) (int, error) {
	if d.err == nil {
		_, d.err = d.w.Write(p)
	}
	return len(p), nil
}

// lineCap passes lines on, each cut to at most max bytes (the newline
// kept), and drains like drainWriter.
type lineCap struct {
	w   io.Writer
	max int
	n   int // bytes of the current line passed on
	err error
}

func (l *lineCap) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 && l.err == nil {
		end := len(p)
		nl := false
		for i, b := range p {
			if b == '\n' {
				end, nl = i, true
				break
			}
		}
		keep := min(end, max(l.max-l.n, 0))
		out := p[:keep]
		if nl {
			out = append(out[:keep:keep], '\n')
			l.n = 0
		} else {
			l.n += keep
		}
		if len(out) > 0 {
			_, l.err = l.w.Write(out)
		}
		if nl {
			p = p[end+1:]
		} else {
			p = nil
		}
	}
	return total, nil
}
