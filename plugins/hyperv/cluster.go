package hyperv

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// clusterHost is a Hyper-V failover cluster seen as one host: the VMs of
// every node that is up, each reached on the node that owns it at the
// moment of the call, so a run finds a replica wherever the cluster moved
// it since. New VMs go to the node that is up and has the fewest VMs, and
// become highly available roles at once. A node that is down is skipped;
// a call that reaches a node as it goes down fails with ErrUnavailable
// (the session's retry, or the next run, finds the VM on its new owner).
type clusterHost struct {
	c host.Cluster
}

var _ host.Host = (*clusterHost)(nil)

func newClusterHost(c host.Cluster) *clusterHost { return &clusterHost{c: c} }

func (h *clusterHost) Name() string { return h.c.Name() }
func (h *clusterHost) Local() bool  { return h.c.Local() }

// up returns the hosts of the nodes that are up, in the cluster's order.
func (h *clusterHost) up(ctx context.Context) ([]host.Node, error) {
	nodes, err := h.c.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", h.c.Name(), err)
	}
	var out []host.Node
	for _, n := range nodes {
		if n.Up {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cluster %s: no node is up: %w", h.c.Name(), errdefs.ErrUnavailable)
	}
	return out, nil
}

// skippable reports whether a node's error means the node went down (or
// left the cluster) since it was listed: the others are still asked.
func skippable(err error) bool {
	return errors.Is(err, errdefs.ErrUnavailable) || errors.Is(err, errdefs.ErrNotFound)
}

// ListVMs lists the VMs of every node that is up.
func (h *clusterHost) ListVMs(ctx context.Context) ([]host.VM, error) {
	nodes, err := h.up(ctx)
	if err != nil {
		return nil, err
	}
	var out []host.VM
	for _, n := range nodes {
		vms, err := h.c.Node(n.Name).ListVMs(ctx)
		if errors.Is(err, errdefs.ErrUnavailable) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		out = append(out, vms...)
	}
	return out, nil
}

// owner finds the node that has the VM now.
func (h *clusterHost) owner(ctx context.Context, vm string) (host.Host, *host.VM, error) {
	nodes, err := h.up(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range nodes {
		nh := h.c.Node(n.Name)
		v, err := nh.GetVM(ctx, vm)
		if err == nil {
			return nh, v, nil
		}
		if !skippable(err) {
			return nil, nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil, nil, fmt.Errorf("vm %q on no node of cluster %s that is up: %w", vm, h.c.Name(), errdefs.ErrNotFound)
}

// GetVM returns a VM from the node that owns it.
func (h *clusterHost) GetVM(ctx context.Context, vm string) (*host.VM, error) {
	_, v, err := h.owner(ctx, vm)
	return v, err
}

// on runs fn on the node that owns the VM.
func (h *clusterHost) on(ctx context.Context, vm string, fn func(host.Host) error) error {
	nh, _, err := h.owner(ctx, vm)
	if err != nil {
		return err
	}
	return fn(nh)
}

// Switches lists the virtual switches every node that is up has: a VM's
// adapter must find its switch on whichever node runs it.
func (h *clusterHost) Switches(ctx context.Context) ([]string, error) {
	nodes, err := h.up(ctx)
	if err != nil {
		return nil, err
	}
	var common []string
	for i, n := range nodes {
		sw, err := h.c.Node(n.Name).Switches(ctx)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		if i == 0 {
			common = slices.Clone(sw)
			continue
		}
		common = slices.DeleteFunc(common, func(s string) bool { return !slices.Contains(sw, s) })
	}
	return common, nil
}

// place picks the node a new VM goes to: of the nodes up, the one with
// the fewest VMs, the first in the cluster's order on a tie.
func place(counts []int) int {
	best := -1
	for i, c := range counts {
		if c >= 0 && (best < 0 || c < counts[best]) {
			best = i
		}
	}
	return best
}

// CreateVM creates the VM on the node with the fewest VMs and makes it a
// highly available role.
func (h *clusterHost) CreateVM(ctx context.Context, spec host.VMSpec) (*host.VM, error) {
	nodes, err := h.up(ctx)
	if err != nil {
		return nil, err
	}
	counts := make([]int, len(nodes))
	for i, n := range nodes {
		vms, err := h.c.Node(n.Name).ListVMs(ctx)
		if errors.Is(err, errdefs.ErrUnavailable) {
			counts[i] = -1 // went down since
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Name, err)
		}
		counts[i] = len(vms)
	}
	i := place(counts)
	if i < 0 {
		return nil, fmt.Errorf("create vm %q: no node of cluster %s is up: %w", spec.Name, h.c.Name(), errdefs.ErrUnavailable)
	}
	node := nodes[i].Name
	v, err := h.c.Node(node).CreateVM(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", node, err)
	}
	if err := h.c.AddVMRole(ctx, node, v.ID); err != nil {
		return nil, fmt.Errorf("make vm %q a role of cluster %s on node %s: %w", spec.Name, h.c.Name(), node, err)
	}
	v.Clustered = true
	return v, nil
}

// makeHighlyAvailable makes a VM a role of the cluster when it is not one
// yet: a replica whose creation stopped between the VM and its role.
func (h *clusterHost) makeHighlyAvailable(ctx context.Context, vm string) error {
	nodes, err := h.up(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		v, err := h.c.Node(n.Name).GetVM(ctx, vm)
		if skippable(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if v.Clustered {
			return nil
		}
		if err := h.c.AddVMRole(ctx, n.Name, v.ID); err != nil {
			return fmt.Errorf("make vm %q a role of cluster %s on node %s: %w", vm, h.c.Name(), n.Name, err)
		}
		return nil
	}
	return fmt.Errorf("vm %q on no node of cluster %s that is up: %w", vm, h.c.Name(), errdefs.ErrNotFound)
}

func (h *clusterHost) DeleteVM(ctx context.Context, vm string) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.DeleteVM(ctx, vm) })
}

func (h *clusterHost) SetNotes(ctx context.Context, vm, notes string) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.SetNotes(ctx, vm, notes) })
}

func (h *clusterHost) SetRunning(ctx context.Context, vm string, running bool) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.SetRunning(ctx, vm, running) })
}

func (h *clusterHost) ConnectNIC(ctx context.Context, vm string, nic int, vswitch string) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.ConnectNIC(ctx, vm, nic, vswitch) })
}

func (h *clusterHost) SetGuestNetwork(ctx context.Context, vm string, nic int, g host.GuestNetwork) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.SetGuestNetwork(ctx, vm, nic, g) })
}

func (h *clusterHost) GrowDisk(ctx context.Context, vm string, disk int, size int64) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.GrowDisk(ctx, vm, disk, size) })
}

func (h *clusterHost) CreateCheckpoint(ctx context.Context, vm string, req host.CheckpointRequest) (c *host.Checkpoint, err error) {
	err = h.on(ctx, vm, func(nh host.Host) error { c, err = nh.CreateCheckpoint(ctx, vm, req); return err })
	return c, err
}

func (h *clusterHost) ListCheckpoints(ctx context.Context, vm string) (cs []host.Checkpoint, err error) {
	err = h.on(ctx, vm, func(nh host.Host) error { cs, err = nh.ListCheckpoints(ctx, vm); return err })
	return cs, err
}

func (h *clusterHost) DestroyCheckpoint(ctx context.Context, vm, checkpoint string) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.DestroyCheckpoint(ctx, vm, checkpoint) })
}

func (h *clusterHost) ApplyCheckpoint(ctx context.Context, vm, checkpoint string) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.ApplyCheckpoint(ctx, vm, checkpoint) })
}

func (h *clusterHost) ConvertToReferencePoint(ctx context.Context, vm, checkpoint string) (r *host.ReferencePoint, err error) {
	err = h.on(ctx, vm, func(nh host.Host) error { r, err = nh.ConvertToReferencePoint(ctx, vm, checkpoint); return err })
	return r, err
}

func (h *clusterHost) ListReferencePoints(ctx context.Context, vm string) (rs []host.ReferencePoint, err error) {
	err = h.on(ctx, vm, func(nh host.Host) error { rs, err = nh.ListReferencePoints(ctx, vm); return err })
	return rs, err
}

func (h *clusterHost) DestroyReferencePoint(ctx context.Context, vm, ref string) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.DestroyReferencePoint(ctx, vm, ref) })
}

func (h *clusterHost) DiskChanges(ctx context.Context, vm, checkpoint string, disk int, since string, fn func([]host.Extent) error) error {
	return h.on(ctx, vm, func(nh host.Host) error { return nh.DiskChanges(ctx, vm, checkpoint, disk, since, fn) })
}
