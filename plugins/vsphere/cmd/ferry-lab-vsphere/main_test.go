//go:build unix

package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestMain runs this test binary as the lab program when
// FERRY_TEST_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("FERRY_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestClosedStdout: `ferry lab status | grep -q` must not kill the lab
// program silently when grep has gone before it writes.
func TestClosedStdout(t *testing.T) {
	t.Parallel()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	cmd := exec.Command(os.Args[0], "help")
	cmd.Env = append(os.Environ(), "FERRY_TEST_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	err = cmd.Run()
	w.Close()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("died of %v", ws.Signal())
		}
		t.Fatalf("exit %d; stderr:\n%s", ee.ExitCode(), stderr.String())
	}
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("%v; stderr:\n%s", err, stderr.String())
	}
}

// TestOutput: what is written reaches the reader at the flush, in one
// write; a closed pipe is no error, another write error is.
func TestOutput(t *testing.T) {
	t.Parallel()
	var under bytes.Buffer
	o := &output{buf: bufio.NewWriter(&under)}
	o.Write([]byte("a table\n"))
	if under.Len() != 0 {
		t.Fatal("written before the flush")
	}
	if err := o.Flush(); err != nil || under.String() != "a table\n" {
		t.Fatalf("%v: %q", err, under.String())
	}
	for _, tt := range []struct {
		err, want error
	}{{syscall.EPIPE, nil}, {syscall.ENOSPC, syscall.ENOSPC}} {
		o := &output{buf: bufio.NewWriter(failWriter{tt.err})}
		o.Write([]byte("a table\n"))
		if err := o.Flush(); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("flush failing with %v: %v", tt.err, err)
		}
	}
}

type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }
