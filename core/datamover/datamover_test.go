package datamover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/ferry-dr/ferry/sdk"
)

// memDisk is an in-memory disk for both ends of the data path.
type memDisk struct {
	mu    sync.Mutex
	data  []byte
	reads int64
}

func (d *memDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads += int64(len(p))
	if off >= int64(len(d.data)) {
		return 0, io.EOF
	}
	n := copy(p, d.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d *memDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off+int64(len(p)) > int64(len(d.data)) {
		return 0, errors.New("write past the end")
	}
	return copy(d.data[off:], p), nil
}

func (d *memDisk) Size() int64  { return int64(len(d.data)) }
func (d *memDisk) Close() error { return nil }

// memDigests is an in-memory DigestStore holding every segment's digests
// whole: a partial update of a segment it does not know is dropped. With
// late set, stored digests are not there when Take returns without
// waiting: each arrives when its channel is closed (or right away when
// there is none).
type memDigests struct {
	mu   sync.Mutex
	segs map[int][]Digest
	late map[int]chan struct{}
	// lost makes segments resolve as unknown (damaged: they are dropped),
	// failed with an error.
	lost   map[int]bool
	failed map[int]error
}

func (m *memDigests) Take(ctx context.Context, takes []Take, wait bool) ([]*Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Pending, len(takes))
	for k, t := range takes {
		s, ok := m.segs[t.Seg]
		if !ok {
			continue
		}
		var d Stored = Dense(slices.Clone(s))
		var err error
		switch {
		case m.failed[t.Seg] != nil:
			d, err = nil, m.failed[t.Seg]
		case m.lost[t.Seg]:
			d = nil
			delete(m.segs, t.Seg)
		}
		arrive, late := m.late[t.Seg]
		if wait || !late {
			if err != nil {
				return nil, err
			}
			out[k] = Known(d)
			continue
		}
		p := NewPending()
		go func() {
			<-arrive
			p.Resolve(d, err)
		}()
		out[k] = p
	}
	return out, nil
}

func (m *memDigests) Put(ctx context.Context, us []Update) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.segs == nil {
		m.segs = map[int][]Digest{}
	}
	zero := digestOf(make([]byte, DefaultBlockSize))
	for _, u := range us {
		if u.Handled == nil {
			m.segs[u.Seg] = slices.Clone(u.Digests)
			continue
		}
		old, ok := m.segs[u.Seg]
		if !ok {
			continue // unknown: a partial update cannot describe it
		}
		for len(old) < len(u.Digests) {
			old = append(old, zero) // the disk grew: zeros there
		}
		for i := range u.Digests {
			if u.Has(i) {
				old[i] = u.Digests[i]
			}
		}
		m.segs[u.Seg] = old
	}
	return nil
}

// diskLike fills a disk with runs of zeros, text-like and random data.
func diskLike(r *rand.Rand, size int) []byte {
	b := make([]byte, size)
	for pos := 0; pos < size; {
		n := min(size-pos, 4096*(1+r.IntN(16)))
		switch r.IntN(10) {
		case 0, 1, 2: // zeros
		case 3, 4, 5, 6:
			for i := range n {
				b[pos+i] = "ferry replicates virtual machines\n"[(pos+i)%34]
			}
		default:
			for i := range n {
				b[pos+i] = byte(r.Uint32())
			}
		}
		pos += n
	}
	return b
}

// scatter writes random 4-64 KiB pieces over about pct percent of b and
// returns what it wrote.
func scatter(r *rand.Rand, b []byte, pct float64) []sdk.Extent {
	var out []sdk.Extent
	target := int(float64(len(b)) * pct / 100)
	for done := 0; done < target; {
		n := 4096 * (1 + r.IntN(16))
		off := r.IntN(len(b) - n)
		for i := range n {
			b[off+i] = byte(r.Uint32())
		}
		out = append(out, sdk.Extent{Offset: int64(off), Length: int64(n)})
		done += n
	}
	return out
}

func move(t *testing.T, req Request, opts Options) Stats {
	t.Helper()
	st, err := Move(context.Background(), req, opts)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func equalDisks(t *testing.T, got, want []byte) {
	t.Helper()
	if len(got) < len(want) {
		t.Fatalf("replica has %d bytes, source %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("replica differs from the source at byte %d", i)
		}
	}
}

// framedSink hides a Receiver's WriteData: what it is sent arrives in
// frames, as from another process.
type framedSink struct{ Sink }

func TestFullIncrementalAndChangeTracked(t *testing.T) {
	for _, c := range []struct {
		codec  Codec
		framed bool // CodecNone goes without frames to a Receiver, unless hidden
	}{{CodecNone, false}, {CodecNone, true}, {CodecS2, true}, {CodecZstd, true}} {
		codec := c.codec
		name := codec.String()
		if c.framed && codec == CodecNone {
			name += "-framed"
		}
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(codec)))
			const size = 24<<20 + 1000 // ends in a partial block
			src := &memDisk{data: diskLike(r, size)}
			dst := &memDisk{data: make([]byte, size)}
			store := &memDigests{}
			// Small segments, so the disk spans several.
			opts := Options{Codec: codec, SegmentBlocks: 1024}
			var recv Sink = NewReceiver(dst, size)
			if c.framed {
				recv = framedSink{recv}
			}

			// Full copy to a fresh replica: zeros are never sent.
			st := move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: recv}, opts)
			equalDisks(t, dst.data, src.data)
			nonZero := int64(0)
			for pos := 0; pos < size; pos += 4096 {
				if !isZero(src.data[pos:min(pos+4096, size)]) {
					nonZero += int64(min(4096, size-pos))
				}
			}
			if st.BytesChanged != nonZero {
				t.Fatalf("full copy changed %d bytes, want the %d non-zero ones; %+v", st.BytesChanged, nonZero, st)
			}

			// Scattered changes, found by digests alone.
			written := scatter(r, src.data, 1)
			st = move(t, Request{Source: src, Size: size, Digests: store, Sink: recv}, opts)
			equalDisks(t, dst.data, src.data)
			if st.BytesRead != size {
				t.Fatalf("digest path read %d bytes, want the whole disk", st.BytesRead)
			}
			if max := coveredBytes(written, 4096, size); st.BytesChanged > max {
				t.Fatalf("digest path sent %d changed bytes, the writes cover %d", st.BytesChanged, max)
			}

			// Scattered changes named by change tracking: only they are read.
			written = scatter(r, src.data, 1)
			src.reads = 0
			st = move(t, Request{Source: src, Size: size, Changed: written, Digests: store, Sink: recv}, opts)
			equalDisks(t, dst.data, src.data)
			if cover := coveredBytes(written, 4096, size); st.BytesRead != cover || src.reads != cover {
				t.Fatalf("change-tracked run read %d bytes (%d at the disk), want the %d the writes cover", st.BytesRead, src.reads, cover)
			}

			// The digests kept describe the replica: a run with nothing
			// changed sends nothing.
			st = move(t, Request{Source: src, Size: size, Digests: store, Sink: recv}, opts)
			if st.BlocksChanged != 0 || st.BytesSent != 0 {
				t.Fatalf("an unchanged disk sent %d bytes", st.BytesSent)
			}
		})
	}
}

func coveredBytes(es []sdk.Extent, bs, size int64) int64 { return CoveredBytes(es, int(bs), size) }

func TestZeroedBlocksAreCleared(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	const size = 4 << 20
	src := &memDisk{data: diskLike(r, size)}
	dst := &memDisk{data: make([]byte, size)}
	store := &memDigests{}
	recv := NewReceiver(dst, size)
	move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: recv}, Options{})
	// The guest discards a megabyte: it now reads as zeros and is no longer
	// allocated.
	clear(src.data[1<<20 : 2<<20])
	alloc := []sdk.Extent{{Offset: 0, Length: 1 << 20}, {Offset: 2 << 20, Length: 2 << 20}}
	st := move(t, Request{Source: src, Size: size, Allocated: alloc, Digests: store, Sink: recv}, Options{})
	equalDisks(t, dst.data, src.data)
	if st.BytesRead != 3<<20 {
		t.Fatalf("read %d bytes, want only the 3 MiB allocated", st.BytesRead)
	}
}

func TestDiskThatGrew(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	src := &memDisk{data: diskLike(r, 2<<20+512)}
	dst := &memDisk{data: make([]byte, len(src.data))}
	store := &memDigests{}
	move(t, Request{Source: src, Size: src.Size(), Digests: store, TargetZero: true, Sink: NewReceiver(dst, dst.Size())}, Options{})
	// Grow by 3 MiB of new data; the replica disk is grown to match.
	src.data = append(src.data, diskLike(r, 3<<20)...)
	dst.data = append(dst.data, make([]byte, 3<<20)...)
	st := move(t, Request{Source: src, Size: src.Size(), Digests: store, Sink: NewReceiver(dst, dst.Size())}, Options{})
	equalDisks(t, dst.data, src.data)
	// Only the new data and the old partial tail block count as changed.
	if want := int64(3<<20) + 4096; st.BytesChanged > want {
		t.Fatalf("growing sent %d changed bytes, want at most %d", st.BytesChanged, want)
	}
}

// TestLateDigests covers stored digests that arrive while the data mover
// reads. Change tracking does not wait for them: blocks read before they
// arrive are sent without comparison, the rest are compared, and the
// digests kept afterwards still describe the replica. Reading everything,
// the mover waits, so it sends only what changed.
func TestLateDigests(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	const size = 8 << 20
	src := &memDisk{data: diskLike(r, size)}
	dst := &memDisk{data: make([]byte, size)}
	store := &memDigests{}
	opts := Options{SegmentBlocks: 512} // 2 MiB segments: four
	move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: NewReceiver(dst, size)}, opts)

	// Change tracking names the first 64 KiB of every segment, of which
	// only 4 KiB changed. Segment 0's digests arrive only after the mover
	// has read all of segment 0; segment 1's arrive at once.
	var named []sdk.Extent
	for seg := int64(0); seg < 4; seg++ {
		off := seg * 2 << 20
		named = append(named, sdk.Extent{Offset: off, Length: 64 << 10})
		randomize(r, src.data[off:off+4096])
	}
	arrive := make(chan struct{})
	store.late = map[int]chan struct{}{0: arrive}
	// Segment 0's digests arrive once its first frame is sent, so after
	// its blocks were compared.
	sink := &firstSend{Sink: NewReceiver(dst, size), first: func() { close(arrive) }}
	st := move(t, Request{Source: src, Size: size, Changed: named, Digests: store, Sink: sink}, opts)
	equalDisks(t, dst.data, src.data)
	// Segment 0: 64 KiB sent without comparison; the others: 4 KiB each.
	if want := int64(64<<10 + 3*4096); st.BytesChanged != want {
		t.Fatalf("sent %d changed bytes, want %d (segment 0 whole, 4 KiB of the others)", st.BytesChanged, want)
	}
	// The kept digests describe the replica: nothing is sent next.
	store.late = nil
	if st := move(t, Request{Source: src, Size: size, Digests: store, Sink: NewReceiver(dst, size)}, opts); st.BytesSent != 0 {
		t.Fatalf("after late digests, an unchanged disk sent %d bytes", st.BytesSent)
	}

	// Reading everything, the mover waits for late digests.
	randomize(r, src.data[5<<20:5<<20+4096])
	arrive = make(chan struct{})
	store.late = map[int]chan struct{}{0: arrive, 2: arrive}
	go func() { time.Sleep(50 * time.Millisecond); close(arrive) }()
	st = move(t, Request{Source: src, Size: size, Digests: store, Sink: NewReceiver(dst, size)}, opts)
	equalDisks(t, dst.data, src.data)
	if st.BytesChanged != 4096 {
		t.Fatalf("digest path with late digests sent %d changed bytes, want 4096", st.BytesChanged)
	}
}

// TestLateDigestsLostOrFailed: stored digests that turn out damaged or
// fail to load leave their blocks uncompared (sent, never guessed equal);
// reading everything, a store that fails to read them fails the move.
func TestLateDigestsLostOrFailed(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 10))
	const size = 4 << 20
	src := &memDisk{data: diskLike(r, size)}
	dst := &memDisk{data: make([]byte, size)}
	store := &memDigests{}
	opts := Options{SegmentBlocks: 512}
	move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: NewReceiver(dst, size)}, opts)
	// Change tracking names 64 KiB in each segment, of which 4 KiB changed.
	named := []sdk.Extent{{Offset: 8192, Length: 64 << 10}, {Offset: 3 << 20, Length: 64 << 10}}
	for _, e := range named {
		randomize(r, src.data[e.Offset:e.Offset+4096])
	}
	never := make(chan struct{})
	close(never)
	store.late = map[int]chan struct{}{0: never, 1: never}
	store.lost = map[int]bool{1: true}
	store.failed = map[int]error{0: errors.New("repository unreachable")}
	st := move(t, Request{Source: src, Size: size, Changed: named, Digests: store, Sink: NewReceiver(dst, size)}, opts)
	equalDisks(t, dst.data, src.data)
	// Whatever arrived in time was compared; what did not is sent: never
	// fewer than the changed blocks, never more than the named ones.
	if st.BytesChanged < 2*4096 || st.BytesChanged > 2*64<<10 {
		t.Fatalf("sent %d changed bytes, want between 8 KiB and 128 KiB", st.BytesChanged)
	}

	store.lost = nil
	store.segs[1] = make([]Digest, 512) // something to take
	store.failed = map[int]error{1: errors.New("repository unreachable")}
	_, err := Move(context.Background(), Request{Source: src, Size: size, Digests: store, Sink: NewReceiver(dst, size)}, opts)
	if err == nil || !strings.Contains(err.Error(), "repository unreachable") {
		t.Fatalf("a store failing to read digests: %v", err)
	}
}

// randomize fills b with random bytes (never all zeros in practice).
func randomize(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// firstSend calls first before the first frame reaches the sink.
type firstSend struct {
	Sink
	once  sync.Once
	first func()
}

func (f *firstSend) Send(ctx context.Context, frame []byte) error {
	f.once.Do(f.first)
	return f.Sink.Send(ctx, frame)
}

// A change-tracked run hands the store the digests of exactly the blocks
// it handled, and whole segments when it read everything.
func TestUpdatesNameTheBlocksHandled(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	const size = 2 << 20
	src := &memDisk{data: diskLike(r, size)}
	dst := &memDisk{data: append([]byte(nil), src.data...)}
	written := scatter(r, src.data, 2)
	store := &recordDigests{}
	move(t, Request{Source: src, Size: size, Changed: written, Digests: store, Sink: NewReceiver(dst, size)}, Options{SegmentBlocks: 128})
	equalDisks(t, dst.data, src.data)
	want := map[int64]bool{}
	for _, e := range written {
		for b := e.Offset / 4096; b*4096 < e.End(); b++ {
			want[b] = true
		}
	}
	got := map[int64]bool{}
	for _, u := range store.updates {
		if u.Handled == nil {
			t.Fatalf("segment %d handled whole by a change-tracked run", u.Seg)
		}
		for i := range u.Digests {
			if !u.Has(i) {
				continue
			}
			b := int64(u.Seg)*128 + int64(i)
			got[b] = true
			if u.Digests[i] != digestOf(src.data[b*4096:(b+1)*4096]) {
				t.Fatalf("block %d: the digest put is not the block's", b)
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("updates name %d blocks, the writes %d", len(got), len(want))
	}
	store.updates = nil
	move(t, Request{Source: src, Size: size, Digests: store, Sink: NewReceiver(dst, size)}, Options{SegmentBlocks: 128})
	if len(store.updates) != 4 {
		t.Fatalf("a run reading everything put %d segments, want 4", len(store.updates))
	}
	for _, u := range store.updates {
		if u.Handled != nil || len(u.Digests) != 128 {
			t.Fatalf("segment %d: a run reading everything put part of it", u.Seg)
		}
	}
}

// recordDigests keeps the updates it is given and knows nothing.
type recordDigests struct {
	mu      sync.Mutex
	updates []Update
}

func (s *recordDigests) Take(ctx context.Context, takes []Take, wait bool) ([]*Pending, error) {
	return make([]*Pending, len(takes)), nil
}

func (s *recordDigests) Put(ctx context.Context, us []Update) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range us {
		u.Digests = slices.Clone(u.Digests)
		s.updates = append(s.updates, u)
	}
	return nil
}

// flipSink damages one byte of the payload of data frames on the way.
type flipSink struct{ next Sink }

func (f flipSink) Send(ctx context.Context, b []byte) error {
	c := append([]byte(nil), b...)
	if c[1] == kindData {
		c[len(c)-1] ^= 0x40
	}
	return f.next.Send(ctx, c)
}

func TestDamagedBlocksAreNeverWritten(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	const size = 1 << 20
	src := &memDisk{data: diskLike(r, size)}
	dst := &memDisk{data: make([]byte, size)}
	_, err := Move(context.Background(), Request{Source: src, Size: size, TargetZero: true, Sink: flipSink{NewReceiver(dst, size)}}, Options{Workers: 1})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Move over a damaging link = %v, want a corrupt frame", err)
	}
}

// failingReader fails after some bytes.
type failingReader struct {
	*memDisk
	after int64
}

func (f *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.after {
		return 0, fmt.Errorf("disk gone")
	}
	return f.memDisk.ReadAt(p, off)
}

func TestReadErrorStopsTheMove(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	const size = 16 << 20
	src := &failingReader{memDisk: &memDisk{data: diskLike(r, size)}, after: 8 << 20}
	dst := &memDisk{data: make([]byte, size)}
	_, err := Move(context.Background(), Request{Source: src, Size: size, TargetZero: true, Sink: NewReceiver(dst, size)}, Options{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk gone")) {
		t.Fatalf("Move = %v", err)
	}
}

func TestFrameRoundTripAndDamage(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	data := diskLike(r, 64<<10)
	var digests []Digest
	for pos := 0; pos < len(data); pos += 4096 {
		digests = append(digests, digestOf(data[pos:pos+4096]))
	}
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		b := appendFrame(nil, codec, 1<<30, 4096, data, digests)
		b = appendZeroFrame(b, 1<<31, 8192, 4096)
		f, n, err := parseFrame(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := f.decode(nil)
		if err != nil || !bytes.Equal(got, data) || f.offset != 1<<30 {
			t.Fatalf("%s: decode = %v", codec, err)
		}
		z, _, err := parseFrame(b[n:])
		if err != nil || z.kind != kindZero || z.length != 8192 {
			t.Fatalf("%s: zero frame = %+v, %v", codec, z, err)
		}
		for _, at := range []int{0, 5, 20, 30, n - 1} {
			bad := append([]byte(nil), b[:n]...)
			bad[at] ^= 1
			if f, _, err := parseFrame(bad); err == nil {
				if _, err := f.decode(nil); err == nil {
					t.Errorf("%s: a flipped byte at %d went unnoticed", codec, at)
				}
			}
		}
	}
}

// spanSink records the longest data frame it is sent, then hands the
// frames to a receiver.
type spanSink struct {
	*Receiver
	mu      sync.Mutex
	longest int
}

func (s *spanSink) Send(ctx context.Context, b []byte) error {
	for rest := b; len(rest) > 0; {
		f, n, err := parseFrame(rest)
		if err != nil {
			return err
		}
		if f.kind == kindData {
			s.mu.Lock()
			s.longest = max(s.longest, f.length)
			s.mu.Unlock()
		}
		rest = rest[n:]
	}
	return s.Receiver.Send(ctx, b)
}

func TestCompressedFramesAreShort(t *testing.T) {
	const size = 12 << 20
	data := bytes.Repeat([]byte("a run of data with no zero block in it\n"), size/39+1)[:size]
	tests := []struct {
		name      string
		codec     Codec
		blockSize int
		want      int // longest data frame
	}{
		{"none: a read", CodecNone, 4096, DefaultReadSize},
		{"s2", CodecS2, 4096, maxCodedSpan},
		{"zstd", CodecZstd, 4096, maxCodedSpan},
		{"zstd, blocks over the bound: one block", CodecZstd, 2 << 20, 2 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := &memDisk{data: make([]byte, size)}
			sink := &spanSink{Receiver: NewReceiver(dst, size)}
			move(t, Request{Source: &memDisk{data: data}, Size: size, Sink: sink}, Options{Codec: tt.codec, BlockSize: tt.blockSize})
			equalDisks(t, dst.data, data)
			if sink.longest != tt.want {
				t.Errorf("longest data frame %d bytes, want %d", sink.longest, tt.want)
			}
		})
	}
}

// Senders before issue 12 added zstd's content checksum to the payload:
// their frames still decode, and a damaged one is still caught by the
// block digests.
func TestChecksummedZstdFramesDecode(t *testing.T) {
	data := bytes.Repeat([]byte("frames from an older sender\n"), 4096)[:64<<10]
	var digests []Digest
	for pos := 0; pos < len(data); pos += 4096 {
		digests = append(digests, digestOf(data[pos:pos+4096]))
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, frameHeaderSize)
	for _, d := range digests {
		b = append(b, d[:]...)
	}
	payload := len(b)
	b = enc.EncodeAll(data, b)
	putHeader(b, kindData, CodecZstd, 0, len(data), 4096, len(b)-payload)
	f, _, err := parseFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.decode(nil); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decode = %v", err)
	}
	f.digests = bytes.Clone(f.digests)
	f.digests[3] ^= 1
	if _, err := f.decode(nil); err == nil {
		t.Fatal("a wrong digest went unnoticed")
	}
}

func FuzzFrame(f *testing.F) {
	data := bytes.Repeat([]byte("disk"), 2048)
	f.Add(appendFrame(nil, CodecNone, 0, 4096, data, []Digest{digestOf(data[:4096]), digestOf(data[4096:])}))
	f.Add(appendFrame(nil, CodecS2, 4096, 4096, data[:4096], []Digest{digestOf(data[:4096])}))
	f.Add(appendFrame(nil, CodecZstd, 4096, 4096, data[:4096], []Digest{digestOf(data[:4096])}))
	f.Add(appendZeroFrame(nil, 0, 1<<20, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		dst := &memDisk{data: make([]byte, 8<<20)}
		_ = NewReceiver(dst, int64(len(dst.data))).Send(context.Background(), b)
	})
}

func TestExtentAlgebra(t *testing.T) {
	tests := []struct {
		name string
		got  []span
		want []span
	}{
		{"normalize widens, sorts, merges and clips", normalize([]sdk.Extent{{Offset: 9000, Length: 10}, {Offset: 100, Length: 5000}, {Offset: 8192, Length: 1}, {Offset: 20000, Length: 99999}}, 4096, 24000),
			[]span{{0, 12288}, {16384, 24000}}},
		{"normalize drops empty", normalize([]sdk.Extent{{Offset: 5, Length: 0}}, 4096, 1<<20), []span{}},
		{"clip", clip([]span{{0, 10}, {20, 30}, {40, 50}}, 5, 45), []span{{5, 10}, {20, 30}, {40, 45}}},
		{"intersect", intersect([]span{{0, 10}, {20, 30}}, []span{{5, 25}}), []span{{5, 10}, {20, 25}}},
		{"subtract", subtract([]span{{0, 100}}, []span{{10, 20}, {30, 40}, {90, 120}}), []span{{0, 10}, {20, 30}, {40, 90}}},
		{"subtract nothing", subtract([]span{{0, 10}}, nil), []span{{0, 10}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fmt.Sprint(tt.got) != fmt.Sprint(tt.want) && !(len(tt.got) == 0 && len(tt.want) == 0) {
				t.Fatalf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestParseCodec(t *testing.T) {
	tests := []struct {
		name string
		link Link
		want Codec
		err  bool
	}{
		{"auto", LinkLocal, CodecNone, false},
		{"auto", LinkLAN, CodecS2, false},
		{"auto", LinkWAN, CodecZstd, false},
		{"zstd", LinkLocal, CodecZstd, false},
		{"lz4", LinkLocal, 0, true},
	}
	for _, tt := range tests {
		got, err := ParseCodec(tt.name, tt.link)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseCodec(%q, %d) = %v, %v", tt.name, tt.link, got, err)
		}
	}
}

// eventDigests records the order of digest and sync calls.
type eventDigests struct {
	memDigests
	emu    sync.Mutex
	events []string
}

func (e *eventDigests) event(s string) {
	e.emu.Lock()
	defer e.emu.Unlock()
	e.events = append(e.events, s)
}

func (e *eventDigests) Take(ctx context.Context, takes []Take, wait bool) ([]*Pending, error) {
	var segs []int
	for _, t := range takes {
		segs = append(segs, t.Seg)
	}
	e.event(fmt.Sprintf("take %v", segs))
	return e.memDigests.Take(ctx, takes, wait)
}

func (e *eventDigests) Put(ctx context.Context, us []Update) error {
	e.event(fmt.Sprintf("put %d", len(us)))
	return e.memDigests.Put(ctx, us)
}

// checkGroups checks that the groups were taken in the order given, each
// put after it was taken, with a sync in between, and in order.
func (e *eventDigests) checkGroups(t *testing.T, takes []string, puts []string) {
	t.Helper()
	e.emu.Lock()
	defer e.emu.Unlock()
	var gotTakes, gotPuts []string
	var takeAt, putAt []int
	for i, ev := range e.events {
		switch {
		case strings.HasPrefix(ev, "take"):
			gotTakes, takeAt = append(gotTakes, ev), append(takeAt, i)
		case strings.HasPrefix(ev, "put"):
			gotPuts, putAt = append(gotPuts, ev), append(putAt, i)
		}
	}
	if fmt.Sprint(gotTakes) != fmt.Sprint(takes) || fmt.Sprint(gotPuts) != fmt.Sprint(puts) {
		t.Fatalf("events %q: takes %q, puts %q; want %q and %q", e.events, gotTakes, gotPuts, takes, puts)
	}
	for k := range putAt {
		synced := slices.Contains(e.events[takeAt[k]:putAt[k]], "sync")
		if putAt[k] < takeAt[k] || !synced {
			t.Fatalf("events %q: group %d was not taken, synced and put in that order", e.events, k)
		}
	}
	e.events = nil
}

// Segments are taken and put in groups of GroupSegments (the first of one
// segment when everything is read), and the writes of a group are made
// durable before its digests are put.
func TestDigestsArePutInGroupsAfterSync(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	const segBlocks, size = 16, 20 * 16 * 4096 // 20 segments of 64 KiB
	src := &memDisk{data: diskLike(r, size)}
	dst := &memDisk{data: make([]byte, size)}
	store := &eventDigests{}
	sync := func(context.Context) error { store.event("sync"); return nil }
	move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: NewReceiver(dst, size), Sync: sync}, Options{SegmentBlocks: segBlocks})
	equalDisks(t, dst.data, src.data)
	// Reading everything, the first group is one segment.
	store.checkGroups(t, []string{"take [0]", "take [1 2 3 4 5 6 7 8]", "take [9 10 11 12 13 14 15 16]", "take [17 18 19]"}, []string{"put 1", "put 8", "put 8", "put 3"})
	// Change tracking naming one segment takes and puts only that one.
	changed := scatter(r, src.data[3*16*4096:4*16*4096], 20)
	for i := range changed {
		changed[i].Offset += 3 * 16 * 4096
	}
	move(t, Request{Source: src, Size: size, Changed: changed, Digests: store, Sink: NewReceiver(dst, size), Sync: sync}, Options{SegmentBlocks: segBlocks})
	equalDisks(t, dst.data, src.data)
	store.checkGroups(t, []string{"take [3]"}, []string{"put 1"})
}

// With SyncLast set, the last group's writes are made durable with it,
// the others' with Sync: a sink across a network closes the disk in the
// round trip of its last sync.
func TestTheLastGroupIsSyncedWithSyncLast(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	const segBlocks, size = 16, 20 * 16 * 4096 // 20 segments of 64 KiB: 4 groups
	src := &memDisk{data: diskLike(r, size)}
	dst := &memDisk{data: make([]byte, size)}
	store := &eventDigests{}
	// The third group's Sync is answered only once SyncLast was called:
	// across a network, the last Sync goes out without waiting for the
	// answer before it.
	lastCalled := make(chan struct{})
	syncs := 0
	move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: NewReceiver(dst, size),
		Sync: func(context.Context) error {
			store.event("sync")
			if syncs++; syncs == 3 {
				select {
				case <-lastCalled:
				case <-time.After(10 * time.Second):
					return errors.New("SyncLast was not called while the group before it waited for its Sync")
				}
			}
			return nil
		},
		SyncLast: func(context.Context) error { store.event("sync last"); close(lastCalled); return nil },
	}, Options{SegmentBlocks: segBlocks})
	equalDisks(t, dst.data, src.data)
	var calls, puts []string
	for _, ev := range store.events {
		switch {
		case strings.HasPrefix(ev, "sync"):
			calls = append(calls, ev)
		case strings.HasPrefix(ev, "put"):
			puts = append(puts, ev)
		}
	}
	if fmt.Sprint(calls) != "[sync sync sync sync last]" {
		t.Fatalf("syncs %q, want Sync for the first three groups and SyncLast for the last", calls)
	}
	// The digests are stored in the order of the groups, the last group's
	// after its SyncLast.
	if fmt.Sprint(puts) != "[put 1 put 8 put 8 put 3]" || store.events[len(store.events)-1] != "put 3" {
		t.Fatalf("events %q: the groups' digests were not stored in order, the last one's last", store.events)
	}
}

// A failed Sync of the group before the last fails the move, and the
// last group's digests, synced with SyncLast meanwhile, are not stored.
func TestAFailedSyncBeforeTheLastStoresNothingAfter(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	const segBlocks, size = 16, 20 * 16 * 4096
	src := &memDisk{data: diskLike(r, size)}
	store := &eventDigests{}
	syncs := 0
	_, err := Move(context.Background(), Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: NewReceiver(&memDisk{data: make([]byte, size)}, size),
		Sync: func(context.Context) error {
			if syncs++; syncs == 3 {
				return errors.New("the disk is gone")
			}
			return nil
		},
		SyncLast: func(context.Context) error { return nil },
	}, Options{SegmentBlocks: segBlocks})
	if err == nil || !strings.Contains(err.Error(), "the disk is gone") {
		t.Fatalf("move: %v, want the third Sync's error", err)
	}
	var puts []string
	for _, ev := range store.events {
		if strings.HasPrefix(ev, "put") {
			puts = append(puts, ev)
		}
	}
	if fmt.Sprint(puts) != "[put 1 put 8]" {
		t.Fatalf("events %q: want the first two groups' digests stored, none after the failed Sync", store.events)
	}
}

// preparedDisk is a replica disk that refuses writes outside the ranges
// prepared before them, as a replica writer whose file the mover writes
// itself must never see.
type preparedDisk struct {
	memDisk
	pmu      sync.Mutex
	ready    []bool // per byte
	prepares int
	sizes    []int64 // the bytes each call prepared
}

func (d *preparedDisk) prepare(_ context.Context, es []sdk.Extent) error {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	d.prepares++
	var n int64
	for _, e := range es {
		for i := e.Offset; i < e.End(); i++ {
			d.ready[i] = true
		}
		n += e.Length
	}
	d.sizes = append(d.sizes, n)
	return nil
}

func (d *preparedDisk) WriteAt(p []byte, off int64) (int, error) {
	d.pmu.Lock()
	for i := off; i < off+int64(len(p)); i++ {
		if !d.ready[i] {
			d.pmu.Unlock()
			return 0, fmt.Errorf("write of %d bytes at %d: byte %d was not prepared", len(p), off, i)
		}
	}
	d.pmu.Unlock()
	return d.memDisk.WriteAt(p, off)
}

// A change-tracked run has the writer prepare each range before any of
// its writes; a run that reads everything never prepares. A change
// smaller than PrepareFirst is prepared in one call; a larger one in
// calls that start with at least PrepareFirst bytes and grow.
func TestChangeTrackedRunsPrepareTheirWrites(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	const segBlocks, size = 16, 384 * 16 * 4096 // 384 segments of 64 KiB: 24 MiB
	src := &memDisk{data: diskLike(r, size)}
	dst := &preparedDisk{memDisk: memDisk{data: make([]byte, size)}, ready: make([]bool, size)}
	for i := range dst.ready {
		dst.ready[i] = true // the full copy writes a fresh replica
	}
	store := &memDigests{}
	opts := Options{SegmentBlocks: segBlocks}
	move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: NewReceiver(dst, size), Prepare: dst.prepare}, opts)
	if dst.prepares != 0 {
		t.Fatalf("a run reading everything prepared %d times", dst.prepares)
	}
	for _, pct := range []float64{5, 60} {
		clear(dst.ready)
		dst.prepares, dst.sizes = 0, nil
		changed := scatter(r, src.data, pct)
		move(t, Request{Source: src, Size: size, Changed: changed, Digests: store, Sink: NewReceiver(dst, size), Prepare: dst.prepare}, opts)
		equalDisks(t, dst.data, src.data)
		var total int64
		for _, n := range dst.sizes {
			total += n
		}
		switch {
		case total < PrepareFirst && len(dst.sizes) != 1:
			t.Fatalf("%g%%: %d bytes of writes prepared in calls of %v, want one call", pct, total, dst.sizes)
		case total >= PrepareFirst && (len(dst.sizes) < 2 || dst.sizes[0] < PrepareFirst || dst.sizes[0] >= PrepareFirst+segBlocks*4096):
			t.Fatalf("%g%%: %d bytes of writes prepared in calls of %v, want a first call of the segments that reach %d bytes, then the rest", pct, total, dst.sizes, PrepareFirst)
		}
	}
}

// A move into a Receiver of this process writes the data runs without
// frames, yet writes, counts and sends (as the frames it would have
// been) exactly what the same move in frames does.
func TestUnframedWritesMatchFramed(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	const size = 8<<20 + 512
	base := diskLike(r, size)
	changed := append([]byte(nil), base...)
	written := scatter(r, changed, 2)
	var stats [2]Stats
	for i, framed := range []bool{false, true} {
		src := &memDisk{data: append([]byte(nil), base...)}
		dst := &memDisk{data: make([]byte, size)}
		store := &memDigests{}
		var sink Sink = NewReceiver(dst, size)
		if framed {
			sink = framedSink{sink}
		}
		opts := Options{SegmentBlocks: 512}
		move(t, Request{Source: src, Size: size, Digests: store, TargetZero: true, Sink: sink}, opts)
		copy(src.data, changed)
		stats[i] = move(t, Request{Source: src, Size: size, Changed: written, Digests: store, Sink: sink}, opts)
		equalDisks(t, dst.data, changed)
	}
	got, want := stats[0], stats[1]
	if got.BytesSent != want.BytesSent || got.BytesChanged != want.BytesChanged || got.BlocksChanged != want.BlocksChanged || got.BytesRead != want.BytesRead {
		t.Fatalf("unframed %+v, framed %+v", got, want)
	}
}
