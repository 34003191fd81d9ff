package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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
// A journal found on a ready replica is rolled back by the next change.

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
	rs.State, rs.FailoverPoint, rs.FailingOver = sdk.ReplicaFailedOver, p.ID, ""
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
		err = copySparse(ctx, r, diskFile(x.dir, d.Index))
		r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// copySparse copies a disk into a new file at path, leaving holes where
// the disk reads as zeros.
func copySparse(ctx context.Context, r sdk.DiskReader, path string) error {
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
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	return syncDir(filepath.Dir(path))
}

// rollBackFailover returns a replica whose failover did not complete to
// how it was before.
func (t *Target) rollBackFailover(x *txn) error {
	if x.rs.PreFailover != nil {
		if err := writeVM(x.dir, x.rs.PreFailover); err != nil {
			return err
		}
	}
	if err := removeVMDisks(x.dir); err != nil {
		return err
	}
	x.rs.PreFailover, x.rs.FailingOver = nil, ""
	return x.save()
}

// removeVMDisks removes the disk<N>.img files of a replica folder and the
// source state a failback may have left beside them.
func removeVMDisks(dir string) error {
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
		}
	}
	if err := os.RemoveAll(metaDir(dir)); err != nil {
		return fmt.Errorf("remove source state: %w", err)
	}
	return syncDir(dir)
}

// UndoFailover removes the failover disks and restores the description;
// the replica is ready again with every restore point intact.
func (t *Target) UndoFailover(ctx context.Context, ref string) (*sdk.Replica, error) {
	x, err := t.begin(ctx, ref, true)
	if err != nil {
		return nil, err
	}
	defer x.release()
	if x.rs.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("undo failover of replica %q: replica is %s: %w", ref, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	if x.rs.PreFailover != nil {
		if err := writeVM(x.dir, x.rs.PreFailover); err != nil {
			return nil, err
		}
	}
	if err := removeVMDisks(x.dir); err != nil {
		return nil, err
	}
	t.step("undo-cleaned")
	x.rs.State, x.rs.FailoverPoint, x.rs.PreFailover = sdk.ReplicaReady, "", nil
	if err := x.save(); err != nil {
		return nil, err
	}
	return t.replicaOf(x.dir, x.rs)
}

// CommitFailover makes a failed-over replica a plain VM: its disks and
// description stay, its restore points and working images go, and it
// takes no more replication.
func (t *Target) CommitFailover(ctx context.Context, ref string) (*sdk.Replica, error) {
	x, err := t.begin(ctx, ref, true)
	if err != nil {
		return nil, err
	}
	defer x.release()
	if x.rs.State != sdk.ReplicaFailedOver {
		return nil, fmt.Errorf("commit failover of replica %q: replica is %s: %w", ref, x.rs.State, errdefs.ErrFailedPrecondition)
	}
	x.rs.State, x.rs.PreFailover, x.rs.Points, x.rs.Disks = sdk.ReplicaCommitted, nil, nil, nil
	if err := x.save(); err != nil {
		return nil, err
	}
	t.step("commit-saved")
	// The rest is what recover does for a committed replica.
	if err := t.recover(ctx, x); err != nil {
		return nil, err
	}
	return t.replicaOf(x.dir, x.rs)
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
