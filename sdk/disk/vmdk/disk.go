package vmdk

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// An Extent is a byte range of the virtual disk.
type Extent struct {
	Offset, Length int64
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// A Link is one disk of a chain: its descriptor and what it says.
type Link struct {
	Path       string // the descriptor (or the sparse file holding it)
	Descriptor *Descriptor
	Size       int64 // virtual size in bytes
}

// Disk is an open chain of VMDKs: the top disk and its parents, read-only.
// ReadAt is safe for concurrent use.
type Disk struct {
	links []*chainLink
	files []*os.File

	closeOnce sync.Once
	closeErr  error
}

var _ io.ReaderAt = (*Disk)(nil)

type chainLink struct {
	Link
	extents []placed
}

// placed is an extent at its place in the virtual disk.
type placed struct {
	start, size int64
	m           mapper
	r           io.ReaderAt
	file        string
}

// maxChain bounds a chain (ESXi allows 32 snapshots; 255 is VMFS's own
// limit), so a hostile chain cannot exhaust file descriptors.
const maxChain = 255

// Open opens the VMDK whose descriptor is at path (a text descriptor, or a
// hosted sparse file with one inside) and every parent its
// parentFileNameHint names, in turn. A parent is looked for as the hint
// says (relative to the child's folder), then, for an absolute hint that
// is not there (an ESXi path under /vmfs/volumes), by its file name in the
// child's folder. A parent whose CID is not the child's parentCID is
// refused (ErrParentMismatch).
//
// Open reads regular files only (a FIFO or a device would hang it), takes
// extent files from the descriptor's own folder only, and checks every
// structure against its file's size before trusting it.
func Open(path string) (*Disk, error) {
	return OpenWith(path, Options{})
}

// Options change how Open finds a chain's files.
type Options struct {
	// Parent, when set, is asked first where the parent a descriptor's
	// parentFileNameHint names is (child is the child's descriptor); it
	// returns "" to leave it to Open's own search. A caller that knows the
	// chain (vSphere lists a disk's files) maps ESXi's absolute paths with
	// it.
	Parent func(child, hint string) string
}

// OpenWith is Open with options.
func OpenWith(path string, o Options) (*Disk, error) {
	d := &Disk{}
	var seen []os.FileInfo
	cur, child := path, (*chainLink)(nil)
	for {
		if len(d.links) == maxChain {
			d.Close()
			return nil, fmt.Errorf("open %q: a chain deeper than %d disks: %w", path, maxChain, ErrUnsupported)
		}
		l, st, err := d.openLink(cur, seen)
		if err != nil {
			d.Close()
			return nil, err
		}
		seen = append(seen, st)
		if child != nil && child.Descriptor.ParentCID != l.Descriptor.CID {
			d.Close()
			return nil, fmt.Errorf("%q: parentCID %08x, but its parent %q has CID %08x (the parent changed after the delta was made): %w",
				child.Path, child.Descriptor.ParentCID, l.Path, l.Descriptor.CID, ErrParentMismatch)
		}
		d.links = append(d.links, l)
		hint := l.Descriptor.ParentFileNameHint
		if hint == "" {
			return d, nil
		}
		if o.Parent != nil {
			cur = o.Parent(l.Path, hint)
		}
		if o.Parent == nil || cur == "" {
			cur, err = parentPath(l.Path, hint)
		}
		if err != nil {
			d.Close()
			return nil, err
		}
		child = l
	}
}

// parentPath finds the file a parentFileNameHint names.
func parentPath(child, hint string) (string, error) {
	dir := filepath.Dir(child)
	try := []string{hint}
	if !filepath.IsAbs(hint) && !strings.HasPrefix(hint, "/") {
		try = []string{filepath.Join(dir, filepath.FromSlash(hint))}
	} else {
		try = append(try, filepath.Join(dir, pathBase(hint)))
	}
	for _, p := range try {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: its parent %q (parentFileNameHint) is not there: %w", child, hint, ErrNotFound)
}

// pathBase is the last element of a path written with / or \.
func pathBase(p string) string {
	if i := strings.LastIndexAny(p, `/\`); i >= 0 {
		return p[i+1:]
	}
	return p
}

// openRegular opens path for reading, refusing anything but a regular file.
func (d *Disk) openRegular(path, what string) (*os.File, os.FileInfo, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s %q: %w", what, path, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s %q: %s is not a regular file: %w", what, path, st.Mode().Type(), ErrUnsupported)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	d.files = append(d.files, f)
	// The file opened must be the one checked: a swap in between could
	// put a FIFO there.
	if st2, err := f.Stat(); err != nil || !os.SameFile(st, st2) {
		return nil, nil, fmt.Errorf("%s %q changed while it was opened: %w", what, path, ErrUnsupported)
	}
	return f, st, nil
}

// openLink opens one disk of the chain: its descriptor and its extents.
func (d *Disk) openLink(path string, seen []os.FileInfo) (*chainLink, os.FileInfo, error) {
	f, st, err := d.openRegular(path, "descriptor")
	if err != nil {
		return nil, nil, err
	}
	for _, s := range seen {
		if os.SameFile(s, st) {
			return nil, nil, fmt.Errorf("%q: the chain of parents loops back to this file: %w", path, ErrCorrupt)
		}
	}
	desc, err := readDescriptor(f, st.Size())
	if err != nil {
		return nil, nil, inFile(path, err)
	}
	l := &chainLink{Link: Link{Path: path, Descriptor: desc}}
	for i, e := range desc.Extents {
		p, err := d.openExtent(path, f, st, e, l.Size)
		if err != nil {
			return nil, nil, fmt.Errorf("%q extent %d: %w", path, i+1, err)
		}
		l.extents = append(l.extents, p)
		l.Size += p.size
		if l.Size > maxSectors*sectorSize {
			return nil, nil, inFile(path, corrupt("descriptor", "the extents add up to more than %d bytes", int64(maxSectors*sectorSize)))
		}
	}
	return l, st, nil
}

// readDescriptor reads the descriptor of a file: its text, or the one a
// hosted sparse file holds.
func readDescriptor(f io.ReaderAt, size int64) (*Descriptor, error) {
	magic := make([]byte, hostedHeaderSize)
	n, err := f.ReadAt(magic, 0)
	if err != nil && err != io.EOF {
		return nil, err
	}
	switch m := string(magic[:min(n, 4)]); {
	case m == hostedMagic:
		h, err := parseHostedHeader(magic[:n])
		if err != nil {
			return nil, err
		}
		if h.descOffset == 0 || h.descSize == 0 {
			return nil, unsupported("sparse header", "no embedded descriptor: open the descriptor that names this file")
		}
		off, length := h.descOffset*sectorSize, h.descSize*sectorSize
		if off > size || length > size-off {
			return nil, corrupt("sparse header descriptorOffset", "descriptor [%d, +%d) is outside the file (%d bytes)", off, length, size)
		}
		b := make([]byte, length)
		if err := readFull(f, b, off, "embedded descriptor"); err != nil {
			return nil, err
		}
		return ParseDescriptor(b)
	case m == cowdMagic || m == "\xbe\xba\xfe\xca":
		return nil, unsupported("file", "a delta's data file: open the descriptor that names it")
	}
	if size > maxDescriptor {
		return nil, unsupported("descriptor", "%d bytes: neither a descriptor nor a sparse file", size)
	}
	b := make([]byte, size)
	if err := readFull(f, b, 0, "descriptor"); err != nil {
		return nil, err
	}
	return ParseDescriptor(b)
}

// openExtent opens extent e of the descriptor at descPath (whose file is
// df), placed at start.
func (d *Disk) openExtent(descPath string, df *os.File, dst os.FileInfo, e ExtentDesc, start int64) (placed, error) {
	p := placed{start: start, size: e.Sectors * sectorSize}
	switch e.Access {
	case "RW", "RDONLY":
	default:
		return p, unsupported("extent", "access %q", e.Access)
	}
	if strings.ContainsAny(e.File, `/\`) || e.File == ".." || e.File == "." {
		return p, unsupported("extent", "file %q is outside the descriptor's folder", e.File)
	}
	p.file = filepath.Join(filepath.Dir(descPath), e.File)
	var f *os.File
	var st os.FileInfo
	if ost, err := os.Stat(p.file); err == nil && os.SameFile(ost, dst) {
		f, st = df, dst // a sparse file naming itself
	} else {
		var err error
		if f, st, err = d.openRegular(p.file, "extent"); err != nil {
			return p, err
		}
	}
	p.r = f
	var err error
	switch e.Type {
	case "FLAT", "VMFS":
		p.m = &flat{fileSize: st.Size(), start: e.Offset * sectorSize, size: p.size}
	case "SPARSE", "VMFSSPARSE":
		magic := make([]byte, 4)
		if err := readFull(f, magic, 0, "sparse header"); err != nil {
			return p, inFile(p.file, err)
		}
		if string(magic) == cowdMagic {
			p.m, err = openCOWD(f, st.Size(), e.Sectors)
		} else {
			p.m, err = openHosted(f, st.Size(), e.Sectors)
		}
	case "SESPARSE":
		p.m, err = openSESparse(f, st.Size(), e.Sectors)
	default:
		return p, unsupported("extent", "type %q is not read", e.Type)
	}
	return p, inFile(p.file, err)
}

// Size is the virtual size of the disk in bytes: the top disk's.
func (d *Disk) Size() int64 { return d.links[0].Size }

// Links are the disks of the chain, the top one first.
func (d *Disk) Links() []Link {
	out := make([]Link, len(d.links))
	for i, l := range d.links {
		out[i] = l.Link
	}
	return out
}

// ReadAt reads the virtual disk at off: each byte from the topmost disk
// that holds it, zeros where none does. It returns io.EOF with fewer bytes
// than asked at the end of the disk.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	size := d.Size()
	if off < 0 {
		return 0, fmt.Errorf("read %q at %d: negative offset: %w", d.links[0].Path, off, errdefs.ErrInvalidArgument)
	}
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	if err := d.read(0, p[:n], off); err != nil {
		return 0, fmt.Errorf("read %q at %d: %w", d.links[0].Path, off, err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// read fills p with what link i and those below it hold at off. A parent
// smaller than its child reads as zeros past its end.
func (d *Disk) read(i int, p []byte, off int64) error {
	if i == len(d.links) {
		clear(p)
		return nil
	}
	l := d.links[i]
	if off >= l.Size {
		clear(p)
		return nil
	}
	if over := off + int64(len(p)) - l.Size; over > 0 {
		clear(p[int64(len(p))-over:])
		p = p[:int64(len(p))-over]
	}
	for _, e := range l.extents {
		if off >= e.start+e.size || off+int64(len(p)) <= e.start {
			continue
		}
		from := max(off, e.start)
		to := min(off+int64(len(p)), e.start+e.size)
		if err := d.readExtent(i, e, p[from-off:to-off], from); err != nil {
			return err
		}
	}
	return nil
}

// readExtent fills p with the bytes at virtual offset off inside extent e
// of link i, one read for each run of bytes alike.
func (d *Disk) readExtent(i int, e placed, p []byte, off int64) error {
	type run struct {
		k         kind
		at, start int64 // file offset (kindData), offset in p
		n         int64
	}
	var cur run
	flush := func() error {
		b := p[cur.start : cur.start+cur.n]
		switch cur.k {
		case kindData:
			return inFile(e.file, readFull(e.r, b, cur.at, "grain"))
		case kindZero:
			clear(b)
			return nil
		}
		return d.read(i+1, b, off+cur.start)
	}
	for pos := int64(0); pos < int64(len(p)); {
		k, at, n, err := e.m.span(off + pos - e.start)
		if err != nil {
			return inFile(e.file, err)
		}
		n = min(n, int64(len(p))-pos)
		if cur.n > 0 && k == cur.k && (k != kindData || at == cur.at+cur.n) {
			cur.n += n
		} else {
			if cur.n > 0 {
				if err := flush(); err != nil {
					return err
				}
			}
			cur = run{k: k, at: at, start: pos, n: n}
		}
		pos += n
	}
	if cur.n > 0 {
		return flush()
	}
	return nil
}

// Allocated lists, in order and coalesced, the ranges of the virtual disk
// that the top depth disks of the chain hold (data, or zeros hiding what
// is below). Outside them the disk reads what the disks below hold, so a
// caller that has those already reads only these. depth <= 0 or beyond the
// chain means the whole chain.
func (d *Disk) Allocated(depth int) ([]Extent, error) {
	if depth <= 0 || depth > len(d.links) {
		depth = len(d.links)
	}
	size := d.Size()
	var all []Extent
	for _, l := range d.links[:depth] {
		for _, e := range l.extents {
			err := e.m.defined(func(off, n int64) {
				at := e.start + off
				if at >= size {
					return
				}
				x := Extent{at, min(n, size-at)}
				// Grains come in order within a disk: merge as they come,
				// so a disk of small grains does not list each one.
				if k := len(all); k > 0 && all[k-1].End() == x.Offset {
					all[k-1].Length += x.Length
					return
				}
				all = append(all, x)
			})
			if err != nil {
				return nil, fmt.Errorf("allocated ranges of %q: %w", l.Path, inFile(e.file, err))
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Offset < all[j].Offset })
	out := all[:0]
	for _, x := range all {
		if n := len(out); n > 0 && x.Offset <= out[n-1].End() {
			out[n-1].Length = max(out[n-1].End(), x.End()) - out[n-1].Offset
			continue
		}
		out = append(out, x)
	}
	return out, nil
}

// Close closes every file of the chain. It is safe to call more than once.
func (d *Disk) Close() error {
	d.closeOnce.Do(func() {
		var errs []error
		for _, f := range d.files {
			errs = append(errs, f.Close())
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}
