package sdktest

import (
	"errors"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// mapper returns the target as an sdk.ReplicaMapper, or skips the check
// when the fixture does not declare MapReplicas or cannot make VMs.
func (c *targetCheck) mapper(t *testing.T) sdk.ReplicaMapper {
	t.Helper()
	if !c.fx.Capabilities.MapReplicas {
		t.Skip("capability MapReplicas not declared")
	}
	m, ok := c.tgt.(sdk.ReplicaMapper)
	if !ok {
		t.Fatalf("the target declares MapReplicas but %T is not an sdk.ReplicaMapper", c.tgt)
	}
	if c.fx.MakeVM == nil {
		t.Fatal("the target declares MapReplicas: TargetFixture.MakeVM must make VMs to map onto")
	}
	return m
}

// plainVM makes a VM on the target that is no replica, with random disks
// of the given sizes, and returns its disks.
func (c *targetCheck) plainVM(t *testing.T, name string, sizes []int64) [][]byte {
	t.Helper()
	disks := make([][]byte, len(sizes))
	for i, n := range sizes {
		disks[i] = randomBytes(c.rng, int(n))
	}
	c.fx.MakeVM(t, name, disks)
	return disks
}

func (c *targetCheck) sizes() []int64 {
	var out []int64
	for _, d := range c.fx.VM.Disks {
		out = append(out, d.Capacity)
	}
	return out
}

// mapReplica maps a replica onto a VM with content: it keeps the content
// as its working state, takes restore points like any replica, and a
// second mapping returns it unchanged.
func (c *targetCheck) mapReplica(t *testing.T) {
	mp := c.mapper(t)
	name := uniqueName(c.rng, "mapped")
	disks := c.plainVM(t, name, c.sizes())
	owner := sdk.ReplicaOwner{Job: "job-mapped", Source: "source.test.prod", SourceVM: c.fx.VM.ID}
	req := sdk.ReplicaRequest{Name: name, VM: c.fx.VM, NetworkMap: c.fx.NetworkMap, Owner: owner}
	r, err := mp.MapReplica(c.ctx, req)
	if err != nil {
		t.Fatalf("MapReplica(%q): %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupContext()
		defer cancel()
		if err := c.tgt.DeleteReplica(ctx, r.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Errorf("delete replica %q: %v", r.ID, err)
		}
	})
	c.checkReplica(t, r, name)
	if r.State != sdk.ReplicaReady || r.Owner != owner {
		t.Errorf("mapped replica is %q owned by %+v, want %q owned by %+v", r.State, r.Owner, sdk.ReplicaReady, owner)
	}
	if ps, err := c.tgt.ListRestorePoints(c.ctx, r.ID); err != nil || len(ps) != 0 {
		t.Errorf("a mapped replica has restore points %v (%v), want none", ps, err)
	}
	m := &replicaModel{id: r.ID, name: name, disks: disks}
	c.checkWorking(t, m, "after mapping")
	again, err := mp.MapReplica(c.ctx, req)
	if err != nil || again.ID != r.ID {
		t.Fatalf("MapReplica again = %+v, %v; want replica %s unchanged", again, err, r.ID)
	}
	c.overwrite(t, m)
	c.point(t, m, nil)
	c.verify(t, m, "after a run into the mapped replica")
}

// mapReplicaRefusals refuses to map onto a VM whose disks differ from the
// source's, one that does not exist, and another job's replica, changing
// none of them.
func (c *targetCheck) mapReplicaRefusals(t *testing.T) {
	mp := c.mapper(t)
	sizes := c.sizes()
	owner := sdk.ReplicaOwner{Job: "job-refused", Source: "source.test.prod", SourceVM: c.fx.VM.ID}
	refused := func(name, what string, want error) {
		t.Helper()
		_, err := mp.MapReplica(c.ctx, sdk.ReplicaRequest{Name: name, VM: c.fx.VM, NetworkMap: c.fx.NetworkMap, Owner: owner})
		if !errors.Is(err, want) {
			t.Errorf("MapReplica onto %s = %v, want %v", what, err, want)
		}
	}
	fewer := uniqueName(c.rng, "fewer-disks")
	c.plainVM(t, fewer, sizes[:len(sizes)-1])
	refused(fewer, "a VM with a disk fewer", errdefs.ErrFailedPrecondition)
	if _, err := c.tgt.GetReplica(c.ctx, fewer); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a VM whose mapping was refused is a replica now (GetReplica = %v)", err)
	}
	bigger := uniqueName(c.rng, "bigger-disk")
	grown := append([]int64(nil), sizes...)
	grown[0] += 1 << 20
	c.plainVM(t, bigger, grown)
	refused(bigger, "a VM whose first disk is larger than the source's", errdefs.ErrFailedPrecondition)
	refused(uniqueName(c.rng, "no-such-vm"), "a VM that does not exist", errdefs.ErrNotFound)
	other := c.newReplica(t, "another-jobs")
	refused(other.name, "another job's replica", errdefs.ErrAlreadyExists)
}
