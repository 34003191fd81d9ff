package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
)

// TestLookDuringRun: while a long run goes on, `ferry status` shows it
// running with its progress, `ferry points` answers, another job of the
// same configuration runs, and a second run of the same job is refused,
// clearly.
func TestLookDuringRun(t *testing.T) {
	l := newLab(t, 3,
		vmSpec{name: "big-01", disks: []string{"16MiB"}},
		vmSpec{name: "small-01", disks: []string{"4MiB"}},
	)
	// Random data, not compressed, at 1 MB/s: about 12 seconds, longer
	// than the 5 seconds a command waited for the catalog.
	local(t, l.random(12*mib), "vm", "write", l.prod, "big-01", "0", "0")
	l.write("small-01", 0, 0, mib)
	l.writeConfig(`
source "local" "prod"     { path = "../prod" }
target "local" "dr"       { path = "../dr" }
repository "local" "meta" { path = "../meta" }

job "slow" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["big-01"]
  transfer {
    compression = "none"
    throttle    = "1MB/s"
  }
}

job "quick" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["small-01"]
}
`)

	slow := exec.Command(filepath.Join(bin, "ferry"), "-C", l.cfg, "run", "slow")
	slow.Env = append(os.Environ(), "HOME="+t.TempDir(), "FERRY_PLUGIN_PATH=")
	var slowOut, slowErr bytes.Buffer // read once it exited
	slow.Stdout, slow.Stderr = &slowOut, &slowErr
	orphanless(slow)
	if err := slow.Start(); err != nil {
		t.Fatal(err)
	}
	var slowExit error
	exited := make(chan struct{})
	go func() { slowExit = slow.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = slow.Process.Kill()
		<-exited
	})

	// The signal: status shows the session running, by that process, with
	// progress, once the run recorded it (about a second into the copy).
	// The fields of `ferry status --json` the test reads.
	type status []struct {
		Job         string `json:"job"`
		LastSession *struct {
			ID     string         `json:"id"`
			Result catalog.Result `json:"result"`
			Owner  *struct {
				PID int `json:"pid"`
			} `json:"owner"`
			Progress *struct {
				Done  int64 `json:"done"`
				Total int64 `json:"total"`
				Disks int   `json:"disks"`
			} `json:"progress"`
		} `json:"last_session"`
	}
	var id string
	deadline := time.Now().Add(20 * time.Second)
	for id == "" {
		select {
		case <-exited:
			t.Fatalf("the slow run ended (%v) before status showed its progress:\n%s\n%s", slowExit, slowOut.String(), slowErr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("status never showed the slow run's progress")
		}
		r := ferry(t, l.cfg, "status", "--json")
		if r.code != 0 {
			t.Fatalf("ferry status during a run: %s", r)
		}
		var st status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("ferry status --json: %v\n%s", err, r)
		}
		s := st[1].LastSession // jobs by name: quick, slow
		if st[1].Job != "slow" || (s != nil && (s.Result != catalog.ResultRunning || s.Owner == nil || s.Owner.PID != slow.Process.Pid)) {
			t.Fatalf("status of the running job: %s", r.stdout)
		}
		if s == nil || s.Progress == nil || s.Progress.Done == 0 {
			continue // not begun, or no progress recorded yet
		}
		if p := s.Progress; p.Total != 16*mib || p.Disks != 1 || p.Done > p.Total {
			t.Fatalf("progress of the running session: %+v", p)
		}
		id = s.ID
	}
	r := ferry(t, l.cfg, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "job slow: session "+id+" running since") ||
		!strings.Contains(r.stdout, fmt.Sprintf("(pid %d", slow.Process.Pid)) || !strings.Contains(r.stdout, "of the 1 disk begun") {
		t.Fatalf("ferry status during a run: %s", r)
	}
	t.Logf("ferry status during the run:\n%s", r.stdout)
	if r := ferry(t, l.cfg, "points", "slow"); r.code != 0 || !strings.Contains(r.stdout, "no restore points yet") {
		t.Fatalf("ferry points during a run: %s", r)
	}

	// The same job again is refused, naming the session that runs.
	r = ferry(t, l.cfg, "run", "slow")
	if r.code != 1 || !strings.Contains(r.stderr, "session "+id+" of this job is running") ||
		!strings.Contains(r.stderr, "one session of a job runs at a time") {
		t.Fatalf("a second run of the running job: %s", r)
	}
	// Another job of the configuration runs meanwhile.
	if r := ferry(t, l.cfg, "run", "--json", "quick"); r.code != 0 || !strings.Contains(r.stdout, `"result": "success"`) {
		t.Fatalf("a run of another job during a run: %s", r)
	}

	<-exited
	if slowExit != nil {
		t.Fatalf("the slow run: %v\n%s\n%s", slowExit, slowOut.String(), slowErr.String())
	}
	r = ferry(t, l.cfg, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "job slow: last session "+id+" success") || !strings.Contains(r.stdout, "job quick: last session") {
		t.Fatalf("ferry status after the runs: %s", r)
	}
}
