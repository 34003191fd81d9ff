package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/core/failback"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestFailbackRefusals: a failback of a VM that is not failed over, of a
// failback that does not exist, and through components without the
// Failback capability is refused with an error naming the job, the VM
// and the component, and records nothing.
func TestFailbackRefusals(t *testing.T) {
	f := newFixture(t, "web-01")
	ctx := context.Background()
	f.write("web-01", 0, 5)
	f.runOK("web-01")
	if _, err := f.eng.Failback(ctx, f.job, "web-01", failback.Sync, FailbackOptions{}); !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "not failed over") {
		t.Fatalf("failback of a VM that is not failed over: %v", err)
	}
	if _, err := f.eng.Failback(ctx, f.job, "web-01", failback.Commit, FailbackOptions{}); !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), `job "web" vm "web-01"`) {
		t.Fatalf("commit of no failback: %v", err)
	}
	if _, err := f.eng.Failover(ctx, f.job, "web-01", FailoverStart, ""); err != nil {
		t.Fatal(err)
	}
	// A source that does not declare the capability (MemSource does).
	f.comps.caps = &sdk.Capabilities{ChangeTracking: true}
	_, err := f.eng.Failback(ctx, f.job, "web-01", failback.Sync, FailbackOptions{})
	if !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("failback through a source without the capability: %v", err)
	}
	for _, want := range []string{`job "web" vm "web-01"`, f.job.Source.Address(), `plugin type "mem"`, "Failback capability"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal %q does not say %q", err, want)
		}
	}
	if fb, err := f.cat.Failback("web", "web-01"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a refused failback was recorded: %+v %v", fb, err)
	}
}

// failbackFixture replicates web-01, changes production after the point,
// fails it over and writes at the running replica.
func failbackFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t, "web-01")
	f.write("web-01", 0, 20)
	f.write("web-01", 1, 20)
	f.runOK("web-01")
	f.write("web-01", 0, 1)
	if _, err := f.eng.Failover(context.Background(), f.job, "web-01", FailoverStart, ""); err != nil {
		t.Fatal(err)
	}
	f.replicaWrite(0, 1)
	f.replicaWrite(1, 1)
	return f
}

// replicaWrite makes guest writes at the failed-over replica over about
// pct percent of a disk.
func (f *fixture) replicaWrite(disk int, pct float64) {
	f.t.Helper()
	size := int64(diskSize)
	if disk == 1 {
		size /= 2
	}
	for done := int64(0); done < int64(float64(size)*pct/100); {
		n := int64(4096 * (1 + f.rng.IntN(4)))
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(f.rng.Uint32())
		}
		if err := f.comps.tgt.WriteFailedOver("web-01_replica", disk, f.rng.Int64N(size-n), data); err != nil {
			f.t.Fatal(err)
		}
		done += n
	}
}

// failedOverImage reads the failed-over replica's disks.
func (f *fixture) failedOverImage() [][]byte {
	f.t.Helper()
	var out [][]byte
	for d := range 2 {
		r, err := f.comps.tgt.OpenFailedOverDisk(context.Background(), "web-01_replica", d)
		if err != nil {
			f.t.Fatal(err)
		}
		buf := make([]byte, r.Size())
		if _, err := r.ReadAt(buf, 0); err != nil {
			f.t.Fatal(err)
		}
		out = append(out, buf)
	}
	return out
}

func sameImages(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	for d := range want {
		if string(got[d]) != string(want[d]) {
			t.Fatalf("%s: disk %d differs", what, d)
		}
	}
}

// TestFailbackCycle runs sync, switch and commit on in-memory components:
// the syncs send about what changed, production ends as the replica was
// at the switch, and the next run is incremental.
func TestFailbackCycle(t *testing.T) {
	f := failbackFixture(t)
	ctx := context.Background()
	res, err := f.eng.Failback(ctx, f.job, "web-01", failback.Sync, FailbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sent int64
	for _, d := range res.Syncs[0].Disks {
		sent += d.Sent
		if d.Mode != failback.ModeTracked {
			t.Errorf("disk %d synced in mode %s (%s)", d.Index, d.Mode, d.Why)
		}
	}
	// 1% of each side at most, in 64 KiB tracking blocks of the in-memory
	// components: well under the 12 MiB of disks.
	if sent == 0 || sent > diskSize/2 {
		t.Errorf("the sync sent %d bytes", sent)
	}
	sameImages(t, "production after a sync", f.sourceImage("web-01"), f.failedOverImage())
	f.replicaWrite(0, 1)
	res, err = f.eng.Failback(ctx, f.job, "web-01", failback.Switch, FailbackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Steps, []failback.Step{failback.StopReplica, failback.FinalSync, failback.StartProduction}) || res.Failback.State != string(failback.Switched) {
		t.Fatalf("switch ran %v, reached %+v", res.Steps, res.Failback)
	}
	sameImages(t, "production after the switch", f.sourceImage("web-01"), f.failedOverImage())
	if err := f.comps.tgt.WriteFailedOver("web-01_replica", 0, 0, []byte("late")); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("the replica took a write after the switch: %v", err)
	}
	want := f.sourceImage("web-01")
	if _, err := f.eng.Failback(ctx, f.job, "web-01", failback.Commit, FailbackOptions{}); err != nil {
		t.Fatal(err)
	}
	if rec, _ := f.cat.Replica("web", "web-01"); rec.State != sdk.ReplicaReady || !strings.HasPrefix(rec.FailedBack, "fb-") {
		t.Fatalf("the replica after the commit: %+v", rec)
	}
	s := f.runOK("web-01")
	// The run compared what tracking named, and its record forgets the
	// failback.
	if rec, _ := f.cat.Replica("web", "web-01"); rec.FailedBack != "" {
		t.Fatalf("the replica after the run: %+v", rec)
	}
	for _, d := range s.VMs[0].Disks {
		if d.Mode != "change-tracking" {
			t.Errorf("the run after the commit moved disk %d in mode %s", d.Index, d.Mode)
		}
	}
	ps := f.points("web-01")
	for d := range want {
		r, err := f.comps.tgt.OpenRestorePointDisk(ctx, "web-01_replica", ps[len(ps)-1].ID, d)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, r.Size())
		r.ReadAt(buf, 0)
		if string(buf) != string(want[d]) {
			t.Fatalf("the newest point's disk %d is not production's", d)
		}
	}
}

// errKilled is what the hook of TestFailbackResumes panics with.
type errKilled string

// TestFailbackResumes stops the engine at each step of each command (a
// panic from its hook, as a kill leaves it: no cleanup); the same command
// again completes it with the right content.
func TestFailbackResumes(t *testing.T) {
	cases := []struct {
		before []failback.Action
		action failback.Action
		at     Step
	}{
		{nil, failback.Sync, FailbackStep(failback.Begin)},
		{nil, failback.Sync, FailbackStep(failback.SyncData)},
		{nil, failback.Sync, StepFailbackMoving},
		{nil, failback.Switch, FailbackStep(failback.StopReplica)},
		{nil, failback.Switch, FailbackStep(failback.FinalSync)},
		{[]failback.Action{failback.Sync}, failback.Switch, FailbackStep(failback.StartProduction)},
		{[]failback.Action{failback.Switch}, failback.Commit, FailbackStep(failback.CommitProduction)},
		{[]failback.Action{failback.Switch}, failback.Commit, FailbackStep(failback.ReturnReplica)},
		{[]failback.Action{failback.Switch}, failback.Commit, FailbackStep(failback.End)},
		{[]failback.Action{failback.Sync}, failback.Undo, FailbackStep(failback.UndoProduction)},
		{[]failback.Action{failback.Switch}, failback.Undo, FailbackStep(failback.StartReplica)},
		{[]failback.Action{failback.Switch}, failback.Undo, FailbackStep(failback.End)},
	}
	for _, c := range cases {
		t.Run(string(c.action)+" at "+string(c.at), func(t *testing.T) {
			f := failbackFixture(t)
			ctx := context.Background()
			before := f.sourceImage("web-01")
			for _, a := range c.before {
				if _, err := f.eng.Failback(ctx, f.job, "web-01", a, FailbackOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			replica := f.failedOverImage()
			f.eng.Hook = func(s Step, _ string) {
				if s == c.at {
					panic(errKilled(s))
				}
			}
			func() {
				defer func() {
					if r := recover(); r == nil {
						t.Fatalf("never reached %s", c.at)
					} else if _, ok := r.(errKilled); !ok {
						panic(r)
					}
				}()
				f.eng.Failback(ctx, f.job, "web-01", c.action, FailbackOptions{})
			}()
			f.eng.Hook = nil
			res, err := f.eng.Failback(ctx, f.job, "web-01", c.action, FailbackOptions{})
			if err != nil {
				t.Fatalf("the same command again: %v", err)
			}
			switch c.action {
			case failback.Sync, failback.Switch:
				sameImages(t, "production", f.sourceImage("web-01"), replica)
			case failback.Commit:
				if res.Failback != nil {
					t.Fatalf("a failback survived its commit: %+v", res.Failback)
				}
				sameImages(t, "production after the commit", f.sourceImage("web-01"), replica)
				if rec, _ := f.cat.Replica("web", "web-01"); rec.State != sdk.ReplicaReady {
					t.Fatalf("the replica after the commit: %+v", rec)
				}
			case failback.Undo:
				if res.Failback != nil {
					t.Fatalf("a failback survived its undo: %+v", res.Failback)
				}
				sameImages(t, "production after the undo", f.sourceImage("web-01"), before)
				sameImages(t, "the replica after the undo", f.failedOverImage(), replica)
				if r, _ := f.comps.tgt.GetReplica(ctx, "web-01_replica"); r.VM.PowerState != "on" || r.State != sdk.ReplicaFailedOver {
					t.Fatalf("the replica after the undo: %s, power %q", r.State, r.VM.PowerState)
				}
			}
		})
	}
}

// TestFailbackVMForAPlan: what a plan's failback hears of a VM: the state
// and bytes of a sync (production off: no addresses), production's
// addresses once switched, and again when the switch is asked of a VM
// switched already (a plan's switch run again after a kill).
func TestFailbackVMForAPlan(t *testing.T) {
	f := failbackFixture(t)
	ctx := context.Background()
	v, err := f.eng.FailbackVM(ctx, f.job, "web-01", failback.Sync)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != string(failback.Synced) || v.Production != "web-01" || v.Sent == 0 || len(v.Addresses) != 0 {
		t.Fatalf("after a sync: %+v", v)
	}
	for range 2 {
		if v, err = f.eng.FailbackVM(ctx, f.job, "web-01", failback.Switch); err != nil {
			t.Fatal(err)
		}
		if v.State != string(failback.Switched) || !slices.Equal(v.Addresses, []string{"10.1.0.5/24"}) {
			t.Fatalf("after a switch: %+v", v)
		}
	}
	v, err = f.eng.FailbackVM(ctx, f.job, "web-01", failback.Commit)
	if err != nil || v.State != "" || v.Production != "" {
		t.Fatalf("after the commit: %+v %v", v, err)
	}
}

// TestNoFailoverUndoOrCommitUnderAFailback: while a failback of a VM is
// under way, its failover can be neither undone nor committed; once the
// failback is undone it can.
func TestNoFailoverUndoOrCommitUnderAFailback(t *testing.T) {
	f := failbackFixture(t)
	ctx := context.Background()
	if _, err := f.eng.Failback(ctx, f.job, "web-01", failback.Sync, FailbackOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, action := range []FailoverAction{FailoverUndo, FailoverCommit} {
		_, err := f.eng.Failover(ctx, f.job, "web-01", action, "")
		if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "is synced (production vm web-01): end it first with 'ferry failback commit web web-01'") {
			t.Fatalf("failover %s under a failback: %v", action, err)
		}
	}
	if rec, _ := f.cat.Replica("web", "web-01"); rec.State != sdk.ReplicaFailedOver {
		t.Fatalf("the replica after the refusals: %+v", rec)
	}
	if _, err := f.eng.Failback(ctx, f.job, "web-01", failback.Undo, FailbackOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.Failover(ctx, f.job, "web-01", FailoverUndo, ""); err != nil {
		t.Fatalf("failover undo once the failback was undone: %v", err)
	}
}
