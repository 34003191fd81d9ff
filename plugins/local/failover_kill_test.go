//go:build unix

package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The failover kill tests run Failover, UndoFailover and CommitFailover in
// a child process that SIGKILLs itself at a named step (and, in
// TestKillFailoverLoop, at random moments), then check from the files
// alone, with a fresh Target, that the next call settles the replica: no
// restore point lost or changed, no temporary file left, and no commit of
// a replica whose failover disks are not all there.

// failoverNet is the network of the kill tests' failovers: it changes
// vm.json, so a description left half-restored shows.
var failoverNet = sdk.NetworkConfig{
	NetworkMap: []sdk.NetworkMapping{{From: "prod", To: "dr"}},
	ReIP:       []sdk.ReIPRule{{FromSubnet: "10.1.0.0/16", ToSubnet: "10.2.0.0/16", Gateway: "10.2.0.1"}},
}

// killAtStep is the child of TestKillFailoverSteps: spec is "OP STEP N";
// it runs OP on replica "k" (failover, undo, commit, or settle: a call
// that only settles what an earlier kill left) and kills itself the N-th
// time it passes STEP. Returning means it never got there.
func killAtStep(root, spec string) error {
	var op, step string
	var n int
	if _, err := fmt.Sscan(spec, &op, &step, &n); err != nil {
		return fmt.Errorf("step spec %q: %w", spec, err)
	}
	ctx := context.Background()
	tgt, err := NewTarget(root)
	if err != nil {
		return err
	}
	seen := 0
	tgt.crash = func(s string) {
		if s == step {
			if seen++; seen == n {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
	}
	switch op {
	case "failover":
		pts, err := tgt.ListRestorePoints(ctx, "k")
		if err != nil {
			return err
		}
		_, err = tgt.Failover(ctx, sdk.FailoverRequest{Replica: "k", Point: pts[0].ID, Network: failoverNet})
		if err != nil {
			return err
		}
	case "undo":
		if _, err := tgt.UndoFailover(ctx, "k"); err != nil {
			return err
		}
	case "commit":
		if _, err := tgt.CommitFailover(ctx, "k"); err != nil {
			return err
		}
	case "map":
		if _, err := tgt.MapReplica(ctx, mapRequest()); err != nil {
			return err
		}
	case "settle":
		// Any call that locks the replica settles what a kill left.
		if rd, err := tgt.OpenRestorePointDisk(ctx, "k", "", 0); err == nil {
			rd.Close()
		}
	default:
		return fmt.Errorf("unknown operation %q", op)
	}
	return fmt.Errorf("%s never passed step %s %d times", op, step, n)
}

// failoverForever is the child of TestKillFailoverLoop: it fails replica
// "k" over to a random point and undoes it, again and again.
func failoverForever(root string, rng *rand.Rand, note func(string, ...any)) error {
	ctx := context.Background()
	tgt, err := NewTarget(root)
	if err != nil {
		return err
	}
	note("ready")
	for {
		rep, err := tgt.GetReplica(ctx, "k")
		if err != nil {
			return err
		}
		if rep.State == sdk.ReplicaFailedOver {
			if _, err := tgt.UndoFailover(ctx, "k"); err != nil {
				return err
			}
			continue
		}
		pts, err := tgt.ListRestorePoints(ctx, "k")
		if err != nil {
			return err
		}
		p := pts[rng.IntN(len(pts))]
		if _, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "k", Point: p.ID, Network: failoverNet}); err != nil {
			return err
		}
	}
}

// failoverFixture makes target folder root with replica "k" of testVM
// (two disks) holding two restore points, the working state changed after
// the second, and returns its model and its description.
func failoverFixture(t *testing.T, root string) (*replica, *sdk.VM) {
	t.Helper()
	tgt, err := NewTarget(root)
	if err != nil {
		t.Fatal(err)
	}
	r := newReplica(t, tgt, "k")
	rng := testRand(t)
	r.fill(t, rng)
	r.point(t, nil)
	r.write(t, 0, scatter(rng, int64(len(r.disks[0])), 4)...)
	r.write(t, 1, scatter(rng, int64(len(r.disks[1])), 2)...)
	r.point(t, nil)
	r.write(t, 0, scatter(rng, int64(len(r.disks[0])), 2)...)
	vm, err := readVM(filepath.Join(root, "k"))
	if err != nil {
		t.Fatal(err)
	}
	return r, vm
}

// runStepChild runs killAtStep in a child and fails unless it died by
// SIGKILL.
func runStepChild(t *testing.T, dir, spec string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), killHelperEnv+"=failover-step:"+dir, killHelperEnv+"_STEP="+spec)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("%s: the child was not killed at the step (%v):\n%s", spec, err, out)
	}
}

// tempFiles lists the temporary files under dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), tempPrefix) {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// vmDisks returns the disk<N>.img files of a VM folder, by index.
func vmDisks(t *testing.T, dir string) map[int][]byte {
	t.Helper()
	out := map[int][]byte{}
	for i := range 4 {
		b, err := os.ReadFile(diskFile(dir, i))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func vmJSON(t *testing.T, vm *sdk.VM) string {
	t.Helper()
	b, err := json.Marshal(vm)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkSettled checks a replica that a call has settled after a kill, by
// its state: ready is the description of before the failover and no
// failover disk; failed_over is every disk of the failover point, byte for
// byte; committed is that and no restore point data left. Every restore
// point of a replica not committed reads as it was written, and no
// temporary file is left.
func checkSettled(t *testing.T, r *replica, before *sdk.VM, when string) sdk.ReplicaState {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(r.t.root, r.name)
	rep, err := r.t.GetReplica(ctx, r.name)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := readVM(dir)
	if err != nil {
		t.Fatal(err)
	}
	disks := vmDisks(t, dir)
	switch rep.State {
	case sdk.ReplicaReady:
		if got, want := vmJSON(t, vm), vmJSON(t, before); got != want {
			t.Errorf("%s: vm.json is\n%s\nwant the description of before the failover\n%s", when, got, want)
		}
		if len(disks) != 0 {
			t.Errorf("%s: a ready replica has %d failover disks", when, len(disks))
		}
	case sdk.ReplicaFailedOver, sdk.ReplicaCommitted:
		want, ok := r.points[rep.FailoverPoint]
		if !ok {
			t.Fatalf("%s: %s from unknown point %q", when, rep.State, rep.FailoverPoint)
		}
		if len(disks) != len(want) {
			t.Fatalf("%s: %s with %d of %d disks", when, rep.State, len(disks), len(want))
		}
		for d := range want {
			mustEqual(t, fmt.Sprintf("%s: disk %d of the %s VM", when, d, rep.State), disks[d], want[d])
		}
		if vm.NICs[0].Network != "dr" {
			t.Errorf("%s: %s VM on network %q, want dr", when, rep.State, vm.NICs[0].Network)
		}
	default:
		t.Fatalf("%s: replica is %s", when, rep.State)
	}
	if rep.State == sdk.ReplicaCommitted {
		for _, sub := range []string{"current", "points"} {
			if _, err := os.Stat(filepath.Join(replicaMeta(dir), sub)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: a committed replica has %s (%v)", when, sub, err)
			}
		}
	} else {
		r.verify(t, when)
	}
	if tmp := tempFiles(t, dir); len(tmp) > 0 {
		t.Errorf("%s: temporary files left: %v", when, tmp)
	}
	return rep.State
}

// TestKillFailoverSteps kills a process at each step of Failover,
// UndoFailover and CommitFailover (and, in three cases, kills the next
// process too while it settles what the first left), then makes the next
// call with a fresh Target: it must settle the replica (roll a failover
// back, finish an undo or a commit), refuse a commit of a replica left
// half-undone, and lose no restore point.
func TestKillFailoverSteps(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	ctx := context.Background()
	wantErr := func(class error) func(error) error {
		return func(err error) error {
			if !errors.Is(err, class) {
				return fmt.Errorf("got %v, want %v", err, class)
			}
			return nil
		}
	}
	failover := func(tgt *Target) error {
		_, err := tgt.Failover(ctx, sdk.FailoverRequest{Replica: "k", Network: failoverNet})
		return err
	}
	undo := func(tgt *Target) error { _, err := tgt.UndoFailover(ctx, "k"); return err }
	commit := func(tgt *Target) error { _, err := tgt.CommitFailover(ctx, "k"); return err }
	readPoint := func(tgt *Target) error {
		pts, err := tgt.ListRestorePoints(ctx, "k")
		if err != nil {
			return err
		}
		rd, err := tgt.OpenRestorePointDisk(ctx, "k", pts[0].ID, 1)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, io.NewSectionReader(rd, 0, rd.Size()))
		return errors.Join(err, rd.Close())
	}
	openWriter := func(tgt *Target) error {
		w, err := tgt.OpenReplicaDisk(ctx, "k", 0, 0)
		if err != nil {
			return err
		}
		return w.Close()
	}
	// A network change that changes nothing: made on the failed-over
	// description, it would keep that description.
	applyNetwork := func(tgt *Target) error {
		rep, err := tgt.ApplyNetwork(ctx, "k", sdk.NetworkConfig{NetworkMap: []sdk.NetworkMapping{{From: "backup", To: "backup"}}})
		if err == nil && rep.VM.NICs[0].Network != "prod" {
			err = fmt.Errorf("applied to a description on network %q, want prod", rep.VM.NICs[0].Network)
		}
		return err
	}
	type call struct {
		name string
		f    func(*Target) error
	}
	var (
		failoverCall = call{"failover", failover}
		undoCall     = call{"undo", undo}
		commitCall   = call{"commit", commit}
		readCall     = call{"read", readPoint}
		writeCall    = call{"write", openWriter}
		networkCall  = call{"network", applyNetwork}
	)
	cases := []struct {
		// kills are the children, "OP STEP N" each, separated by "; ":
		// a second one kills the call that settles what the first left.
		kills string
		// temp: the kills leave a temporary disk copy.
		temp bool
		next call
		// check judges the next call's error; nil wants success.
		check func(error) error
		want  sdk.ReplicaState
	}{
		{"failover failover-journalled 1", false, failoverCall, nil, sdk.ReplicaFailedOver},
		{"failover failover-copying 1", true, readCall, nil, sdk.ReplicaReady},
		{"failover failover-copying 3", true, failoverCall, nil, sdk.ReplicaFailedOver},
		{"failover failover-materialized 1", false, writeCall, nil, sdk.ReplicaReady},
		{"failover failover-described 1", false, commitCall, wantErr(errdefs.ErrFailedPrecondition), sdk.ReplicaReady},
		{"failover failover-described 1", false, networkCall, nil, sdk.ReplicaReady},
		{"undo undo-journalled 1", false, commitCall, wantErr(errdefs.ErrFailedPrecondition), sdk.ReplicaReady},
		{"undo undo-described 1", false, undoCall, nil, sdk.ReplicaReady},
		{"undo undo-disk-removed 1", false, commitCall, wantErr(errdefs.ErrFailedPrecondition), sdk.ReplicaReady},
		{"undo undo-disk-removed 1", false, networkCall, nil, sdk.ReplicaReady},
		{"undo undo-disk-removed 2", false, writeCall, nil, sdk.ReplicaReady},
		{"undo undo-cleaned 1", false, undoCall, nil, sdk.ReplicaReady},
		{"commit commit-checked 1", false, commitCall, nil, sdk.ReplicaCommitted},
		{"commit commit-saved 1", false, commitCall, nil, sdk.ReplicaCommitted},
		{"commit commit-removed-current 1", false, commitCall, nil, sdk.ReplicaCommitted},
		{"commit commit-removed-points 1", false, writeCall, wantErr(errdefs.ErrFailedPrecondition), sdk.ReplicaCommitted},
		{"failover failover-copying 3; settle rollback-disk-removed 1", false, failoverCall, nil, sdk.ReplicaFailedOver},
		{"undo undo-disk-removed 1; settle undo-disk-removed 1", false, commitCall, wantErr(errdefs.ErrFailedPrecondition), sdk.ReplicaReady},
		{"commit commit-saved 1; settle commit-removed-current 1", false, commitCall, nil, sdk.ReplicaCommitted},
	}
	// One fixture, copied for each case.
	fixture := filepath.Join(t.TempDir(), "target")
	model, before := failoverFixture(t, fixture)
	for _, tc := range cases {
		kills := strings.Split(tc.kills, "; ")
		name := strings.ReplaceAll(strings.ReplaceAll(tc.kills, "; ", "_then_"), " ", "_")
		t.Run(name+"_then_"+tc.next.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			root := filepath.Join(dir, "target")
			copyTree(t, fixture, root)
			tgt, err := NewTarget(root)
			if err != nil {
				t.Fatal(err)
			}
			r := *model
			r.t = tgt
			if !strings.HasPrefix(tc.kills, "failover ") {
				if _, err := r.t.Failover(ctx, sdk.FailoverRequest{Replica: "k", Point: r.order[0], Network: failoverNet}); err != nil {
					t.Fatal(err)
				}
			}
			for _, spec := range kills {
				runStepChild(t, dir, spec)
			}
			if got := len(tempFiles(t, filepath.Join(root, "k"))) > 0; got != tc.temp {
				t.Fatalf("temporary files after the kill: %v, want %v", got, tc.temp)
			}
			if tgt, err = NewTarget(root); err != nil {
				t.Fatal(err)
			}
			r.t = tgt
			if tc.kills == "commit commit-checked 1" {
				r.verify(t, "after a commit killed before it took effect")
			}
			err = tc.next.f(tgt)
			if tc.check != nil {
				err = tc.check(err)
			}
			if err != nil {
				t.Fatalf("the next call: %v", err)
			}
			if got := checkSettled(t, &r, before, "after the next call"); got != tc.want {
				t.Fatalf("after the next call the replica is %s, want %s", got, tc.want)
			}
		})
	}
}

// TestKillFailoverLoop kills a process that fails over and undoes in a
// loop at random moments. After each kill, a commit (made on a copy of the
// target folder) either refuses or leaves a VM with every disk of its
// point; and the next call settles the replica with every restore point
// intact.
func TestKillFailoverLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "target")
	r, before := failoverFixture(t, root)
	left := map[string]int{}
	runAndKill(t, "failover", dir, 6, func(round int) {
		when := fmt.Sprintf("round %d", round)
		rs, err := loadReplica(filepath.Join(root, "k"))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case rs.FailingOver != "":
			left["a failover journal"]++
		case rs.UndoingFailover:
			left["an undo journal"]++
		default:
			left[string(rs.State)]++
		}
		if len(tempFiles(t, filepath.Join(root, "k"))) > 0 {
			left["temporary files"]++
		}
		scratch := filepath.Join(t.TempDir(), "target")
		copyTree(t, root, scratch)
		ctgt, err := NewTarget(scratch)
		if err != nil {
			t.Fatal(err)
		}
		c := *r
		c.t = ctgt
		if _, err := ctgt.CommitFailover(ctx, "k"); err != nil && !errors.Is(err, errdefs.ErrFailedPrecondition) {
			t.Fatalf("%s: commit: %v", when, err)
		}
		checkSettled(t, &c, before, when+", after a commit")

		tgt, err := NewTarget(root)
		if err != nil {
			t.Fatal(err)
		}
		r.t = tgt
		if _, err := tgt.OpenRestorePointDisk(ctx, "k", r.order[1], 0); err != nil {
			t.Fatal(err)
		}
		checkSettled(t, r, before, when)
	})
	t.Logf("what the kills left: %v", left)
}

// copyTree copies the folder src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
