package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Failover runs in steps, each undone in reverse if a later one fails or
// the process dies: journal the description and the point (replica.json),
// materialize the point's disks as TARGET/<name>/disk<N>.img, rewrite
// vm.json with the network settings, and commit the failed_over state.
// A journal found on a ready replica is rolled back by the next call that
// locks the replica.
//
// UndoFailover journals itself the same way (UndoingFailover), then
// restores vm.json, removes the failover disks and commits the ready
// state. A journalled undo is finished by the next call that locks the
// replica, never rolled back: once a failover disk is gone, the failed-over
// VM cannot be brought back.
//
// CommitFailover refuses a failover whose disks are not all there, then
// commits the committed state before it removes the restore points and
// working images; the next call that takes the replica finishes that.

// Failover starts the replica from a restore point, the newest when
// req.Point is empty.
func (t *Target) Failover(ctx context.Context, req sdk.FailoverRequest) (*sdk.Replica, error) {
	rules, err := sdk.CompileNetwork(req.Network)
	if err != nil {
		return nil, fmt.Errorf("fail over replica %q: %w", req.Replica, err)
	}
	x, err := t.begin(ctx, req.Replica, true)
	if err != nil {
		return nil, err
	}
	defer x.release()
	rs := x.rs
	if rs.State != sdk.ReplicaReady {
		return nil, fmt.Errorf("fail over replica %q: replica is %s: %w", req.Replica, rs.State, errdefs.ErrFailedPrecondition)
	}
	live := rs.livePoints()
	var p *pointState
	switch {
	case req.Point != "":
		for _, lp := range live {
			if lp.ID == req.Point {
				p = lp
			}
		}
		if p == nil {
			return nil, fmt.Errorf("fail over replica %q: restore point %q: %w", req.Replica, req.Point, errdefs.ErrNotFound)
		}
	case len(live) == 0:
		return nil, fmt.Errorf("fail over replica %q: no restore point: %w", req.Replica, errdefs.ErrFailedPrecondition)
	default:
		p = live[len(live)-1]
	}
	vm, err := readVM(x.dir)
	if err != nil {
		return nil, err
	}
	next := cloneVM(vm)
	if err := applyNetwork(rules, next); err != nil {
		return nil, fmt.Errorf("fail over replica %q: %w", req.Replica, err)
	}
	rs.PreFailover, rs.FailingOver = vm, p.ID
	if err := x.save(); err != nil {
		return nil, err
	}
	t.step("failover-journalled")
	if err := t.materialize(ctx, x, p); err != nil {
		return nil, errors.Join(fmt.Errorf("fail over replica %q: %w", req.Replica, err), t.rollBackFailover(x))
	}
	t.step("failover-materialized")
	ids, err := startTracking(x.dir, p)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("fail over replica %q: %w", req.Replica, err), t.rollBackFailover(x))
	}
	t.step("failover-tracking")
	next.PowerState = "on"
	for i := range next.Disks {
		if c, ok := p.capacity(next.Disks[i].Index); ok {
			next.Disks[i].Capacity = c
		}
	}
	if err := writeVM(x.dir, next); err != nil {
		return nil, errors.Join(err, t.rollBackFailover(x))
	}
	t.step("failover-described")
	rs.State, rs.FailoverPoint, rs.FailingOver, rs.FailoverChangeIDs = sdk.ReplicaFailedOver, p.ID, "", ids
	if err := x.save(); err != nil {
		return nil, err
	}
	return t.replicaOf(x.dir, rs)
}

// materialize writes each disk of point p as TARGET/<name>/disk<N>.img, a
// sparse copy made under a temporary name and renamed when complete.
func (t *Target) materialize(ctx context.Context, x *txn, p *pointState) error {
	for _, d := range p.Disks {
		r, err := t.openPoint(x.dir, x.rs, x.rs.Name, p.ID, d.Index)
		if err != nil {
			return err
		}
		err = copySparse(ctx, r, diskFile(x.dir, d.Index), func() { t.step("failover-copying") })
		r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// copySparse copies a disk into a new file at path, leaving holes where
// the disk reads as zeros. copied runs after each chunk written into the
// temporary file.
func copySparse(ctx context.Context, r sdk.DiskReader, path string, copied func()) error {
	f, err := os.CreateTemp(filepath.Dir(path), tempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		f.Close()
		os.Remove(tmp)
	}()
	size := r.Size()
	markSparse(f)
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size %s: %w", tmp, err)
	}
	buf := make([]byte, copyChunk)
	zero := make([]byte, undoBlockSize)
	for off := int64(0); off < size; off += copyChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(int64(copyChunk), size-off)
		if _, err := r.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read disk: %w", err)
		}
		for b := int64(0); b < n; b += undoBlockSize {
			chunk := buf[b:min(b+undoBlockSize, n)]
			if bytes.Equal(chunk, zero[:len(chunk)]) {
				continue
			}
			if _, err := f.WriteAt(chunk, off+b); err != nil {
				return fmt.Errorf("write %s: %w", tmp, err)
			}
		}
		copied()
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := replaceFile(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return syncDir(filepath.Dir(path))
}

// settle finishes what a killed process left half-done that the
// replica's lock alone guards: it removes the temporary files of the VM
// folder (disk copies, vm.json) and of .replica (replica.json), rolls back
// a failover journal found on a ready replica, finishes a journalled undo,
// and removes the restore points and working images of a committed
// replica, which nothing may use any more. Apart from that last case it
// touches only vm.json and the VM folder's disk<N>.img, never restore
// points or working images, so every call that takes the replica's lock
// runs it first (begin).
func (t *Target) settle(x *txn) error {
	for _, d := range []string{x.dir, replicaMeta(x.dir)} {
		if err := removeTemps(d); err != nil {
			return err
		}
	}
	switch rs := x.rs; {
	case rs.State == sdk.ReplicaCommitted:
		return t.finishCommit(x)
	case rs.UndoingFailover:
		if err := t.finishUndo(x); err != nil {
			return fmt.Errorf("finish undo of failover: %w", err)
		}
		x.undoFinished = true
	case rs.State == sdk.ReplicaReady && rs.FailingOver != "":
		if err := t.rollBackFailover(x); err != nil {
			return fmt.Errorf("roll back failover: %w", err)
		}
	}
	return nil
}

// rollBackFailover returns a replica whose failover did not complete to
// how it was before.
func (t *Target) rollBackFailover(x *txn) error {
	if x.rs.PreFailover != nil {
		if err := writeVM(x.dir, x.rs.PreFailover); err != nil {
			return err
		}
	}
	if err := t.removeVMDisks(x.dir, "rollback-disk-removed"); err != nil {
		return err
	}
	x.rs.PreFailover, x.rs.FailingOver = nil, ""
	return x.save()
}

// removeVMDisks removes the disk<N>.img files of a replica folder and the
// source state a failback may have left beside them, passing step after
// each disk.
func (t *Target) removeVMDisks(dir, step string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list %s: %w", dir, err)
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, "disk") && strings.HasSuffix(n, ".img") {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return fmt.Errorf("remove failover disk: %w", err)
			}
			t.step(step)
		}
	}
	if err := os.RemoveAll(metaDir(dir)); err != nil {
		return fmt.Errorf("remove source state: %w", err)
	}
	return syncDir(dir)
}

// UndoFailover removes the failover disks and restores the description;
// the replica is ready again with every restore point intact. Called again
// after a process died during an undo, it finishes that undo and returns
// the ready replica.
func (t *Target) UndoFailover(ctx context.Context, ref string) (*sdk.Replica, error) {
	x, err := t.begin(ctx, ref, true)
	if err != nil {
		return nil, err
	}
	defer x.release()
	if x.undoFinished {
		return t.replicaOf(x.dir, x.rs)
	}
	if x.rs.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("undo failover of replica %q: replica is %s: %w", ref, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	x.rs.UndoingFailover = true
	if err := x.save(); err != nil {
		return nil, fmt.Errorf("undo failover of replica %q: %w", ref, err)
	}
	t.step("undo-journalled")
	if err := t.finishUndo(x); err != nil {
		return nil, fmt.Errorf("undo failover of replica %q: %w", ref, err)
	}
	return t.replicaOf(x.dir, x.rs)
}

// finishUndo carries out a journalled undo; every step may be repeated.
func (t *Target) finishUndo(x *txn) error {
	if x.rs.PreFailover != nil {
		if err := writeVM(x.dir, x.rs.PreFailover); err != nil {
			return err
		}
	}
	t.step("undo-described")
	if err := t.removeVMDisks(x.dir, "undo-disk-removed"); err != nil {
		return err
	}
	t.step("undo-cleaned")
	x.rs.State, x.rs.FailoverPoint, x.rs.PreFailover, x.rs.UndoingFailover = sdk.ReplicaReady, "", nil, false
	x.rs.FailoverChangeIDs = nil
	return x.save()
}

// CommitFailover makes a failed-over replica a plain VM: its disks and
// description stay, its restore points and working images go, and it
// takes no more replication. It refuses (ErrFailedPrecondition) a
// failover whose disks are not all there, and a replica whose interrupted
// undo it found and finished. A committed replica is returned as it is,
// so that a commit killed after it took effect can be retried.
func (t *Target) CommitFailover(ctx context.Context, ref string) (*sdk.Replica, error) {
	x, err := t.begin(ctx, ref, true)
	if err != nil {
		return nil, err
	}
	defer x.release()
	switch {
	case x.undoFinished:
		return nil, fmt.Errorf("commit failover of replica %q: an interrupted undo of the failover was found and finished, the replica is %s again: %w", ref, x.rs.State, errdefs.ErrFailedPrecondition)
	case x.rs.State == sdk.ReplicaCommitted:
		return t.replicaOf(x.dir, x.rs)
	case x.rs.State != sdk.ReplicaFailedOver:
		return nil, fmt.Errorf("commit failover of replica %q: replica is %s: %w", ref, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	if err := checkFailoverDisks(x, ref); err != nil {
		return nil, err
	}
	t.step("commit-checked")
	x.rs.State, x.rs.PreFailover, x.rs.Points, x.rs.Disks = sdk.ReplicaCommitted, nil, nil, nil
	if err := x.save(); err != nil {
		return nil, err
	}
	t.step("commit-saved")
	if err := t.finishCommit(x); err != nil {
		return nil, fmt.Errorf("commit failover of replica %q: %w", ref, err)
	}
	return t.replicaOf(x.dir, x.rs)
}

// finishCommit removes the working images and restore points of a
// committed replica; it may be repeated.
func (t *Target) finishCommit(x *txn) error {
	for _, sub := range []string{"current", "points"} {
		if err := removeAllDurable(filepath.Join(replicaMeta(x.dir), sub)); err != nil {
			return err
		}
		t.step("commit-removed-" + sub)
	}
	return nil
}

// checkFailoverDisks fails with ErrFailedPrecondition when a disk that
// vm.json describes, or that the failover point holds, has no
// disk<N>.img: committing would drop the restore points and leave a VM
// without it.
func checkFailoverDisks(x *txn, ref string) error {
	vm, err := readVM(x.dir)
	if err != nil {
		return fmt.Errorf("commit failover of replica %q: %w", ref, err)
	}
	var indexes []int
	for _, d := range vm.Disks {
		indexes = append(indexes, d.Index)
	}
	if i := x.rs.point(x.rs.FailoverPoint); i >= 0 {
		for _, d := range x.rs.Points[i].Disks {
			indexes = append(indexes, d.Index)
		}
	}
	for _, index := range indexes {
		path := diskFile(x.dir, index)
		_, err := os.Stat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("commit failover of replica %q: disk %d (%s) is missing; undo the failover to return to the restore points: %w", ref, index, path, errdefs.ErrFailedPrecondition)
		}
		if err != nil {
			return fmt.Errorf("commit failover of replica %q: disk %d: %w", ref, index, err)
		}
	}
	return nil
}

// ApplyNetwork rewrites the replica's network settings in its description
// now.
func (t *Target) ApplyNetwork(ctx context.Context, ref string, cfg sdk.NetworkConfig) (*sdk.Replica, error) {
	rules, err := sdk.CompileNetwork(cfg)
	if err != nil {
		return nil, fmt.Errorf("apply network to replica %q: %w", ref, err)
	}
	x, err := t.begin(ctx, ref, false)
	if err != nil {
		return nil, err
	}
	defer x.release()
	if x.rs.State == sdk.ReplicaCommitted {
		return nil, fmt.Errorf("apply network to replica %q: replica is %s: %w", ref, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	vm, err := readVM(x.dir)
	if err != nil {
		return nil, err
	}
	if err := applyNetwork(rules, vm); err != nil {
		return nil, fmt.Errorf("apply network to replica %q: %w", ref, err)
	}
	if err := writeVM(x.dir, vm); err != nil {
		return nil, err
	}
	return t.replicaOf(x.dir, x.rs)
}
