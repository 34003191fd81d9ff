package simhost

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Cluster is a simulated Hyper-V failover cluster kept in a folder. Its
// nodes share one simulated host's folder, DIR/csv (the cluster shared
// volume every node reaches); DIR/cluster.json lists the nodes and whether
// each is up, and each VM's vm.json names the node it is registered on and
// whether it is a highly available role. It implements host.Cluster, for
// the plugin's tests and the lab; it proves nothing about root\MSCluster.
type Cluster struct {
	dir string
	csv *Host
}

var _ host.Cluster = (*Cluster)(nil)

type clusterState struct {
	Nodes []clusterNode `json:"nodes"`
}

type clusterNode struct {
	Name string `json:"name"`
	Up   bool   `json:"up"`
}

func clusterFile(dir string) string { return filepath.Join(dir, "cluster.json") }

// NewCluster makes a simulated cluster of the nodes named, every one up,
// whose virtual switches are those named, in dir (which may exist, and
// must not hold a cluster yet).
func NewCluster(dir string, nodes []string, switches ...string) (*Cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("simulated cluster %q: %w", dir, err)
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("simulated cluster %q: no nodes: %w", dir, errdefs.ErrInvalidArgument)
	}
	var st clusterState
	for _, n := range nodes {
		if !validID(n) || slices.ContainsFunc(st.Nodes, func(c clusterNode) bool { return c.Name == n }) {
			return nil, fmt.Errorf("simulated cluster %q: node name %q: empty, repeated or holding a separator: %w", dir, n, errdefs.ErrInvalidArgument)
		}
		st.Nodes = append(st.Nodes, clusterNode{Name: n, Up: true})
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("simulated cluster %q: %w", dir, err)
	}
	if _, err := os.Stat(clusterFile(abs)); err == nil {
		return nil, fmt.Errorf("simulated cluster %q: there is one already: %w", dir, errdefs.ErrAlreadyExists)
	}
	csv, err := Open(filepath.Join(abs, "csv"), switches...)
	if err != nil {
		return nil, err
	}
	if err := writeJSONAtomic(clusterFile(abs), st); err != nil {
		return nil, fmt.Errorf("simulated cluster %q: %w", dir, err)
	}
	return &Cluster{dir: abs, csv: csv}, nil
}

// OpenCluster opens the simulated cluster in dir, which NewCluster made.
func OpenCluster(dir string) (*Cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("simulated cluster %q: %w", dir, err)
	}
	if _, err := os.Stat(clusterFile(abs)); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("simulated cluster %q: no cluster.json: %w", dir, errdefs.ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("simulated cluster %q: %w", dir, err)
	}
	csv, err := Open(filepath.Join(abs, "csv"))
	if err != nil {
		return nil, err
	}
	return &Cluster{dir: abs, csv: csv}, nil
}

// Dir is the cluster's folder.
func (c *Cluster) Dir() string { return c.dir }

// Name is "simcluster:" and the folder.
func (c *Cluster) Name() string { return "simcluster:" + c.dir }

// Local is true: the files are in the cluster's folder.
func (c *Cluster) Local() bool { return true }

func (c *Cluster) state() (clusterState, error) {
	var st clusterState
	if err := readJSON(clusterFile(c.dir), &st); err != nil {
		return st, fmt.Errorf("simulated cluster %s: %w", c.dir, err)
	}
	return st, nil
}

// Nodes lists the nodes in the order they were made.
func (c *Cluster) Nodes(ctx context.Context) ([]host.Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := c.state()
	if err != nil {
		return nil, err
	}
	out := make([]host.Node, len(st.Nodes))
	for i, n := range st.Nodes {
		out[i] = host.Node{Name: n.Name, Up: n.Up}
	}
	return out, nil
}

// Node returns the host of a node: it sees the VMs registered on the node
// and answers ErrUnavailable while the node is down.
func (c *Cluster) Node(name string) host.Host { return c.node(name) }

func (c *Cluster) node(name string) *Host {
	h := *c.csv
	h.cluster, h.node = c, name
	return &h
}

// reachable says whether calls may reach a node: ErrUnavailable while it
// is down, ErrNotFound for a node the cluster does not have.
func (c *Cluster) reachable(node string) error {
	st, err := c.state()
	if err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if n.Name == node {
			if !n.Up {
				return fmt.Errorf("node %s of cluster %s is down: %w", node, c.dir, errdefs.ErrUnavailable)
			}
			return nil
		}
	}
	return fmt.Errorf("cluster %s has no node %q: %w", c.dir, node, errdefs.ErrNotFound)
}

// AddVMRole makes a VM registered on node a highly available role.
func (c *Cluster) AddVMRole(ctx context.Context, node, vm string) error {
	_, err := c.node(node).change(ctx, vm, func(s *vmState) error {
		s.Clustered = true
		return nil
	})
	return err
}

// MoveRole moves a clustered VM to another node that is up, as an
// operator's move (or the cluster's balancing) does.
func (c *Cluster) MoveRole(ctx context.Context, vm, node string) error {
	if err := c.reachable(node); err != nil {
		return err
	}
	_, err := c.csv.change(ctx, vm, func(s *vmState) error {
		if !s.Clustered {
			return fmt.Errorf("move vm %q: not a clustered role: %w", vm, errdefs.ErrFailedPrecondition)
		}
		s.Node = node
		return nil
	})
	return err
}

// SetNodeUp brings a node up or down. A node going down fails its
// clustered roles over, each to the node that is up and has the fewest
// VMs then (the cluster's own failover); its other VMs stay registered on
// it, out of reach until it is up again. With no other node up, its roles
// stay too.
func (c *Cluster) SetNodeUp(ctx context.Context, node string, up bool) error {
	l, err := c.csv.lock(ctx)
	if err != nil {
		return err
	}
	defer l.Release()
	st, err := c.state()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(st.Nodes, func(n clusterNode) bool { return n.Name == node })
	if i < 0 {
		return fmt.Errorf("cluster %s has no node %q: %w", c.dir, node, errdefs.ErrNotFound)
	}
	st.Nodes[i].Up = up
	if err := writeJSONAtomic(clusterFile(c.dir), st); err != nil {
		return err
	}
	if up {
		return nil
	}
	all, err := c.csv.all()
	if err != nil {
		return err
	}
	count := map[string]int{}
	for _, s := range all {
		count[s.Node]++
	}
	for _, s := range all {
		if s.Node != node || !s.Clustered {
			continue
		}
		to := ""
		for _, n := range st.Nodes {
			if n.Up && (to == "" || count[n.Name] < count[to]) {
				to = n.Name
			}
		}
		if to == "" {
			return nil
		}
		s.Node = to
		count[to]++
		if err := c.csv.writeVM(s); err != nil {
			return err
		}
	}
	return nil
}

// RemoveVMRole makes a clustered VM an ordinary VM of the node it is on,
// as removing its role from the cluster does (the VM stays).
func (c *Cluster) RemoveVMRole(ctx context.Context, vm string) error {
	_, err := c.csv.change(ctx, vm, func(s *vmState) error {
		s.Clustered = false
		return nil
	})
	return err
}
