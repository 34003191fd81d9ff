package datamover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"golang.org/x/sync/semaphore"

	"github.com/ferry-dr/ferry/sdk"
)

// Small reads: how many are in flight at once, and how large one is at
// most. Cold random reads take a fraction of a millisecond each, so a deep
// queue is what makes scattered changes fast.
const (
	SmallWorkers = 16
	SmallRead    = 256 << 10
)

// Defaults of Options.
const (
	DefaultBlockSize = 4 << 10
	DefaultReadSize  = 4 << 20
	// DefaultSegmentBlocks is how many blocks share one DigestStore segment.
	DefaultSegmentBlocks = 1 << 16
)

// Options tune the data path of one disk.
type Options struct {
	BlockSize int // comparison granularity, a power of two; DefaultBlockSize when 0
	ReadSize  int // largest single read; DefaultReadSize when 0
	// Workers is how many large reads (over SmallRead bytes) are read,
	// digested and framed in parallel. When 0: 2 without compression, and
	// two per core with it, so that every core compresses while a worker
	// waits on its read or on the sink (compression itself runs on at
	// most one worker per core); InFlight may admit fewer. Small reads,
	// the scattered extents change tracking names, are latency-bound: up
	// to SmallWorkers of them are in flight at once.
	Workers int
	Codec   Codec // payload compression
	// InFlight caps the bytes of the buffers of the chunks being read and
	// framed at once; DefaultInFlight when 0, and never less than one
	// chunk of ReadSize needs.
	InFlight int64
	// SegmentBlocks is how many blocks share one DigestStore segment;
	// DefaultSegmentBlocks when 0. Stored digests only fit the same value.
	SegmentBlocks int
}

func (o *Options) fill() error {
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.ReadSize == 0 {
		o.ReadSize = DefaultReadSize
	}
	if o.Workers <= 0 {
		o.Workers = 2
		if o.Codec != CodecNone {
			o.Workers = max(2, 2*runtime.GOMAXPROCS(0))
		}
	}
	if o.SegmentBlocks <= 0 {
		o.SegmentBlocks = DefaultSegmentBlocks
	}
	if o.BlockSize < 512 || o.BlockSize&(o.BlockSize-1) != 0 || o.BlockSize > maxFrameLength {
		return fmt.Errorf("block size %d: not a power of two between 512 and %d", o.BlockSize, maxFrameLength)
	}
	if o.ReadSize < o.BlockSize || o.ReadSize > maxFrameLength {
		o.ReadSize = max(o.BlockSize, min(o.ReadSize, maxFrameLength))
	}
	o.ReadSize = o.ReadSize / o.BlockSize * o.BlockSize
	return nil
}

// DigestStore keeps the digests of the blocks a replica disk holds, by
// segment of Options.SegmentBlocks blocks (the last may be shorter). The
// data mover works on a few segments at a time (a group): it takes them
// (names the blocks it is about to write), writes their blocks, makes the
// writes durable and puts the new digests of the blocks it handled, so
// that the store never describes more than the replica holds.
type DigestStore interface {
	// Take names the blocks of each segment about to be written: until
	// they are put, the store no longer describes them. It returns, in
	// order, what it holds of each segment's digests (nil: nothing).
	//
	// With wait (the mover reads whole segments and compares every block)
	// every entry is resolved when the call returns and describes every
	// block of a whole take. Without (change tracking named the blocks),
	// the store loads what it finds worth loading for the blocks named,
	// possibly in the background: the data mover compares the blocks whose
	// digests have arrived and sends the others.
	Take(ctx context.Context, takes []Take, wait bool) ([]*Pending, error)
	// Put records the new digests of the blocks handled, once they are
	// durable on the replica. The updates are not used after the call.
	Put(ctx context.Context, updates []Update) error
}

// Take is the blocks of one segment about to be written.
type Take struct {
	Seg int
	// Spans are byte ranges of the disk, whole blocks, sorted, merged and
	// inside the segment.
	Spans []sdk.Extent
}

// Update is the new digests of the blocks of one segment the data mover
// handled.
type Update struct {
	Seg int
	// Digests holds the digest of block i of the segment (counted from its
	// first block) at i, for every block Handled names.
	Digests []Digest
	// Handled has bit i%64 of word i/64 set for every block handled; nil
	// means every block of the segment was.
	Handled []uint64
}

// Has reports whether block i was handled.
func (u *Update) Has(i int) bool {
	return u.Handled == nil || u.Handled[i/64]&(1<<(i%64)) != 0
}

// Stored is what a store knows of one segment's digests.
type Stored interface {
	// Blocks is how many blocks the digests cover: past them the replica
	// reads as zeros (the disk grew since they were stored).
	Blocks() int
	// Digest returns the digest of block i (counted from the segment's
	// first block, i < Blocks) and whether it is known.
	Digest(i int) (Digest, bool)
}

// Dense is a segment's digests, every one known.
type Dense []Digest

func (d Dense) Blocks() int                 { return len(d) }
func (d Dense) Digest(i int) (Digest, bool) { return d[i], true }

// Pending is the stored digests of one segment, which may still be on
// their way from the store.
type Pending struct {
	done chan struct{}
	d    Stored
	err  error
}

// NewPending returns digests to be resolved later with Resolve.
func NewPending() *Pending { return &Pending{done: make(chan struct{})} }

// Known returns digests that are already there; nil d means unknown.
func Known(d Stored) *Pending {
	p := NewPending()
	p.Resolve(d, nil)
	return p
}

// Resolve gives the digests (nil: unknown) or the error that kept them
// from being read. It is called once.
func (p *Pending) Resolve(d Stored, err error) {
	p.d, p.err = d, err
	close(p.done)
}

// Wait waits for the digests; nil means unknown.
func (p *Pending) Wait(ctx context.Context) (Stored, error) {
	select {
	case <-p.done:
		return p.d, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Ready reports whether the digests (or the error) are there.
func (p *Pending) Ready() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// poll returns the digests if they are there, and whether they are.
func (p *Pending) poll() (Stored, bool) {
	select {
	case <-p.done:
		return p.d, p.err == nil
	default:
		return nil, false
	}
}

// A group is the segments whose digests are taken and put together: at
// most GroupSegments of them, with at most GroupBytes of disk to handle
// (unless one segment alone has more). A run killed half-way leaves at most
// one group's segments unknown, to be recomputed from the replica.
const (
	GroupSegments = 8
	GroupBytes    = 1 << 30
)

// Sink takes frames to the target data mover. Send may be called from
// several goroutines at once and must be done with frame when it returns.
type Sink interface {
	Send(ctx context.Context, frame []byte) error
}

// Request is the work on one disk.
type Request struct {
	Source sdk.DiskReader
	// Size is the source disk's size; the replica disk must be at least as
	// large.
	Size int64
	// Changed lists what may have changed since the replica's digests (from
	// change tracking); nil means anything may have.
	Changed []sdk.Extent
	// Allocated lists the areas that hold data; the rest reads as zeros and
	// is not read. Nil means everything is read.
	Allocated []sdk.Extent
	// Digests holds the replica's digests and receives the new ones; nil
	// means none are known and none are kept.
	Digests DigestStore
	// TargetZero says the replica's disk holds zeros wherever its digests
	// are unknown (it was created empty in this run).
	TargetZero bool
	Sink       Sink
	// Sync, when set, makes what the sink wrote so far durable. Move calls
	// it before it stores the digests of a segment, so that stored digests
	// never describe writes a crash of the target could lose.
	Sync func(ctx context.Context) error
	// SyncLast, when set, is called instead of Sync for the disk's last
	// writes, once nothing is left to send: a sink across a network
	// closes the disk in the same round trip. A move whose last segments
	// needed no writes does not call it.
	SyncLast func(ctx context.Context) error
	// Progress, when set, is called with the bytes of the disk handled so
	// far, from any goroutine.
	Progress func(done int64)
	// Prepare, when set, is told the ranges the sink is about to write,
	// a few segments at a time, ahead of their reads (while the segments
	// before are moved): a replica writer that keeps restore points of a
	// file the mover writes itself saves what they need of those ranges
	// (sdk.WritePreparer). Only runs with change tracking call it: they
	// know their ranges, and they are few; a run that reads everything
	// lets the writer gather its writes instead.
	Prepare func(ctx context.Context, ranges []sdk.Extent) error
}

// Stats count what moving one disk took.
type Stats struct {
	BytesRead     int64 // read from the source
	BytesSent     int64 // framed bytes handed to the sink
	BytesChanged  int64 // disk bytes that differed from the replica (data and zeros)
	BlocksChanged int64
	BlocksTotal   int64 // blocks considered
	// Elapsed is how long Move took; ReadBusy, CPUBusy and SendBusy how
	// long it was reading the source, digesting, comparing and framing,
	// and handing frames to the sink (see Busy).
	Elapsed, ReadBusy, CPUBusy, SendBusy time.Duration
}

type counters struct {
	read, sent, changed, blocksChanged, blocksTotal, done atomic.Int64
}

// Move sends to req.Sink every block of the source disk that differs from
// the replica, and records the new digests. It reads, digests and frames
// with opts.Workers goroutines. On error the replica may hold part of the
// new data and the store part of the new digests, each consistent with the
// other segment by segment.
func Move(ctx context.Context, req Request, opts Options) (Stats, error) {
	if err := opts.fill(); err != nil {
		return Stats{}, err
	}
	if req.Size < 0 || req.Source == nil || req.Sink == nil {
		return Stats{}, fmt.Errorf("move: a source, a sink and a size are required")
	}
	bs := int64(opts.BlockSize)
	all := []span{{0, req.Size}}
	consider := all
	if req.Changed != nil {
		consider = normalize(req.Changed, bs, req.Size)
	}
	readable := all
	if req.Allocated != nil {
		readable = normalize(req.Allocated, bs, req.Size)
	}
	m := &mover{req: req, opts: opts, bs: bs, zeroDigest: digestOf(make([]byte, bs)), start: time.Now()}
	if opts.Codec == CodecNone {
		// The target data mover in this process takes the data runs from
		// the read buffers as they are (see Receiver.WriteData).
		m.recv, _ = req.Sink.(*Receiver)
	}
	m.initBuffers()
	segBytes := bs * int64(opts.SegmentBlocks)
	var groups [][]segmentWork
	var group []segmentWork
	var groupBytes int64
	for seg, lo := 0, int64(0); lo < req.Size; seg, lo = seg+1, lo+segBytes {
		hi := min(lo+segBytes, req.Size)
		todo := clip(consider, lo, hi)
		if len(todo) == 0 {
			continue
		}
		n := spanBytes(todo)
		// A run that reads everything waits for a group's digests before
		// it reads the group: its first group is one segment, so that
		// reading starts once that one is loaded.
		limit := GroupSegments
		if len(groups) == 0 && req.Changed == nil && req.Digests != nil {
			limit = 1
		}
		if len(group) > 0 && (len(group) >= limit || groupBytes+n > GroupBytes) {
			groups, group, groupBytes = append(groups, group), nil, 0
		}
		group = append(group, segmentWork{seg: seg, lo: lo, hi: hi, todo: todo, read: intersect(todo, readable)})
		groupBytes += n
	}
	if len(group) > 0 {
		groups = append(groups, group)
	}
	if req.Prepare != nil && req.Changed != nil {
		stop := m.prepareAhead(ctx, groups)
		defer stop()
	}

	// A group's writes are made durable and its digests put while the
	// next group is read: finishing waits on storage, reading need not.
	// One group finishes at a time, in order. The next group is taken
	// while this one is read: taking waits on the store.
	var finishing chan error
	wait := func() error {
		if finishing == nil {
			return nil
		}
		err := <-finishing
		finishing = nil
		return err
	}
	defer wait()
	type taken struct {
		prevs []*Pending
		err   error
	}
	take := func(g []segmentWork) chan taken {
		ch := make(chan taken, 1)
		go func() {
			prevs, err := m.take(ctx, g)
			ch <- taken{prevs, err}
		}()
		return ch
	}
	var next chan taken // the take under way, if any
	defer func() {
		if next != nil {
			<-next // a failed move leaves no call to the store behind it
		}
	}()
	if len(groups) > 0 {
		next = take(groups[0])
	}
	for k, g := range groups {
		t := <-next
		next = nil
		if k+1 < len(groups) && t.err == nil {
			next = take(groups[k+1])
		}
		var updates []Update
		err := t.err
		if err == nil {
			updates, err = m.moveGroup(ctx, g, t.prevs)
		}
		// The disk's last Sync (SyncLast: across a network) goes out
		// while the previous group's is still unanswered, rather than a
		// round trip of the link after it; its digests are stored after
		// that group's (see finishGroup).
		var prev chan error
		if k == len(groups)-1 && m.req.SyncLast != nil && err == nil && len(updates) > 0 {
			prev, finishing = finishing, nil
		} else if werr := wait(); err == nil {
			err = werr
		}
		if err != nil {
			return m.stats(), err
		}
		if len(updates) == 0 {
			continue
		}
		first, last := g[0].seg, g[len(g)-1].seg
		sync := m.req.Sync
		if k == len(groups)-1 && m.req.SyncLast != nil {
			sync = m.req.SyncLast
		}
		done := make(chan error, 1)
		go func() { done <- m.finishGroup(ctx, first, last, updates, sync, prev) }()
		finishing = done
	}
	return m.stats(), wait()
}

// segmentWork is what to do in one segment ([lo, hi)): the blocks of todo,
// reading those in read and taking the rest as zeros.
type segmentWork struct {
	seg        int
	lo, hi     int64
	todo, read []span
	// prepared, when set, yields once the sink's writer prepared todo
	// (nil: the segment's writes need no preparing).
	prepared chan error
}

// whole reports whether the whole segment is to be handled.
func (w segmentWork) whole() bool { return len(w.todo) == 1 && w.todo[0] == span{w.lo, w.hi} }

func spanBytes(spans []span) int64 {
	var n int64
	for _, s := range spans {
		n += s.end - s.start
	}
	return n
}

// take takes the digests of a group of segments from the store.
func (m *mover) take(ctx context.Context, g []segmentWork) ([]*Pending, error) {
	if m.req.Digests == nil {
		return make([]*Pending, len(g)), nil
	}
	takes := make([]Take, len(g))
	for k, w := range g {
		takes[k] = Take{Seg: w.seg, Spans: extents(w.todo)}
	}
	prevs, err := m.req.Digests.Take(ctx, takes, m.req.Changed == nil)
	if err != nil {
		return nil, fmt.Errorf("digests of segments %d-%d: %w", g[0].seg, g[len(g)-1].seg, err)
	}
	if len(prevs) != len(g) {
		return nil, fmt.Errorf("digests of segments %d-%d: %d answers for %d segments", g[0].seg, g[len(g)-1].seg, len(prevs), len(g))
	}
	return prevs, nil
}

// moveGroup moves the blocks of a group of segments whose stored digests
// are prevs. It returns the new digests of the blocks handled.
//
// Reading change-tracking extents, the data mover does not wait for
// stored digests to arrive: what it reads before they do is sent without
// comparison (change tracking named it, so it most likely changed), and
// the rest is compared. Reading everything, it waits: comparing is what
// keeps that from sending the whole disk.
func (m *mover) moveGroup(ctx context.Context, g []segmentWork, prevs []*Pending) ([]Update, error) {
	next := make([]Update, 0, len(g))
	for k, w := range g {
		u, err := m.segment(ctx, w, prevs[k])
		if err != nil {
			return nil, err
		}
		next = append(next, u)
	}
	if m.req.Digests == nil {
		return nil, nil
	}
	return next, nil
}

// finishGroup makes the writes so far durable with sync, then stores the
// new digests of segments first..last.
//
// prev, when not nil, yields the outcome of the previous group's
// finishGroup, which may still be under way: the digests are stored only
// once it succeeded, so that they are stored in the order of the groups
// and never ahead of a group that failed.
func (m *mover) finishGroup(ctx context.Context, first, last int, next []Update, sync func(context.Context) error, prev chan error) error {
	var serr error
	if sync != nil {
		serr = sync(ctx)
	}
	if prev != nil {
		if err := <-prev; err != nil {
			return err
		}
	}
	if serr != nil {
		return fmt.Errorf("make the writes of segments %d-%d durable: %w", first, last, serr)
	}
	err := m.req.Digests.Put(ctx, next)
	for _, u := range next {
		m.digestPool.Put(&u.Digests) // the store is done with them
	}
	if err != nil {
		return fmt.Errorf("digests of segments %d-%d: %w", first, last, err)
	}
	return nil
}

// digests returns room for the new digests of a segment of n blocks,
// reused from an earlier segment when there is one: a segment's digests
// are as large as a MiB, and fresh memory costs page faults.
func (m *mover) digests(n int) []Digest {
	if p, ok := m.digestPool.Get().(*[]Digest); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]Digest, n, m.opts.SegmentBlocks)
}

type mover struct {
	digestPool sync.Pool // of *[]Digest, SegmentBlocks long
	req        Request
	opts       Options
	bs         int64
	zeroDigest Digest
	c          counters
	start      time.Time
	// read, cpu and send are how busy each stage is.
	read, cpu, send Busy
	// inFlight caps the bytes of the buffers the chunks being read and
	// framed hold (their data and their frames), whatever the disk size.
	inFlight *semaphore.Weighted
	// large admits Workers large chunks (over SmallRead bytes) at once;
	// up to SmallWorkers small ones go beside them.
	large chan struct{}
	// recv, when set, is the sink: the target data mover of this process,
	// which takes uncompressed data runs without frames.
	recv *Receiver
}

// DefaultInFlight is how many bytes of chunk buffers one Move holds at
// most by default: its reads and their frames.
const DefaultInFlight = 32 << 20

func (m *mover) initBuffers() {
	m.large = make(chan struct{}, m.opts.Workers)
	// One chunk of the largest size must always fit.
	limit := m.opts.InFlight
	if limit <= 0 {
		limit = DefaultInFlight
	}
	m.inFlight = semaphore.NewWeighted(max(limit, int64(chunkBytes(m.opts.ReadSize, int(m.bs), m.opts.Codec))))
}

// chunkBytes is what a chunk of n bytes holds in flight: its data and room
// for its frames.
func chunkBytes(n, bs int, codec Codec) int {
	return n + frameRoom(n, bs, codec)
}

// frameRoom is the frame buffer that fits every frame of a chunk of n
// bytes (headers are not summed: a chunk's frames are sent one at a
// time, and a compressed frame covers at most frameSpan bytes).
func frameRoom(n, bs int, codec Codec) int {
	if span := frameSpan(codec, bs); span > 0 {
		n = min(n, span)
	}
	payload := n
	switch codec {
	case CodecS2:
		payload = max(s2.MaxEncodedLen(n), n)
	case CodecZstd:
		payload = n + n>>7 + 1<<10 // zstd's worst case on data that does not compress
	}
	return frameHeaderSize + (n+bs-1)/bs*digestSize + payload
}

func (m *mover) stats() Stats {
	return Stats{BytesRead: m.c.read.Load(), BytesSent: m.c.sent.Load(), BytesChanged: m.c.changed.Load(),
		BlocksChanged: m.c.blocksChanged.Load(), BlocksTotal: m.c.blocksTotal.Load(),
		Elapsed: time.Since(m.start), ReadBusy: m.read.Total(), CPUBusy: m.cpu.Total(), SendBusy: m.send.Total()}
}

// PrepareFirst is how many bytes of writes the first Prepare call covers
// at least (whole segments; all of them when the change is smaller).
// Each call makes what it saves durable, a few milliseconds whatever its
// size: a small change is prepared in one call, not in several growing
// ones whose fixed costs would make most of the run.
const PrepareFirst = 8 << 20

// prepareAhead has the sink's writer prepare the segments' ranges, in
// order and ahead of their reads: first the segments holding
// PrepareFirst bytes of writes, then calls of twice as many segments as
// the call before, so that the first segment waits for one small call,
// and the calls grow while the reads behind them keep them busy. Each
// segment's prepared channel yields the outcome. The returned function
// stops preparing and waits for the call under way.
func (m *mover) prepareAhead(ctx context.Context, groups [][]segmentWork) (stop func()) {
	var all []*segmentWork
	for _, g := range groups {
		for i := range g {
			g[i].prepared = make(chan error, 1)
			all = append(all, &g[i])
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		first := 0
		for b := int64(0); first < len(all) && (first == 0 || b < PrepareFirst); first++ {
			b += spanBytes(all[first].todo)
		}
		for i, n := 0, first; i < len(all); n *= 2 {
			j := min(i+n, len(all))
			if err == nil {
				var ranges []sdk.Extent
				for _, w := range all[i:j] {
					ranges = append(ranges, extents(w.todo)...)
				}
				if err = m.req.Prepare(ctx, ranges); err != nil {
					err = fmt.Errorf("prepare the replica's writes of segments %d-%d: %w", all[i].seg, all[j-1].seg, err)
				}
			}
			for _, w := range all[i:j] {
				w.prepared <- err
			}
			i = j
		}
	}()
	return func() { cancel(); <-done }
}

// segment moves the blocks of one segment whose replica digests are prev
// (nil: unknown) and returns the new digests of the blocks it handled.
func (m *mover) segment(ctx context.Context, w segmentWork, prev *Pending) (Update, error) {
	if w.prepared != nil {
		select {
		case err := <-w.prepared:
			if err != nil {
				return Update{}, err
			}
		case <-ctx.Done():
			return Update{}, ctx.Err()
		}
	}
	n := int((w.hi - w.lo + m.bs - 1) / m.bs)
	st := &segmentState{lo: w.lo, hi: w.hi, blocks: n, prev: prev, next: m.digests(n)}
	whole := w.whole()
	if !whole {
		st.touched = make([]atomic.Uint64, (n+63)/64)
	}
	// Zero parts need no reading: frame them right here.
	for _, z := range subtract(w.todo, w.read) {
		if err := m.zeros(ctx, st, z); err != nil {
			return Update{}, err
		}
		m.handled(z.end - z.start)
	}
	if err := m.readAll(ctx, st, w.read); err != nil {
		return Update{}, err
	}
	u := Update{Seg: w.seg, Digests: st.next}
	if !whole {
		u.Handled = make([]uint64, len(st.touched))
		for i := range st.touched {
			u.Handled[i] = st.touched[i].Load()
		}
	}
	return u, nil
}

// segmentState is one segment's digests, before and after.
type segmentState struct {
	lo, hi int64
	blocks int
	prev   *Pending // nil: unknown
	next   []Digest
	// touched has a bit per block whose next digest was set; nil when the
	// whole segment is handled.
	touched []atomic.Uint64
	// stored is the stored digests once they arrived; nil until then.
	stored atomic.Pointer[storedRef]
}

type storedRef struct{ d Stored }

// set records the new digest of block i.
func (s *segmentState) set(i int, d Digest) {
	s.next[i] = d // each block belongs to one chunk: no race
	if s.touched != nil {
		s.touched[i/64].Or(1 << (i % 64))
	}
}

// changed reports whether block i of the segment, with digest d, differs
// from what the replica holds; a block whose stored digest is unknown, or
// has not arrived yet, counts as changed.
func (m *mover) changed(s *segmentState, i int, d Digest, zero bool) bool {
	if s.prev == nil {
		return !(zero && m.req.TargetZero)
	}
	ref := s.stored.Load()
	if ref == nil {
		got, ok := s.prev.poll()
		if !ok {
			return true
		}
		ref = &storedRef{got}
		s.stored.Store(ref)
	}
	if ref.d == nil || ref.d.Blocks() > s.blocks {
		return true // unknown, or not this disk's (disks never shrink)
	}
	if i >= ref.d.Blocks() {
		// The disk grew since: the replica reads as zeros there.
		return d != m.zeroDigestAt(s.lo+int64(i)*m.bs, s.hi)
	}
	old, known := ref.d.Digest(i)
	return !known || old != d
}

// zeros handles a span that reads as zeros without reading it.
func (m *mover) zeros(ctx context.Context, s *segmentState, z span) error {
	var buf []byte
	runStart, runEnd := int64(-1), int64(-1)
	flush := func() error {
		if runStart < 0 {
			return nil
		}
		buf = appendZeroFrame(buf[:0], runStart, int(runEnd-runStart), int(m.bs))
		m.c.sent.Add(int64(len(buf)))
		m.c.changed.Add(runEnd - runStart)
		runStart = -1
		m.send.Start()
		defer m.send.Stop()
		return m.req.Sink.Send(ctx, buf)
	}
	for off := z.start; off < z.end; off += m.bs {
		end := min(off+m.bs, z.end)
		i := int((off - s.lo) / m.bs)
		d := m.zeroDigestAt(off, z.end)
		s.set(i, d)
		m.c.blocksTotal.Add(1)
		if !m.changed(s, i, d, true) {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		m.c.blocksChanged.Add(1)
		if runStart < 0 {
			runStart = off
		} else if end-runStart > maxFrameLength {
			if err := flush(); err != nil {
				return err
			}
			runStart = off
		}
		runEnd = end
	}
	return flush()
}

// handled reports n more bytes of the disk handled.
func (m *mover) handled(n int64) {
	done := m.c.done.Add(n)
	if m.req.Progress != nil {
		m.req.Progress(done)
	}
}

// zeroDigestAt is the digest of a zero block at off in a range ending at
// end (the last block of a disk may be short).
func (m *mover) zeroDigestAt(off, end int64) Digest {
	if end-off >= m.bs {
		return m.zeroDigest
	}
	return digestOf(make([]byte, end-off))
}

// readAll reads the spans in chunks of at most ReadSize: small chunks up
// to SmallWorkers at once, large ones up to Workers at once.
func (m *mover) readAll(ctx context.Context, s *segmentState, spans []span) error {
	chunks := make(chan span)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	fail := func(err error) {
		once.Do(func() { firstErr = err; cancel() })
	}
	for range SmallWorkers + m.opts.Workers {
		wg.Go(func() {
			for c := range chunks {
				if err := m.buffered(ctx, s, c); err != nil {
					fail(err)
				}
			}
		})
	}
	rs := int64(m.opts.ReadSize)
feed:
	for _, sp := range spans {
		for off := sp.start; off < sp.end; off += rs {
			select {
			case chunks <- span{off, min(off+rs, sp.end)}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(chunks)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// buffered moves one chunk in buffers sized to it, taken from the pool
// once its bytes fit under the in-flight cap (and, for a large chunk, a
// large slot is free), and given back when its frames are sent.
func (m *mover) buffered(ctx context.Context, s *segmentState, c span) error {
	n := int(c.end - c.start)
	if n > SmallRead {
		select {
		case m.large <- struct{}{}:
			defer func() { <-m.large }()
		case <-ctx.Done():
			return nil // readAll reports the cause
		}
	}
	room := frameRoom(n, int(m.bs), m.opts.Codec)
	if m.recv != nil {
		room = frameHeaderSize // zero frames alone
	}
	if err := m.inFlight.Acquire(ctx, int64(n+room)); err != nil {
		return nil
	}
	defer m.inFlight.Release(int64(n + room))
	data, frame := buffers.get(n), buffers.get(room)
	var err error
	*frame, err = m.chunk(ctx, s, c, *data, (*frame)[:0])
	// The sink is done with the frames when Send returns.
	buffers.put(data)
	buffers.put(frame)
	return err
}

var zeroBlock = make([]byte, 1<<20)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// chunk reads one chunk, digests its blocks and frames the runs of changed
// blocks: zero runs as zero frames, data runs as data frames.
func (m *mover) chunk(ctx context.Context, s *segmentState, c span, buf, frameBuf []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return frameBuf, err
	}
	data := buf[:c.end-c.start] // buf holds at least that much
	m.read.Start()
	n, err := m.req.Source.ReadAt(data, c.start)
	m.read.Stop()
	m.c.read.Add(int64(n))
	defer m.handled(int64(len(data)))
	if n < len(data) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return frameBuf, fmt.Errorf("read at %d: %w", c.start, err)
	}
	m.cpu.Start()
	defer m.cpu.Stop()
	type run struct {
		start, end int // byte offsets in data
		zero       bool
	}
	var runs []run
	var digests []Digest
	var blocks, changedBlocks, changedBytes int64 // counted here, added once
	for pos := 0; pos < len(data); pos += int(m.bs) {
		end := min(pos+int(m.bs), len(data))
		block := data[pos:end]
		zero := isZero(block)
		var d Digest
		if zero && end-pos == int(m.bs) {
			d = m.zeroDigest
		} else {
			d = digestOf(block)
		}
		i := int((c.start + int64(pos) - s.lo) / m.bs)
		s.set(i, d)
		blocks++
		if !m.changed(s, i, d, zero) {
			continue
		}
		changedBlocks++
		changedBytes += int64(end - pos)
		if k := len(runs); k > 0 && runs[k-1].end == pos && runs[k-1].zero == zero {
			runs[k-1].end = end
		} else {
			runs = append(runs, run{pos, end, zero})
		}
		if !zero {
			digests = append(digests, d)
		}
	}
	m.c.blocksTotal.Add(blocks)
	m.c.blocksChanged.Add(changedBlocks)
	m.c.changed.Add(changedBytes)
	// handOff counts n bytes sent and times give as sending, not as CPU.
	handOff := func(n int, give func() error) error {
		m.c.sent.Add(int64(n))
		m.cpu.Stop()
		m.send.Start()
		err := give()
		m.send.Stop()
		m.cpu.Start()
		return err
	}
	send := func(frame []byte) error {
		return handOff(len(frame), func() error { return m.req.Sink.Send(ctx, frame) })
	}
	bs := int(m.bs)
	span := frameSpan(m.opts.Codec, bs)
	di := 0
	for _, r := range runs {
		off := c.start + int64(r.start)
		if r.zero {
			frameBuf = appendZeroFrame(frameBuf[:0], off, r.end-r.start, bs)
			if err := send(frameBuf); err != nil {
				return frameBuf, err
			}
			continue
		}
		if m.recv != nil {
			// Counted as the frame it would have been.
			nb := (r.end - r.start + bs - 1) / bs
			di += nb
			run := data[r.start:r.end]
			if err := handOff(frameHeaderSize+nb*digestSize+len(run), func() error { return m.recv.WriteData(ctx, off, run) }); err != nil {
				return frameBuf, err
			}
			continue
		}
		for start := r.start; start < r.end; {
			end := r.end
			if span > 0 {
				end = min(end, start+span)
			}
			nb := (end - start + bs - 1) / bs
			frameBuf = appendFrame(frameBuf[:0], m.opts.Codec, c.start+int64(start), bs, data[start:end], digests[di:di+nb])
			di += nb
			if err := send(frameBuf); err != nil {
				return frameBuf, err
			}
			start = end
		}
	}
	return frameBuf, nil
}

// DigestRange digests the blocks of [lo, hi) of r, to rebuild digests that
// were lost from the disk itself.
func DigestRange(r io.ReaderAt, lo, hi int64, blockSize int) ([]Digest, error) {
	bs := int64(blockSize)
	out := make([]Digest, 0, (hi-lo+bs-1)/bs)
	buf := make([]byte, min(DefaultReadSize, hi-lo))
	for off := lo; off < hi; {
		n := min(int64(len(buf)), hi-off)
		k, err := r.ReadAt(buf[:n], off)
		if int64(k) < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read at %d: %w", off, err)
		}
		for pos := int64(0); pos < n; pos += bs {
			out = append(out, digestOf(buf[pos:min(pos+bs, n)]))
		}
		off += n
	}
	return out, nil
}
