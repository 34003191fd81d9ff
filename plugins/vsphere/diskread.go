package vsphere

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// OpenSnapshotDisk opens a disk of a snapshot for reading. The transport
// is chosen per disk and logged with its reason. With transport "auto":
// direct storage access (the flat file under local_datastore_paths,
// offered to the data mover as a local path) when the datastore is mapped
// and the file is there, else HotAdd (the disk attached to the proxy VM
// this plugin runs in, read as a block device, also offered as a local
// path) when the proxy can, else network (ranged GETs on the datastore
// HTTP interface). A snapshot disk that is a delta (the VM has snapshots of
// its own) is read with HotAdd, which presents the whole chain as one
// disk, or, when HotAdd cannot be used (or transport is "direct"), through
// the datastore mount, the plugin reading the chain's files itself
// (sdk/disk/vmdk); never over the network. Disks that runs now gone left
// attached to the proxy are detached first.
func (s *Source) OpenSnapshotDisk(ctx context.Context, key, id string, disk int) (sdk.DiskReader, error) {
	vm, _, d, err := s.snapshotDisk(ctx, key, id, disk)
	if err != nil {
		return nil, err
	}
	s.hot.sweep(ctx)
	log := s.log.With("vm", vm.Name, "snapshot", id, "disk", disk)
	name := fmt.Sprintf("vm %q snapshot %s disk %d", vm.Name, id, disk)
	capacity := diskCapacity(d)

	switch delta, deltaWhy := deltaBacking(d); {
	case s.transport == TransportHotAdd:
		r, why, err := s.hot.open(ctx, vm, id, disk, d, log, `the configuration sets transport = "hotadd"`)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if why != "" {
			return nil, fmt.Errorf("%s: transport is hotadd but %s: %w", name, why, errdefs.ErrFailedPrecondition)
		}
		return noted(r, TransportHotAdd, `the configuration sets transport = "hotadd"`), nil
	case s.transport == TransportAuto && delta:
		r, why, err := s.hot.open(ctx, vm, id, disk, d, log, deltaWhy+": HotAdd presents the whole chain as one disk")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if why == "" {
			return noted(r, TransportHotAdd, deltaWhy+": HotAdd presents the whole chain as one disk"), nil
		}
		cr, err := s.openDeltaChain(d, capacity)
		if err != nil {
			return nil, fmt.Errorf("%s: %s; HotAdd cannot be used (%s), and the chain cannot be read through the datastore mount: %w", name, deltaWhy, why, err)
		}
		why = deltaWhy + "; HotAdd cannot be used (" + why + "): the plugin reads the chain through the datastore mount"
		log.Info("disk transport: direct storage access through the plugin (delta chain)", "path", cr.path, "why", why)
		return noted(cr, TransportDirect, why), nil
	case s.transport == TransportDirect && delta:
		cr, err := s.openDeltaChain(d, capacity)
		if err != nil {
			return nil, fmt.Errorf("%s: transport is direct and %s, which cannot be read through the datastore mount: %w", name, deltaWhy, err)
		}
		why := deltaWhy + ": the plugin reads the chain through the datastore mount"
		log.Info("disk transport: direct storage access through the plugin (delta chain)", "path", cr.path, "why", why)
		return noted(cr, TransportDirect, why), nil
	}

	file, err := snapshotBacking(d)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	desc, err := parseDSPath(file)
	if err != nil {
		return nil, fmt.Errorf("vm %q disk %d: %v: %w", vm.Name, disk, err, errdefs.ErrInvalidArgument)
	}
	flat, err := s.c.flatExtent(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	log = log.With("file", flat.String())

	reason := ""
	if s.transport != TransportNetwork {
		local, mapped := s.c.local(flat)
		switch {
		case !mapped:
			reason = fmt.Sprintf("datastore %q is not in local_datastore_paths", flat.Datastore)
		default:
			r, err := openFileReader(local, capacity)
			if err == nil {
				if r.fileSize == capacity {
					why := "the datastore is mapped and the flat file is there; the data mover reads it itself"
					log.Info("disk transport: direct storage access", "path", local, "why", why)
					return noted(&localFileReader{r}, TransportDirect, why), nil
				}
				why := fmt.Sprintf("the datastore is mapped; the flat file has %d bytes, the disk %d: the plugin reads it and the missing tail reads as zeros", r.fileSize, capacity)
				log.Info("disk transport: direct storage access through the plugin", "path", local, "why", why)
				return noted(r, TransportDirect, why), nil
			}
			reason = fmt.Sprintf("the mapped file %s cannot be opened: %v", local, err)
		}
		if s.transport == TransportDirect {
			return nil, fmt.Errorf("vm %q disk %d: transport is direct but %s: %w", vm.Name, disk, reason, errdefs.ErrFailedPrecondition)
		}
		r, why, err := s.hot.open(ctx, vm, id, disk, d, log, reason+"; the proxy VM's host mounts it")
		switch {
		case r != nil:
			return noted(r, TransportHotAdd, reason+"; the proxy VM's host mounts it"), nil
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			log.Warn("HotAdd failed; reading over the network instead", "error", err)
			why = "HotAdd failed: " + err.Error()
		}
		reason += "; no HotAdd: " + why
	} else {
		reason = `the configuration sets transport = "network"`
	}
	size, err := s.c.httpSize(ctx, flat)
	if err != nil {
		return nil, fmt.Errorf("vm %q disk %d: %w", vm.Name, disk, err)
	}
	log.Info("disk transport: network (datastore HTTP, ranged GETs)", "why", reason)
	return noted(&httpReader{c: s.c, file: flat, size: capacity, fileSize: size}, TransportNetwork, reason), nil
}

// transportNote says how a reader reads its disk and why the transport was
// chosen (sdk.TransportReporter): ferry records it in the session.
type transportNote struct{ mode, why string }

func (t *transportNote) Transport() (mode, why string) { return t.mode, t.why }

func (t *transportNote) note(mode, why string) { t.mode, t.why = mode, why }

// noted records on r, when it can take it, how it reads its disk and why.
func noted(r sdk.DiskReader, mode, why string) sdk.DiskReader {
	if n, ok := r.(interface{ note(mode, why string) }); ok {
		n.note(mode, why)
	}
	return r
}

// openDeltaChain reads a snapshot's delta disk through the datastore
// mount (chainread.go): a snapshot's chain is frozen, ESXi writes above it.
func (s *Source) openDeltaChain(d *types.VirtualDisk, capacity int64) (*chainReader, error) {
	files, _ := diskChain(d)
	return s.c.openChain(files, capacity)
}

// snapshotBacking is the file a snapshot's disk reads from directly or
// over the network. A snapshot of a VM without other snapshots points at
// the flat base disk; one with a parent chain is a delta disk, which HotAdd
// or the datastore mount reads (never the network).
func snapshotBacking(d *types.VirtualDisk) (string, error) {
	b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return "", fmt.Errorf("a %T disk is read only with HotAdd (transport \"auto\" or \"hotadd\"): %w", d.Backing, errdefs.ErrUnimplemented)
	}
	if b.Parent != nil {
		return "", fmt.Errorf("the snapshot's disk %s is a delta of %s (the VM has other snapshots): delta chains are read with HotAdd or through the datastore mount, not over the network (transport \"auto\", \"hotadd\" or \"direct\"): %w",
			b.FileName, b.Parent.FileName, errdefs.ErrUnimplemented)
	}
	return b.FileName, nil
}

// checkRead applies io.ReaderAt's rules at the end of a disk: it returns
// how many bytes of p lie inside the disk, and whether the read is short.
func checkRead(p []byte, off, size int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at offset %d: %w", off, errdefs.ErrInvalidArgument)
	}
	if off >= size {
		return 0, io.EOF
	}
	return int(min(int64(len(p)), size-off)), nil
}

// fileReader reads a disk from a local flat file; bytes past the file's
// end, up to the disk's capacity, read as zeros.
type fileReader struct {
	transportNote
	f        *os.File
	path     string
	size     int64
	fileSize int64
	closed   atomic.Bool
}

func openFileReader(path string, size int64) (*fileReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileReader{f: f, path: path, size: size, fileSize: st.Size()}, nil
}

func (r *fileReader) Size() int64 { return r.size }

func (r *fileReader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, os.ErrClosed
	}
	return readPadded(p, off, r.size, r.fileSize, func(dst []byte, off int64) (int, error) {
		m, err := r.f.ReadAt(dst, off)
		if m < len(dst) && err != nil && !errors.Is(err, io.EOF) {
			return m, err
		}
		return m, nil
	})
}

// readPadded reads p at off from a disk of size bytes whose file holds the
// first fileSize of them: fetch reads the file's part, the rest reads as
// zeros, and a read across the disk's end is short with io.EOF.
func readPadded(p []byte, off, size, fileSize int64, fetch func(dst []byte, off int64) (int, error)) (int, error) {
	n, err := checkRead(p, off, size)
	if n == 0 {
		return 0, err
	}
	want := p[:n]
	got := 0
	if off < fileSize {
		k := int(min(int64(n), fileSize-off))
		if got, err = fetch(want[:k], off); err != nil {
			return got, err
		}
	}
	clear(want[got:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *fileReader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	return r.f.Close()
}

// localFileReader is a fileReader whose file holds the whole disk: the
// data mover may read the file itself.
type localFileReader struct{ *fileReader }

func (r *localFileReader) LocalPath() string { return r.path }

var (
	_ sdk.DiskReader  = (*fileReader)(nil)
	_ sdk.LocalPather = (*localFileReader)(nil)
	_ sdk.DiskReader  = (*httpReader)(nil)
)

// httpReader reads a disk with ranged GETs on the datastore HTTP
// interface, one request per ReadAt.
type httpReader struct {
	transportNote
	c        *conn
	file     dsPath
	size     int64
	fileSize int64
	closed   atomic.Bool
}

func (r *httpReader) Size() int64 { return r.size }

func (r *httpReader) ReadAt(p []byte, off int64) (int, error) {
	if r.closed.Load() {
		return 0, os.ErrClosed
	}
	return readPadded(p, off, r.size, r.fileSize, func(dst []byte, off int64) (int, error) {
		b, err := r.c.httpGet(context.Background(), r.file, off, int64(len(dst)))
		if err != nil {
			return 0, fmt.Errorf("read %s at %d: %w", r.file, off, err)
		}
		if len(b) != len(dst) {
			return 0, fmt.Errorf("read %s at %d: got %d of %d bytes", r.file, off, len(b), len(dst))
		}
		return copy(dst, b), nil
	})
}

func (r *httpReader) Close() error {
	r.closed.Store(true)
	return nil
}
