//go:build unix

package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The kill tests run a child process (this test binary again) that
// replicates or snapshots in a loop, SIGKILL it at random moments, and
// check from the files alone that nothing it had made was damaged. The
// child writes a journal line before and after each change, so the parent
// knows what each surviving point or snapshot must hold.

const (
	killHelperEnv = "FERRY_LOCAL_KILL_HELPER"
	killDisk      = 1 << 20
)

// TestMain runs the kill tests' child when asked to, and the tests
// otherwise.
func TestMain(m *testing.M) {
	if mode := os.Getenv(killHelperEnv); mode != "" {
		killHelper(mode)
		return
	}
	os.Exit(m.Run())
}

// killHelper is the child: it changes the target or site in a loop until
// it is killed. A fatal error ends it by itself, which the parent reports.
func killHelper(mode string) {
	kind, dir, _ := strings.Cut(mode, ":")
	seed, _ := strconv.ParseUint(os.Getenv(killHelperEnv+"_SEED"), 10, 64)
	rng := rand.New(rand.NewPCG(seed, 1))
	journal, err := os.OpenFile(filepath.Join(dir, "journal"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	note := func(format string, args ...any) { fmt.Fprintf(journal, format+"\n", args...) }
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "kill helper:", err)
		os.Exit(3)
	}
	switch kind {
	case "target":
		fail(replicateForever(filepath.Join(dir, "target"), rng, note))
	case "source":
		fail(snapshotForever(filepath.Join(dir, "site"), rng, note))
	case "failover":
		fail(failoverForever(filepath.Join(dir, "target"), rng, note))
	case "failover-step":
		fail(killAtStep(filepath.Join(dir, "target"), os.Getenv(killHelperEnv+"_STEP")))
	}
	fail(fmt.Errorf("unknown mode %q", mode))
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

func replicateForever(root string, rng *rand.Rand, note func(string, ...any)) error {
	ctx := context.Background()
	tgt, err := NewTarget(root)
	if err != nil {
		return err
	}
	vm := sdk.VM{Name: "k", CPUs: 1, MemoryMiB: 64, Disks: []sdk.Disk{{Index: 0, Capacity: killDisk}}}
	if _, err := tgt.CreateReplica(ctx, sdk.ReplicaRequest{Name: "k", VM: vm}); err != nil {
		return err
	}
	note("ready")
	for {
		switch n := rng.IntN(10); {
		case n < 5:
			w, err := tgt.OpenReplicaDisk(ctx, "k", 0, 0)
			if err != nil {
				return err
			}
			// Half the writers with points write their file themselves,
			// as a host does once the ranges are prepared.
			wp, prepared := w.(sdk.WritePreparer)
			prepared = prepared && rng.IntN(2) == 0
			var f *os.File
			if prepared {
				if f, err = os.OpenFile(workingImage(filepath.Join(root, "k"), 0), os.O_RDWR, 0); err != nil {
					return err
				}
			}
			for range 1 + rng.IntN(8) {
				l := 1 + rng.IntN(150<<10)
				off := rng.Int64N(killDisk - int64(l))
				if !prepared {
					if _, err := w.WriteAt(randomData(rng, l), off); err != nil {
						return err
					}
					continue
				}
				if err := wp.PrepareWrites([]sdk.Extent{{Offset: off, Length: int64(l)}}); err != nil {
					return err
				}
				if _, err := f.WriteAt(randomData(rng, l), off); err != nil {
					return err
				}
			}
			if f != nil {
				if err := errors.Join(f.Sync(), f.Close()); err != nil {
					return err
				}
			}
			if err := w.Close(); err != nil {
				return err
			}
		case n < 8:
			img, err := os.ReadFile(workingImage(filepath.Join(root, "k"), 0))
			if err != nil {
				return err
			}
			note("pending %s", digest(img))
			rp, err := tgt.CreateRestorePoint(ctx, "k", nil)
			if err != nil {
				return err
			}
			note("point %s %s", rp.ID, digest(img))
		default:
			pts, err := tgt.ListRestorePoints(ctx, "k")
			if err != nil {
				return err
			}
			if len(pts) < 3 {
				continue
			}
			p := pts[rng.IntN(len(pts))]
			note("deleting %s", p.ID)
			if err := tgt.DeleteRestorePoint(ctx, "k", p.ID); err != nil {
				return err
			}
			note("deleted %s", p.ID)
		}
	}
}

func snapshotForever(root string, rng *rand.Rand, note func(string, ...any)) error {
	ctx := context.Background()
	s := newSite(root)
	note("ready")
	for {
		switch n := rng.IntN(10); {
		case n < 6:
			l := 1 + rng.IntN(100<<10)
			if err := s.trackedWrite(ctx, "k", 0, rng.Int64N(killDisk-int64(l)), randomData(rng, l)); err != nil {
				return err
			}
		case n < 8:
			var buf bytes.Buffer
			if err := s.readCurrent(ctx, "k", 0, &buf); err != nil {
				return err
			}
			note("pending %s", digest(buf.Bytes()))
			sn, err := s.createSnapshot(ctx, sdk.SnapshotRequest{VM: "k", Name: "kill"})
			if err != nil {
				return err
			}
			note("point %s %s", sn.ID, digest(buf.Bytes()))
		default:
			snaps, err := s.listSnapshots("k")
			if err != nil {
				return err
			}
			if len(snaps) < 2 {
				continue
			}
			sn := snaps[rng.IntN(len(snaps))]
			note("deleting %s", sn.ID)
			if err := s.removeSnapshot(ctx, "k", sn.ID); err != nil {
				return err
			}
			note("deleted %s", sn.ID)
		}
	}
}

// journalState is what the journal says: each made point's digest, the
// digest of a point whose creation may or may not have finished, and the
// points deleted for sure.
type journalState struct {
	digests  map[string]string
	pending  string
	deleted  map[string]bool
	deleting map[string]bool // deletions begun: done or not, maybe finished later
	lines    int
}

func readJournal(t *testing.T, path string) journalState {
	t.Helper()
	js := journalState{digests: map[string]string{}, deleted: map[string]bool{}, deleting: map[string]bool{}}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		js.lines++
		fs := strings.Fields(sc.Text())
		switch {
		case len(fs) == 2 && fs[0] == "pending":
			js.pending = fs[1]
		case len(fs) == 3 && fs[0] == "point":
			js.digests[fs[1]], js.pending = fs[2], ""
		case len(fs) == 2 && fs[0] == "deleting":
			js.deleting[fs[1]] = true
		case len(fs) == 2 && fs[0] == "deleted":
			js.deleted[fs[1]] = true
		}
	}
	return js
}

// waitReady waits until the journal holds n "ready" lines.
func waitReady(t *testing.T, journal string, n int, cmd *exec.Cmd, out *bytes.Buffer) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(journal)
		if strings.Count(string(b), "ready\n") >= n {
			return
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the child did not get ready within a minute:\n%s", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runAndKill runs the helper child in mode and kills it after a random
// while, rounds times.
func runAndKill(t *testing.T, mode, dir string, rounds int, check func(round int)) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rng := testRand(t)
	for round := range rounds {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), killHelperEnv+"="+mode+":"+dir, killHelperEnv+"_SEED="+strconv.Itoa(round))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// A loaded machine starts the child slowly: count the random
		// delay from the moment it is ready, not from its start.
		waitReady(t, filepath.Join(dir, "journal"), round+1, cmd, &out)
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: the child ended by itself (%v) before it was killed:\n%s", round, err, out.String())
		}
		check(round)
	}
}

func TestKillTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	seen := 0
	runAndKill(t, "target", dir, 8, func(round int) {
		js := readJournal(t, filepath.Join(dir, "journal"))
		tgt, err := NewTarget(filepath.Join(dir, "target"))
		if err != nil {
			t.Fatal(err)
		}
		pts, err := tgt.ListRestorePoints(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			want, ok := js.digests[p.ID]
			if !ok {
				// Made, but killed before it could say so.
				want = js.pending
				settle(t, dir, p.ID, want)
			}
			if js.deleted[p.ID] {
				t.Fatalf("round %d: point %s is listed after its deletion returned", round, p.ID)
			}
			r, err := tgt.OpenRestorePointDisk(ctx, "k", p.ID, 0)
			if err != nil {
				t.Fatal(err)
			}
			got := digest(readAllAt(t, r))
			r.Close()
			if got != want {
				t.Fatalf("round %d: point %s reads %s, want %s", round, p.ID, got, want)
			}
			seen++
		}
		for id := range js.digests {
			if !js.deleting[id] && !containsPoint(pts, id) {
				t.Fatalf("round %d: point %s vanished", round, id)
			}
		}
	})
	if seen == 0 {
		t.Fatal("the child never made a restore point")
	}
	t.Logf("checked %d restore points after 8 kills", seen)
}

func containsPoint(pts []sdk.RestorePoint, id string) bool {
	for _, p := range pts {
		if p.ID == id {
			return true
		}
	}
	return false
}

// settle journals a point whose creation the child could not journal, so
// that later rounds know what it holds.
func settle(t *testing.T, dir, id, digest string) {
	f, err := os.OpenFile(filepath.Join(dir, "journal"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "point %s %s\n", id, digest)
}

func TestKillSource(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	ctx := context.Background()
	dir := t.TempDir()
	s := newSite(filepath.Join(dir, "site"))
	if _, err := s.createVM(ctx, VMSpec{Name: "k", Disks: []int64{killDisk}}); err != nil {
		t.Fatal(err)
	}
	seen := 0
	runAndKill(t, "source", dir, 8, func(round int) {
		js := readJournal(t, filepath.Join(dir, "journal"))
		s := newSite(filepath.Join(dir, "site"))
		snaps, err := s.listSnapshots("k")
		if err != nil {
			t.Fatal(err)
		}
		for _, sn := range snaps {
			want, ok := js.digests[sn.ID]
			if !ok {
				want = js.pending
				settle(t, dir, sn.ID, want)
			}
			r, err := s.openSnapshotDisk(ctx, "k", sn.ID, 0)
			if errors.Is(err, errdefs.ErrFailedPrecondition) {
				continue // being removed, or a base merge was killed: refused, not wrong
			}
			if err != nil {
				t.Fatal(err)
			}
			got := digest(readAllAt(t, r))
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("round %d: snapshot %s reads %s, want %s", round, sn.ID, got, want)
			}
			seen++
		}
	})
	if seen == 0 {
		t.Fatal("the child never made a snapshot")
	}
	t.Logf("checked %d snapshots after 8 kills", seen)
	// Removing every leftover merges all layers without changing what the
	// disk reads.
	var before bytes.Buffer
	if err := s.readCurrent(ctx, "k", 0, &before); err != nil {
		t.Fatal(err)
	}
	snaps, _ := s.listSnapshots("k")
	for _, sn := range snaps {
		if err := s.removeSnapshot(ctx, "k", sn.ID); err != nil {
			t.Fatal(err)
		}
	}
	base, err := os.ReadFile(diskFile(filepath.Join(dir, "site", "k"), 0))
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "disk0.img after removing the leftovers", base, before.Bytes())
}
