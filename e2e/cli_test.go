package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
)

// TestInterruptedRun: Ctrl-C in the middle of a copy stops `ferry run`
// with exit status 130 and a message saying what it leaves behind, not an
// engine error and FAILED; the next run finishes.
func TestInterruptedRun(t *testing.T) {
	t.Parallel()
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"16MiB"}})
	l.write("web-01", 0, 0, 8<<20)
	hcl, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	// Throttled, the copy takes seconds: the signal lands inside it.
	l.writeConfig(strings.Replace(string(hcl), "  retention {", "  transfer { throttle = \"1MB/s\" }\n  retention {", 1))

	cmd := exec.Command(filepath.Join(bin, "ferry"), "-C", l.cfg, "run", "e2e")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "FERRY_PLUGIN_PATH=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	orphanless(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		stdout.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "web-01 disk 0: full") {
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("ferry run: %v, want exit 130\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("ferry run died of %v\nstdout:\n%s\nstderr:\n%s", ws.Signal(), stdout.String(), stderr.String())
	}
	out := stdout.String() + stderr.String()
	if ee.ExitCode() != 130 ||
		!strings.Contains(stderr.String(), "ferry run: interrupted; earlier restore points are intact, the next run resumes") ||
		!strings.Contains(stdout.String(), "web-01: interrupted; no new restore point") ||
		strings.Contains(out, "context canceled") || strings.Contains(out, "FAILED") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", ee.ExitCode(), stdout.String(), stderr.String())
	}

	l.writeConfig(string(hcl))
	if s := l.run(); s.code != 0 || len(l.points("web-01")) != 1 {
		t.Fatalf("the run after the interrupted one: exit %d\n%s", s.code, s.stderr)
	}
}

// TestInterruptedRetryWait: a VM that fails for a reason waiting may cure
// (its vm.json is damaged: an error of no class) makes `ferry run` say it
// tries again in ten minutes; Ctrl-C during that wait ends the run at once
// with exit status 130, and the VM keeps its failed attempt.
func TestInterruptedRetryWait(t *testing.T) {
	t.Parallel()
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"1MiB"}}, vmSpec{name: "db-01", disks: []string{"1MiB"}})
	vmJSON := filepath.Join(l.prod, "web-01", "vm.json")
	good, err := os.ReadFile(vmJSON)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vmJSON, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(filepath.Join(bin, "ferry"), "-C", l.cfg, "run", "e2e")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "FERRY_PLUGIN_PATH=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	orphanless(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	var signalled time.Time
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		stdout.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "note: trying web-01 again in 10m0s (at ") {
			signalled = time.Now()
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	took := time.Since(signalled)
	var ee *exec.ExitError
	if signalled.IsZero() || !errors.As(err, &ee) || ee.ExitCode() != 130 || took > 30*time.Second {
		t.Fatalf("ferry run: %v %s after the signal, want exit 130 at once\nstdout:\n%s\nstderr:\n%s", err, took, stdout.String(), stderr.String())
	}
	for _, want := range []string{
		"web-01: note: attempt 1 of 3 failed; tried again after the other VMs and a wait of 10m0s: ",
		"db-01: restore point created",
		"web-01: interrupted; no new restore point",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Fatalf("stdout lacks %q:\n%s\nstderr:\n%s", want, stdout.String(), stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), "ferry run: interrupted; earlier restore points are intact, the next run resumes") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}

	if err := os.WriteFile(vmJSON, good, 0o644); err != nil {
		t.Fatal(err)
	}
	if s := l.run(); s.code != 0 || s.vm("web-01").Attempts != 1 {
		t.Fatalf("the run after the interrupted one: exit %d, %+v\n%s", s.code, s.VMs, s.stderr)
	}
}

// TestFailoverPointPrefix: `ferry points` names its size column for what
// it is; `failover --point` takes the start of an id
// when it fits one point, and an id that fits none gets the list of the
// VM's points.
func TestFailoverPointPrefix(t *testing.T) {
	t.Parallel()
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"1MiB"}})
	l.write("web-01", 0, 0, 64<<10)
	l.run()
	l.write("web-01", 0, 0, 64<<10)
	l.run()
	points := l.points("web-01")
	if len(points) != 2 {
		t.Fatalf("%d points, want 2", len(points))
	}
	// The size column says what it measures.
	if r := ferry(t, l.cfg, "points", "e2e"); r.code != 0 || !regexp.MustCompile(`(?m)^ID +VM +CREATED +OWN SIZE +CONSISTENCY +SESSION$`).MatchString(r.stdout) {
		t.Fatalf("ferry points: %s", r)
	}
	r := ferry(t, l.cfg, "failover", "e2e", "web-01", "--point", "no-such-point")
	if r.code != 2 || !strings.Contains(r.stderr, `no restore point "no-such-point"`) ||
		!strings.Contains(r.stderr, points[0].ID) || !strings.Contains(r.stderr, points[1].ID) {
		t.Fatalf("failover to a point that is not there: %s", r)
	}
	// The shortest start of the older id that no other id has.
	first, other := points[0].ID, points[1].ID
	n := 1
	for n < len(first) && strings.HasPrefix(other, first[:n]) {
		n++
	}
	r = ferry(t, l.cfg, "failover", "e2e", "web-01", "--point", first[:n])
	if r.code != 0 || !strings.Contains(r.stdout, "(restore point "+first+")") {
		t.Fatalf("failover --point %s (of %s): %s", first[:n], first, r)
	}
}

// TestFlagsAnywhere: with real plugins, flags come after the arguments
// (`ferry run e2e --json`, `-C DIR` after the verb), `--` reaches a VM
// whose name starts with a dash, and each listing's --json is the
// documented shape.
func TestFlagsAnywhere(t *testing.T) {
	t.Parallel()
	l := newLab(t, 3, vmSpec{name: "web-01", disks: []string{"1MiB"}})
	local(t, nil, "vm", "create", "--disk", "1MiB", l.prod, "--", "-x")
	hcl, err := os.ReadFile(filepath.Join(l.cfg, "main.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	l.writeConfig(strings.Replace(string(hcl), `vms        = ["web-01"]`, "vms        = [\"web-01\", \"-x\"]\n  schedule   = \"every 1h\"", 1))
	l.write("web-01", 0, 0, 64<<10)

	r := ferry(t, l.cfg, "run", "e2e", "--json")
	var sess struct {
		Job    string `json:"job"`
		Result string `json:"result"`
		Totals struct {
			VMs int `json:"vms"`
		} `json:"totals"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sess); err != nil || r.code != 0 || sess.Job != "e2e" || sess.Result != "success" || sess.Totals.VMs != 2 {
		t.Fatalf("ferry run e2e --json: %v\n%s", err, r)
	}

	type point struct {
		VM string `json:"vm"`
		ID string `json:"id"`
	}
	points := func(args ...string) []point {
		t.Helper()
		r := run(t, nil, "ferry", args...)
		var ps []point
		if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil || r.code != 0 {
			t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, r)
		}
		return ps
	}
	if ps := points("points", "e2e", "--json", "-C", l.cfg); len(ps) != 2 {
		t.Fatalf("points of the job: %+v", ps)
	}
	if ps := points("points", "e2e", "web-01", "--config", l.cfg, "--json"); len(ps) != 1 || ps[0].VM != "web-01" {
		t.Fatalf("points of web-01: %+v", ps)
	}
	if ps := points("-C", l.cfg, "points", "--json", "e2e", "--", "-x"); len(ps) != 1 || ps[0].VM != "-x" {
		t.Fatalf("points of -x: %+v", ps)
	}
	if r := ferry(t, l.cfg, "points", "e2e", "-x"); r.code != 2 || !strings.Contains(r.stderr, "unknown shorthand flag: 'x' in -x") {
		t.Fatalf("-x without --: %s", r)
	}
	if r := ferry(t, l.cfg, "failover", "e2e", "--", "-x"); r.code != 0 || !strings.Contains(r.stdout, "-x failed over to replica") {
		t.Fatalf("failover of -x: %s", r)
	}
	if r := ferry(t, l.cfg, "failover", "undo", "e2e", "--", "-x"); r.code != 0 || !strings.Contains(r.stdout, "failover of -x undone") {
		t.Fatalf("undo the failover of -x: %s", r)
	}

	// status: the schedule, and no next run, since nothing runs it.
	r = ferry(t, l.cfg, "status", "--json")
	var st []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || len(st) != 1 {
		t.Fatalf("ferry status --json: %v\n%s", err, r)
	}
	if _, ok := st[0]["next_run"]; ok || st[0]["schedule"] != "every 1h" || st[0]["scheduled"] != false {
		t.Fatalf("status of a job with a schedule: %s", r.stdout)
	}
	if r := ferry(t, l.cfg, "status"); r.code != 0 || !strings.Contains(r.stdout, "schedule every 1h, not run automatically (no ferry server runs this configuration): run it with 'ferry run e2e'") || strings.Contains(r.stdout, "next run") {
		t.Fatalf("ferry status: %s", r)
	}
	// While a ferry server holds the configuration's jobs, status says
	// the server runs the scheduled one.
	cat, err := catalog.Open(catalog.DefaultPath(l.cfg), catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.ClaimControl(catalog.Controller{PID: 4242, Host: "dr-01"}); err != nil {
		t.Fatal(err)
	}
	r = ferry(t, l.cfg, "status", "--json")
	st = nil
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || len(st) != 1 ||
		st[0]["scheduled"] != true || !strings.HasPrefix(fmt.Sprint(st[0]["scheduled_by"]), "ferry server (process 4242 on dr-01") {
		t.Fatalf("status while a server runs the jobs: %v\n%s", err, r)
	}
	if r := ferry(t, l.cfg, "status"); r.code != 0 || !strings.Contains(r.stdout, "schedule every 1h, run by ferry server (process 4242 on dr-01") {
		t.Fatalf("ferry status while a server runs the jobs: %s", r)
	}
	if err := cat.Close(); err != nil {
		t.Fatal(err)
	}

	// plan: the documented shape.
	l.write("web-01", 0, 0, 64<<10)
	r = ferry(t, l.cfg, "plan", "e2e", "--json")
	var plans []struct {
		Job     string `json:"job"`
		Changes []struct {
			Action string `json:"action"`
			VM     string `json:"vm"`
			What   string `json:"what"`
		} `json:"changes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plans); err != nil || r.code != 0 || len(plans) != 1 || plans[0].Job != "e2e" || len(plans[0].Changes) == 0 {
		t.Fatalf("ferry plan --json: %v\n%s", err, r)
	}
	for _, c := range plans[0].Changes {
		if !slices.Contains([]string{"create", "update", "delete", "warn", "keep"}, c.Action) || c.What == "" {
			t.Fatalf("a change of the plan: %+v\n%s", c, r.stdout)
		}
	}
}

// TestCPUProfileOfEveryProcess: FERRY_CPUPROFILE has ferry and each plugin
// it starts write a profile of their own.
func TestCPUProfileOfEveryProcess(t *testing.T) {
	dir := t.TempDir()
	r := runEnv(t, nil, []string{"HOME=" + t.TempDir(), "FERRY_PLUGIN_PATH=" + bin, "FERRY_CPUPROFILE=" + dir}, "ferry", "-C", t.TempDir(), "plugins")
	if r.code != 0 {
		t.Fatalf("ferry plugins: %s", r)
	}
	for _, name := range []string{"ferry", "ferry-plugin-local"} {
		found, _ := filepath.Glob(filepath.Join(dir, name+"-[0-9]*.pprof"))
		if len(found) != 1 {
			t.Errorf("profiles of %s: %v, want one", name, found)
			continue
		}
		if fi, err := os.Stat(found[0]); err != nil || fi.Size() == 0 {
			t.Errorf("the profile of %s is empty (%v)", name, err)
		}
	}
}
