package vhdx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
)

// Format is the file format of an image.
type Format int

// The formats Open recognises.
const (
	FormatVHDX Format = iota + 1
	FormatVHD
)

func (f Format) String() string {
	switch f {
	case FormatVHDX:
		return "vhdx"
	case FormatVHD:
		return "vhd"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// Info describes one image file (one layer of a chain).
type Info struct {
	Format             Format
	Size               int64 // virtual size in bytes
	BlockSize          int64 // payload block size
	LogicalSectorSize  int64
	PhysicalSectorSize int64
	Fixed              bool
	Differencing       bool
	// DataWriteGUID changes whenever the disk's content changes; a
	// differencing child records its parent's as parent_linkage. For VHD
	// it is the footer's unique id, which a VHD child records likewise.
	DataWriteGUID GUID
	// VirtualDiskID is the disk's identity (VHDX page 83 data).
	VirtualDiskID GUID
}

// An Extent is a byte range of the virtual disk.
type Extent struct {
	Offset, Length int64
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// layer is one image file of a chain.
type layer interface {
	info() Info
	// readAt fills p with the virtual disk's bytes at off, which the caller
	// keeps inside the disk; the ranges this layer does not hold come from
	// below (the parent, or zeros).
	readAt(p []byte, off int64, below func(p []byte, off int64) error) error
	// extents lists, in order, the ranges whose content this layer defines.
	extents() ([]Extent, error)
	close() error
}

// Image is an open disk image: a VHDX or VHD file and, for a differencing
// disk, the chain of parents below it, opened read-only.
//
// ReadAt and WriteAt are safe for concurrent use; writes are serialised.
// Writes become durable at Sync or Close: a crash before leaves the image
// as it was at some earlier point, never torn (see the package doc).
type Image struct {
	path   string
	l      layer
	w      *vhdxFile // l, when the image was opened for writing
	parent *Image

	closeOnce sync.Once
	closeErr  error
}

var (
	_ io.ReaderAt = (*Image)(nil)
	_ io.WriterAt = (*Image)(nil)
)

// maxChain bounds the depth of a chain of differencing disks, so a loop of
// parent locators or a hostile chain cannot exhaust file descriptors.
const maxChain = 1024

// Open opens the VHDX or VHD image at path and, for a differencing disk,
// its parents (read-only). flag is os.O_RDONLY, or os.O_RDWR to write
// (VHDX only). A VHDX whose log is not empty is replayed: into the file
// when writable, in memory when read-only.
//
// Open refuses anything but a regular file, so a FIFO or a device cannot
// hang it, and checks every structure against the file's size before
// trusting it.
func Open(path string, flag int) (*Image, error) {
	return open(path, flag, nil)
}

func open(path string, flag int, chain []os.FileInfo) (*Image, error) {
	rw := false
	switch flag {
	case os.O_RDONLY:
	case os.O_RDWR:
		rw = true
	default:
		return nil, fmt.Errorf("open %q: flag %#x: want os.O_RDONLY or os.O_RDWR: %w", path, flag, ErrInvalidOptions)
	}
	if len(chain) >= maxChain {
		return nil, fmt.Errorf("open %q: chain deeper than %d disks: %w", path, maxChain, ErrUnsupported)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("open %q: %s is not a regular file: %w", path, st.Mode().Type(), ErrUnsupported)
	}
	for _, c := range chain {
		if os.SameFile(c, st) {
			return nil, inFile(path, corrupt("parent locator", "the chain of parents loops back to this file"))
		}
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	img, err := openFile(path, f, rw, append(chain, st))
	if err != nil {
		f.Close()
		return nil, err
	}
	return img, nil
}

func openFile(path string, f *os.File, rw bool, chain []os.FileInfo) (*Image, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("open %q: not a regular file: %w", path, ErrUnsupported)
	}
	size := st.Size()
	var magic [8]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("open disk image %q: %w", path, err)
	}
	img := &Image{path: path}
	switch {
	case string(magic[:]) == fileIDSignature:
		v, err := openVHDX(f, func() (int64, error) {
			st, err := f.Stat()
			if err != nil {
				return 0, err
			}
			return st.Size(), nil
		}, rw)
		if err != nil {
			return nil, inFile(path, err)
		}
		img.l = v
		if rw {
			img.w = v
		}
		if v.p.hasParent {
			parent, err := openVHDXParent(path, v, chain)
			if err != nil {
				return nil, err
			}
			img.parent = parent
		}
	case isVHD(f, size):
		if rw {
			return nil, fmt.Errorf("open %q for writing: VHD: %w", path, ErrReadOnly)
		}
		v, err := openVHD(f, size)
		if err != nil {
			return nil, inFile(path, err)
		}
		img.l = v
		if v.differencing() {
			parent, err := openVHDParent(path, v, chain)
			if err != nil {
				return nil, err
			}
			img.parent = parent
		}
	default:
		return nil, inFile(path, unsupported("file type", "neither a VHDX (no %q signature) nor a VHD (no footer)", fileIDSignature))
	}
	return img, nil
}

// Path is the file the image was opened from.
func (img *Image) Path() string { return img.path }

// Info describes the top file of the image.
func (img *Image) Info() Info { return img.l.info() }

// Size is the virtual size of the disk in bytes.
func (img *Image) Size() int64 { return img.l.info().Size }

// Parent is the image below a differencing disk, or nil.
func (img *Image) Parent() *Image { return img.parent }

// ReadAt reads the virtual disk at off, through the chain. It returns
// io.EOF with fewer bytes than asked at the end of the disk.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	size := img.Size()
	if off < 0 {
		return 0, fmt.Errorf("read %q at %d: negative offset: %w", img.path, off, ErrInvalidOptions)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > size-off {
		n = int(size - off)
	}
	if err := img.l.readAt(p[:n], off, img.below); err != nil {
		return 0, fmt.Errorf("read %q at %d: %w", img.path, off, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// below reads what lies under the top file: the parent, or zeros. A parent
// smaller than its child reads as zeros past its end.
func (img *Image) below(p []byte, off int64) error {
	if img.parent == nil {
		clear(p)
		return nil
	}
	n, err := img.parent.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		return nil
	}
	return err
}

// WriteAt writes p at off, allocating blocks as needed. Writes past the end
// of the disk are refused whole.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if img.w == nil {
		return 0, fmt.Errorf("write %q: %w", img.path, ErrReadOnly)
	}
	if off < 0 || off > img.Size() || int64(len(p)) > img.Size()-off {
		return 0, fmt.Errorf("write %q at [%d, +%d): outside the disk (%d bytes): %w", img.path, off, len(p), img.Size(), ErrInvalidOptions)
	}
	if err := img.w.writeAt(p, off, img.below); err != nil {
		return 0, fmt.Errorf("write %q at %d: %w", img.path, off, err)
	}
	return len(p), nil
}

// Sync makes every write so far durable: the data first, then the metadata
// that points at it.
func (img *Image) Sync() error {
	if img.w == nil {
		return nil
	}
	if err := img.w.flush(); err != nil {
		return fmt.Errorf("sync %q: %w", img.path, err)
	}
	return nil
}

// Close syncs a writable image and closes its file and its parents'. It
// is safe to call more than once.
func (img *Image) Close() error {
	img.closeOnce.Do(func() {
		var errs []error
		if img.w != nil {
			if err := img.w.flush(); err != nil {
				errs = append(errs, fmt.Errorf("close %q: %w", img.path, err))
			}
		}
		if err := img.l.close(); err != nil {
			errs = append(errs, fmt.Errorf("close %q: %w", img.path, err))
		}
		if img.parent != nil {
			errs = append(errs, img.parent.Close())
		}
		img.closeErr = errors.Join(errs...)
	})
	return img.closeErr
}

// Extents lists, in order and coalesced, the ranges whose content the top
// file defines: the allocated blocks of a dynamic disk (every block of a
// fixed one); for a differencing disk, the sectors it holds and the blocks
// it declares zero. Outside them a dynamic disk reads zeros and a
// differencing disk reads its parent.
func (img *Image) Extents() ([]Extent, error) {
	e, err := img.l.extents()
	if err != nil {
		return nil, fmt.Errorf("extents of %q: %w", img.path, err)
	}
	return e, nil
}

// ChainExtents is the union of the Extents of every file of the chain:
// outside it the whole disk reads zeros, so a copy can skip it.
func (img *Image) ChainExtents() ([]Extent, error) {
	var all []Extent
	for i := img; i != nil; i = i.parent {
		e, err := i.Extents()
		if err != nil {
			return nil, err
		}
		for _, x := range e {
			if x.Offset < img.Size() {
				x.Length = min(x.Length, img.Size()-x.Offset)
				all = append(all, x)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Offset < all[j].Offset })
	return coalesce(all), nil
}

// coalesce merges sorted extents that touch or overlap.
func coalesce(e []Extent) []Extent {
	out := e[:0]
	for _, x := range e {
		if x.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && x.Offset <= out[n-1].End() {
			out[n-1].Length = max(out[n-1].End(), x.End()) - out[n-1].Offset
			continue
		}
		out = append(out, x)
	}
	return out
}

var zeroBlock [64 * kib]byte

// allZero reports whether b holds only zero bytes.
func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// readFull reads len(p) bytes at off; a short file is corruption, since
// every offset was checked against the file's size when it was opened.
func readFull(r io.ReaderAt, p []byte, off int64, field string) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF || err == nil {
		return corrupt(field, "[%d, +%d) is past the end of the file", off, len(p))
	}
	return fmt.Errorf("%s: %w", field, err)
}
