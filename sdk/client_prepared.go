package sdk

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// Batch limits of a preparedWriter's writes to ranges not prepared yet:
// one Prepare call and one round trip serve that many scattered writes.
const (
	prepareBatchBytes  = 8 << 20
	prepareBatchWrites = 2048
)

// preparedWriter writes the file the plugin named, in this process, for a
// plugin that keeps restore points of it: the plugin prepares each range
// (saves what its points still need of it) before the range is written
// here. A range the caller prepared ahead (PrepareWrites) is written at
// once; any other write is copied into a batch, and a full batch is
// prepared with one call and then written. Nothing is written to the
// file before the plugin prepared it, so a crash at any moment keeps every
// restore point.
type preparedWriter struct {
	*diskHandle
	f     *os.File
	dirty atomic.Int64 // bytes written since writeback was last started

	mu      sync.Mutex
	ready   []Extent // prepared ranges, sorted and merged
	pending batchOf  // writes gathered, not prepared yet
	spare   batchOf  // the room of the batch flushed last, for reuse
	// A full batch is prepared and written in the background while the
	// next one fills: inflight is closed when it is done, and flushed
	// then holds its result. One at a time, in order.
	inflight chan struct{}
	flushed  flushResult
	// pendSpan and flySpan bound the writes of the pending batch and of
	// the one in flight: a write to a prepared range that overlaps them
	// joins the batch instead of going straight to the file, so that
	// writes to one place land in the order they came.
	pendSpan, flySpan Extent
	err               error // the first failure, returned from then on
}

// batchOf is writes gathered, their data back to back in buf. A write
// reserves its place under the writer's lock and copies its data there
// after releasing it, so that writers copy side by side; copying counts
// the copies under way, which the batch waits for before it is written.
// buf never grows past its capacity while copies are under way.
type batchOf struct {
	writes  []pendingWrite
	buf     []byte
	copying *sync.WaitGroup
}

// copied waits for the copies into the batch under way.
func (b *batchOf) copied() {
	if b.copying != nil {
		b.copying.Wait()
	}
}

type flushResult struct {
	ranges []Extent // prepared and written
	room   batchOf  // the batch's room, emptied
	err    error
}

type pendingWrite struct {
	off        int64
	start, end int // the data in buf
}

var (
	_ DiskWriter    = (*preparedWriter)(nil)
	_ WritePreparer = (*preparedWriter)(nil)
)

func (w *preparedWriter) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.size {
		return 0, fmt.Errorf("write of %d bytes at %d outside a disk of %d bytes: %w", len(p), off, w.size, errdefs.ErrInvalidArgument)
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return 0, w.err
	}
	if covers(w.ready, off, int64(len(p))) && !overlaps(w.pendSpan, off, len(p)) && !overlaps(w.flySpan, off, len(p)) {
		w.mu.Unlock()
		return w.write(p, off)
	}
	b := &w.pending
	if len(b.writes) > 0 && len(b.buf)+len(p) > cap(b.buf) {
		// Full: it goes, and this write starts the next batch.
		if err := w.handOffLocked(); err != nil {
			w.mu.Unlock()
			return 0, err
		}
		b = &w.pending
	}
	if cap(b.buf)-len(b.buf) < len(p) {
		b.buf = make([]byte, 0, max(prepareBatchBytes, len(p)))
	}
	if b.copying == nil {
		b.copying = new(sync.WaitGroup)
	}
	start := len(b.buf)
	b.buf = b.buf[:start+len(p)]
	b.writes = append(b.writes, pendingWrite{off: off, start: start, end: start + len(p)})
	dst, copying := b.buf[start:start+len(p)], b.copying
	copying.Add(1)
	w.pendSpan = grow(w.pendSpan, off, len(p))
	full := len(b.buf) >= prepareBatchBytes || len(b.writes) >= prepareBatchWrites
	w.mu.Unlock()

	copy(dst, p)
	copying.Done()
	if full {
		w.mu.Lock()
		defer w.mu.Unlock()
		if pb := &w.pending; len(pb.buf) >= prepareBatchBytes || len(pb.writes) >= prepareBatchWrites {
			if err := w.handOffLocked(); err != nil {
				return 0, err
			}
		}
	}
	return len(p), nil
}

// write writes a prepared range of the file.
func (w *preparedWriter) write(p []byte, off int64) (int, error) {
	n, err := w.f.WriteAt(p, off)
	if w.dirty.Add(int64(n)) >= writebackEvery {
		w.dirty.Store(0)
		startWriteback(w.f)
	}
	return n, err
}

// handOffLocked starts preparing and writing the pending batch in the
// background, once the batch before it is done, and starts the next
// batch in the spare room. The caller holds mu.
func (w *preparedWriter) handOffLocked() error {
	if err := w.waitLocked(); err != nil {
		return err
	}
	b := w.pending
	w.pending, w.spare = w.spare, batchOf{}
	w.flySpan, w.pendSpan = w.pendSpan, Extent{}
	done := make(chan struct{})
	w.inflight = done
	go func() {
		defer close(done)
		b.copied()
		ranges, err := w.apply(b)
		w.flushed = flushResult{ranges: ranges, room: batchOf{writes: b.writes[:0], buf: b.buf[:0]}, err: err}
	}()
	return nil
}

// waitLocked waits for the batch in the background, if any, takes its
// ranges as prepared and its room as spare, and returns the first
// failure. The caller holds mu.
func (w *preparedWriter) waitLocked() error {
	if w.inflight != nil {
		<-w.inflight
		w.inflight = nil
		r := w.flushed
		w.flushed = flushResult{}
		if r.err != nil && w.err == nil {
			w.err = r.err
		}
		w.ready = addExtents(w.ready, r.ranges)
		w.spare = r.room
		w.flySpan = Extent{}
	}
	return w.err
}

// flushLocked waits for the batch in the background, then prepares and
// writes the pending one. The caller holds mu.
func (w *preparedWriter) flushLocked() error {
	if err := w.waitLocked(); err != nil {
		return err
	}
	if len(w.pending.writes) == 0 {
		return nil
	}
	w.pending.copied()
	ranges, err := w.apply(w.pending)
	w.ready = addExtents(w.ready, ranges)
	w.pending.writes, w.pending.buf, w.pending.copying = w.pending.writes[:0], w.pending.buf[:0], nil
	w.pendSpan = Extent{}
	if err != nil {
		w.err = err
	}
	return err
}

// apply prepares the ranges of a batch's writes with one call, then
// writes them in the order they came. It returns the ranges prepared.
func (w *preparedWriter) apply(b batchOf) ([]Extent, error) {
	es := make([]Extent, 0, len(b.writes))
	for _, pw := range b.writes {
		es = append(es, Extent{Offset: pw.off, Length: int64(pw.end - pw.start)})
	}
	es = MergeExtents(es)
	if err := w.prepare(es); err != nil {
		return nil, err
	}
	for _, pw := range b.writes {
		if _, err := w.write(b.buf[pw.start:pw.end], pw.off); err != nil {
			return es, fmt.Errorf("write %s at %d: %w", w.f.Name(), pw.off, err)
		}
	}
	return es, nil
}

// prepare asks the plugin to prepare ranges.
func (w *preparedWriter) prepare(es []Extent) error {
	req := &pb.PrepareRequest{Handle: w.handle, Extents: make([]*pb.Extent, len(es))}
	for i, e := range es {
		req.Extents[i] = &pb.Extent{Offset: e.Offset, Length: e.Length}
	}
	if _, err := w.rpc.Prepare(w.ctx, req); err != nil {
		return fmt.Errorf("prepare writes of %s: %w", w.c.opts.Name, w.c.err(err))
	}
	return nil
}

// PrepareWrites prepares ranges ahead of their writes, which are then
// written at once. Writes may go on elsewhere meanwhile.
func (w *preparedWriter) PrepareWrites(extents []Extent) error {
	es := make([]Extent, 0, len(extents))
	for _, e := range extents {
		if e.Offset < 0 || e.Length < 0 || e.Offset > w.size-e.Length {
			return fmt.Errorf("prepare %d bytes at %d of a %d-byte disk: %w", e.Length, e.Offset, w.size, errdefs.ErrInvalidArgument)
		}
		if e.Length > 0 {
			es = append(es, e)
		}
	}
	es = MergeExtents(es)
	if len(es) == 0 {
		return nil
	}
	w.mu.Lock()
	// Writes gathered before belong before the ranges' own writes.
	err := w.flushLocked()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	if err := w.prepare(es); err != nil {
		return err
	}
	w.mu.Lock()
	w.ready = addExtents(w.ready, es)
	w.mu.Unlock()
	return nil
}

// Sync writes the pending writes, makes the file durable, then the
// plugin's writer.
func (w *preparedWriter) Sync() error {
	w.mu.Lock()
	err := w.flushLocked()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", w.f.Name(), err)
	}
	_, err = w.rpc.Sync(w.ctx, &pb.SyncDiskRequest{Handle: w.handle})
	return w.c.err(err)
}

// Close writes the pending writes and makes them durable before the
// plugin is told the disk is closed.
func (w *preparedWriter) Close() error {
	w.mu.Lock()
	ferr := w.flushLocked()
	w.mu.Unlock()
	serr := w.f.Sync()
	cerr := w.f.Close()
	if err := errors.Join(ferr, serr, cerr); err != nil {
		w.closeRemote()
		return fmt.Errorf("close %s: %w", w.f.Name(), err)
	}
	return w.closeRemote()
}

// covers reports whether the sorted, merged extents hold [off, off+n).
func covers(es []Extent, off, n int64) bool {
	i, _ := slices.BinarySearchFunc(es, off, func(e Extent, off int64) int {
		switch {
		case e.End() <= off:
			return -1
		case e.Offset > off:
			return 1
		}
		return 0
	})
	return i < len(es) && es[i].Offset <= off && off+n <= es[i].End()
}

// addExtents adds sorted, merged extents to sorted, merged ready ones. The
// data mover prepares in increasing offsets, so the new ones usually go
// at the end.
func addExtents(ready, es []Extent) []Extent {
	if len(ready) > 0 && len(es) > 0 && es[0].Offset < ready[len(ready)-1].End() {
		return MergeExtents(append(ready, es...))
	}
	for _, e := range es {
		if k := len(ready) - 1; k >= 0 && e.Offset <= ready[k].End() {
			ready[k].Length = max(ready[k].End(), e.End()) - ready[k].Offset
			continue
		}
		ready = append(ready, e)
	}
	return ready
}

// overlaps reports whether [off, off+n) overlaps the extent e (empty:
// nothing).
func overlaps(e Extent, off int64, n int) bool {
	return e.Length > 0 && off < e.End() && e.Offset < off+int64(n)
}

// grow returns the extent e grown to hold [off, off+n).
func grow(e Extent, off int64, n int) Extent {
	if e.Length == 0 {
		return Extent{Offset: off, Length: int64(n)}
	}
	lo, hi := min(e.Offset, off), max(e.End(), off+int64(n))
	return Extent{Offset: lo, Length: hi - lo}
}
