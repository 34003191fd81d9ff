package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/pki"
)

// ferryRun runs ferry with args and returns its exit code and outputs.
func ferryRun(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCAUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{name: "no subcommand", args: []string{"ca"}, stderr: "name what to do: init, issue or list"},
		{name: "unknown subcommand", args: []string{"ca", "sign"}, stderr: `unknown subcommand "sign"`},
		{name: "init with an argument", args: []string{"ca", "init", "x"}, stderr: `unexpected argument "x"`},
		{name: "init with a bad name", args: []string{"ca", "init", "--name", "a/b"}, stderr: `name "a/b": '/' is not allowed`},
		{name: "issue without a name", args: []string{"ca", "issue"}, stderr: "name the proxy"},
		{name: "issue two names", args: []string{"ca", "issue", "p1", "p2"}, stderr: "name the proxy"},
		{name: "issue a bad name", args: []string{"ca", "issue", ".."}, stderr: `name ".." must start with a letter or a digit`},
		{name: "issue a bad role", args: []string{"ca", "issue", "p1", "--role", "admin"}, stderr: `role "admin": must be control or proxy`},
		{name: "issue for no days", args: []string{"ca", "issue", "p1", "--days", "0"}, stderr: "--days must be at least 1"},
		{name: "list with an argument", args: []string{"ca", "list", "all"}, stderr: `unexpected argument "all"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errb := ferryRun(append([]string{"-C", dir}, tt.args...)...)
			if code != exitUsage || out != "" || !strings.Contains(errb, tt.stderr) || !strings.Contains(errb, "usage: ferry [--config DIR] ca") {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errb)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a wrong command line made %v", entries)
	}
}

func TestCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()

	// Nothing to issue with before init.
	code, _, errb := ferryRun("-C", dir, "ca", "issue", "p1")
	if code != exitFailure || !strings.Contains(errb, "run 'ferry ca init'") {
		t.Fatalf("issue before init: exit %d: %s", code, errb)
	}

	code, out, errb := ferryRun("-C", dir, "ca", "init", "--name", "dr-control")
	if code != exitOK || !strings.Contains(out, pki.ControlDir(dir)) || !strings.Contains(out, `control "dr-control"`) {
		t.Fatalf("init: exit %d\n%s%s", code, out, errb)
	}
	code, _, errb = ferryRun("-C", dir, "ca", "init")
	if code != exitFailure || !strings.Contains(errb, filepath.Join(pki.CADir(dir), pki.CACertFile)) {
		t.Fatalf("second init: exit %d: %s", code, errb)
	}

	// Flags may follow the name.
	code, out, errb = ferryRun("-C", dir, "ca", "issue", "p1", "--host", "10.0.0.7", "--host", "p1.example.com")
	if code != exitOK || !strings.Contains(out, pki.IssuedDir(dir, "p1")) || !strings.Contains(out, "ferry proxy --tls /where/you/copied/p1") {
		t.Fatalf("issue: exit %d\n%s%s", code, out, errb)
	}
	p1, err := pki.Load(pki.IssuedDir(dir, "p1"))
	if err != nil || p1.Identity() != (pki.Identity{Role: pki.RoleProxy, Name: "p1"}) {
		t.Fatalf("issued: %v, %v", p1, err)
	}
	if d := time.Until(p1.NotAfter()) - pki.DefaultValidity; d < -time.Hour || d > time.Hour {
		t.Fatalf("p1 expires %v", p1.NotAfter())
	}
	out2 := filepath.Join(t.TempDir(), "standby")
	code, out, errb = ferryRun("-C", dir, "ca", "issue", "--role", "control", "--days", "10", "--out", out2, "standby")
	if code != exitOK || !strings.Contains(out, out2) || !strings.Contains(out, "ca/control") {
		t.Fatalf("issue control: exit %d\n%s%s", code, out, errb)
	}
	if c, err := pki.Load(out2); err != nil || c.Identity() != (pki.Identity{Role: pki.RoleControl, Name: "standby"}) {
		t.Fatalf("issued: %v, %v", c, err)
	}
	code, out, errb = ferryRun("-C", dir, "ca", "issue", "p2", "--days", "12")
	if code != exitOK {
		t.Fatalf("issue p2: exit %d\n%s%s", code, out, errb)
	}

	// p2 expires within 30 days: a warning, and still exit 0.
	code, out, errb = ferryRun("-C", dir, "ca", "list")
	if code != exitOK {
		t.Fatalf("list: exit %d\n%s%s", code, out, errb)
	}
	for _, want := range []string{"ROLE", "control  dr-control", "proxy    p1", filepath.Join("ca", "issued", "p2")} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errb, `warning: proxy "p2" expires in 11 days`) || strings.Contains(errb, `"p1"`) || strings.Contains(out, "standby") {
		t.Errorf("list: warnings:\n%s\ntable:\n%s", errb, out)
	}
	code, out, _ = ferryRun("-C", dir, "ca", "list", "--json")
	var list []caEntry
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != exitOK {
		t.Fatalf("list --json: exit %d, %v:\n%s", code, err, out)
	}
	states := map[string]string{}
	for _, e := range list {
		states[e.Role+"/"+e.Name] = e.State
	}
	if len(list) != 4 || states["control/dr-control"] != "valid" || states["proxy/p1"] != "valid" || states["proxy/p2"] != "expiring" {
		t.Fatalf("list --json: %+v", list)
	}
}

// TestCAListExpired: an expired or damaged certificate is an error to a
// monitor (exit 1), and the warning says when it expired.
func TestCAListExpired(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	past := func() time.Time { return time.Now().Add(-2 * pki.DefaultValidity) }
	if err := pki.InitCA(pki.CADir(dir), pki.CAOptions{Now: past}); err != nil {
		t.Fatal(err)
	}
	c, err := pki.Load(pki.ControlDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	code, out, errb := ferryRun("-C", dir, "ca", "list")
	if code != exitFailure || !strings.Contains(out, "expired") ||
		!strings.Contains(errb, `warning: control "control" expired on `+when(c.NotAfter())) || !strings.Contains(errb, "--role control") {
		t.Fatalf("exit %d\n%s%s", code, out, errb)
	}
	if code, _, errb := ferryRun("-C", dir, "ca", "issue", "p1"); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, errb)
	}
	os.WriteFile(filepath.Join(pki.IssuedDir(dir, "p1"), pki.KeyFile), []byte("junk"), 0o600)
	code, _, errb = ferryRun("-C", dir, "ca", "list")
	if code != exitFailure || !strings.Contains(errb, `proxy "p1" in `) || !strings.Contains(errb, "holds no PEM private key") {
		t.Fatalf("exit %d\n%s", code, errb)
	}
}
