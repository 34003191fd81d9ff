package datamover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/ferry-dr/ferry/sdk"
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
	BlockSize int   // comparison granularity, a power of two; DefaultBlockSize when 0
	ReadSize  int   // largest single read; DefaultReadSize when 0
	Workers   int   // blocks read, digested and framed in parallel; 2 when 0
	Codec     Codec // payload compression
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

// DigestStore keeps the digests of the blocks a replica disk holds, one
// segment of Options.SegmentBlocks blocks at a time (the last may be
// shorter).
type DigestStore interface {
	// Segment returns the digests of segment i, or nil when they are not
	// known. Fewer digests than the segment has blocks means the disk grew
	// since they were stored: the replica reads as zeros past them.
	Segment(ctx context.Context, i int) ([]Digest, error)
	// PutSegment records the digests of segment i after its blocks reached
	// the sink. The slice is not used after the call returns.
	PutSegment(ctx context.Context, i int, digests []Digest) error
}

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
	// Progress, when set, is called with the bytes of the disk handled so
	// far, from any goroutine.
	Progress func(done int64)
}

// Stats count what moving one disk took.
type Stats struct {
	BytesRead     int64 // read from the source
	BytesSent     int64 // framed bytes handed to the sink
	BytesChanged  int64 // disk bytes that differed from the replica (data and zeros)
	BlocksChanged int64
	BlocksTotal   int64 // blocks considered
	// Incomplete says some segment's digests stayed unknown (change
	// tracking named parts of a segment whose digests were not known), so
	// the store does not describe the whole disk.
	Incomplete bool
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
	m := &mover{req: req, opts: opts, bs: bs, zeroDigest: digestOf(make([]byte, bs))}
	segBytes := bs * int64(opts.SegmentBlocks)
	var stats Stats
	for seg, lo := 0, int64(0); lo < req.Size; seg, lo = seg+1, lo+segBytes {
		hi := min(lo+segBytes, req.Size)
		todo := clip(consider, lo, hi)
		if len(todo) == 0 {
			continue
		}
		complete, err := m.segment(ctx, seg, lo, hi, todo, intersect(todo, readable))
		if err != nil {
			return m.stats(stats), err
		}
		if !complete {
			stats.Incomplete = true
		}
	}
	return m.stats(stats), nil
}

type mover struct {
	req        Request
	opts       Options
	bs         int64
	zeroDigest Digest
	c          counters
}

func (m *mover) stats(s Stats) Stats {
	s.BytesRead = m.c.read.Load()
	s.BytesSent = m.c.sent.Load()
	s.BytesChanged = m.c.changed.Load()
	s.BlocksChanged = m.c.blocksChanged.Load()
	s.BlocksTotal = m.c.blocksTotal.Load()
	return s
}

// segment moves the blocks of todo within segment seg ([lo, hi)), reading
// those in read and taking the rest as zeros. It reports whether the
// segment's digests are complete and were stored.
func (m *mover) segment(ctx context.Context, seg int, lo, hi int64, todo, read []span) (bool, error) {
	n := int((hi - lo + m.bs - 1) / m.bs)
	var prev []Digest
	if m.req.Digests != nil {
		var err error
		if prev, err = m.req.Digests.Segment(ctx, seg); err != nil {
			return false, fmt.Errorf("digests of segment %d: %w", seg, err)
		}
		if len(prev) > n {
			return false, fmt.Errorf("digests of segment %d: %d blocks, want %d (disks never shrink)", seg, len(prev), n)
		}
		if prev != nil && len(prev) < n {
			// The disk grew since: the grown replica reads as zeros there.
			for i := len(prev); i < n; i++ {
				prev = append(prev, m.zeroDigestAt(lo+int64(i)*m.bs, hi))
			}
		}
	}
	whole := len(todo) == 1 && todo[0] == span{lo, hi}
	next := make([]Digest, n)
	copy(next, prev)
	known := prev != nil || whole

	cmp := &segmentState{lo: lo, prev: prev, next: next}
	// Zero parts need no reading: frame them right here.
	for _, z := range subtract(todo, read) {
		if err := m.zeros(ctx, cmp, z); err != nil {
			return false, err
		}
		m.handled(z.end - z.start)
	}
	if err := m.readAll(ctx, cmp, read); err != nil {
		return false, err
	}
	if m.req.Digests == nil || !known {
		return known, nil
	}
	if m.req.Sync != nil {
		if err := m.req.Sync(ctx); err != nil {
			return false, fmt.Errorf("make the writes of segment %d durable: %w", seg, err)
		}
	}
	if err := m.req.Digests.PutSegment(ctx, seg, next); err != nil {
		return false, fmt.Errorf("digests of segment %d: %w", seg, err)
	}
	return true, nil
}

// segmentState is one segment's digests, before and after.
type segmentState struct {
	lo   int64
	prev []Digest // nil: unknown
	next []Digest
}

// changed reports whether block i of the segment, with digest d, differs
// from what the replica holds.
func (m *mover) changed(s *segmentState, i int, d Digest, zero bool) bool {
	if s.prev == nil {
		return !(zero && m.req.TargetZero)
	}
	return s.prev[i] != d
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
		return m.req.Sink.Send(ctx, buf)
	}
	for off := z.start; off < z.end; off += m.bs {
		end := min(off+m.bs, z.end)
		i := int((off - s.lo) / m.bs)
		d := m.zeroDigestAt(off, z.end)
		s.next[i] = d
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

// readAll reads the spans in chunks of at most ReadSize with Workers
// goroutines.
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
	for w := 0; w < m.opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, m.opts.ReadSize)
			var frameBuf []byte
			for c := range chunks {
				var err error
				frameBuf, err = m.chunk(ctx, s, c, buf, frameBuf)
				if err != nil {
					fail(err)
				}
			}
		}()
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
	data := buf[:c.end-c.start]
	n, err := m.req.Source.ReadAt(data, c.start)
	m.c.read.Add(int64(n))
	defer m.handled(int64(len(data)))
	if n < len(data) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return frameBuf, fmt.Errorf("read at %d: %w", c.start, err)
	}
	type run struct {
		start, end int // byte offsets in data
		zero       bool
	}
	var runs []run
	var digests []Digest
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
		s.next[i] = d // each block belongs to one chunk: no race
		m.c.blocksTotal.Add(1)
		if !m.changed(s, i, d, zero) {
			continue
		}
		m.c.blocksChanged.Add(1)
		m.c.changed.Add(int64(end - pos))
		if k := len(runs); k > 0 && runs[k-1].end == pos && runs[k-1].zero == zero {
			runs[k-1].end = end
		} else {
			runs = append(runs, run{pos, end, zero})
		}
		if !zero {
			digests = append(digests, d)
		}
	}
	di := 0
	for _, r := range runs {
		off := c.start + int64(r.start)
		if r.zero {
			frameBuf = appendZeroFrame(frameBuf[:0], off, r.end-r.start, int(m.bs))
		} else {
			nb := (r.end - r.start + int(m.bs) - 1) / int(m.bs)
			frameBuf = appendFrame(frameBuf[:0], m.opts.Codec, off, int(m.bs), data[r.start:r.end], digests[di:di+nb])
			di += nb
		}
		m.c.sent.Add(int64(len(frameBuf)))
		if err := m.req.Sink.Send(ctx, frameBuf); err != nil {
			return frameBuf, err
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
