package simhost

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
)

// compact merges and removes the files of s that no checkpoint and no
// current disk refers to, until none can go: a file without children
// goes; a file with one child that is not a current file takes the
// child's content (merge). A file with several children (a checkpoint
// applied, so the tree branches) stays until a branch goes. The new files
// are written and synced here; the caller commits s, then sweeps the old
// ones (see the package doc).
func (h *Host) compact(ctx context.Context, s *vmState) error {
	for {
		done, err := h.compactOnce(ctx, s)
		if err != nil || done {
			return err
		}
	}
}

func (h *Host) compactOnce(ctx context.Context, s *vmState) (done bool, err error) {
	refs := map[string]bool{}
	current := map[string]bool{}
	for _, d := range s.Disks {
		refs[d.File], current[d.File] = true, true
	}
	for _, c := range s.Checkpoints {
		for _, f := range c.Files {
			refs[f] = true
		}
	}
	children := map[string][]string{}
	for name, r := range s.Files {
		if r.Parent != "" {
			children[r.Parent] = append(children[r.Parent], name)
		}
	}
	// Nearest the base first, so a chain of unreferenced files folds into
	// its base rather than into the files above it.
	depth := func(f string) int {
		n := 0
		for ; s.Files[f].Parent != ""; f = s.Files[f].Parent {
			n++
		}
		return n
	}
	names := make([]string, 0, len(s.Files))
	for n := range s.Files {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if di, dj := depth(names[i]), depth(names[j]); di != dj {
			return di < dj
		}
		return names[i] < names[j]
	})
	for _, f := range names {
		if refs[f] {
			continue
		}
		switch kids := children[f]; {
		case len(kids) == 0:
			delete(s.Files, f)
			return false, nil
		case len(kids) == 1 && !current[kids[0]]:
			return false, h.merge(ctx, s, f, kids[0], children)
		}
	}
	return true, nil
}

// merge merges child into f: a new file, on f's parent, with the content
// of child's chain, takes the place of both, and the files above child are
// made again on it.
func (h *Host) merge(ctx context.Context, s *vmState, f, child string, children map[string][]string) error {
	dir := h.vmDir(s.ID)
	rf, rc := s.Files[f], s.Files[child]
	src, err := vhdx.Open(filepath.Join(dir, child), os.O_RDONLY)
	if err != nil {
		return err
	}
	defer src.Close()
	// Keep the changes of both files for change tracking before they
	// merge into one.
	d := &s.Disks[rf.Disk]
	for _, part := range []struct {
		rec fileRec
		img *vhdx.Image
	}{{rf, src.Parent()}, {rc, src}} {
		if part.rec.Start == "" || part.rec.End == "" || !sameEpoch(part.rec.Start, part.rec.End) {
			continue
		}
		e, err := part.img.Extents()
		if err != nil {
			return err
		}
		d.Log = append(d.Log, rctEntry{From: part.rec.Start, To: part.rec.End, Extents: toHost(e)})
	}
	if len(d.Log) > maxLog {
		d.Log = d.Log[len(d.Log)-maxLog:]
	}

	var dst *vhdx.Image
	var ranges []vhdx.Extent
	var name string
	if rf.Parent == "" {
		name = h.newFileName(s, rf.Disk, "vhdx")
		dst, err = vhdx.Create(filepath.Join(dir, name), vhdx.Options{Size: src.Size(), BlockSize: src.Parent().Info().BlockSize})
		if err == nil {
			ranges, err = src.ChainExtents()
		}
	} else {
		name = h.newFileName(s, rf.Disk, "avhdx")
		dst, err = vhdx.CreateDifferencing(filepath.Join(dir, name), filepath.Join(dir, rf.Parent))
		if err == nil {
			ranges, err = unionExtents(src, src.Parent())
		}
	}
	if err != nil {
		if dst != nil {
			dst.Close()
		}
		return err
	}
	err = copyExtents(ctx, dst, src, ranges)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	h.hit("merged")
	s.Files[name] = fileRec{Disk: rf.Disk, Parent: rf.Parent, Start: rf.Start, End: rc.End}
	s.replace(child, name)
	if err := h.rebase(ctx, s, child, name, children); err != nil {
		return err
	}
	delete(s.Files, f)
	delete(s.Files, child)
	return nil
}

// rebase makes each child of old again as a child of parent: a new
// differencing disk holding the child's own ranges, read through the old
// chain; then the files above it likewise.
func (h *Host) rebase(ctx context.Context, s *vmState, old, parent string, children map[string][]string) error {
	dir := h.vmDir(s.ID)
	for _, k := range children[old] {
		src, err := vhdx.Open(filepath.Join(dir, k), os.O_RDONLY)
		if err != nil {
			return err
		}
		rk := s.Files[k]
		name := h.newFileName(s, rk.Disk, "avhdx")
		dst, err := vhdx.CreateDifferencing(filepath.Join(dir, name), filepath.Join(dir, parent))
		if err != nil {
			src.Close()
			return err
		}
		ext, err := src.Extents()
		if err == nil {
			err = copyExtents(ctx, dst, src, ext)
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		src.Close()
		if err != nil {
			return err
		}
		h.hit("rebased")
		rk.Parent = parent
		s.Files[name] = rk
		s.replace(k, name)
		if err := h.rebase(ctx, s, k, name, children); err != nil {
			return err
		}
		delete(s.Files, k)
	}
	return nil
}

// replace makes every reference to file old (a checkpoint's, a current
// disk's) refer to file new.
func (s *vmState) replace(old, new string) {
	for i := range s.Disks {
		if s.Disks[i].File == old {
			s.Disks[i].File = new
		}
	}
	for i := range s.Checkpoints {
		for j, f := range s.Checkpoints[i].Files {
			if f == old {
				s.Checkpoints[i].Files[j] = new
			}
		}
	}
}

func sameEpoch(a, b string) bool {
	ea, eb := a[:strings.LastIndexByte(a, ':')+1], b[:strings.LastIndexByte(b, ':')+1]
	return ea == eb
}

func unionExtents(imgs ...*vhdx.Image) ([]vhdx.Extent, error) {
	var all []host.Extent
	for _, img := range imgs {
		e, err := img.Extents()
		if err != nil {
			return nil, err
		}
		all = append(all, toHost(e)...)
	}
	all = coalesce(all)
	out := make([]vhdx.Extent, len(all))
	for i, x := range all {
		out[i] = vhdx.Extent{Offset: x.Offset, Length: x.Length}
	}
	return out, nil
}

func toHost(e []vhdx.Extent) []host.Extent {
	out := make([]host.Extent, len(e))
	for i, x := range e {
		out[i] = host.Extent{Offset: x.Offset, Length: x.Length}
	}
	return out
}
