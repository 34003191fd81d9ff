//go:build unix

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
)

// TestClosedStdout: a reader that stops reading early (`ferry ... | grep
// -q`) neither kills ferry silently nor changes its exit status.
func TestClosedStdout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // "" means none
	}{
		{"help", []string{"help"}, exitOK, ""},
		{"help of a command", []string{"help", "points"}, exitOK, ""},
		{"usage error", []string{"run"}, exitUsage, "name at least one job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			r.Close() // the reader is gone before ferry writes
			cmd := ferryProcess(t, append([]string{"-C", t.TempDir()}, tt.args...)...)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = w, &stderr
			err = cmd.Run()
			w.Close()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					t.Fatalf("ferry %s died of %v; stderr:\n%s", strings.Join(tt.args, " "), ws.Signal(), stderr.String())
				}
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, stderr.String())
			}
			if tt.stderr == "" && stderr.Len() > 0 || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.stderr)
			}
		})
	}
}

// writeCounter counts the writes it gets.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestOutputBuffers: a table is one write, at the flush.
func TestOutputBuffers(t *testing.T) {
	t.Parallel()
	var under writeCounter
	o := newOutput(&under)
	tw := tabwriter.NewWriter(o, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tVM\tSIZE")
	for i := range 20 {
		fmt.Fprintf(tw, "p%d\tweb-%02d\t%d MiB\n", i, i, i)
	}
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	if under.writes != 0 {
		t.Fatalf("%d writes before the flush", under.writes)
	}
	if err := o.Flush(); err != nil {
		t.Fatal(err)
	}
	if under.writes != 1 || !strings.Contains(under.String(), "p19  web-19  19 MiB") {
		t.Fatalf("%d writes:\n%s", under.writes, under.String())
	}
}

// failWriter fails every write with err.
type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }

// TestOutputErrors: a closed pipe is no error and drops the rest; any
// other write error is kept and named.
func TestOutputErrors(t *testing.T) {
	t.Parallel()
	gone := newOutput(failWriter{syscall.EPIPE})
	fmt.Fprintln(gone, "a line")
	if err := gone.Flush(); err != nil {
		t.Errorf("flush to a closed pipe: %v", err)
	}
	if n, err := gone.Write([]byte("more")); n != 4 || err != nil {
		t.Errorf("write after the pipe closed: %d, %v", n, err)
	}
	full := newOutput(failWriter{syscall.ENOSPC})
	fmt.Fprintln(full, "a line")
	err := full.Flush()
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "write standard output") {
		t.Errorf("flush to a full disk: %v", err)
	}
}
