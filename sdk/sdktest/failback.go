package sdktest

import (
	"errors"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The failback checks: RunTarget's for a FailbackReader, RunSource's for
// a FailbackWriter, both for components with the Failback capability.

// failbackReader returns the target's failback reader, skipping the check
// when the fixture does not declare it.
func (c *targetCheck) failbackReader(t *testing.T) sdk.FailbackReader {
	t.Helper()
	if !c.fx.Capabilities.Failback {
		t.Skip("capability Failback not declared")
	}
	fr, ok := c.tgt.(sdk.FailbackReader)
	if !ok {
		t.Fatalf("the target declares Failback but %T is not an sdk.FailbackReader", c.tgt)
	}
	return fr
}

// failedOverChanges collects what FailedOverChanges reports, checking
// that the batches are sorted, apart and inside the disk.
func (c *targetCheck) failedOverChanges(t *testing.T, fr sdk.FailbackReader, m *replicaModel, disk int, since string) ([]sdk.Extent, string, error) {
	t.Helper()
	var out []sdk.Extent
	size := int64(len(m.disks[disk]))
	mark, err := fr.FailedOverChanges(c.ctx, sdk.FailedOverChangesRequest{Replica: m.id, Disk: disk, Since: since}, func(b []sdk.Extent) error {
		for _, e := range b {
			if e.Length <= 0 || e.Offset < 0 || e.End() > size || (len(out) > 0 && e.Offset < out[len(out)-1].End()) {
				t.Errorf("FailedOverChanges(disk %d) gave extent %+v after %v: not sorted, apart and inside the disk of %d bytes", disk, e, out, size)
			}
			out = append(out, e)
		}
		return nil
	})
	if err == nil && mark == "" {
		t.Errorf("FailedOverChanges(disk %d, since %q) returned no mark", disk, since)
	}
	return out, mark, err
}

func covered(ext []sdk.Extent, off, n int64) bool {
	for _, e := range ext {
		if e.Offset <= off && off+n <= e.End() {
			return true
		}
	}
	return false
}

// failbackRead fails a replica over, reads its disks as they are, follows
// its writes (with WriteFailedOver) through marks, powers it off and on,
// and checks that a replica no longer failed over is refused.
func (c *targetCheck) failbackRead(t *testing.T) {
	fr := c.failbackReader(t)
	m := c.newReplica(t, "failback-read")
	c.fill(t, m)
	p := c.point(t, m, nil)
	if _, err := fr.FailedOverChanges(c.ctx, sdk.FailedOverChangesRequest{Replica: m.id}, func([]sdk.Extent) error { return nil }); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("FailedOverChanges of a replica not failed over: %v, want ErrFailedPrecondition", err)
	}
	c.failover(t, m, "", sdk.NetworkConfig{})
	disks := clone2(p.disks)
	read := func(when string) {
		t.Helper()
		for d := range disks {
			r, err := fr.OpenFailedOverDisk(c.ctx, m.id, d)
			if err != nil {
				t.Fatalf("%s: OpenFailedOverDisk(%d): %v", when, d, err)
			}
			got, err := readAll(r, r.Size())
			closeDisk(t, r, "failed-over disk")
			if err != nil {
				t.Fatalf("%s: read failed-over disk %d: %v", when, d, err)
			}
			if msg := diffBytes(got, disks[d], 0); msg != "" {
				t.Errorf("%s: failed-over disk %d: %s", when, d, msg)
			}
		}
	}
	read("after Failover")
	_, m0, err := c.failedOverChanges(t, fr, m, 0, "")
	if err != nil && !errors.Is(err, errdefs.ErrChangeIDReset) {
		t.Fatalf("FailedOverChanges since the failover: %v", err)
	}
	if c.fx.WriteFailedOver != nil && err == nil {
		data := randomBytes(c.rng, 40<<10)
		off := int64(len(disks[0])) / 3
		c.fx.WriteFailedOver(t, m.name, 0, off, data)
		copy(disks[0][off:], data)
		read("after the failed-over VM wrote")
		for _, since := range []string{"", m0} {
			ext, _, err := c.failedOverChanges(t, fr, m, 0, since)
			if err != nil {
				t.Fatalf("FailedOverChanges(since %q): %v", since, err)
			}
			if !covered(ext, off, int64(len(data))) {
				t.Errorf("FailedOverChanges(since %q) = %v misses the write of %d bytes at %d", since, ext, len(data), off)
			}
		}
	}
	for _, on := range []bool{false, false, true} {
		r, err := fr.SetReplicaPower(c.ctx, m.id, on)
		if err != nil {
			t.Fatalf("SetReplicaPower(%v): %v", on, err)
		}
		if want := map[bool]string{false: "off", true: "on"}[on]; r.VM.PowerState != want || r.State != sdk.ReplicaFailedOver {
			t.Errorf("SetReplicaPower(%v) returned a replica %s, power %q; want failed over, %q", on, r.State, r.VM.PowerState, want)
		}
	}
	if _, err := c.tgt.UndoFailover(c.ctx, m.id); err != nil {
		t.Fatalf("UndoFailover: %v", err)
	}
	if _, err := fr.OpenFailedOverDisk(c.ctx, m.id, 0); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("OpenFailedOverDisk after UndoFailover: %v, want ErrFailedPrecondition", err)
	}
	c.verify(t, m, "after failback reads and UndoFailover")
}

// failbackWriter returns the source's failback writer, skipping the check
// when the fixture does not declare it.
func (c *sourceCheck) failbackWriter(t *testing.T) sdk.FailbackWriter {
	t.Helper()
	if !c.fx.Capabilities.Failback {
		t.Skip("capability Failback not declared")
	}
	fw, ok := c.src.(sdk.FailbackWriter)
	if !ok {
		t.Fatalf("the source declares Failback but %T is not an sdk.FailbackWriter", c.src)
	}
	return fw
}

// failbackWrite begins a failback, writes through it, and checks what the
// VM reads and its power state; undo must give every byte back, and a
// commit keep the writes.
func (c *sourceCheck) failbackWrite(t *testing.T) {
	fw := c.failbackWriter(t)
	vm := c.describe(t)
	orig := c.readSnapshot(t, c.snapshot(t, "failback-before"), 0)
	id := uniqueName(c.rng, "failback")
	begun, err := fw.BeginFailback(c.ctx, sdk.FailbackRequest{ID: id, VM: c.fx.VM})
	if err != nil {
		t.Fatalf("BeginFailback: %v", err)
	}
	if begun.PowerState != "off" {
		t.Errorf("BeginFailback left the VM powered %q, want off", begun.PowerState)
	}
	if _, err := fw.BeginFailback(c.ctx, sdk.FailbackRequest{ID: id, VM: c.fx.VM}); err != nil {
		t.Errorf("BeginFailback of a failback that began: %v", err)
	}
	if _, err := fw.BeginFailback(c.ctx, sdk.FailbackRequest{ID: id + "-other", VM: c.fx.VM}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("BeginFailback of a second failback: %v, want ErrFailedPrecondition", err)
	}
	write := func(id string) []byte {
		t.Helper()
		w, err := fw.OpenFailbackDisk(c.ctx, c.fx.VM, id, 0, 0)
		if err != nil {
			t.Fatalf("OpenFailbackDisk: %v", err)
		}
		want := append([]byte(nil), orig...)
		for _, s := range scattered(c.rng, int64(len(orig)), 5) {
			if _, err := w.WriteAt(s.data, s.off); err != nil {
				t.Fatalf("failback WriteAt(%d bytes at %d): %v", len(s.data), s.off, err)
			}
			copy(want[s.off:], s.data)
		}
		if err := w.Sync(); err != nil {
			t.Errorf("failback Sync: %v", err)
		}
		closeDisk(t, w, "failback disk")
		return want
	}
	want := write(id)
	if msg := diffBytes(c.readSnapshot(t, c.snapshot(t, "failback-written"), 0), want, 0); msg != "" {
		t.Errorf("after failback writes: %s", msg)
	}
	if v, err := fw.StartFailback(c.ctx, c.fx.VM, id); err != nil || v.PowerState != "on" {
		t.Errorf("StartFailback = %+v, %v; want the VM on", v, err)
	}
	if err := fw.UndoFailback(c.ctx, c.fx.VM, id); err != nil {
		t.Fatalf("UndoFailback: %v", err)
	}
	if msg := diffBytes(c.readSnapshot(t, c.snapshot(t, "failback-undone"), 0), orig, 0); msg != "" {
		t.Errorf("after UndoFailback the disk is not what it was: %s", msg)
	}
	if after := c.describe(t); after.PowerState != vm.PowerState {
		t.Errorf("after UndoFailback the VM is powered %q, before the failback %q", after.PowerState, vm.PowerState)
	}
	if err := fw.UndoFailback(c.ctx, c.fx.VM, id); err != nil {
		t.Errorf("UndoFailback again: %v", err)
	}

	id2 := uniqueName(c.rng, "failback")
	if _, err := fw.BeginFailback(c.ctx, sdk.FailbackRequest{ID: id2, VM: c.fx.VM}); err != nil {
		t.Fatalf("BeginFailback after an undo: %v", err)
	}
	want = write(id2)
	if _, err := fw.StartFailback(c.ctx, c.fx.VM, id2); err != nil {
		t.Fatalf("StartFailback: %v", err)
	}
	for range 2 {
		if err := fw.CommitFailback(c.ctx, c.fx.VM, id2); err != nil {
			t.Fatalf("CommitFailback: %v", err)
		}
	}
	if err := fw.UndoFailback(c.ctx, c.fx.VM, id2); err != nil {
		t.Errorf("UndoFailback of a committed failback: %v, want success doing nothing", err)
	}
	if msg := diffBytes(c.readSnapshot(t, c.snapshot(t, "failback-committed"), 0), want, 0); msg != "" {
		t.Errorf("after CommitFailback: %s", msg)
	}
}
