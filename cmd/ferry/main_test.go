package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/engine"
)

func TestExitCodesAndHelp(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{"no command", nil, exitUsage, "usage: ferry"},
		{"unknown command", []string{"fly"}, exitUsage, `unknown command "fly"`},
		{"help", []string{"help"}, exitOK, "commands:"},
		{"help of a command", []string{"help", "run"}, exitOK, "ferry [-config DIR] run"},
		{"-h of a command", []string{"points", "-h"}, exitOK, "JOB [VM]"},
		{"bad flag", []string{"run", "--fast"}, exitUsage, "flag provided but not defined"},
		{"run without a job", []string{"-C", t.TempDir(), "run"}, exitUsage, "name at least one job"},
		{"failover without a VM", []string{"-C", t.TempDir(), "failover", "web"}, exitUsage, "name a job and a VM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(out.String()+errb.String(), tt.out) {
				t.Fatalf("exit %d, want %d; output lacks %q:\n%s%s", code, tt.code, tt.out, out.String(), errb.String())
			}
		})
	}
}

func TestEveryCommandHasHelp(t *testing.T) {
	for name, c := range commands {
		if c.summary == "" || !strings.HasPrefix(c.usage, "ferry ") || !strings.Contains(c.usage, name) {
			t.Errorf("command %s: summary %q, usage %q", name, c.summary, c.usage)
		}
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := size(n); got != want {
			t.Errorf("size(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPlainProgress(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b) // a buffer is not a terminal: plain lines
	now := time.Now()
	for _, ev := range []engine.Event{
		{Kind: engine.SessionStarted, Job: "web", Session: "s1"},
		{Kind: engine.VMStarted, VM: "web-01"},
		{Kind: engine.DiskStarted, VM: "web-01", Disk: 0, Mode: "full", Total: 400, Time: now},
		{Kind: engine.DiskProgress, VM: "web-01", Disk: 0, Done: 100},
		{Kind: engine.DiskProgress, VM: "web-01", Disk: 0, Done: 150},
		{Kind: engine.DiskProgress, VM: "web-01", Disk: 0, Done: 310},
		{Kind: engine.DiskFinished, VM: "web-01", Disk: 0, Mode: "full", Total: 400, Time: now.Add(time.Second)},
		{Kind: engine.VMFinished, VM: "web-01"},
	} {
		p.event(ev)
	}
	want := `job web: session s1 started
  web-01: snapshot and replicate
  web-01 disk 0: full, 400 B to check
  web-01 disk 0: 25%
  web-01 disk 0: 75%
  web-01 disk 0: done (full, 400 B in 1s)
  web-01: restore point created
`
	if b.String() != want {
		t.Fatalf("progress:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestLabNotFound: without ferry-lab-vsphere beside ferry or on the plugin
// search path, `ferry lab` says where it looked and how to build it.
func TestLabNotFound(t *testing.T) {
	home, empty := t.TempDir(), t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("FERRY_PLUGIN_PATH", empty)
	var out, errb bytes.Buffer
	code := run([]string{"lab", "up"}, &out, &errb)
	if code != exitFailure || !strings.Contains(errb.String(), "ferry-lab-vsphere is not in") ||
		!strings.Contains(errb.String(), empty) || !strings.Contains(errb.String(), "make build") {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errb.String())
	}
}

// TestMain lets a test run this test binary as ferry itself: with
// FERRY_TEST_MAIN=1 it is main, with the arguments it was given.
func TestMain(m *testing.M) {
	if os.Getenv("FERRY_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// ferryProcess runs ferry (this test binary as main) with args.
func ferryProcess(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FERRY_TEST_MAIN=1", "HOME="+t.TempDir(), "FERRY_PLUGIN_PATH="+t.TempDir())
	return cmd
}

// TestProgressIsLive: progress lines reach a buffered standard output's
// reader at each event, not when ferry exits.
func TestProgressIsLive(t *testing.T) {
	t.Parallel()
	var under bytes.Buffer
	p := newProgress(newOutput(&under))
	p.event(engine.Event{Kind: engine.SessionStarted, Job: "web", Session: "s1"})
	if got := under.String(); got != "job web: session s1 started\n" {
		t.Fatalf("after the first event, the reader has %q", got)
	}
}
