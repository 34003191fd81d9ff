package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var _ sdk.ReplicaMapper = (*Target)(nil)

// mappingFile journals a mapping under way: written before the first disk
// image moves, removed once replica.json is written. A folder holding it
// and no replica.json is a mapping to finish, never a creation to redo.
const mappingFile = "mapping.json"

type mappingState struct {
	Disks []mappedDisk `json:"disks"`
}

// mappedDisk is one disk image that moves: disk From of the VM becomes
// disk Index of the replica, of Size bytes.
type mappedDisk struct {
	From  int   `json:"from"`
	Index int   `json:"index"`
	Size  int64 `json:"size"`
}

func mappingPath(dir string) string { return filepath.Join(replicaMeta(dir), mappingFile) }

// MapReplica makes the VM req.Name of the target's folder (a VM as `vm
// create` makes them: vm.json and its disk images) the replica req
// describes (sdk.ReplicaMapper). Its disk images move into the replica's
// working state, so they keep their content; its description becomes the
// source's, as CreateReplica's would. The VM must have no snapshots and
// as many disks as the source, of the same sizes.
func (t *Target) MapReplica(ctx context.Context, req sdk.ReplicaRequest) (*sdk.Replica, error) {
	dir, rules, release, err := t.replicaFolder(ctx, "map replica onto", req)
	if err != nil {
		return nil, err
	}
	defer release()
	if rs, err := loadReplica(dir); err == nil {
		if rs.Owner != nil && !req.Owner.IsZero() && *rs.Owner == (replicaOwner{Job: req.Owner.Job, Source: req.Owner.Source, SourceVM: req.Owner.SourceVM}) {
			return t.replicaOf(dir, rs) // mapped already
		}
		return nil, fmt.Errorf("map replica onto %q: it is a replica already (of %s): %w", req.Name, rs.SourceVM, errdefs.ErrAlreadyExists)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var ms mappingState
	switch err := readJSON(mappingPath(dir), &ms); {
	case errors.Is(err, fs.ErrNotExist):
		if ms, err = t.planMapping(dir, req); err != nil {
			return nil, err
		}
		if err := mkdirDurable(filepath.Join(replicaMeta(dir), "current")); err != nil {
			return nil, err
		}
		if err := writeJSONAtomic(mappingPath(dir), ms); err != nil {
			return nil, err
		}
		t.step("mapping-journalled")
	case err != nil:
		return nil, fmt.Errorf("map replica onto %q: %w", req.Name, err)
	}
	// Move the images; a move done before a crash is found done.
	for _, d := range ms.Disks {
		from, to := diskFile(dir, d.From), workingImage(dir, d.Index)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, to); err != nil {
				return nil, fmt.Errorf("map replica onto %q: %w", req.Name, err)
			}
			t.step("mapping-moved-disk")
		} else if _, terr := os.Stat(to); terr != nil {
			return nil, fmt.Errorf("map replica onto %q: disk %d is neither at %s nor at %s: %w", req.Name, d.From, from, to, errdefs.ErrDataLoss)
		}
	}
	if err := syncDir(filepath.Join(replicaMeta(dir), "current")); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	rs := newReplicaState(req)
	for _, d := range ms.Disks {
		rs.Disks = append(rs.Disks, replicaDisk{Index: d.Index, Size: d.Size})
	}
	if err := describeReplica(dir, rs, cloneVM(&req.VM), rules); err != nil {
		return nil, fmt.Errorf("map replica onto %q: %w", req.Name, err)
	}
	t.step("mapping-described")
	if err := saveReplica(dir, rs); err != nil {
		return nil, err
	}
	// The VM's own bookkeeping (change logs of a source site) is not the
	// replica's; what is left of it after a crash here is harmless.
	os.Remove(mappingPath(dir))
	os.RemoveAll(metaDir(dir))
	return t.replicaOf(dir, rs)
}

// planMapping checks that the VM in dir can be the replica req describes
// and says which image becomes which disk.
func (t *Target) planMapping(dir string, req sdk.ReplicaRequest) (mappingState, error) {
	fail := func(format string, args ...any) (mappingState, error) {
		return mappingState{}, fmt.Errorf("map replica onto VM %q in target %s: %w", req.Name, t.root, fmt.Errorf(format, args...))
	}
	vm, err := readVM(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(replicaMeta(dir)); serr == nil {
			return fail("a replica is being created there: %w", errdefs.ErrAlreadyExists)
		}
		return fail("no such VM: %w", errdefs.ErrNotFound)
	}
	if err != nil {
		return fail("%w", err)
	}
	if _, err := os.Stat(replicaMeta(dir)); err == nil {
		return fail("it holds a replica being created: %w", errdefs.ErrAlreadyExists)
	}
	st, err := loadState(dir)
	if err != nil {
		return fail("%w", err)
	}
	if len(st.Snapshots) > 0 {
		return fail("it has %d snapshots; remove them first: %w", len(st.Snapshots), errdefs.ErrFailedPrecondition)
	}
	if len(vm.Disks) != len(req.VM.Disks) {
		return fail("it has %d disks, source VM %q has %d: %w", len(vm.Disks), req.VM.Name, len(req.VM.Disks), errdefs.ErrFailedPrecondition)
	}
	var ms mappingState
	for i, sd := range req.VM.Disks {
		have := &vm.Disks[i]
		size, err := capacity(dir, have)
		if err != nil {
			return fail("%w", err)
		}
		if size != sd.Capacity {
			return fail("its disk %d holds %d bytes, disk %d of source VM %q %d: %w", have.Index, size, sd.Index, req.VM.Name, sd.Capacity, errdefs.ErrFailedPrecondition)
		}
		ms.Disks = append(ms.Disks, mappedDisk{From: have.Index, Index: sd.Index, Size: size})
	}
	return ms, nil
}
