package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The target's half of failback (sdk.FailbackReader). A failed-over
// replica's folder is an ordinary VM folder (vm.json, disk<N>.img) whose
// writes, through `vm write`, are tracked as a source VM's are: Failover
// starts a change log of each disk at the moment the point is
// materialized (startTracking) and records its id, so that failback can
// ask what the replica wrote since. A mark is a change id of that log.

var _ sdk.FailbackReader = (*Target)(nil)

// startTracking starts change tracking of the failover disks of point p in
// the replica folder dir (the source state a site keeps, .ferry/), and
// returns each disk's change id at this moment. The folder's source state
// is removed with the failover disks on rollback and undo.
func startTracking(dir string, p *pointState) (map[int]string, error) {
	if err := os.RemoveAll(metaDir(dir)); err != nil {
		return nil, fmt.Errorf("clear source state: %w", err)
	}
	st := &vmState{Version: 1, NextID: 1}
	s := newSite(filepath.Dir(dir))
	ids := map[int]string{}
	for _, d := range p.Disks {
		if _, err := s.checkBase(dir, st, d.Index); err != nil {
			return nil, err
		}
		if err := mkdirDurable(filepath.Dir(trackPath(dir, d.Index))); err != nil {
			return nil, err
		}
		l, err := resetChangeLog(trackPath(dir, d.Index))
		if err != nil {
			return nil, err
		}
		st.disk(d.Index).TrackedCap = d.Size
		ids[d.Index] = l.changeID(l.seq)
	}
	if err := saveState(dir, st); err != nil {
		return nil, err
	}
	return ids, nil
}

// failedOver locks a replica (not exclusively: its restore points are
// left alone) and checks that it is failed over.
func (t *Target) failedOver(ctx context.Context, ref, what string) (*txn, error) {
	x, err := t.begin(ctx, ref, false)
	if err != nil {
		return nil, err
	}
	if x.rs.State != sdk.ReplicaFailedOver {
		x.release()
		return nil, fmt.Errorf("%s of replica %q: replica is %s, not failed over: %w", what, ref, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	return x, nil
}

// FailedOverChanges implements sdk.FailbackReader: what the failed-over
// replica's disk wrote since req.Since (or the failover), from its change
// log, and a new mark. An untracked change to the disk image (a dd, a cp)
// or a log that no longer answers is errdefs.ErrChangeIDReset.
func (t *Target) FailedOverChanges(ctx context.Context, req sdk.FailedOverChangesRequest, fn func([]sdk.Extent) error) (string, error) {
	x, err := t.failedOver(ctx, req.Replica, "changes")
	if err != nil {
		return "", err
	}
	defer x.release()
	since := req.Since
	if since == "" {
		since = x.rs.FailoverChangeIDs[req.Disk]
	}
	if since == "" {
		return "", fmt.Errorf("changes of replica %q disk %d: its failover started no change tracking (failed over by an older plugin): %w", req.Replica, req.Disk, errdefs.ErrChangeIDReset)
	}
	s := newSite(t.root)
	lock, err := s.vmLock(ctx, x.dir)
	if err != nil {
		return "", err
	}
	defer lock.Release()
	vm, err := readVM(x.dir)
	if err != nil {
		return "", err
	}
	d, err := s.findDisk(vm, req.Disk)
	if err != nil {
		return "", err
	}
	size, err := capacity(x.dir, d)
	if err != nil {
		return "", err
	}
	st, err := loadState(x.dir)
	if err != nil {
		return "", err
	}
	changed, err := s.checkBase(x.dir, st, req.Disk)
	if err != nil {
		return "", err
	}
	if changed {
		if err := saveState(x.dir, st); err != nil {
			return "", err
		}
	}
	ds := st.disk(req.Disk)
	if ds.Dirty || len(st.Snapshots) > 0 || size > ds.TrackedCap {
		return "", fmt.Errorf("changes of replica %q disk %d: its image changed outside tracking (or grew, or has snapshots) since the failover: %w", req.Replica, req.Disk, errdefs.ErrChangeIDReset)
	}
	l, err := loadChangeLog(trackPath(x.dir, req.Disk))
	if err != nil {
		return "", fmt.Errorf("changes of replica %q disk %d: %w: %w", req.Replica, req.Disk, err, errdefs.ErrChangeIDReset)
	}
	mark, err := l.mark()
	if err != nil {
		return "", err
	}
	from, to, err := l.answer(since, mark)
	if err != nil {
		return "", fmt.Errorf("changes of replica %q disk %d: %w", req.Replica, req.Disk, err)
	}
	ext := clipExtents(l.changedBetween(from, to), size)
	for len(ext) > 0 {
		n := min(len(ext), extentBatch)
		if err := fn(ext[:n]); err != nil {
			return "", err
		}
		ext = ext[n:]
	}
	return mark, nil
}

// OpenFailedOverDisk implements sdk.FailbackReader: the failover disk
// image as it is now.
func (t *Target) OpenFailedOverDisk(ctx context.Context, ref string, disk int) (sdk.DiskReader, error) {
	x, err := t.failedOver(ctx, ref, "open disk")
	if err != nil {
		return nil, err
	}
	defer x.release()
	vm, err := readVM(x.dir)
	if err != nil {
		return nil, err
	}
	s := newSite(t.root)
	d, err := s.findDisk(vm, disk)
	if err != nil {
		return nil, err
	}
	size, err := capacity(x.dir, d)
	if err != nil {
		return nil, err
	}
	st, err := loadState(x.dir)
	if err != nil {
		return nil, err
	}
	if len(st.Snapshots) > 0 {
		return nil, fmt.Errorf("open disk %d of failed-over replica %q: it has snapshots; remove them first: %w", disk, ref, errdefs.ErrFailedPrecondition)
	}
	f, err := os.Open(diskFile(x.dir, disk))
	if err != nil {
		return nil, fmt.Errorf("open disk %d of failed-over replica %q: %w", disk, ref, err)
	}
	return &imageReader{f: f, size: size}, nil
}

// imageReader reads a raw disk image; past its end the disk reads as
// zeros (a sparse image may be shorter than its capacity).
type imageReader struct {
	f    *os.File
	size int64
}

func (r *imageReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	want := p
	if int64(len(p)) > r.size-off {
		want = p[:r.size-off]
	}
	n, err := r.f.ReadAt(want, off)
	if errors.Is(err, io.EOF) {
		clear(want[n:])
		n, err = len(want), nil
	}
	if err == nil && len(want) < len(p) {
		err = io.EOF
	}
	return n, err
}

func (r *imageReader) Size() int64  { return r.size }
func (r *imageReader) Close() error { return r.f.Close() }

// SetReplicaPower implements sdk.FailbackReader: the power state in the
// failed-over replica's vm.json. A local VM that is off takes no guest
// writes (`vm write` refuses them).
func (t *Target) SetReplicaPower(ctx context.Context, ref string, on bool) (*sdk.Replica, error) {
	x, err := t.failedOver(ctx, ref, "power")
	if err != nil {
		return nil, err
	}
	defer x.release()
	s := newSite(t.root)
	lock, err := s.vmLock(ctx, x.dir)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	vm, err := readVM(x.dir)
	if err != nil {
		return nil, err
	}
	want := powerState(on)
	if vm.PowerState != want {
		vm.PowerState = want
		if err := writeVM(x.dir, vm); err != nil {
			return nil, err
		}
	}
	return t.replicaOf(x.dir, x.rs)
}

func powerState(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
