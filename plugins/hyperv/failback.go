package hyperv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/disk/vhdx"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The source's half of failback (sdk.FailbackWriter).
//
// The undo store is a standard checkpoint of the production VM, taken at
// BeginFailback and named "ferry failback <id>": Hyper-V freezes each
// disk's file and the VM (and ferry, through sdk/disk/vhdx) writes into a
// new AVHDX on it, so every block the failback overwrites keeps its old
// content in the frozen file, durably, before the first write, and at no
// cost per write. Undo applies the checkpoint (the AVHDX files above it
// are discarded: the failback's writes and whatever production wrote
// after the switch) and deletes it; commit deletes it, and Hyper-V merges
// the writes into the disks. It is what Hyper-V itself offers for "go
// back to how it was", it keeps no state beside the host's, and it needs
// no copy of the old blocks; an undo store of the plugin's own (as the
// local plugin keeps) would copy each overwritten block first and need
// files beside the VM's.
//
// What a checkpoint cannot hold, the failback's id, the power state
// before it and whether it created the VM, goes in a marker line at the
// end of the VM's notes (failbackHeader and a JSON object), which also
// journals an undo or a commit under way, so that each method finishes
// what a killed call began:
//
//	Begin:  marker (the power state), checkpoint, power off
//	Undo:   marker undoing, power off, apply checkpoint, delete it,
//	        power state back, marker removed (a VM the failback created
//	        is deleted instead, once the marker says undoing)
//	Commit: marker committing, delete checkpoint, marker committed
//
// A committed marker stays until a replication run after the commit is
// done (RemoveSnapshot of a checkpoint taken after it): ferry wrote the
// disks past Hyper-V's change tracking, and a host whose RCT did not see
// those writes (wmihost) must refuse, while the marker is there, the
// change ids given before them; the simulated host's RCT sees every
// write into a disk file, so it answers as for any other write.

// failbackHeader starts the marker line of a VM in failback. Its first
// words are wmihost.FailbackNotesMarker (a test keeps them so).
const failbackHeader = "ferry failback: managed by ferry-plugin-hyperv; do not edit: "

// The states of a failback's marker.
const (
	fbActive     = ""
	fbUndoing    = "undoing"
	fbCommitting = "committing"
	fbCommitted  = "committed"
)

// failbackMeta is the marker of a VM in failback.
type failbackMeta struct {
	ID string `json:"id"`
	// Running is the VM's power state before the failback.
	Running bool `json:"running"`
	// Created: the failback created the VM; undo deletes it.
	Created bool   `json:"created,omitempty"`
	State   string `json:"state,omitempty"`
	// Before are the VM's checkpoints when the commit was done: a
	// replication snapshot not among them was taken after ferry's last
	// write, so its change ids are sound and the marker may go.
	Before []string `json:"before,omitempty"`
}

// splitNotes separates a VM's notes into its own and the failback
// marker (nil when there is none).
func splitNotes(notes string) (string, *failbackMeta, error) {
	i := strings.LastIndex(notes, failbackHeader)
	if i < 0 || (i > 0 && notes[i-1] != '\n') {
		return notes, nil, nil
	}
	var m failbackMeta
	if err := json.Unmarshal([]byte(notes[i+len(failbackHeader):]), &m); err != nil || m.ID == "" {
		return notes, nil, fmt.Errorf("the failback marker in the vm's notes does not parse (edited by hand?): %v: %w", err, errdefs.ErrDataLoss)
	}
	return strings.TrimSuffix(notes[:i], "\n"), &m, nil
}

// joinNotes puts the marker m (nil: none) after the VM's own notes.
func joinNotes(own string, m *failbackMeta) string {
	if m == nil {
		return own
	}
	b, _ := json.Marshal(m)
	line := failbackHeader + string(b)
	if own == "" {
		return line
	}
	return own + "\n" + line
}

func checkpointName(id string) string { return "ferry failback " + id }

var _ sdk.FailbackWriter = (*Source)(nil)

// vmLocks serialises the failback calls on one VM within the process; the
// host serialises each of its own calls.
type vmLocks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (l *vmLocks) lock(id string) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*sync.Mutex{}
	}
	mu, ok := l.m[id]
	if !ok {
		mu = &sync.Mutex{}
		l.m[id] = mu
	}
	l.mu.Unlock()
	mu.Lock()
	return mu.Unlock
}

// production is a production VM, its own notes and its failback marker.
type production struct {
	vm   *host.VM
	own  string
	mark *failbackMeta
}

// lockVM finds a VM, takes its lock and reads it again under the lock.
func (s *Source) lockVM(ctx context.Context, vm string) (*production, func(), error) {
	v, err := s.h.GetVM(ctx, vm)
	if err != nil {
		return nil, nil, err
	}
	unlock := s.locks.lock(v.ID)
	p, err := s.production(ctx, v.ID)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return p, unlock, nil
}

func (s *Source) production(ctx context.Context, vm string) (*production, error) {
	v, err := s.h.GetVM(ctx, vm)
	if err != nil {
		return nil, err
	}
	own, m, err := splitNotes(v.Notes)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", v.Name, err)
	}
	return &production{vm: v, own: own, mark: m}, nil
}

// setMark writes the marker (nil removes it).
func (s *Source) setMark(ctx context.Context, p *production, m *failbackMeta) error {
	if err := s.h.SetNotes(ctx, p.vm.ID, joinNotes(p.own, m)); err != nil {
		return fmt.Errorf("vm %q: failback marker: %w", p.vm.Name, err)
	}
	p.mark = m
	return nil
}

// hit runs the test hook at a step of a failback (nil in the plugin).
func (s *Source) hit(step string) {
	if s.step != nil {
		s.step(step)
	}
}

// undoCheckpoint finds the failback's checkpoint; nil when there is none.
func (s *Source) undoCheckpoint(ctx context.Context, vm, id string) (*host.Checkpoint, error) {
	cps, err := s.h.ListCheckpoints(ctx, vm)
	if err != nil {
		return nil, err
	}
	for _, cp := range cps {
		if cp.Name == checkpointName(id) && cp.Type == host.Standard {
			return &cp, nil
		}
	}
	return nil, nil
}

// BeginFailback implements sdk.FailbackWriter: the marker, the undo
// checkpoint, then power off.
func (s *Source) BeginFailback(ctx context.Context, req sdk.FailbackRequest) (*sdk.VM, error) {
	if err := sdk.CheckFailbackID(req.ID); err != nil {
		return nil, err
	}
	p, unlock, err := s.lockVM(ctx, req.VM)
	if errors.Is(err, errdefs.ErrNotFound) && req.Create != nil {
		p, unlock, err = s.createForFailback(ctx, req)
	}
	if err != nil {
		return nil, fmt.Errorf("begin failback %s: %w", req.ID, err)
	}
	defer unlock()
	m := p.mark
	switch {
	case m != nil && m.ID != req.ID && m.State != fbCommitted:
		return nil, fmt.Errorf("begin failback %s of vm %q: the vm is in failback %s: %w", req.ID, p.vm.Name, m.ID, errdefs.ErrFailedPrecondition)
	case m != nil && m.ID == req.ID && m.State != fbActive:
		return nil, fmt.Errorf("begin failback %s of vm %q: it is %s; run that again to finish it: %w", req.ID, p.vm.Name, m.State, errdefs.ErrFailedPrecondition)
	case m == nil || m.ID != req.ID:
		// A committed marker of an earlier failback gives way: the new
		// one's writes are past change tracking again.
		if err := s.setMark(ctx, p, &failbackMeta{ID: req.ID, Running: p.vm.Running}); err != nil {
			return nil, err
		}
	}
	s.hit("failback-marked")
	cp, err := s.undoCheckpoint(ctx, p.vm.ID, req.ID)
	if err != nil {
		return nil, err
	}
	if cp == nil {
		if _, err := s.h.CreateCheckpoint(ctx, p.vm.ID, host.CheckpointRequest{Name: checkpointName(req.ID), Type: host.Standard,
			Notes:       "ferry failback: the state before failback " + req.ID + "; ferry applies it on undo, deletes it on commit",
			Consistency: host.CrashConsistent}); err != nil {
			return nil, fmt.Errorf("begin failback %s of vm %q: checkpoint: %w", req.ID, p.vm.Name, err)
		}
	}
	s.hit("failback-checkpointed")
	if p.vm.Running {
		if err := s.h.SetRunning(ctx, p.vm.ID, false); err != nil {
			return nil, fmt.Errorf("begin failback %s of vm %q: power off: %w", req.ID, p.vm.Name, err)
		}
	}
	return s.DescribeVM(ctx, p.vm.ID)
}

// createForFailback creates the VM req.Create describes, named req.VM,
// stopped, with empty disks and a marker saying the failback created it
// (the host creates a VM whole or not at all), and locks it.
func (s *Source) createForFailback(ctx context.Context, req sdk.FailbackRequest) (*production, func(), error) {
	spec, _, err := specOf(req.VM, *req.Create, req.Create.NICs, "")
	if err != nil {
		return nil, nil, fmt.Errorf("create vm %q: %w", req.VM, err)
	}
	spec.Notes = joinNotes("", &failbackMeta{ID: req.ID, Created: true})
	v, err := s.h.CreateVM(ctx, spec)
	if err != nil {
		return nil, nil, fmt.Errorf("create vm %q: %w", req.VM, err)
	}
	s.hit("failback-created")
	return s.lockVM(ctx, v.ID)
}

// lockFailback locks a VM and checks it is in failback id and not being
// undone or committed; what names the operation in errors.
func (s *Source) lockFailback(ctx context.Context, vm, id, what string) (*production, func(), error) {
	if err := sdk.CheckFailbackID(id); err != nil {
		return nil, nil, err
	}
	p, unlock, err := s.lockVM(ctx, vm)
	if err != nil {
		return nil, nil, err
	}
	if m := p.mark; m == nil || m.ID != id || m.State != fbActive {
		unlock()
		return nil, nil, fmt.Errorf("%s vm %q: failback %s has not begun, or is being undone or committed: %w", what, vm, id, errdefs.ErrFailedPrecondition)
	}
	return p, unlock, nil
}

// OpenFailbackDisk implements sdk.FailbackWriter: the disk's newest file,
// above the failback's checkpoint, opened for writing with sdk/disk/vhdx.
func (s *Source) OpenFailbackDisk(ctx context.Context, vm, id string, disk int, size int64) (sdk.DiskWriter, error) {
	p, unlock, err := s.lockFailback(ctx, vm, id, "open failback disk of")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if p.vm.Running {
		return nil, fmt.Errorf("open failback disk of vm %q: failback %s writes only a vm that is off; this one was started: %w", vm, id, errdefs.ErrFailedPrecondition)
	}
	if cp, err := s.undoCheckpoint(ctx, p.vm.ID, id); err != nil {
		return nil, err
	} else if cp == nil {
		return nil, fmt.Errorf("open failback disk of vm %q: failback %s has no checkpoint to undo to (begin it again): %w", vm, id, errdefs.ErrFailedPrecondition)
	}
	if disk < 0 || disk >= len(p.vm.Disks) {
		return nil, fmt.Errorf("vm %q has no disk %d: %w", vm, disk, errdefs.ErrNotFound)
	}
	if !s.h.Local() {
		return nil, fmt.Errorf("vm %q: the host's files are not on this machine; run the plugin on the Hyper-V host: %w", vm, errdefs.ErrUnavailable)
	}
	key := writerKey(s.h.Name(), p.vm.ID, disk)
	if err := writers.supersede(key, "a newer writer"); err != nil {
		return nil, err
	}
	if roundSector(size) > p.vm.Disks[disk].Capacity {
		if err := s.h.GrowDisk(ctx, p.vm.ID, disk, roundSector(size)); err != nil {
			return nil, fmt.Errorf("grow disk %d of vm %q: %w", disk, vm, err)
		}
		if p, err = s.production(ctx, p.vm.ID); err != nil {
			return nil, err
		}
	}
	d := p.vm.Disks[disk]
	img, err := vhdx.Open(d.Path, os.O_RDWR)
	if err != nil {
		return nil, fmt.Errorf("open disk %d of vm %q: %w", disk, vm, err)
	}
	w := &diskWriter{key: key, owner: s, size: min(d.Capacity, img.Size()), img: img}
	writers.add(w)
	return w, nil
}

// supersedeWriters closes the open failback writers of a VM's disks.
func (s *Source) supersedeWriters(vm, why string) error {
	return writers.supersede(s.h.Name()+"\x00"+vm+"\x00", why)
}

// StartFailback implements sdk.FailbackWriter: power on. The VM's
// adapters and guest network settings are its own (production's): the
// failback never changed them, and a VM it created has those the host
// asked for.
func (s *Source) StartFailback(ctx context.Context, vm, id string) (*sdk.VM, error) {
	p, unlock, err := s.lockFailback(ctx, vm, id, "start")
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := s.supersedeWriters(p.vm.ID, "the start of production"); err != nil {
		return nil, err
	}
	if !p.vm.Running {
		if err := s.h.SetRunning(ctx, p.vm.ID, true); err != nil {
			return nil, fmt.Errorf("start vm %q: %w", vm, err)
		}
	}
	return s.DescribeVM(ctx, p.vm.ID)
}

// endable locks a VM for the undo or commit of failback id: p is nil
// when there is nothing to do (no such VM, no failback, or one
// committed); a failback that is other (undo for a commit, commit for an
// undo) is ErrFailedPrecondition.
func (s *Source) endable(ctx context.Context, vm, id, what, other string) (*production, func(), error) {
	if err := sdk.CheckFailbackID(id); err != nil {
		return nil, nil, err
	}
	p, unlock, err := s.lockVM(ctx, vm)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, func() {}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	nothing := func() (*production, func(), error) { unlock(); return nil, func() {}, nil }
	switch m := p.mark; {
	case m == nil, m.ID != id && m.State == fbCommitted:
		return nothing()
	case m.ID != id:
		unlock()
		return nil, nil, fmt.Errorf("%s vm %q: the vm is in failback %s, not %s: %w", what, vm, m.ID, id, errdefs.ErrFailedPrecondition)
	case m.State == fbCommitted:
		return nothing()
	case m.State == other:
		unlock()
		return nil, nil, fmt.Errorf("%s vm %q: failback %s is %s; run that again to finish it: %w", what, vm, id, other, errdefs.ErrFailedPrecondition)
	}
	return p, unlock, nil
}

// UndoFailback implements sdk.FailbackWriter.
func (s *Source) UndoFailback(ctx context.Context, vm, id string) error {
	p, unlock, err := s.endable(ctx, vm, id, "undo failback of", fbCommitting)
	if err != nil || p == nil {
		return err
	}
	defer unlock()
	if err := s.supersedeWriters(p.vm.ID, "the failback's undo"); err != nil {
		return err
	}
	m := *p.mark
	if m.State != fbUndoing {
		m.State = fbUndoing
		if err := s.setMark(ctx, p, &m); err != nil {
			return err
		}
	}
	s.hit("failback-undo-journalled")
	if m.Created {
		if err := s.h.DeleteVM(ctx, p.vm.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("undo failback of vm %q: remove the vm it created: %w", vm, err)
		}
		return nil
	}
	if err := s.h.SetRunning(ctx, p.vm.ID, false); err != nil {
		return fmt.Errorf("undo failback of vm %q: power off: %w", vm, err)
	}
	cp, err := s.undoCheckpoint(ctx, p.vm.ID, id)
	if err != nil {
		return err
	}
	if cp != nil {
		if err := s.h.ApplyCheckpoint(ctx, p.vm.ID, cp.ID); err != nil {
			return fmt.Errorf("undo failback of vm %q: apply checkpoint %q: %w", vm, cp.Name, err)
		}
		s.hit("failback-undo-applied")
		if err := s.h.DestroyCheckpoint(ctx, p.vm.ID, cp.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("undo failback of vm %q: delete checkpoint %q: %w", vm, cp.Name, err)
		}
		s.hit("failback-undo-deleted")
	}
	if m.Running {
		if err := s.h.SetRunning(ctx, p.vm.ID, true); err != nil {
			return fmt.Errorf("undo failback of vm %q: power on: %w", vm, err)
		}
	}
	s.hit("failback-undo-powered")
	return s.setMark(ctx, p, nil)
}

// CommitFailback implements sdk.FailbackWriter.
func (s *Source) CommitFailback(ctx context.Context, vm, id string) error {
	p, unlock, err := s.endable(ctx, vm, id, "commit failback of", fbUndoing)
	if err != nil || p == nil {
		return err
	}
	defer unlock()
	if err := s.supersedeWriters(p.vm.ID, "the failback's commit"); err != nil {
		return err
	}
	m := *p.mark
	if m.State != fbCommitting {
		m.State = fbCommitting
		if err := s.setMark(ctx, p, &m); err != nil {
			return err
		}
	}
	s.hit("failback-commit-journalled")
	cp, err := s.undoCheckpoint(ctx, p.vm.ID, id)
	if err != nil {
		return err
	}
	if cp != nil {
		if err := s.h.DestroyCheckpoint(ctx, p.vm.ID, cp.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return fmt.Errorf("commit failback of vm %q: delete checkpoint %q: %w", vm, cp.Name, err)
		}
	}
	s.hit("failback-commit-deleted")
	cps, err := s.h.ListCheckpoints(ctx, p.vm.ID)
	if err != nil {
		return err
	}
	m.State, m.Created, m.Before = fbCommitted, false, []string{}
	for _, c := range cps {
		m.Before = append(m.Before, c.ID)
	}
	return s.setMark(ctx, p, &m)
}

// afterRun drops the committed failback marker of a VM once a snapshot
// taken after the commit (one not in the marker's list) was removed: the
// run that took it is recorded, and its change ids, later than every
// write of the failback, are what the next run asks changes since.
func (s *Source) afterRun(ctx context.Context, vm, snapshot string) error {
	p, unlock, err := s.lockVM(ctx, vm)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vm %q after removing snapshot %q: %w", vm, snapshot, err)
	}
	defer unlock()
	if m := p.mark; m == nil || m.State != fbCommitted || slices.Contains(m.Before, snapshot) {
		return nil
	}
	return s.setMark(ctx, p, nil)
}
