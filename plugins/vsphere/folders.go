package vsphere

import (
	"context"
	"sync"
	"time"

	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// folderTree knows the inventory path of every folder and vApp of the
// datacenter, read in one call per kind, so that a listing names each VM's
// folder without a round trip per VM. Paths are as the inventory writes
// them: "/DC0/vm/web", names joined with "/" (vSphere itself escapes a "/"
// inside a name as %2f).
type folderTree struct {
	dcPath string
	paths  map[string]string // by managed object id; never changed once read
	read   time.Time
}

type folderNode struct {
	name   string
	parent *types.ManagedObjectReference // the folder, vApp or datacenter it is in
}

// folderTreeTTL is how long DescribeVM trusts a tree read earlier for a
// VM whose folder it knows; a listing always reads it afresh.
const folderTreeTTL = time.Minute

// folders caches the tree between calls of one connection.
type folders struct {
	mu   sync.Mutex
	tree *folderTree
}

// readFolderTree reads the datacenter's folders and vApps.
func (c *conn) readFolderTree(ctx context.Context) (*folderTree, error) {
	var fs []mo.Folder
	if err := c.retrieveAll(ctx, c.dc.Reference(), "Folder", []string{"name", "parent"}, &fs); err != nil {
		return nil, err
	}
	var apps []mo.VirtualApp
	if err := c.retrieveAll(ctx, c.dc.Reference(), "VirtualApp", []string{"name", "parentFolder", "parentVApp"}, &apps); err != nil {
		return nil, err
	}
	t := &folderTree{dcPath: c.dc.InventoryPath, paths: map[string]string{}, read: time.Now()}
	if t.dcPath == "" {
		t.dcPath = "/" + c.dc.Name()
	}
	nodes := map[string]folderNode{}
	for _, f := range fs {
		nodes[f.Self.Value] = folderNode{name: f.Name, parent: f.Parent}
	}
	for _, a := range apps {
		parent := a.ParentFolder
		if a.ParentVApp != nil {
			parent = a.ParentVApp
		}
		nodes[a.Self.Value] = folderNode{name: a.Name, parent: parent}
	}
	for id := range nodes {
		t.resolve(nodes, id)
	}
	c.folders.mu.Lock()
	c.folders.tree = t
	c.folders.mu.Unlock()
	return t, nil
}

// folderOf names the folder (or vApp) holding a VM, reading the tree when
// the cached one is old or does not know the VM's parent.
func (c *conn) folderOf(ctx context.Context, vm *mo.VirtualMachine) (string, error) {
	c.folders.mu.Lock()
	t := c.folders.tree
	c.folders.mu.Unlock()
	if t != nil && time.Since(t.read) < folderTreeTTL {
		if p := t.vmFolder(vm); p != "" {
			return p, nil
		}
	}
	t, err := c.readFolderTree(ctx)
	if err != nil {
		return "", err
	}
	return t.vmFolder(vm), nil
}

// vmFolder is the inventory path of the folder or vApp holding a VM; ""
// when the tree does not know it.
func (t *folderTree) vmFolder(vm *mo.VirtualMachine) string {
	switch {
	case vm.ParentVApp != nil:
		return t.path(*vm.ParentVApp)
	case vm.Parent != nil:
		return t.path(*vm.Parent)
	}
	return ""
}

// path is the inventory path of a folder or vApp; "" when unknown.
func (t *folderTree) path(ref types.ManagedObjectReference) string {
	if ref.Type == "Datacenter" {
		return t.dcPath
	}
	return t.paths[ref.Value]
}

// resolve works out the path of node id and of the nodes above it.
func (t *folderTree) resolve(nodes map[string]folderNode, id string) string {
	if p, ok := t.paths[id]; ok {
		return p
	}
	t.paths[id] = "" // a cycle, which vSphere never makes, ends here
	n, ok := nodes[id]
	if !ok || n.parent == nil {
		return ""
	}
	parent := t.dcPath
	if n.parent.Type != "Datacenter" {
		parent = t.resolve(nodes, n.parent.Value)
	}
	if parent == "" {
		return ""
	}
	t.paths[id] = parent + "/" + n.name
	return t.paths[id]
}
