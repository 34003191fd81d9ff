package vsphere

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// dsPath is a file on a datastore: "[name] dir/file".
type dsPath struct {
	Datastore string
	Path      string
}

func parseDSPath(s string) (dsPath, error) {
	var p object.DatastorePath
	if !p.FromString(s) || p.Datastore == "" || p.Path == "" {
		return dsPath{}, fmt.Errorf("%q is not a datastore path such as \"[datastore] folder/file.vmdk\"", s)
	}
	return dsPath{Datastore: p.Datastore, Path: p.Path}, nil
}

func (p dsPath) String() string { return fmt.Sprintf("[%s] %s", p.Datastore, p.Path) }

// sibling is another file in the same folder.
func (p dsPath) sibling(name string) dsPath {
	return dsPath{Datastore: p.Datastore, Path: path.Join(path.Dir(p.Path), name)}
}

// local returns where a datastore file is on this machine, when the
// configuration maps its datastore to a mount path.
func (c *conn) local(p dsPath) (string, bool) {
	mount, ok := c.cfg.Datastores[p.Datastore]
	if !ok {
		return "", false
	}
	full := filepath.Join(mount, filepath.FromSlash(p.Path))
	if rel, err := filepath.Rel(mount, full); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", false
	}
	return full, true
}

// mustLocal is local for the target, which only works on mapped datastores.
func (c *conn) mustLocal(p dsPath) (string, error) {
	if f, ok := c.local(p); ok {
		return f, nil
	}
	return "", fmt.Errorf("%s: datastore %q is not in local_datastore_paths (mapped: %q); the target writes disks directly: %w",
		p, p.Datastore, mappedDatastores(c.cfg.Datastores), errdefs.ErrFailedPrecondition)
}

// folderURL is the datastore HTTP address of a file.
func (c *conn) folderURL(p dsPath) *url.URL {
	return object.NewDatastoreURL(*c.soap.URL(), c.dc.InventoryPath, p.Datastore, p.Path)
}

// httpGet fetches a range of a datastore file over HTTP; length < 0 reads
// to the end. It returns the bytes and the file's total size.
func (c *conn) httpGet(ctx context.Context, p dsPath, off, length int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.folderURL(p).String(), nil)
	if err != nil {
		return nil, err
	}
	if off > 0 || length >= 0 {
		if length >= 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+length-1))
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		}
	}
	var out []byte
	err = c.soap.Do(ctx, req, func(res *http.Response) error {
		switch res.StatusCode {
		case http.StatusPartialContent:
		case http.StatusOK:
			// A server that ignores Range sends the whole file.
			if off > 0 {
				if _, err := io.CopyN(io.Discard, res.Body, off); err != nil {
					return err
				}
			}
		case http.StatusNotFound:
			return fmt.Errorf("GET %s: %w", p, errdefs.ErrNotFound)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("GET %s: %s: %w", p, res.Status, errdefs.ErrPermissionDenied)
		default:
			return fmt.Errorf("GET %s: %s", p, res.Status)
		}
		var r io.Reader = res.Body
		if length >= 0 {
			r = io.LimitReader(res.Body, length)
		}
		b, err := io.ReadAll(r)
		out = b
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errdefs.Class(err) != "" {
			return nil, fmt.Errorf("vsphere %s: %w", c.url, err)
		}
		return nil, c.classify(err, "GET "+p.String())
	}
	return out, nil
}

// httpSize is the size of a datastore file over HTTP (HEAD).
func (c *conn) httpSize(ctx context.Context, p dsPath) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.folderURL(p).String(), nil)
	if err != nil {
		return 0, err
	}
	var size int64
	err = c.soap.Do(ctx, req, func(res *http.Response) error {
		switch res.StatusCode {
		case http.StatusOK:
		case http.StatusNotFound:
			return fmt.Errorf("HEAD %s: %w", p, errdefs.ErrNotFound)
		default:
			return fmt.Errorf("HEAD %s: %s", p, res.Status)
		}
		n, err := strconv.ParseInt(res.Header.Get("Content-Length"), 10, 64)
		if err != nil {
			return fmt.Errorf("HEAD %s: no Content-Length", p)
		}
		size = n
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if errdefs.Class(err) != "" {
			return 0, fmt.Errorf("vsphere %s: %w", c.url, err)
		}
		return 0, c.classify(err, "HEAD "+p.String())
	}
	return size, nil
}

// maxDescriptor bounds what is read of a descriptor file: a text
// descriptor is a few hundred bytes; a big file there is a monolithic
// sparse disk ferry does not read.
const maxDescriptor = 64 << 10

// flatExtent reads a disk descriptor (locally when mapped, else over HTTP)
// and returns its one flat extent. Sparse and delta formats (the disks of
// a VM with other snapshots, vmfsSparse, seSparse) are read by openChain
// (chainread.go) through the mount, or through HotAdd.
func (c *conn) flatExtent(ctx context.Context, desc dsPath) (dsPath, error) {
	var data []byte
	if f, ok := c.local(desc); ok {
		fh, err := os.Open(f)
		if err == nil {
			data, err = io.ReadAll(io.LimitReader(fh, maxDescriptor))
			fh.Close()
		}
		if err != nil {
			if os.IsNotExist(err) {
				return dsPath{}, fmt.Errorf("descriptor %s (%s): %w", desc, f, errdefs.ErrNotFound)
			}
			return dsPath{}, fmt.Errorf("descriptor %s: %w", desc, err)
		}
	} else {
		var err error
		if data, err = c.httpGet(ctx, desc, 0, maxDescriptor); err != nil {
			return dsPath{}, fmt.Errorf("descriptor: %w", err)
		}
	}
	d, err := vmdk.ParseDescriptor(bytes.NewReader(data))
	if err != nil {
		return dsPath{}, fmt.Errorf("descriptor %s: %v: %w", desc, err, errdefs.ErrInvalidArgument)
	}
	switch strings.ToLower(d.Type) {
	case "vmfs", "monolithicflat", "vmfsthin", "vmfseagerzeroedthick", "vmfspreallocated":
	default:
		return dsPath{}, fmt.Errorf("disk %s is of type %q: only flat disks are read as one file (a delta chain is read through the datastore mount or HotAdd): %w", desc, d.Type, errdefs.ErrUnimplemented)
	}
	if len(d.Extent) != 1 || (d.Extent[0].Type != "VMFS" && d.Extent[0].Type != "FLAT") || d.Extent[0].Info == "" {
		return dsPath{}, fmt.Errorf("disk %s has %d extents; ferry reads disks with one flat extent: %w", desc, len(d.Extent), errdefs.ErrUnimplemented)
	}
	name := d.Extent[0].Info
	if strings.ContainsAny(name, `/\`) {
		return dsPath{}, fmt.Errorf("disk %s: extent %q outside its folder: %w", desc, name, errdefs.ErrUnimplemented)
	}
	return desc.sibling(name), nil
}

// baseBacking follows a disk's backing to the root of its chain: the base
// disk, which holds the data when every delta on top of it is empty.
func baseBacking(d *types.VirtualDisk) (string, error) {
	switch b := d.Backing.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		for b.Parent != nil {
			b = b.Parent
		}
		return b.FileName, nil
	case *types.VirtualDiskSeSparseBackingInfo:
		if b.Parent == nil {
			return "", fmt.Errorf("disk %d is an seSparse base disk: %w", d.Key, errdefs.ErrUnimplemented)
		}
		p := b.Parent
		for p.Parent != nil {
			p = p.Parent
		}
		return p.FileName, nil
	case *types.VirtualDiskSparseVer2BackingInfo:
		if b.Parent == nil {
			return "", fmt.Errorf("disk %d is a sparse base disk: %w", d.Key, errdefs.ErrUnimplemented)
		}
		p := b.Parent
		for p.Parent != nil {
			p = p.Parent
		}
		return p.FileName, nil
	}
	return "", fmt.Errorf("disk %d has a %T backing; ferry handles flat disks: %w", d.Key, d.Backing, errdefs.ErrUnimplemented)
}

// localFlat is the local path of the flat file at the root of a disk's
// chain (a directly written replica's working image, a production disk in
// failback), through the datastore mounts.
func (c *conn) localFlat(ctx context.Context, d *types.VirtualDisk) (string, error) {
	file, err := baseBacking(d)
	if err != nil {
		return "", err
	}
	desc, err := parseDSPath(file)
	if err != nil {
		return "", fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	flat, err := c.flatExtent(ctx, desc)
	if err != nil {
		return "", err
	}
	return c.mustLocal(flat)
}
