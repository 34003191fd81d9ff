package replicameta

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// ManifestVersion is the version of the manifests this package writes.
// Version 1 manifests named no replica: they are never trusted.
const ManifestVersion = 2

// Manifest is the metadata of one replica disk.
type Manifest struct {
	Version       int            `json:"version"`
	Size          int64          `json:"size"`
	BlockSize     int            `json:"block_size"`
	SegmentBlocks int            `json:"segment_blocks"`
	Segments      map[int]string `json:"segments"` // segment index -> object key
	// Session is the session that wrote the manifest last.
	Session string `json:"session,omitempty"`
	// Replica and Incarnation name the replica the digests describe.
	Replica     string `json:"replica"`
	Incarnation string `json:"incarnation"`
	// Base is the restore point the replica's working state was at when
	// Session began ("" for a replica without points).
	Base string `json:"base"`
	// Finished says Session wrote every disk block it meant to: the
	// manifest then describes the restore point Session goes on to make.
	Finished bool `json:"finished"`
}

// Binding is what the replica is now, as its target reports it: metadata
// is trusted only when it was written for this replica, this incarnation
// and this newest restore point.
type Binding struct {
	Replica     string
	Incarnation string
	// Point is the replica's newest restore point ("" for none) and
	// PointSession the session that made it (its ferry.session label).
	Point        string
	PointSession string
	// Capacity is the replica disk's size before this run (0: unknown).
	Capacity int64
}

// Distrust says why a manifest does not describe the replica it is read
// for; "" when it does.
func (m *Manifest) Distrust(b Binding) string {
	switch {
	case m.Version != ManifestVersion:
		return fmt.Sprintf("written by an older ferry (version %d), it names no replica", m.Version)
	case m.Replica != b.Replica || m.Incarnation != b.Incarnation:
		return fmt.Sprintf("written for replica %s (incarnation %s), not for %s (incarnation %s): the replica was deleted, replaced or recreated", m.Replica, m.Incarnation, b.Replica, b.Incarnation)
	case b.Capacity > 0 && m.Size > b.Capacity:
		return fmt.Sprintf("written for a disk of %d bytes, the replica's is %d: the disk was replaced", m.Size, b.Capacity)
	case m.Finished && (m.Session == "" || m.Session != b.PointSession):
		if b.Point == "" {
			return fmt.Sprintf("written by session %s, which made a restore point the replica does not have (it has none)", m.Session)
		}
		return fmt.Sprintf("written by session %s, but the newest restore point %s was made by session %s: the metadata or the replica was restored from an older copy, or a run was cut short before its restore point", m.Session, b.Point, b.PointSession)
	case !m.Finished && m.Base != b.Point:
		return fmt.Sprintf("written by session %s from restore point %q, but the replica's newest is %q: the metadata or the replica was restored from an older copy", m.Session, m.Base, b.Point)
	}
	return ""
}

// Prefix is where the metadata of one replica disk lives.
func Prefix(job, vm string, disk int) string {
	return fmt.Sprintf("ferry/v1/%s/%s/disk-%d/", url.PathEscape(job), url.PathEscape(vm), disk)
}

// Recompute reads a range of the replica's working state, to digest blocks
// the manifest does not know.
type Recompute func(ctx context.Context) (io.ReaderAt, error)

// Store is the datamover.DigestStore of one replica disk for one run. It
// is safe for concurrent use.
type Store struct {
	repo    sdk.Repository
	prefix  string
	session string
	bs      int
	segBlks int
	size    int64     // the disk's size in this run
	fresh   bool      // the replica disk was created empty in this run
	reread  Recompute // reads the replica when digests are unknown
	bind    Binding
	// distrust says why the stored manifest was not trusted; "" when it
	// was, or there was none.
	distrust string

	mu       sync.Mutex
	manifest Manifest
	gen      int64          // manifest generation; sdk.IfAbsent when none
	replaced map[int]string // segments taken out of the manifest, by their old object
	replica  io.ReaderAt
	stats    Stats
	loaded   atomic.Int64 // segments loaded, counted as they arrive
	// background is the loads of TakeSegments that did not wait and the
	// deletes of objects no longer named; Close waits for them.
	background sync.WaitGroup
}

// Stats say how the store got its digests.
type Stats struct {
	SegmentsLoaded     int
	SegmentsRecomputed int
	BytesRecomputed    int64
}

// Options describe the run a Store serves.
type Options struct {
	Session       string
	Size          int64 // the disk's size in this run
	BlockSize     int
	SegmentBlocks int
	// Fresh says the replica disk was created empty in this run: unknown
	// segments read as zeros and need no recompute.
	Fresh bool
	// Recompute opens the replica's working state to digest unknown
	// segments.
	Recompute Recompute
	// Binding is the replica the digests must describe; a manifest written
	// for anything else is not trusted.
	Binding Binding
}

// Open reads the manifest of a replica disk and removes segment objects a
// killed run left behind. A manifest written with another block or segment
// size is ignored: its segments become unknown. So is one written for
// another replica, incarnation or restore point than opts.Binding (see
// Manifest.Distrust), and one that is damaged: Distrusted says why.
func Open(ctx context.Context, repo sdk.Repository, prefix string, opts Options) (*Store, error) {
	s := &Store{repo: repo, prefix: prefix, session: opts.Session, bs: opts.BlockSize, segBlks: opts.SegmentBlocks, size: opts.Size, fresh: opts.Fresh, reread: opts.Recompute, bind: opts.Binding, gen: sdk.IfAbsent, replaced: map[int]string{}}
	s.manifest = Manifest{Version: ManifestVersion, BlockSize: s.bs, SegmentBlocks: s.segBlks, Segments: map[int]string{}}
	data, info, err := repo.Get(ctx, prefix+"manifest")
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
	case errors.Is(err, errdefs.ErrDataLoss):
		// A damaged manifest is a lost one: it goes, and the digests are
		// rebuilt from the replica.
		s.distrust = fmt.Sprintf("the manifest is damaged (%v)", err)
		if err := repo.Delete(ctx, prefix+"manifest", sdk.IfAny); err != nil {
			return nil, fmt.Errorf("remove the damaged manifest %s: %w", prefix, err)
		}
	case err != nil:
		return nil, fmt.Errorf("read manifest %s: %w", prefix, err)
	default:
		s.gen = info.Generation
		var m Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			// Unreadable metadata is unknown metadata: start over.
			s.distrust = fmt.Sprintf("the manifest does not decode (%v)", err)
			break
		}
		if why := m.Distrust(s.bind); why != "" {
			s.distrust = why
			break
		}
		if m.BlockSize == s.bs && m.SegmentBlocks == s.segBlks && m.Segments != nil {
			s.manifest = m
		}
	}
	s.manifest.Replica, s.manifest.Incarnation = s.bind.Replica, s.bind.Incarnation
	s.manifest.Base, s.manifest.Finished = s.bind.Point, false
	if err := s.sweep(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// sweep deletes segment objects the manifest does not name: what a
// killed run left, and the objects earlier runs replaced. The listing is
// taken now; the deletes go on in the background until Close, since
// nothing this run writes can be among them.
func (s *Store) sweep(ctx context.Context) error {
	objs, err := s.repo.List(ctx, s.prefix+"seg/")
	if err != nil {
		return fmt.Errorf("list metadata %s: %w", s.prefix, err)
	}
	named := map[string]bool{}
	for _, k := range s.manifest.Segments {
		named[k] = true
	}
	var stale []string
	for _, o := range objs {
		if !named[o.Key] {
			stale = append(stale, o.Key)
		}
	}
	s.deleteLater(ctx, stale)
	return nil
}

// deleteLater deletes objects no manifest names, in the background; a
// delete that fails is retried by the sweep of a later run.
func (s *Store) deleteLater(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	s.background.Go(func() {
		var wg sync.WaitGroup
		for _, k := range keys {
			wg.Go(func() { s.repo.Delete(ctx, k, sdk.IfAny) })
		}
		wg.Wait()
	})
}

// Distrusted says why the stored manifest was set aside ("" when it was
// trusted, or there was none): the engine tells the session.
func (s *Store) Distrusted() string { return s.distrust }

// Known reports how many segments have stored digests.
func (s *Store) Known() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.manifest.Segments)
}

// Stats returns how the store got its digests so far.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.SegmentsLoaded = int(s.loaded.Load())
	return st
}

// commit writes the manifest with compare-and-swap. Callers hold s.mu.
func (s *Store) commit(ctx context.Context) error {
	s.manifest.Session = s.session
	data, err := json.Marshal(s.manifest)
	if err != nil {
		return err
	}
	gen, err := s.repo.Put(ctx, s.prefix+"manifest", data, s.gen)
	if err != nil {
		return fmt.Errorf("write manifest %s: %w", s.prefix, err)
	}
	s.gen = gen
	return nil
}

// TakeSegments returns the digests of segments: stored ones, zeros on a
// fresh replica, or digests recomputed from the replica. The segments are
// taken out of the manifest, with one write of it, before they are
// returned, because the caller is about to write their blocks.
//
// With wait, stored digests are loaded before the call returns, and
// damaged ones are recomputed from the replica. Without, they load in the
// background after the manifest was written; damaged ones resolve as
// unknown, since the replica may be written by the time they are found.
func (s *Store) TakeSegments(ctx context.Context, segs []int, wait bool) ([]*datamover.Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*datamover.Pending, len(segs))
	var wg sync.WaitGroup
	for k, i := range segs {
		key, ok := s.manifest.Segments[i]
		if !ok {
			continue
		}
		p := datamover.NewPending()
		out[k] = p
		load := func() {
			d, err := s.load(ctx, key)
			var bad *corruptError
			if errors.As(err, &bad) {
				d, err = nil, nil // damaged digests are unknown digests
			}
			if d != nil {
				s.loaded.Add(1)
			}
			p.Resolve(d, err)
		}
		if wait {
			wg.Go(load)
		} else {
			s.background.Go(load)
		}
	}
	wg.Wait()
	taken := false
	for k, i := range segs {
		key, ok := s.manifest.Segments[i]
		if !ok {
			continue
		}
		if wait {
			d, err := out[k].Wait(ctx)
			if err != nil {
				return nil, err
			}
			if d == nil {
				out[k] = nil // damaged: recomputed below
			}
		}
		delete(s.manifest.Segments, i)
		// The object stays until the new one is named; sweep removes it
		// after a crash.
		s.replaced[i] = key
		taken = true
	}
	if taken {
		if err := s.commit(ctx); err != nil {
			return nil, err
		}
	}
	if s.fresh || s.reread == nil {
		return out, nil
	}
	for k, i := range segs {
		if out[k] != nil {
			continue
		}
		d, err := s.recompute(ctx, i)
		if err != nil {
			return nil, err
		}
		out[k] = datamover.Known(d)
	}
	return out, nil
}

// corruptError is a segment object that does not decode.
type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }

// recompute digests segment i from the replica's working state. Callers
// hold s.mu.
func (s *Store) recompute(ctx context.Context, i int) ([]datamover.Digest, error) {
	if s.replica == nil {
		r, err := s.reread(ctx)
		if err != nil {
			return nil, fmt.Errorf("open the replica to recompute digests: %w", err)
		}
		s.replica = r
	}
	lo := int64(i) * int64(s.bs) * int64(s.segBlks)
	hi := min(lo+int64(s.bs)*int64(s.segBlks), s.size)
	d, err := datamover.DigestRange(s.replica, lo, hi, s.bs)
	if err != nil {
		return nil, fmt.Errorf("recompute digests of segment %d: %w", i, err)
	}
	s.stats.SegmentsRecomputed++
	s.stats.BytesRecomputed += hi - lo
	return d, nil
}

// PutSegments stores the new digests of segments and names them all in
// the manifest with one write of it.
func (s *Store) PutSegments(ctx context.Context, digests map[int][]datamover.Digest) error {
	keys := make(map[int]string, len(digests))
	for i := range digests {
		keys[i] = fmt.Sprintf("%sseg/%d-%s", s.prefix, i, nonce())
	}
	// The objects are written at once: each is made durable on its own.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i, d := range digests {
		wg.Go(func() {
			if _, err := s.repo.Put(ctx, keys[i], encodeSegment(d), sdk.IfAbsent); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("write digests %s: %w", keys[i], err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err // the objects written are swept by the next run
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var old []string
	for i, key := range keys {
		old = append(old, s.manifest.Segments[i], s.replaced[i])
		s.manifest.Segments[i] = key
		delete(s.replaced, i)
	}
	if err := s.commit(ctx); err != nil {
		return err
	}
	s.deleteLater(ctx, slices.DeleteFunc(old, func(k string) bool { return k == "" }))
	return nil
}

// Finish records the disk's size once every segment was handled: the
// manifest then describes the restore point the session makes next.
func (s *Store) Finish(ctx context.Context, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.manifest.Size = size
	s.manifest.Finished = true
	return s.commit(ctx)
}

// Close waits for the loads and deletes still under way and releases the
// replica reader, if one was opened.
func (s *Store) Close() error {
	s.background.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.replica.(io.Closer); ok {
		s.replica = nil
		return c.Close()
	}
	return nil
}

func (s *Store) load(ctx context.Context, key string) ([]datamover.Digest, error) {
	data, _, err := s.repo.Get(ctx, key)
	if errors.Is(err, errdefs.ErrDataLoss) {
		return nil, &corruptError{fmt.Errorf("read digests %s: %w", key, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("read digests %s: %w", key, err)
	}
	d, err := decodeSegment(data)
	if err != nil {
		return nil, &corruptError{fmt.Errorf("digests %s: %w", key, err)}
	}
	return d, nil
}

var segTable = crc32.MakeTable(crc32.Castagnoli)

func encodeSegment(ds []datamover.Digest) []byte {
	b := make([]byte, 0, 8+len(ds)*len(datamover.Digest{})+4)
	b = append(b, "FDG1"...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ds)))
	for _, d := range ds {
		b = append(b, d[:]...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, segTable))
}

func decodeSegment(b []byte) ([]datamover.Digest, error) {
	const ds = len(datamover.Digest{})
	if len(b) < 12 || string(b[:4]) != "FDG1" {
		return nil, errors.New("not a digest segment")
	}
	n := int(binary.LittleEndian.Uint32(b[4:]))
	if len(b) != 8+n*ds+4 {
		return nil, fmt.Errorf("%d bytes for %d digests", len(b), n)
	}
	if crc32.Checksum(b[:len(b)-4], segTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errors.New("checksum mismatch")
	}
	out := make([]datamover.Digest, n)
	for i := range out {
		copy(out[i][:], b[8+i*ds:])
	}
	return out, nil
}

func nonce() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}
