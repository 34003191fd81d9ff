//go:build unix

package simhost

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
)

// The kill test runs this test binary again as a child that deletes the
// oldest checkpoint and SIGKILLs itself at a step of the merge; the parent
// then checks from the files alone that every checkpoint reads as before,
// and that the next change finishes or undoes the merge.

const killEnv = "FERRY_SIMHOST_KILL_AT" // step:count:dir:vm:checkpoint

func TestMain(m *testing.M) {
	if v := os.Getenv(killEnv); v != "" {
		killChild(v)
		return
	}
	os.Exit(m.Run())
}

func killChild(v string) {
	var a struct {
		Step       string
		Count      int
		Dir, VM    string
		Checkpoint string
	}
	if err := json.Unmarshal([]byte(v), &a); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	h, err := Open(a.Dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	n := 0
	h.step = func(name string) {
		if name == a.Step {
			if n++; n == a.Count {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	err = h.DestroyCheckpoint(context.Background(), a.VM, a.Checkpoint)
	fmt.Fprintln(os.Stderr, "not killed:", err)
	os.Exit(4)
}

func TestKillDuringMerge(t *testing.T) {
	// Deleting the oldest of four checkpoints merges the second's file
	// into the base ("merged"), makes the three files above again
	// ("rebased" each), then commits ("committed").
	cases := []struct {
		step  string
		count int
	}{{"merged", 1}, {"rebased", 1}, {"rebased", 3}, {"committed", 1}}
	for _, tc := range cases {
		t.Run(tc.step+"-"+strconv.Itoa(tc.count), func(t *testing.T) {
			dir := t.TempDir()
			h, v := newVM(t, dir)
			cps, want, current := buildPoints(t, h, v.ID, 3)
			var ids []string
			for _, cp := range cps {
				ids = append(ids, cp.ID)
			}
			arg, _ := json.Marshal(map[string]any{"Step": tc.step, "Count": tc.count, "Dir": dir, "VM": v.ID, "Checkpoint": cps[0].ID})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), killEnv+"="+string(arg))
			out, err := cmd.CombinedOutput()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("the child was not killed at %s %d: %v\n%s", tc.step, tc.count, err, out)
			}
			// Right after the kill, from the files alone: every checkpoint
			// reads as it did, by our reader and by libvhdi.
			checkPoints(t, h, v.ID, ids, want, current)
			left, err := h.ListCheckpoints(context.Background(), v.ID)
			if err != nil {
				t.Fatal(err)
			}
			committed := tc.step == "committed"
			if got := len(left); committed && got != 3 || !committed && got != 4 {
				t.Errorf("after a kill at %s: %d checkpoints, want %d", tc.step, got, map[bool]int{true: 3, false: 4}[committed])
			}
			// The next change sweeps what the killed one left: its new
			// files (undone) or the old ones (finished).
			if err := h.SetNotes(context.Background(), v.ID, "next"); err != nil {
				t.Fatal(err)
			}
			if s := strayFiles(t, h, v.ID); len(s) > 0 {
				t.Errorf("files left after the next change: %v", s)
			}
			if !committed {
				if err := h.DestroyCheckpoint(context.Background(), v.ID, cps[0].ID); err != nil {
					t.Fatalf("deleting the checkpoint again: %v", err)
				}
			}
			checkPoints(t, h, v.ID, ids, want, current)
			if left, _ := h.ListCheckpoints(context.Background(), v.ID); len(left) != 3 || slices.ContainsFunc(left, func(c host.Checkpoint) bool { return c.ID == cps[0].ID }) {
				t.Errorf("the oldest checkpoint is not gone: %d left", len(left))
			}
		})
	}
}
