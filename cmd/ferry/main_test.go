package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/engine"
	"github.com/ferry-dr/ferry/sdk"
)

func TestExitCodesAndHelp(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // in stdout, and stderr empty
		stderr string // in stderr, and stdout empty
	}{
		{name: "no command", code: exitUsage, stderr: "usage: ferry"},
		{name: "unknown command", args: []string{"fly"}, code: exitUsage, stderr: `unknown command "fly"`},
		{name: "help", args: []string{"help"}, code: exitOK, stdout: "commands:"},
		{name: "-h", args: []string{"-h"}, code: exitOK, stdout: "commands:"},
		{name: "bad global flag", args: []string{"--fast"}, code: exitUsage, stderr: "usage: ferry"},
		{name: "help of a command", args: []string{"help", "run"}, code: exitOK, stdout: "ferry [--config DIR] run"},
		{name: "help of a command lists its flags", args: []string{"help", "points"}, code: exitOK, stdout: "  --json  print JSON"},
		{name: "help of an unknown command", args: []string{"help", "fly"}, code: exitUsage, stderr: `unknown command "fly"`},
		{name: "-h of a command", args: []string{"points", "-h"}, code: exitOK, stdout: "  --json  print JSON"},
		{name: "--help of a command", args: []string{"failover", "--help"}, code: exitOK, stdout: "--point ID"},
		{name: "help of lab", args: []string{"help", "lab"}, code: exitOK, stdout: "ferry lab up [--dir DIR]"},
		{name: "help of a subcommand", args: []string{"help", "ca", "issue"}, code: exitOK, stdout: "usage: ferry [--config DIR] ca issue NAME"},
		{name: "help of an unknown subcommand", args: []string{"help", "ca", "sign"}, code: exitUsage, stderr: "ferry help: unknown command \"ca sign\"\n\nferry "},
		{name: "help of help", args: []string{"help", "help"}, code: exitOK, stdout: "usage: ferry help"},
		{name: "-h after the arguments", args: []string{"run", "web", "-h"}, code: exitOK, stdout: "ferry [--config DIR] run"},
		{name: "-help of a command", args: []string{"points", "-help"}, code: exitOK, stdout: "  --json  print JSON"},
		{name: "-h of lab", args: []string{"lab", "-h"}, code: exitOK, stdout: "ferry lab up [--dir DIR]"},
		{name: "-h of a subcommand", args: []string{"ca", "list", "-h"}, code: exitOK, stdout: "usage: ferry [--config DIR] ca list [--json]"},
		{name: "unknown command with flags", args: []string{"-C", t.TempDir(), "fly", "-C", t.TempDir()}, code: exitUsage, stderr: "ferry: unknown command \"fly\"\n\nferry "},
		{name: "global flag without its value", args: []string{"-C"}, code: exitUsage, stderr: "ferry: flag needs an argument: 'C' in -C"},
		{name: "version", args: []string{"version"}, code: exitOK, stdout: fmt.Sprintf("\nplugin protocol: %d.%d\n", sdk.ProtocolMajor, sdk.ProtocolMinor)},
		{name: "version with an argument", args: []string{"version", "x"}, code: exitUsage, stderr: `unexpected argument "x"`},
		{name: "completion without a shell", args: []string{"completion"}, code: exitUsage, stderr: "name one shell"},
		{name: "completion of another shell", args: []string{"completion", "tcsh"}, code: exitUsage, stderr: `no completion for the shell "tcsh"`},
		{name: "bad flag", args: []string{"run", "--fast"}, code: exitUsage, stderr: "ferry run: unknown flag: --fast\nusage: ferry [--config DIR] run"},
		{name: "run without a job", args: []string{"-C", t.TempDir(), "run"}, code: exitUsage, stderr: "name at least one job"},
		{name: "failover without a VM", args: []string{"-C", t.TempDir(), "failover", "web"}, code: exitUsage, stderr: "name a job and a VM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			ok := code == tt.code
			if tt.stdout != "" {
				ok = ok && strings.Contains(out.String(), tt.stdout) && errb.Len() == 0
			} else {
				ok = ok && strings.Contains(errb.String(), tt.stderr) && out.Len() == 0
			}
			if !ok {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, out.String(), errb.String())
			}
		})
	}
}

// singleDash is a long flag spelled with one dash.
var singleDash = regexp.MustCompile(`(^|[\s\[(])-[a-z][a-z-]+`)

// TestEveryCommandHasHelp: each verb has a summary and a usage line, and
// the usage line and the flags its help lists spell long flags one way,
// --name.
func TestEveryCommandHasHelp(t *testing.T) {
	for name, c := range commands {
		if c.summary == "" || !strings.HasPrefix(c.usage, "ferry ") || !strings.Contains(c.usage, name) {
			t.Errorf("command %s: summary %q, usage %q", name, c.summary, c.usage)
		}
		var out, errb bytes.Buffer
		if code := run([]string{"help", name}, &out, &errb); code != exitOK {
			t.Errorf("ferry help %s: exit %d\n%s", name, code, errb.String())
		}
		if m := singleDash.FindString(out.String()); m != "" {
			t.Errorf("ferry help %s spells a flag %q:\n%s", name, m, out.String())
		}
	}
	var out bytes.Buffer
	printUsage(&out)
	if m := singleDash.FindString(out.String()); m != "" {
		t.Errorf("ferry help spells a flag %q:\n%s", m, out.String())
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
		{Kind: engine.VMFinished, VM: "db-01", Result: catalog.ResultSkipped, Message: "replica is failed over"},
		{Kind: engine.VMFinished, VM: "app-01", Result: catalog.ResultWarning, Message: "disk 1 is independent"},
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
  db-01: skipped: replica is failed over
  app-01: restore point created, with a warning: disk 1 is independent
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

func TestMatchPoint(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 5, 9, 0, 0, 0, time.Local)
	points := []catalog.RestorePoint{
		{ID: "20261205T090000-a1"}, {ID: "20261205T091500-b2"}, {ID: "20261205T091500-b3"}, {ID: "p1"}, {ID: "p10"},
	}
	for i := range points {
		points[i].Created = created.Add(time.Duration(i) * 15 * time.Minute)
	}
	tests := []struct {
		name, arg, want, err string
	}{
		{name: "whole id", arg: "20261205T091500-b2", want: "20261205T091500-b2"},
		{name: "unambiguous start", arg: "20261205T09000", want: "20261205T090000-a1"},
		{name: "id that starts another", arg: "p1", want: "p1"},
		{name: "ambiguous start", arg: "20261205T0915", err: `restore point "20261205T0915" is ambiguous: it starts 20261205T091500-b2, 20261205T091500-b3`},
		{name: "none", arg: "x", err: `no restore point "x"; the points are, oldest first: 20261205T090000-a1 (2026-12-05 09:00:00), 20261205T091500-b2 (2026-12-05 09:15:00)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := engine.MatchPoint(points, tt.arg)
			if got != tt.want || (err == nil) != (tt.err == "") || err != nil && !strings.HasPrefix(err.Error(), tt.err) {
				t.Fatalf("engine.MatchPoint(%q) = %q, %v; want %q, %q", tt.arg, got, err, tt.want, tt.err)
			}
		})
	}
	if _, err := engine.MatchPoint(nil, "p1"); err == nil || !strings.Contains(err.Error(), "there are no restore points") {
		t.Fatalf("no points: %v", err)
	}
}

// redrawn is where the live lines are cleared to be drawn again: the
// cursor moves up over them and the screen is cleared below.
var redrawn = regexp.MustCompile(`\x1b\[([0-9]+)A\x1b\[J`)

// TestLiveProgressFitsTheTerminal: on a terminal, every live line is cut
// to the terminal's width (a wrapped line would leave a stale row at each
// redraw), and a line for the whole session says which VM of how many,
// the bytes and the time left.
func TestLiveProgressFitsTheTerminal(t *testing.T) {
	t.Parallel()
	for _, width := range []int{40, 80, 200} {
		t.Run(fmt.Sprint(width), func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			p := newProgress(&b)
			p.tty, p.width = true, func() int { return width }
			p.expect(2)
			start := time.Now().Add(-10 * time.Second)
			for _, ev := range []engine.Event{
				{Kind: engine.SessionStarted, Job: "web", Session: "s1", Time: start},
				{Kind: engine.VMStarted, VM: "a-virtual-machine-with-a-long-name-01"},
				{Kind: engine.DiskStarted, VM: "a-virtual-machine-with-a-long-name-01", Disk: 0, Mode: "change-tracking", Total: 400 << 20, Time: start},
				{Kind: engine.DiskProgress, VM: "a-virtual-machine-with-a-long-name-01", Disk: 0, Done: 100 << 20},
			} {
				p.event(ev)
			}
			// Draw twice, as the next progress events would: the second
			// time moves up over the rows of the first and draws again.
			p.mu.Lock()
			p.redraw()
			p.redraw()
			p.mu.Unlock()
			m := redrawn.FindAllStringSubmatchIndex(b.String(), -1)
			if m == nil {
				t.Fatalf("no redraw:\n%q", b.String())
			}
			last := m[len(m)-1]
			up, _ := strconv.Atoi(b.String()[last[2]:last[3]])
			lines := strings.Split(strings.TrimSuffix(b.String()[last[1]:], "\n"), "\n")
			if up != len(lines) {
				t.Errorf("moved up %d rows over %d lines", up, len(lines))
			}
			var overall string
			for _, line := range lines {
				if n := utf8.RuneCountInString(line); n >= width {
					t.Errorf("a line of %d characters on a terminal of %d:\n%s", n, width, line)
				}
				if strings.HasPrefix(line, "  all: ") {
					overall = line
				}
			}
			want := "  all: VM 1 of 2, 100.0 MiB of 400.0 MiB checked, 10.0 MiB/s, ETA 1m10s"
			if overall != cut(want, width-1) {
				t.Errorf("the session's line is %q, want %q", overall, cut(want, width-1))
			}
		})
	}
}

// TestTerminalWidth: without a terminal to ask, $COLUMNS, else 80.
func TestTerminalWidth(t *testing.T) {
	t.Setenv("COLUMNS", "52")
	if got := terminalWidth(&bytes.Buffer{}); got != 52 {
		t.Errorf("with COLUMNS=52: %d", got)
	}
	t.Setenv("COLUMNS", "")
	if got := terminalWidth(newOutput(&bytes.Buffer{})); got != 80 {
		t.Errorf("without COLUMNS: %d", got)
	}
	// ferry's buffered standard output is a terminal when its file is.
	if f := file(newOutput(os.Stderr)); f != os.Stderr {
		t.Errorf("the file beneath ferry's output is %v", f)
	}
}
