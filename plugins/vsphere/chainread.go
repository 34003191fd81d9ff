package vsphere

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vmdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Delta chains read through the datastore mount, with sdk/disk/vmdk: ESXi
// keeps what a VM writes after a snapshot in a delta disk (vmfsSparse
// "-delta.vmdk" or seSparse "-sesparse.vmdk") above the snapshot's disk.
// Failback reads a failed-over replica, which runs on a delta above its
// base snapshot, this way; a source reads a snapshot whose disk is a delta
// this way when HotAdd cannot be used. Only frozen chains are read, the
// disks of a snapshot: the delta a VM runs on is open for writing by ESXi,
// and seSparse keeps metadata in its journal until the file is closed.

var _ sdk.DiskReader = (*chainReader)(nil)

// diskChain lists the files of a disk's chain as vSphere names them
// ("[ds] dir/file.vmdk"), the top first, and whether the disk is a delta
// (its chain has more than the base, or its format is one of ESXi's
// sparse ones).
func diskChain(d *types.VirtualDisk) ([]string, bool) {
	var files []string
	delta := false
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		for p := b; p != nil; p = p.Parent {
			files = append(files, p.FileName)
		}
		delta = len(files) > 1
	case *types.VirtualDiskSeSparseBackingInfo:
		for p := b; p != nil; p = p.Parent {
			files = append(files, p.FileName)
		}
		delta = true
	case *types.VirtualDiskSparseVer2BackingInfo:
		for p := b; p != nil; p = p.Parent {
			files = append(files, p.FileName)
		}
		delta = true
	}
	return files, delta
}

// openChain opens the chain of files (as diskChain lists them) through the
// datastore mounts, as a disk of capacity bytes. The descriptors' own
// chain must be the one vSphere names, file for file: a descriptor that
// points elsewhere is refused rather than read.
func (c *conn) openChain(files []string, capacity int64) (*chainReader, error) {
	if len(files) == 0 {
		return nil, fmt.Errorf("a disk without a file: %w", errdefs.ErrInvalidArgument)
	}
	local := make([]string, len(files))
	for i, f := range files {
		p, err := parseDSPath(f)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
		}
		var mapped bool
		if local[i], mapped = c.local(p); !mapped {
			return nil, fmt.Errorf("%s: datastore %q is not in local_datastore_paths (mapped: %q): %w", p, p.Datastore, mappedDatastores(c.cfg.Datastores), errdefs.ErrFailedPrecondition)
		}
	}
	// ESXi writes an absolute parentFileNameHint (/vmfs/volumes/...) for a
	// parent in another folder: vSphere's list says where it is mounted.
	byName := map[string]string{}
	for _, l := range local[1:] {
		byName[filepath.Base(l)] = l
	}
	d, err := vmdk.OpenWith(local[0], vmdk.Options{Parent: func(_, hint string) string {
		return byName[hint[strings.LastIndexAny(hint, `/\`)+1:]]
	}})
	if err != nil {
		return nil, fmt.Errorf("read the delta chain of %s: %w", files[0], err)
	}
	if err := sameChain(d.Links(), local); err != nil {
		d.Close()
		return nil, fmt.Errorf("read the delta chain of %s: %w", files[0], err)
	}
	return &chainReader{d: d, path: local[0], size: capacity}, nil
}

// sameChain checks that the descriptors name the files vSphere does.
func sameChain(links []vmdk.Link, local []string) error {
	same := len(links) == len(local)
	for i := 0; same && i < len(links); i++ {
		a, errA := os.Stat(links[i].Path)
		b, errB := os.Stat(local[i])
		same = errA == nil && errB == nil && os.SameFile(a, b)
	}
	if same {
		return nil
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Path)
	}
	return fmt.Errorf("the descriptors name a chain of %d files (%s), vSphere %d (%s): %w",
		len(links), strings.Join(names, " <- "), len(local), strings.Join(local, " <- "), errdefs.ErrFailedPrecondition)
}

// chainReader reads a disk through its delta chain; past the chain's
// virtual size, up to the disk's capacity, it reads zeros. release, when
// set, runs once at Close (failback removes its read snapshot).
type chainReader struct {
	transportNote
	d       *vmdk.Disk
	path    string // the top descriptor
	size    int64
	release func()
	closed  atomic.Bool
}

func (r *chainReader) Size() int64 { return r.size }

func (r *chainReader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, os.ErrClosed
	}
	return readPadded(p, off, r.size, r.d.Size(), func(dst []byte, off int64) (int, error) {
		n, err := r.d.ReadAt(dst, off)
		if err == io.EOF && n == len(dst) {
			err = nil
		}
		return n, err
	})
}

func (r *chainReader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	err := r.d.Close()
	if r.release != nil {
		r.release()
	}
	return err
}
