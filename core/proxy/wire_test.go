package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
)

// fakeData is a target proxy's end of one data stream, in memory: it
// encodes what it is sent as gRPC would (with relayCodec, freeing the
// encoding once "written"), keeps the messages (frames only if keep), acknowledges
// frames when ack allows, answers requests, and breaks after failAfter
// frames when that is set.
type fakeData struct {
	grpc.ClientStream
	ctx       context.Context
	ack       func(seq int64) bool
	failAfter int
	keep      bool // keep a copy of the frames sent (else they are gone)
	// gate, when set, holds every reply until it is closed; sent, when
	// set, is told each message's kind as it is sent.
	gate chan struct{}
	sent chan string

	mu      sync.Mutex
	got     []*proxyv1.DataMessage
	frames  int
	replies chan *proxyv1.DataReply
	broken  chan struct{}
	once    sync.Once
}

var _ proxyv1.Proxy_DataClient = (*fakeData)(nil)

func newFakeData(ctx context.Context, ack func(int64) bool, failAfter int) *fakeData {
	return &fakeData{ctx: ctx, ack: ack, failAfter: failAfter, replies: make(chan *proxyv1.DataReply, 1024), broken: make(chan struct{})}
}

func (f *fakeData) Context() context.Context { return f.ctx }
func (f *fakeData) Header() (metadata.MD, error) {
	return nil, nil
}
func (f *fakeData) Trailer() metadata.MD { return nil }
func (f *fakeData) CloseSend() error     { return nil }

func (f *fakeData) Send(m *proxyv1.DataMessage) error { return f.SendMsg(m) }

func (f *fakeData) SendMsg(v any) error {
	select {
	case <-f.broken:
		return io.EOF
	default:
	}
	data, err := relayCodec{}.Marshal(v)
	if err != nil {
		return err
	}
	// Decoded as the target proxy does, and kept (a copy) when asked.
	var rd recvData
	err = relayCodec{}.Unmarshal(data, &rd)
	data.Free() // written: gRPC frees the encoding
	if err != nil {
		return err
	}
	m := &proxyv1.DataMessage{Seq: rd.Seq, Msg: rd.Msg}
	if f.sent != nil {
		f.sent <- fmt.Sprintf("%T", rd.Msg)
	}
	if fr, ok := rd.Msg.(*proxyv1.DataMessage_Frames); ok {
		var kept []byte
		if f.keep {
			kept = bytes.Clone(fr.Frames)
		}
		m.Msg = &proxyv1.DataMessage_Frames{Frames: kept}
	}
	rd.release()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, m)
	var r *proxyv1.DataReply
	switch m.GetMsg().(type) {
	case *proxyv1.DataMessage_Frames:
		f.frames++
		if f.failAfter > 0 && f.frames == f.failAfter {
			f.once.Do(func() { close(f.broken) })
			return io.EOF
		}
		if f.ack(m.GetSeq()) {
			r = &proxyv1.DataReply{Reply: &proxyv1.DataReply_Applied{Applied: m.GetSeq()}}
		}
	case *proxyv1.DataMessage_Sync:
		r = &proxyv1.DataReply{Reply: &proxyv1.DataReply_Synced{Synced: &proxyv1.DataSynced{}}}
	case *proxyv1.DataMessage_Close:
		r = &proxyv1.DataReply{Reply: &proxyv1.DataReply_Closed{Closed: &proxyv1.DataClosed{}}}
	}
	if r != nil {
		f.replies <- r
	}
	return nil
}

func (f *fakeData) Recv() (*proxyv1.DataReply, error) {
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-f.ctx.Done():
			return nil, status.FromContextError(f.ctx.Err()).Err()
		}
	}
	select {
	case r := <-f.replies:
		return r, nil
	case <-f.broken:
		return nil, status.Error(codes.Unavailable, "connection cut")
	case <-f.ctx.Done():
		return nil, status.FromContextError(f.ctx.Err()).Err()
	}
}

func (f *fakeData) RecvMsg(any) error { return fmt.Errorf("fakeData: use Recv") }

// messages returns what the stream was sent.
func (f *fakeData) messages() []*proxyv1.DataMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*proxyv1.DataMessage(nil), f.got...)
}

// frameOf is the n-th test frame: bytes that differ from frame to frame.
func frameOf(n, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(n*31 + i*7)
	}
	return b
}

func TestSenderSendsWhatWasNotAppliedAgainOnANewStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const frames, size = 10, 64 << 10
	// The first stream applies frames 1-3, then breaks as frame 6 goes out.
	first := newFakeData(ctx, func(seq int64) bool { return seq <= 3 }, 6)
	second := newFakeData(ctx, func(int64) bool { return true }, 0)
	second.keep = true
	opened := 0
	s, err := startSender(ctx, "task", func(ctx context.Context, _ bool) (proxyv1.Proxy_DataClient, int64, error) {
		opened++
		switch opened {
		case 1:
			return first, 0, nil
		case 2:
			return second, 3, nil
		}
		return nil, 0, status.Error(codes.Unavailable, "no third stream")
	}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// One buffer for every frame, as the data mover reuses its own: what
	// is sent again must not be what the buffer holds by then.
	buf := make([]byte, size)
	for n := 1; n <= frames; n++ {
		copy(buf, frameOf(n, size))
		if err := s.Send(ctx, buf); err != nil {
			t.Fatalf("frame %d: %v", n, err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Reconnects() != 1 {
		t.Errorf("%d reconnects, want 1", s.Reconnects())
	}
	var seqs []int64
	for _, m := range second.messages() {
		f, ok := m.GetMsg().(*proxyv1.DataMessage_Frames)
		if !ok {
			continue
		}
		seqs = append(seqs, m.GetSeq())
		if !bytes.Equal(f.Frames, frameOf(int(m.GetSeq()), size)) {
			t.Errorf("frame %d on the new stream is not what was sent as frame %d", m.GetSeq(), m.GetSeq())
		}
	}
	if fmt.Sprint(seqs) != "[4 5 6 7 8 9 10]" {
		t.Errorf("the new stream got frames %v, want 4-10: every frame not applied, once", seqs)
	}
}

func TestSendingAFrameMakesNoCopyOfItsOwn(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops buffers at random")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := newFakeData(ctx, func(int64) bool { return true }, 0)
	s, err := startSender(ctx, "task", func(context.Context, bool) (proxyv1.Proxy_DataClient, int64, error) {
		return stream, 0, nil
	}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Abort()
	const size, frames = 1 << 20, 32
	frame := frameOf(1, size)
	// Each frame is acknowledged before the next goes (Sync waits for
	// that): one frame's buffer at a time, which the pool keeps.
	send := func() {
		if err := s.Send(ctx, frame); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A collection empties the buffer pool: none while this counts.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	for range 4 { // fill the pool
		send()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range frames {
		send()
	}
	runtime.ReadMemStats(&after)
	got := after.TotalAlloc - before.TotalAlloc
	if int64(got) > frames*size/4 {
		t.Errorf("the sender allocated %d bytes for %d frames of %d bytes: it copies them", got, frames, size)
	}
}

func TestRecvDataDecodesAsProtobufDoes(t *testing.T) {
	frames := frameOf(3, 4096)
	cases := map[string]*proxyv1.DataMessage{
		"frames":         {Msg: &proxyv1.DataMessage_Frames{Frames: frames}, Seq: 7},
		"frames, no seq": {Msg: &proxyv1.DataMessage_Frames{Frames: frames}},
		"empty frames":   {Msg: &proxyv1.DataMessage_Frames{Frames: []byte{}}, Seq: 1},
		"open":           {Msg: &proxyv1.DataMessage_Open{Open: &proxyv1.DataOpen{Task: "t"}}},
		"sync":           {Msg: &proxyv1.DataMessage_Sync{Sync: &proxyv1.DataSync{}}, Seq: 9},
		"digests":        {Msg: &proxyv1.DataMessage_Digests{Digests: &proxyv1.DataDigests{From: 1, To: 2, BlockSize: 4096}}, Seq: 10},
		"close":          {Msg: &proxyv1.DataMessage_Close{Close: &proxyv1.DataClose{}}, Seq: 11},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			b, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			checkRecvData(t, b)
		})
	}
	// Fields in another order, and twice (protobuf keeps the last).
	seqFirst := append(protowireVarint(6, 5), protowireBytes(2, frames)...)
	t.Run("seq first", func(t *testing.T) { checkRecvData(t, seqFirst) })
	twice := append(protowireBytes(2, []byte("old")), protowireBytes(2, frames)...)
	t.Run("frames twice", func(t *testing.T) { checkRecvData(t, twice) })
}

// checkRecvData decodes b as a received data message and checks that it
// equals protobuf's decoding, and that frames alias b.
func checkRecvData(t *testing.T, b []byte) {
	t.Helper()
	want := &proxyv1.DataMessage{}
	werr := proto.Unmarshal(b, want)
	var r recvData
	defer r.release()
	err := relayCodec{}.Unmarshal(memSlice(b), &r)
	if (err != nil) != (werr != nil) {
		t.Fatalf("error %v, protobuf's %v", err, werr)
	}
	if err != nil {
		return
	}
	if !proto.Equal(&r.DataMessage, want) {
		t.Errorf("decoded %v, protobuf %v", &r.DataMessage, want)
	}
}

// memSlice is b as gRPC hands a received message to a codec.
func memSlice(b []byte) mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(b)} }

func protowireVarint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func protowireBytes(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func TestReceivingFramesMakesNoCopyOfThem(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops buffers at random")
	}
	m := &proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Frames{Frames: frameOf(1, 1<<20)}, Seq: 1}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var r recvData
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 16 {
		if err := (relayCodec{}).Unmarshal(memSlice(b), &r); err != nil {
			t.Fatal(err)
		}
		r.release()
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("receiving 16 frames messages of 1 MiB allocated %d bytes: the frames were copied", got)
	}
}

func FuzzRecvData(f *testing.F) {
	for _, m := range []*proxyv1.DataMessage{
		{Msg: &proxyv1.DataMessage_Frames{Frames: []byte("frames")}, Seq: 3},
		{Msg: &proxyv1.DataMessage_Open{Open: &proxyv1.DataOpen{Task: "t"}}},
		{Msg: &proxyv1.DataMessage_Close{Close: &proxyv1.DataClose{}}, Seq: 1 << 40},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkRecvData(t, b)
	})
}

// SyncClose sends the Close behind the Sync before the Sync is answered:
// the two take one round trip of the link.
func TestSyncCloseSendsTheCloseBeforeTheSyncIsAnswered(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := newFakeData(ctx, func(int64) bool { return true }, 0)
	stream.gate, stream.sent = make(chan struct{}), make(chan string, 16)
	s, err := startSender(ctx, "task", func(context.Context, bool) (proxyv1.Proxy_DataClient, int64, error) {
		return stream, 0, nil
	}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, frameOf(1, 4096)); err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- s.SyncClose(ctx) }()
	var kinds []string
	for len(kinds) < 3 {
		select {
		case k := <-stream.sent:
			kinds = append(kinds, k)
		case err := <-synced:
			t.Fatalf("SyncClose returned (%v) before its Sync was answered", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("sent %v, and no Close while the Sync waits for its answer", kinds)
		}
	}
	if fmt.Sprint(kinds) != "[*proxyv1.DataMessage_Frames *proxyv1.DataMessage_Sync *proxyv1.DataMessage_Close]" {
		t.Fatalf("sent %v, want the frames, the Sync and the Close", kinds)
	}
	close(stream.gate)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case k := <-stream.sent:
		t.Fatalf("Close sent %s: the Close went with the Sync", k)
	default:
	}
}

// The first stream of a task sends its frames without waiting for the
// target's Opened; what Opened says is checked when it comes, and until
// it came a broken stream ends the task rather than being resumed.
func TestTheFirstStreamDoesNotWaitToBeOpened(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := func(applied int64) *proxyv1.DataReply {
		return &proxyv1.DataReply{Reply: &proxyv1.DataReply_Opened{Opened: &proxyv1.DataOpened{Applied: applied}}}
	}
	start := func(stream *fakeData, opens *int) *sender {
		t.Helper()
		s, err := startSender(ctx, "task", func(_ context.Context, first bool) (proxyv1.Proxy_DataClient, int64, error) {
			*opens++
			if !first {
				return nil, 0, status.Error(codes.Unavailable, "no second stream")
			}
			return stream, -1, nil
		}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	t.Run("opened", func(t *testing.T) {
		stream := newFakeData(ctx, func(int64) bool { return true }, 0)
		stream.replies <- opened(0)
		opens := 0
		s := start(stream, &opens)
		for n := 1; n <= 3; n++ {
			if err := s.Send(ctx, frameOf(n, 4096)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("fed by another", func(t *testing.T) {
		stream := newFakeData(ctx, func(int64) bool { return true }, 0)
		stream.replies <- opened(5)
		opens := 0
		s := start(stream, &opens)
		defer s.Abort()
		// The answer comes while the frame goes, or before.
		err := s.Send(ctx, frameOf(1, 4096))
		if err == nil {
			err = s.Sync(ctx)
		}
		if err == nil || !strings.Contains(err.Error(), "fed by another source half") {
			t.Fatalf("a frame and a sync after the target said it applied 5 messages: %v", err)
		}
	})
	t.Run("broken before opened", func(t *testing.T) {
		stream := newFakeData(ctx, func(int64) bool { return true }, 2)
		opens := 0
		s := start(stream, &opens)
		defer s.Abort()
		var err error
		for n := 1; n <= 3 && err == nil; n++ {
			err = s.Send(ctx, frameOf(n, 4096))
		}
		if err == nil {
			err = s.Sync(ctx)
		}
		if status.Code(err) != codes.Unavailable || opens != 1 || s.Reconnects() != 0 {
			t.Fatalf("a first stream broken before it was opened: %v (code %s), %d opens, %d reconnects; want the break, no resume", err, status.Code(err), opens, s.Reconnects())
		}
	})
}
