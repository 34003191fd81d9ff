package replicameta

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// When the store writes a segment's base again and when it loads one.
const (
	// CompactEntries: a segment's base is rewritten (its deltas folded
	// in) once its deltas hold this fraction of its blocks, or
	// CompactDeltas deltas hold some of them: loading stays proportional
	// to what changed since the base (a delta entry costs about what a
	// base's digest costs, so base and deltas load at most 1.25 times the
	// base alone), and a run that changes a tenth of a segment writes a
	// delta, not the whole base again (at 1/16 every such run did).
	CompactEntries = 4 // 1/4 of the blocks
	CompactDeltas  = 32
	// MaxDeltas bounds the deltas a manifest names: beyond it, each write
	// folds the segments of the oldest delta into new bases, so that
	// segments seldom written do not keep old deltas alive for ever.
	MaxDeltas = 64
	// DenseLoad: a change-tracked run loads a segment's base when it
	// writes at least this fraction of the segment; below it, it compares
	// only with the digests of the deltas (what was written lately) and
	// sends the rest of what change tracking named, which has most likely
	// changed: loading a base to find the few blocks that did not costs
	// more than sending them, unless the run rewrites much of the segment.
	DenseLoad = 2 // half the segment
)

// Recompute reads a range of the replica's working state, to digest blocks
// the manifest does not know.
type Recompute func(ctx context.Context) (io.ReaderAt, error)

// RecomputeDigests returns the digests of the replica's current blocks in
// [from, to), computed where the replica is (a target proxy), so that
// only digests cross the network.
type RecomputeDigests func(ctx context.Context, from, to int64, blockSize int) ([]datamover.Digest, error)

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
	// redigest, when set, computes digests where the replica is instead
	// of reading it through reread.
	redigest RecomputeDigests
	bind     Binding
	zero     datamover.Digest // of a whole zero block
	// distrust says why the stored manifest was not trusted; "" when it
	// was, or there was none.
	distrust string

	mu       sync.Mutex
	manifest Manifest
	gen      int64 // manifest generation; sdk.IfAbsent when none
	// taken is, by segment, the ranges this run took and has not put yet,
	// and what it loaded of the segment's digests (nil: nothing yet).
	taken   map[int]*taking
	deltas  map[string]*deltaLoad // delta objects loaded in this run
	replica io.ReaderAt
	stats   Stats
	loaded  atomic.Int64 // objects loaded, counted as they arrive
	// background is the loads of Take that did not wait and the deletes
	// of objects no longer named; Close waits for them.
	background sync.WaitGroup
}

type taking struct {
	spans []Range
	// dense is every digest of the segment (with known), once loaded
	// whole; dirtyBefore the ranges unknown when it was taken.
	dense       *denseDigests
	dirtyBefore []Range
}

// Stats say how the store got and kept its digests.
type Stats struct {
	ObjectsLoaded      int
	SegmentsRecomputed int // segments whose digests were rebuilt, wholly or in part
	BytesRecomputed    int64
	BasesWritten       int
	DeltaEntries       int // digests written in deltas
	// Unknown counts segments left without digests: change tracking wrote
	// part of a segment whose digests were not known.
	Unknown int
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
	// blocks.
	Recompute Recompute
	// RecomputeDigests, when set, is used instead of Recompute: the
	// replica's digests are computed where it is.
	RecomputeDigests RecomputeDigests
	// Binding is the replica the digests must describe; a manifest written
	// for anything else is not trusted.
	Binding Binding
}

// Open reads the manifest of a replica disk and removes objects a killed
// run left behind. A manifest written with another block or segment size
// is ignored: its segments become unknown. So is one written for another
// replica, incarnation or restore point than opts.Binding (see
// Manifest.Distrust), and one that is damaged: Distrusted says why. A
// version 2 manifest is taken over: its segment objects become bases.
func Open(ctx context.Context, repo sdk.Repository, prefix string, opts Options) (*Store, error) {
	s := &Store{repo: repo, prefix: prefix, session: opts.Session, bs: opts.BlockSize, segBlks: opts.SegmentBlocks, size: opts.Size, fresh: opts.Fresh, reread: opts.Recompute, redigest: opts.RecomputeDigests, bind: opts.Binding, gen: sdk.IfAbsent, taken: map[int]*taking{}, deltas: map[string]*deltaLoad{}}
	s.zero = datamover.BlockDigest(make([]byte, s.bs))
	s.manifest = Manifest{BlockSize: s.bs, SegmentBlocks: s.segBlks}
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
		m.migrate()
		if m.BlockSize == s.bs && m.SegmentBlocks == s.segBlks {
			s.manifest = m
		}
	}
	m := &s.manifest
	m.Version, m.BlockSize, m.SegmentBlocks = ManifestVersion, s.bs, s.segBlks
	if m.Bases == nil {
		m.Bases = map[int]BaseRef{}
	}
	m.Replica, m.Incarnation = s.bind.Replica, s.bind.Incarnation
	m.Base, m.Finished = s.bind.Point, false
	if err := s.sweep(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// sweep deletes objects the manifest does not name: what a killed run
// left, and the objects earlier runs replaced. The listing is taken now;
// the deletes go on in the background until Close, since nothing this
// run writes can be among them.
func (s *Store) sweep(ctx context.Context) error {
	named := s.manifest.named()
	var stale []string
	for _, dir := range []string{"seg/", "delta/"} {
		objs, err := s.repo.List(ctx, s.prefix+dir)
		if err != nil {
			return fmt.Errorf("list metadata %s: %w", s.prefix, err)
		}
		for _, o := range objs {
			if !named[o.Key] {
				stale = append(stale, o.Key)
			}
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
	return len(s.manifest.Bases)
}

// Stats returns how the store got its digests so far.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.ObjectsLoaded = int(s.loaded.Load())
	return st
}

// Manifest returns a copy of the manifest as this run last wrote it (or
// read it, before its first write).
func (s *Store) Manifest() Manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.manifest
	m.Bases = maps.Clone(m.Bases)
	m.Deltas = slices.Clone(m.Deltas)
	m.Dirty = slices.Clone(m.Dirty)
	return m
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

// segment returns the byte range of segment i and its number of blocks.
func (s *Store) segment(i int) (lo, hi int64, n int) {
	lo = int64(i) * int64(s.bs) * int64(s.segBlks)
	hi = min(lo+int64(s.bs)*int64(s.segBlks), s.size)
	return lo, hi, int((hi - lo + int64(s.bs) - 1) / int64(s.bs))
}

// zeroAt is the digest of block i of segment seg when it reads as zeros
// (the disk's last block may be short).
func (s *Store) zeroAt(seg, i int) datamover.Digest {
	lo, hi, _ := s.segment(seg)
	off := lo + int64(i)*int64(s.bs)
	if hi-off >= int64(s.bs) {
		return s.zero
	}
	return datamover.BlockDigest(make([]byte, max(hi-off, 0)))
}

// pad extends the digests of segment seg to the segment's length: blocks
// past them were added since (the disk grew) and read as zeros.
func (s *Store) pad(seg int, d []datamover.Digest) []datamover.Digest {
	_, _, n := s.segment(seg)
	for len(d) < n {
		d = append(d, s.zeroAt(seg, len(d)))
	}
	return d
}

// Take records the blocks about to be written as dirty (one write of the
// manifest, before it returns) and returns what is known of each
// segment's digests: with wait, every block of each segment, stored or
// recomputed from the replica; without, the base of segments the run
// writes much of and the deltas of the others, loaded in the background.
func (s *Store) Take(ctx context.Context, takes []datamover.Take, wait bool) ([]*datamover.Pending, error) {
	out := make([]*datamover.Pending, len(takes))
	type load struct {
		k    int
		plan loadPlan
	}
	var loads []load
	s.mu.Lock()
	var dirty []Range
	for k, t := range takes {
		spans := make([]Range, len(t.Spans))
		for j, e := range t.Spans {
			spans[j] = Range{e.Offset, e.End()}
		}
		lo, hi, _ := s.segment(t.Seg)
		s.taken[t.Seg] = &taking{spans: spans, dirtyBefore: clipRanges(s.manifest.Dirty, lo, hi)}
		if _, ok := s.manifest.Bases[t.Seg]; !ok {
			continue // unknown: recomputed below when waiting
		}
		dirty = append(dirty, spans...)
		var todo int64
		for _, r := range spans {
			todo += r[1] - r[0]
		}
		// The plan is taken now: the manifest changes as groups are put.
		p := s.loadPlan(t.Seg, wait || todo*DenseLoad >= hi-lo)
		if p.base == "" {
			p.spans = spans
		}
		loads = append(loads, load{k, p})
	}
	if len(dirty) > 0 {
		s.manifest.Dirty = addRanges(s.manifest.Dirty, dirty)
		if err := s.commit(ctx); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	for _, l := range loads {
		p := datamover.NewPending()
		out[l.k] = p
		run := func() {
			d, err := s.load(ctx, l.plan)
			if errors.As(err, new(*corruptError)) {
				d, err = nil, nil // damaged digests are unknown digests
			}
			if dd, ok := d.(*denseDigests); ok {
				s.mu.Lock()
				if tk := s.taken[l.plan.seg]; tk != nil {
					tk.dense = dd
				}
				s.mu.Unlock()
			}
			p.Resolve(d, err)
		}
		if wait {
			wg.Go(run)
		} else {
			s.background.Go(run)
		}
	}
	wg.Wait()
	if !wait || s.fresh || (s.reread == nil && s.redigest == nil) {
		return out, nil
	}
	// Whole segments and their unknown parts are digested from the
	// replica, which this run has not written yet.
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range takes {
		var have *denseDigests
		if out[k] != nil {
			d, err := out[k].Wait(ctx)
			if err != nil {
				return nil, err
			}
			have, _ = d.(*denseDigests)
		}
		d, err := s.recompute(ctx, t.Seg, have)
		if err != nil {
			return nil, err
		}
		if tk := s.taken[t.Seg]; tk != nil {
			tk.dense = d
		}
		out[k] = datamover.Known(d)
	}
	return out, nil
}

// loadPlan is what to load for one segment.
type loadPlan struct {
	seg    int
	base   string // "" when only deltas are loaded
	deltas []DeltaRef
	dirty  []Range
	n      int
	// spans, when only deltas are loaded, are the bytes the run writes:
	// only their blocks' digests are looked up, so that the work follows
	// the change, not the deltas' history.
	spans []Range
}

// loadPlan says what to load of segment seg: its base when dense, and
// the deltas newer than it. Callers hold s.mu.
func (s *Store) loadPlan(seg int, dense bool) loadPlan {
	b := s.manifest.Bases[seg]
	lo, hi, n := s.segment(seg)
	p := loadPlan{seg: seg, n: n, dirty: clipRanges(s.manifest.Dirty, lo, hi)}
	if tk := s.taken[seg]; tk != nil {
		p.dirty = tk.dirtyBefore // this run's own ranges still hold what the digests say
	}
	if dense {
		p.base = b.Key
	}
	for _, d := range s.manifest.Deltas {
		if d.Blocks[seg] > 0 && d.Seq > b.Seq {
			p.deltas = append(p.deltas, d)
		}
	}
	return p
}

// load loads what plan names: a dense lookup when it names the base, a
// sparse one of the deltas' digests otherwise (nil when there are none).
func (s *Store) load(ctx context.Context, p loadPlan) (datamover.Stored, error) {
	var ds []*deltaLoad
	for _, d := range p.deltas {
		ds = append(ds, s.delta(d.Key))
	}
	var base []datamover.Digest
	if p.base != "" {
		data, err := s.get(ctx, p.base)
		if err != nil {
			return nil, err
		}
		if base, err = decodeBase(data, s.zero); err != nil {
			return nil, &corruptError{fmt.Errorf("digests %s: %w", p.base, err)}
		}
		s.loaded.Add(1)
		if len(base) > p.n {
			return nil, &corruptError{fmt.Errorf("digests %s: %d blocks, the segment has %d (disks never shrink)", p.base, len(base), p.n)}
		}
	}
	lo := int64(p.seg) * int64(s.segBlks)
	if p.base == "" {
		var all []entry
		for _, dl := range ds {
			es, err := dl.wait(ctx, s)
			if err != nil {
				return nil, err
			}
			all = s.appendSpanned(all, es, lo, p)
		}
		sp := newSparse(p.n, all, lo)
		sp.forget(p.dirty, lo, s)
		if len(sp.idx) == 0 {
			return nil, nil
		}
		return sp, nil
	}
	dd := &denseDigests{d: s.pad(p.seg, base)}
	for _, dl := range ds {
		es, err := dl.wait(ctx, s)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if e.block >= lo && e.block < lo+int64(p.n) {
				dd.d[e.block-lo] = e.d
			}
		}
	}
	dd.forget(p.dirty, lo, s)
	return dd, nil
}

// appendSpanned appends to all the entries of es (sorted by block) that
// fall in segment p.seg, which starts at block lo: only those in p.spans
// when it names any.
func (s *Store) appendSpanned(all, es []entry, lo int64, p loadPlan) []entry {
	in := func(from, to int64) []entry { // blocks [from, to)
		i := sort.Search(len(es), func(i int) bool { return es[i].block >= from })
		j := i + sort.Search(len(es)-i, func(j int) bool { return es[i+j].block >= to })
		return es[i:j]
	}
	if p.spans == nil {
		return append(all, in(lo, lo+int64(p.n))...)
	}
	bs := int64(s.bs)
	for _, r := range p.spans {
		from, to := max(r[0]/bs, lo), min((r[1]+bs-1)/bs, lo+int64(p.n))
		if from < to {
			all = append(all, in(from, to)...)
		}
	}
	return all
}

// delta returns the load of a delta object, started once per run.
func (s *Store) delta(key string) *deltaLoad {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dl := s.deltas[key]; dl != nil {
		return dl
	}
	dl := &deltaLoad{key: key}
	s.deltas[key] = dl
	return dl
}

type deltaLoad struct {
	key  string
	once sync.Once
	es   []entry
	err  error
}

func (dl *deltaLoad) wait(ctx context.Context, s *Store) ([]entry, error) {
	dl.once.Do(func() {
		data, err := s.get(ctx, dl.key)
		if err != nil {
			dl.err = err
			return
		}
		if dl.es, err = decodeDelta(data, s.zero); err != nil {
			dl.err = &corruptError{fmt.Errorf("digests %s: %w", dl.key, err)}
			return
		}
		s.loaded.Add(1)
	})
	return dl.es, dl.err
}

func (s *Store) get(ctx context.Context, key string) ([]byte, error) {
	data, _, err := s.repo.Get(ctx, key)
	if errors.Is(err, errdefs.ErrDataLoss) || errors.Is(err, errdefs.ErrNotFound) {
		// Damaged, or gone: lost (the repository lost it, or this run
		// replaced it while a load was under way). Unknown, never guessed.
		return nil, &corruptError{fmt.Errorf("read digests %s: %w", key, err)}
	}
	if err != nil {
		return nil, fmt.Errorf("read digests %s: %w", key, err)
	}
	return data, nil
}

// corruptError is a digest object that is damaged or does not decode.
type corruptError struct{ err error }

func (e *corruptError) Error() string { return e.err.Error() }

// recompute completes the digests of segment seg from the replica's
// working state: every block when have is nil, the unknown ones
// otherwise (have is as long as the segment: load pads it). Callers hold
// s.mu.
func (s *Store) recompute(ctx context.Context, seg int, have *denseDigests) (*denseDigests, error) {
	lo, hi, n := s.segment(seg)
	if have != nil && have.complete() {
		return have, nil
	}
	if s.replica == nil && s.redigest == nil {
		r, err := s.reread(ctx)
		if err != nil {
			return nil, fmt.Errorf("open the replica to recompute digests: %w", err)
		}
		s.replica = r
	}
	read := func(from, to int64) ([]datamover.Digest, error) {
		var d []datamover.Digest
		var err error
		if s.redigest != nil {
			d, err = s.redigest(ctx, from, to, s.bs)
			if err == nil && int64(len(d)) != (to-from+int64(s.bs)-1)/int64(s.bs) {
				err = fmt.Errorf("%d digests for %d bytes", len(d), to-from)
			}
		} else {
			d, err = datamover.DigestRange(s.replica, from, to, s.bs)
		}
		if err != nil {
			return nil, fmt.Errorf("recompute digests of segment %d: %w", seg, err)
		}
		s.stats.BytesRecomputed += to - from
		return d, nil
	}
	s.stats.SegmentsRecomputed++
	if have == nil {
		d, err := read(lo, hi)
		if err != nil {
			return nil, err
		}
		return &denseDigests{d: d}, nil
	}
	for i := 0; i < n; {
		if have.knows(i) {
			i++
			continue
		}
		j := i + 1
		for j < n && !have.knows(j) {
			j++
		}
		d, err := read(lo+int64(i)*int64(s.bs), min(lo+int64(j)*int64(s.bs), hi))
		if err != nil {
			return nil, err
		}
		copy(have.d[i:], d)
		i = j
	}
	have.unknown = nil
	return have, nil
}

// Put stores the new digests of the blocks handled and names them in the
// manifest with one write of it. A segment whose old digests are known
// gets a delta of the blocks whose digest changed, or a new base when its
// deltas grew large; a segment read whole gets a new base when its old
// digests were not known; a segment written in part whose digests were not
// known stays unknown.
func (s *Store) Put(ctx context.Context, updates []datamover.Update) error {
	s.mu.Lock()
	seq := s.manifest.Seq + 1
	type work struct {
		u       datamover.Update
		tk      *taking
		hasBase bool
		plan    loadPlan // to compact: what to load first
		compact bool
	}
	var ws []*work
	var spans []Range
	for _, u := range updates {
		tk := s.taken[u.Seg]
		if tk != nil {
			spans = append(spans, tk.spans...)
		}
		_, ok := s.manifest.Bases[u.Seg]
		w := &work{u: u, tk: tk, hasBase: ok}
		if ok && u.Handled != nil && (tk == nil || tk.dense == nil) {
			entries, deltas := s.manifest.pending(u.Seg)
			if (entries+count(u.Handled))*CompactEntries >= s.segBlks || deltas+1 >= CompactDeltas {
				w.compact, w.plan = true, s.loadPlan(u.Seg, true)
			}
		}
		ws = append(ws, w)
	}
	var refold []loadPlan
	if m := &s.manifest; len(m.Deltas) >= MaxDeltas {
		for seg := range m.Deltas[0].Blocks {
			lo, hi, _ := s.segment(seg)
			if _, ok := m.Bases[seg]; ok && s.taken[seg] == nil && !slices.ContainsFunc(updates, func(u datamover.Update) bool { return u.Seg == seg }) && len(clipRanges(m.Dirty, lo, hi)) == 0 {
				refold = append(refold, s.loadPlan(seg, true))
			}
		}
	}
	s.mu.Unlock()

	type baseWrite struct {
		seg int
		key string
		d   []datamover.Digest
	}
	var bases []baseWrite
	var delta []entry
	counts := map[int]int{}
	unknown := 0
	for _, w := range ws {
		u := w.u
		var old *denseDigests
		switch {
		case w.tk != nil && w.tk.dense != nil:
			old = w.tk.dense
		case w.compact:
			d, err := s.load(ctx, w.plan)
			if err != nil && !errors.As(err, new(*corruptError)) {
				return err
			}
			old, _ = d.(*denseDigests)
		}
		if old != nil && !old.complete() {
			var err error
			s.mu.Lock()
			old, err = s.recompute(ctx, u.Seg, old)
			s.mu.Unlock()
			if err != nil {
				return err
			}
		}
		if u.Handled == nil && old == nil {
			bases = append(bases, baseWrite{u.Seg, "", u.Digests})
			continue
		}
		if old == nil {
			if !w.hasBase {
				unknown++ // written in part, digests never known
				continue
			}
			// The deltas alone: the blocks handled, whatever they were.
			for i := range u.Digests {
				if u.Has(i) {
					delta = append(delta, entry{int64(u.Seg)*int64(s.segBlks) + int64(i), u.Digests[i]})
					counts[u.Seg]++
				}
			}
			continue
		}
		// Old digests known (load padded them to the segment): keep only
		// what differs.
		var es []entry
		for i := range u.Digests {
			if u.Has(i) && u.Digests[i] != old.d[i] {
				es = append(es, entry{int64(u.Seg)*int64(s.segBlks) + int64(i), u.Digests[i]})
			}
		}
		s.mu.Lock()
		entries, deltas := s.manifest.pending(u.Seg)
		s.mu.Unlock()
		if w.hasBase && len(es) == 0 {
			continue // nothing changed: base and deltas still hold
		}
		if !w.hasBase || w.compact || (entries+len(es))*CompactEntries >= s.segBlks || deltas+1 >= CompactDeltas {
			for i := range u.Digests {
				if u.Has(i) {
					old.d[i] = u.Digests[i]
				}
			}
			bases = append(bases, baseWrite{u.Seg, "", old.d})
			continue
		}
		delta = append(delta, es...)
		counts[u.Seg] += len(es)
	}

	// Segments of the oldest delta fold into new bases (never read from
	// the replica: a refold that is not complete is left for later).
	for _, p := range refold {
		d, err := s.load(ctx, p)
		if dd, ok := d.(*denseDigests); err == nil && ok && dd.complete() {
			bases = append(bases, baseWrite{p.seg, "", dd.d})
		}
	}

	// Write the objects at once: each is made durable on its own.
	var wg sync.WaitGroup
	var emu sync.Mutex
	var errs []error
	put := func(key string, data []byte) {
		if _, err := s.repo.Put(ctx, key, data, sdk.IfAbsent); err != nil {
			emu.Lock()
			errs = append(errs, fmt.Errorf("write digests %s: %w", key, err))
			emu.Unlock()
		}
	}
	for i := range bases {
		bases[i].key = fmt.Sprintf("%sseg/%d-%d-%s", s.prefix, bases[i].seg, seq, nonce())
		wg.Go(func() { put(bases[i].key, encodeBase(bases[i].d, s.zero)) })
	}
	var deltaKey string
	if len(delta) > 0 {
		sort.Slice(delta, func(i, j int) bool { return delta[i].block < delta[j].block })
		deltaKey = fmt.Sprintf("%sdelta/%d-%s", s.prefix, seq, nonce())
		wg.Go(func() { put(deltaKey, encodeDelta(delta, s.zero)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err // the objects written are swept by the next run
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	m := &s.manifest
	var replaced []string
	for _, b := range bases {
		if prev, ok := m.Bases[b.seg]; ok {
			replaced = append(replaced, prev.Key)
		}
		m.Bases[b.seg] = BaseRef{Key: b.key, Seq: seq}
	}
	if deltaKey != "" {
		m.Deltas = append(m.Deltas, DeltaRef{Key: deltaKey, Seq: seq, Blocks: counts})
	}
	m.Seq = seq
	m.Dirty = removeRanges(m.Dirty, addRanges(nil, spans))
	replaced = append(replaced, m.dropObsolete()...)
	for _, w := range ws {
		delete(s.taken, w.u.Seg)
	}
	s.stats.BasesWritten += len(bases)
	s.stats.DeltaEntries += len(delta)
	s.stats.Unknown += unknown
	if err := s.commit(ctx); err != nil {
		return err
	}
	s.deleteLater(ctx, replaced)
	return nil
}

func count(bits []uint64) int {
	n := 0
	for _, w := range bits {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
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
	s.deltas = map[string]*deltaLoad{}
	if c, ok := s.replica.(io.Closer); ok {
		s.replica = nil
		return c.Close()
	}
	return nil
}

// denseDigests is every digest of a segment, some possibly unknown.
type denseDigests struct {
	d []datamover.Digest
	// unknown has a bit per block whose digest is not known; nil: none.
	unknown []uint64
}

func (d *denseDigests) Blocks() int { return len(d.d) }

func (d *denseDigests) Digest(i int) (datamover.Digest, bool) { return d.d[i], d.knows(i) }

func (d *denseDigests) knows(i int) bool {
	// Blocks past the bitmap were added since (a grown disk's zeros).
	return i/64 >= len(d.unknown) || d.unknown[i/64]&(1<<(i%64)) == 0
}

func (d *denseDigests) complete() bool { return d.unknown == nil }

// forget marks the blocks of ranges (bytes of the disk; the segment
// starts at block lo) unknown.
func (d *denseDigests) forget(ranges []Range, lo int64, s *Store) {
	for _, r := range ranges {
		first, last := r[0]/int64(s.bs)-lo, (r[1]+int64(s.bs)-1)/int64(s.bs)-lo
		for b := max(first, 0); b < min(last, int64(len(d.d))); b++ {
			if d.unknown == nil {
				d.unknown = make([]uint64, (len(d.d)+63)/64)
			}
			d.unknown[b/64] |= 1 << (b % 64)
		}
	}
}

// sparseDigests is the digests of some blocks of a segment: those the
// deltas hold.
type sparseDigests struct {
	n   int
	idx []int32 // ascending
	d   []datamover.Digest
}

func (sp *sparseDigests) Blocks() int { return sp.n }

func (sp *sparseDigests) Digest(i int) (datamover.Digest, bool) {
	k, ok := slices.BinarySearch(sp.idx, int32(i))
	if !ok {
		return datamover.Digest{}, false
	}
	return sp.d[k], true
}

// newSparse makes the lookup of entries, oldest first (a later entry of a
// block replaces an earlier one), of the segment starting at block lo.
func newSparse(n int, es []entry, lo int64) *sparseDigests {
	slices.SortStableFunc(es, func(a, b entry) int { return cmp.Compare(a.block, b.block) })
	sp := &sparseDigests{n: n, idx: make([]int32, 0, len(es)), d: make([]datamover.Digest, 0, len(es))}
	for k, e := range es {
		if k+1 < len(es) && es[k+1].block == e.block {
			continue // a later delta has this block
		}
		sp.idx = append(sp.idx, int32(e.block-lo))
		sp.d = append(sp.d, e.d)
	}
	return sp
}

// forget drops the blocks of ranges (bytes of the disk; the segment
// starts at block lo).
func (sp *sparseDigests) forget(ranges []Range, lo int64, s *Store) {
	if len(ranges) == 0 {
		return
	}
	bs := int64(s.bs)
	keep := 0
	for k, i := range sp.idx {
		off := (lo + int64(i)) * bs
		j := sort.Search(len(ranges), func(j int) bool { return ranges[j][1] > off })
		if j < len(ranges) && ranges[j][0] < off+bs {
			continue
		}
		sp.idx[keep], sp.d[keep] = sp.idx[k], sp.d[k]
		keep++
	}
	sp.idx, sp.d = sp.idx[:keep], sp.d[:keep]
}

func nonce() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}
