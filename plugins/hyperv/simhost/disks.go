package simhost

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func diskSize(path string) (int64, error) {
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	return img.Size(), nil
}

// CreateVM makes a VM, turned off, with empty dynamic VHDX disks.
func (h *Host) CreateVM(ctx context.Context, spec host.VMSpec) (*host.VM, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if spec.Name == "" {
		return nil, fmt.Errorf("create vm: no name: %w", errdefs.ErrInvalidArgument)
	}
	if spec.Generation != 1 && spec.Generation != 2 {
		return nil, fmt.Errorf("create vm %q: generation %d: want 1 or 2: %w", spec.Name, spec.Generation, errdefs.ErrInvalidArgument)
	}
	if err := checkHardware(spec); err != nil {
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	if err := checkBootOrder(spec); err != nil {
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	switches, err := h.Switches(ctx)
	if err != nil {
		return nil, err
	}
	for i, n := range spec.NICs {
		if n.Switch != "" && !slices.Contains(switches, n.Switch) {
			return nil, fmt.Errorf("create vm %q adapter %d: virtual switch %q: %w", spec.Name, i, n.Switch, errdefs.ErrNotFound)
		}
	}
	l, err := h.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer l.Release()
	s := &vmState{ID: newID(), Name: spec.Name, Created: h.now().UTC(), Generation: spec.Generation, CPUs: spec.CPUs,
		MemoryMiB: spec.MemoryMiB, SecureBoot: spec.SecureBoot, SBTemplate: spec.SecureBootTemplate, TPM: spec.TPM, Notes: spec.Notes, Files: map[string]fileRec{},
		Node: h.node, BootOrder: slices.Clone(spec.BootOrder)}
	if s.SecureBoot && s.SBTemplate == "" {
		s.SBTemplate = sdk.SecureBootMicrosoftWindows // Hyper-V's default
	}
	dir := h.vmDir(s.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	fail := func(err error) (*host.VM, error) {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("create vm %q: %w", spec.Name, err)
	}
	for i, d := range spec.Disks {
		name := fmt.Sprintf("disk%d.vhdx", i)
		img, err := vhdx.Create(filepath.Join(dir, name), vhdx.Options{Size: d.Capacity, BlockSize: blockSize})
		if err != nil {
			return fail(err)
		}
		if err := img.Close(); err != nil {
			return fail(err)
		}
		s.Disks = append(s.Disks, diskState{Controller: d.Controller, Bus: d.Bus, Location: d.Location, File: name, Epoch: newEpoch()})
		s.Files[name] = fileRec{Disk: i}
	}
	for _, n := range spec.NICs {
		s.NICs = append(s.NICs, host.NIC{Switch: n.Switch, MAC: newMAC(), Guest: n.Guest, Legacy: n.Legacy})
	}
	if err := h.writeVM(s); err != nil {
		return fail(err)
	}
	return h.describe(s)
}

// checkHardware refuses what Hyper-V refuses: a generation 2 VM has no
// IDE controller and no legacy adapter; a generation 1 VM has two IDE
// controllers of two places, no Secure Boot and no TPM; SCSI controllers
// are four of 64 places; no two disks share a place.
func checkHardware(spec host.VMSpec) error {
	if spec.Generation == 1 && (spec.SecureBoot || spec.TPM) {
		return fmt.Errorf("a generation 1 VM has no Secure Boot and no TPM: %w", errdefs.ErrInvalidArgument)
	}
	if t := spec.SecureBootTemplate; t != "" && t != sdk.SecureBootMicrosoftWindows && t != sdk.SecureBootMicrosoftUEFICA {
		return fmt.Errorf("secure boot template %q: %w", t, errdefs.ErrInvalidArgument)
	}
	taken := map[string]bool{}
	for i, d := range spec.Disks {
		var buses, places int
		switch {
		case d.Controller == "ide" && spec.Generation == 1:
			buses, places = 2, 2
		case d.Controller == "scsi":
			buses, places = 4, 64
		default:
			return fmt.Errorf("disk %d: a generation %d VM has no %q controller: %w", i, spec.Generation, d.Controller, errdefs.ErrInvalidArgument)
		}
		at := fmt.Sprintf("%s%d:%d", d.Controller, d.Bus, d.Location)
		if d.Bus < 0 || d.Bus >= buses || d.Location < 0 || d.Location >= places || taken[at] {
			return fmt.Errorf("disk %d: %s is taken or not a place the VM has: %w", i, at, errdefs.ErrInvalidArgument)
		}
		taken[at] = true
	}
	for i, n := range spec.NICs {
		if n.Legacy && spec.Generation != 1 {
			return fmt.Errorf("adapter %d: a legacy network adapter needs generation 1: %w", i, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func newMAC() string {
	id := strings.ReplaceAll(newID(), "-", "")
	return "00:15:5D:" + id[0:2] + ":" + id[2:4] + ":" + id[4:6] // Hyper-V's prefix
}

// GuestWrite writes data at off to a disk of the VM as its guest would:
// into the disk's current file, which change tracking sees.
func (h *Host) GuestWrite(ctx context.Context, vm string, disk int, off int64, data []byte) error {
	l, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer l.Release()
	s, err := h.find(vm)
	if err != nil {
		return err
	}
	if disk < 0 || disk >= len(s.Disks) {
		return fmt.Errorf("vm %q has no disk %d: %w", vm, disk, errdefs.ErrNotFound)
	}
	img, err := vhdx.Open(filepath.Join(h.vmDir(s.ID), s.Disks[disk].File), os.O_RDWR)
	if err != nil {
		return err
	}
	_, werr := img.WriteAt(data, off)
	return errors.Join(werr, img.Close())
}

// ResetChangeTracking makes the host lose track of a disk's changes, as
// turning RCT off and on does: every id given before is unknown.
func (h *Host) ResetChangeTracking(ctx context.Context, vm string, disk int) error {
	_, err := h.change(ctx, vm, func(s *vmState) error {
		if disk < 0 || disk >= len(s.Disks) {
			return fmt.Errorf("vm %q has no disk %d: %w", vm, disk, errdefs.ErrNotFound)
		}
		s.Disks[disk].Epoch, s.Disks[disk].Seq, s.Disks[disk].Log = newEpoch(), 0, nil
		return nil
	})
	return err
}

// GrowDisk grows a disk of the VM's current state. A disk with
// checkpoints cannot be resized (nor can one on Hyper-V), so the current
// state gets a new VHDX of the new size holding the disk's content; the
// checkpoints keep their files and sizes, and change tracking of the
// disk starts again.
func (h *Host) GrowDisk(ctx context.Context, vm string, disk int, size int64) error {
	_, err := h.change(ctx, vm, func(s *vmState) error {
		if disk < 0 || disk >= len(s.Disks) {
			return fmt.Errorf("vm %q has no disk %d: %w", vm, disk, errdefs.ErrNotFound)
		}
		dir := h.vmDir(s.ID)
		d := &s.Disks[disk]
		src, err := vhdx.Open(filepath.Join(dir, d.File), os.O_RDONLY)
		if err != nil {
			return err
		}
		defer src.Close()
		if size <= src.Size() {
			return nil
		}
		name := h.newFileName(s, disk, "vhdx")
		dst, err := vhdx.Create(filepath.Join(dir, name), vhdx.Options{Size: size, BlockSize: blockSize})
		if err != nil {
			return err
		}
		ext, err := src.ChainExtents()
		if err == nil {
			err = copyExtents(ctx, dst, src, ext)
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		s.Files[name] = fileRec{Disk: disk}
		d.File = name
		d.Epoch, d.Seq, d.Log = newEpoch(), 0, nil
		return h.compact(ctx, s)
	})
	return err
}

// newFileName names a new file of a disk uniquely.
func (h *Host) newFileName(s *vmState, disk int, ext string) string {
	for {
		n := fmt.Sprintf("disk%d-%s.%s", disk, strings.ToLower(newID()[:8]), ext)
		if _, ok := s.Files[n]; !ok {
			return n
		}
	}
}

// copyExtents copies the ranges ext of src into dst.
func copyExtents(ctx context.Context, dst, src *vhdx.Image, ext []vhdx.Extent) error {
	buf := make([]byte, 1<<20)
	for _, e := range ext {
		for off := e.Offset; off < e.End(); {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(int64(len(buf)), e.End()-off)
			if _, err := src.ReadAt(buf[:n], off); err != nil {
				return err
			}
			if _, err := dst.WriteAt(buf[:n], off); err != nil {
				return err
			}
			off += n
		}
	}
	return nil
}

func (s *vmState) checkpoint(id string) (int, error) {
	for i, c := range s.Checkpoints {
		if c.ID == id || c.Name == id {
			return i, nil
		}
	}
	return -1, fmt.Errorf("checkpoint %q of vm %q: %w", id, s.Name, errdefs.ErrNotFound)
}

func rctID(d diskState) string { return "rct:" + d.Epoch + ":" + strconv.Itoa(d.Seq) }

// CreateCheckpoint freezes each disk's current file and gives the VM a new
// differencing disk on it.
func (h *Host) CreateCheckpoint(ctx context.Context, vm string, req host.CheckpointRequest) (*host.Checkpoint, error) {
	if req.Type != host.Standard && req.Type != host.Recovery {
		return nil, fmt.Errorf("checkpoint type %d: %w", req.Type, errdefs.ErrInvalidArgument)
	}
	var cp checkpointState
	s, err := h.change(ctx, vm, func(s *vmState) error {
		dir := h.vmDir(s.ID)
		cp = checkpointState{ID: newID(), Name: req.Name, Type: int(req.Type), Created: h.now().UTC(),
			Consistency: int(host.CrashConsistent), Notes: req.Notes, Parent: s.currentCheckpoint()}
		if req.Consistency == host.ApplicationConsistent && s.GuestBackup {
			cp.Consistency = int(host.ApplicationConsistent)
		}
		for i := range s.Disks {
			d := &s.Disks[i]
			d.Seq++
			id := rctID(*d)
			name := h.newFileName(s, i, "avhdx")
			img, err := vhdx.CreateDifferencing(filepath.Join(dir, name), filepath.Join(dir, d.File))
			if err != nil {
				return err
			}
			size := img.Size()
			if err := img.Close(); err != nil {
				return err
			}
			frozen := s.Files[d.File]
			frozen.End = id
			s.Files[d.File] = frozen
			s.Files[name] = fileRec{Disk: i, Parent: d.File, Start: id}
			cp.Files = append(cp.Files, d.File)
			cp.RCT = append(cp.RCT, id)
			cp.Sizes = append(cp.Sizes, size)
			d.File = name
		}
		s.Checkpoints = append(s.Checkpoints, cp)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint vm %q: %w", vm, err)
	}
	return h.describeCheckpoint(s, cp), nil
}

// currentCheckpoint is the checkpoint the current state was taken from:
// the one whose files are the current files' parents.
func (s *vmState) currentCheckpoint() string {
	if len(s.Disks) == 0 {
		return ""
	}
	parent := s.Files[s.Disks[0].File].Parent
	for i := len(s.Checkpoints) - 1; i >= 0; i-- {
		if len(s.Checkpoints[i].Files) > 0 && s.Checkpoints[i].Files[0] == parent {
			return s.Checkpoints[i].ID
		}
	}
	return ""
}

func (h *Host) describeCheckpoint(s *vmState, c checkpointState) *host.Checkpoint {
	out := &host.Checkpoint{ID: c.ID, Name: c.Name, Type: host.CheckpointType(c.Type), Created: c.Created,
		Consistency: host.Consistency(c.Consistency), Notes: c.Notes, Parent: c.Parent}
	for i, f := range c.Files {
		out.Disks = append(out.Disks, host.CheckpointDisk{Path: filepath.Join(h.vmDir(s.ID), f), Capacity: c.Sizes[i], RCT: c.RCT[i]})
	}
	return out
}

// ListCheckpoints lists the VM's checkpoints, oldest first.
func (h *Host) ListCheckpoints(ctx context.Context, vm string) ([]host.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := h.find(vm)
	if err != nil {
		return nil, err
	}
	out := []host.Checkpoint{}
	for _, c := range s.Checkpoints {
		out = append(out, *h.describeCheckpoint(s, c))
	}
	return out, nil
}

// dropCheckpoint removes checkpoint i; its children hang on its parent.
func (s *vmState) dropCheckpoint(i int) checkpointState {
	c := s.Checkpoints[i]
	for j := range s.Checkpoints {
		if s.Checkpoints[j].Parent == c.ID {
			s.Checkpoints[j].Parent = c.Parent
		}
	}
	s.Checkpoints = slices.Delete(s.Checkpoints, i, i+1)
	return c
}

// DestroyCheckpoint deletes a checkpoint and merges what it leaves.
func (h *Host) DestroyCheckpoint(ctx context.Context, vm, checkpoint string) error {
	_, err := h.change(ctx, vm, func(s *vmState) error {
		i, err := s.checkpoint(checkpoint)
		if err != nil {
			return err
		}
		s.dropCheckpoint(i)
		return h.compact(ctx, s)
	})
	return err
}

// ApplyCheckpoint gives the VM new differencing disks on the checkpoint's
// files; the current files are discarded.
func (h *Host) ApplyCheckpoint(ctx context.Context, vm, checkpoint string) error {
	_, err := h.change(ctx, vm, func(s *vmState) error {
		i, err := s.checkpoint(checkpoint)
		if err != nil {
			return err
		}
		c := s.Checkpoints[i]
		dir := h.vmDir(s.ID)
		for d := range s.Disks {
			name := h.newFileName(s, d, "avhdx")
			img, err := vhdx.CreateDifferencing(filepath.Join(dir, name), filepath.Join(dir, c.Files[d]))
			if err != nil {
				return err
			}
			if err := img.Close(); err != nil {
				return err
			}
			s.Files[name] = fileRec{Disk: d, Parent: c.Files[d], Start: s.Files[c.Files[d]].End}
			s.Disks[d].File = name
		}
		return h.compact(ctx, s)
	})
	return err
}

// ConvertToReferencePoint turns a recovery checkpoint into a reference
// point.
func (h *Host) ConvertToReferencePoint(ctx context.Context, vm, checkpoint string) (*host.ReferencePoint, error) {
	var rp refPointState
	_, err := h.change(ctx, vm, func(s *vmState) error {
		i, err := s.checkpoint(checkpoint)
		if err != nil {
			return err
		}
		if s.Checkpoints[i].Type != int(host.Recovery) {
			return fmt.Errorf("checkpoint %q is not a recovery checkpoint; only those convert to reference points: %w", checkpoint, errdefs.ErrFailedPrecondition)
		}
		c := s.dropCheckpoint(i)
		rp = refPointState{ID: newID(), Checkpoint: c.ID, Created: h.now().UTC(), Consistency: c.Consistency, RCT: c.RCT}
		s.RefPoints = append(s.RefPoints, rp)
		return h.compact(ctx, s)
	})
	if err != nil {
		return nil, err
	}
	return refPoint(rp), nil
}

func refPoint(r refPointState) *host.ReferencePoint {
	return &host.ReferencePoint{ID: r.ID, Checkpoint: r.Checkpoint, Created: r.Created, Consistency: host.Consistency(r.Consistency), RCT: slices.Clone(r.RCT)}
}

// ListReferencePoints lists the VM's reference points, oldest first.
func (h *Host) ListReferencePoints(ctx context.Context, vm string) ([]host.ReferencePoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := h.find(vm)
	if err != nil {
		return nil, err
	}
	out := []host.ReferencePoint{}
	for _, r := range s.RefPoints {
		out = append(out, *refPoint(r))
	}
	return out, nil
}

// DestroyReferencePoint removes a reference point. The change tracking
// ids it held stay valid as long as the disk's log reaches them.
func (h *Host) DestroyReferencePoint(ctx context.Context, vm, ref string) error {
	_, err := h.change(ctx, vm, func(s *vmState) error {
		i := slices.IndexFunc(s.RefPoints, func(r refPointState) bool { return r.ID == ref })
		if i < 0 {
			return fmt.Errorf("reference point %q of vm %q: %w", ref, vm, errdefs.ErrNotFound)
		}
		s.RefPoints = slices.Delete(s.RefPoints, i, i+1)
		return nil
	})
	return err
}

// interval is a stretch of a disk's change history: the changes between
// two change tracking ids, held by a file or by a log entry.
type interval struct {
	from, to string
	file     string        // the file holding the changes, or
	extents  []host.Extent // the log entry's changes
}

// DiskChanges reports the ranges of a disk that changed between since and
// the checkpoint: the extents of the files, and of the log entries of
// merged files, that lead from the checkpoint back to since.
func (h *Host) DiskChanges(ctx context.Context, vm, checkpoint string, disk int, since string, fn func([]host.Extent) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s, err := h.find(vm)
	if err != nil {
		return err
	}
	i, err := s.checkpoint(checkpoint)
	if err != nil {
		return err
	}
	c := s.Checkpoints[i]
	if disk < 0 || disk >= len(c.Files) {
		return fmt.Errorf("checkpoint %q has no disk %d: %w", checkpoint, disk, errdefs.ErrNotFound)
	}
	d := s.Disks[disk]
	reset := fmt.Errorf("disk %d of vm %q: change tracking id %q: %w", disk, s.Name, since, errdefs.ErrChangeIDReset)
	if !strings.HasPrefix(since, "rct:"+d.Epoch+":") {
		return reset
	}
	if since == c.RCT[disk] {
		return nil // nothing changed between an id and itself
	}
	// The history ending at the checkpoint: its file and the files below,
	// then the log.
	var all []interval
	for f := c.Files[disk]; f != ""; f = s.Files[f].Parent {
		r := s.Files[f]
		end := r.End
		if f == c.Files[disk] {
			end = c.RCT[disk]
		}
		all = append(all, interval{from: r.Start, to: end, file: f})
	}
	for _, e := range d.Log {
		all = append(all, interval{from: e.From, to: e.To, extents: e.Extents})
	}
	path := findPath(all, c.RCT[disk], since, len(all))
	if path == nil {
		return reset
	}
	var ext []host.Extent
	dir := h.vmDir(s.ID)
	for _, iv := range path {
		if iv.file == "" {
			ext = append(ext, iv.extents...)
			continue
		}
		e, err := fileExtents(filepath.Join(dir, iv.file))
		if err != nil {
			return err
		}
		ext = append(ext, e...)
	}
	ext = coalesce(ext)
	for len(ext) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(ext), 1024)
		if err := fn(ext[:n]); err != nil {
			return err
		}
		ext = ext[n:]
	}
	return nil
}

// findPath finds intervals leading back from the id to to since.
func findPath(all []interval, to, since string, depth int) []interval {
	if depth < 0 {
		return nil
	}
	for _, iv := range all {
		if iv.to != to || iv.from == "" || iv.to == "" {
			continue
		}
		if iv.from == since {
			return []interval{iv}
		}
		if rest := findPath(all, iv.from, since, depth-1); rest != nil {
			return append(rest, iv)
		}
	}
	return nil
}

// fileExtents lists the ranges one file of a chain defines.
func fileExtents(path string) ([]host.Extent, error) {
	img, err := vhdx.Open(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer img.Close()
	e, err := img.Extents()
	if err != nil {
		return nil, err
	}
	out := make([]host.Extent, len(e))
	for i, x := range e {
		out[i] = host.Extent{Offset: x.Offset, Length: x.Length}
	}
	return out, nil
}

func coalesce(e []host.Extent) []host.Extent {
	sort.Slice(e, func(i, j int) bool { return e[i].Offset < e[j].Offset })
	var out []host.Extent
	for _, x := range e {
		if x.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && x.Offset <= out[n-1].Offset+out[n-1].Length {
			out[n-1].Length = max(out[n-1].Offset+out[n-1].Length, x.Offset+x.Length) - out[n-1].Offset
			continue
		}
		out = append(out, x)
	}
	return out
}
