package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/core/datamover"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
)

// Window is how many bytes of frames a source half keeps sent but not yet
// acknowledged as applied by the target: what it can send again after a
// broken connection without reading the source again. Send waits while
// the window is full.
const Window = 16 << 20

// ResumeFor is how long a source half tries to reopen a broken data
// stream before it gives up on the task.
const ResumeFor = 2 * time.Minute

// sender is the source half's end of a task's data stream: a
// datamover.Sink. Frames go out without waiting for anything; the target
// acknowledges what it applied, and the sender keeps what it did not yet
// acknowledge (at most Window bytes) to send again on a new stream when
// one breaks. Sync, Digests and Close wait for their replies, which come
// in the order of the requests.
type sender struct {
	task      string
	open      func(ctx context.Context, first bool) (proxyv1.Proxy_DataClient, int64, error)
	resumeFor time.Duration
	window    *semaphore.Weighted
	ctx       context.Context // ends with the task or end: the streams and resumes stop
	cancel    context.CancelFunc

	// sendMu orders the sends on the stream (and holds them off while a
	// new stream is opened); mu guards the rest. A receive never takes
	// sendMu, so acknowledgements flow while a send waits on the network.
	sendMu sync.Mutex
	mu     sync.Mutex
	stream proxyv1.Proxy_DataClient
	gen    int   // the stream's generation
	seq    int64 // the last number given
	acked  int64 // every frame up to it is applied
	// out are the messages that may have to be sent again, oldest first:
	// frames past acked and requests still waiting for their reply.
	out    []*outgoing
	broken error // set once the task cannot go on
	// confirmed says the target answered the task's first stream: until
	// then a broken stream ends the task (the control plane places it
	// again) rather than being resumed.
	confirmed  bool
	closing    chan reply // the reply to the Close SyncClose sent
	resuming   bool       // a resume is under way
	failed     bool       // the stream the resume opened failed too
	reconnects int
	sent       atomic.Int64
}

type outgoing struct {
	seq int64
	msg *proxyv1.DataMessage // requests; nil for frames
	// enc is a frames message, encoded once: the sender's reference
	// until the frames are acknowledged (see encodedMessage).
	enc   mem.BufferSlice
	size  int64      // bytes held in the window; 0 for requests
	reply chan reply // nil for frames
}

// sendOn sends o on stream. For frames, the caller took the reference
// the send gives gRPC (see encodedMessage).
func (o *outgoing) sendOn(stream proxyv1.Proxy_DataClient) error {
	if o.msg != nil {
		return stream.Send(o.msg)
	}
	return stream.SendMsg(&encodedMessage{data: o.enc})
}

type reply struct {
	msg *proxyv1.DataReply
	err error
}

// openSender opens the data stream of a task on the target proxy. ctx is
// the task's: cancelling it ends the stream.
func openSender(ctx context.Context, conn *grpc.ClientConn, task string, resumeFor time.Duration) (*sender, error) {
	client := proxyv1.NewProxyClient(conn)
	return startSender(ctx, task, func(ctx context.Context, first bool) (proxyv1.Proxy_DataClient, int64, error) {
		tryNow(ctx, conn)
		return openStream(ctx, client, task, first)
	}, resumeFor)
}

// tryNow makes a connection that failed try again at once. A kept
// connection that failed (the target proxy restarted, the link was cut)
// waits out gRPC's backoff, which grows to two minutes, and a stream
// opened meanwhile fails at once with the last error: a new task, as a
// resume after its own backoff, tries the proxy now, as a new connection
// would.
func tryNow(ctx context.Context, conn *grpc.ClientConn) {
	if conn.GetState() != connectivity.TransientFailure {
		return
	}
	conn.ResetConnectBackoff()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn.WaitForStateChange(ctx, connectivity.TransientFailure)
}

// startSender opens a task's first data stream with open, which opens
// every stream of the task and says what the task applied so far, or -1
// when the stream's Opened reply is still to come (frames may follow
// the opening of the first stream at once).
func startSender(ctx context.Context, task string, open func(ctx context.Context, first bool) (proxyv1.Proxy_DataClient, int64, error), resumeFor time.Duration) (*sender, error) {
	ctx, cancel := context.WithCancel(ctx)
	s := &sender{
		task:      task,
		cancel:    cancel,
		open:      open,
		resumeFor: resumeFor,
		window:    semaphore.NewWeighted(Window),
		ctx:       ctx,
	}
	stream, applied, err := s.open(ctx, true)
	if err != nil {
		cancel()
		return nil, err
	}
	if applied > 0 {
		cancel()
		return nil, fedByAnother(task, applied)
	}
	s.confirmed = applied == 0
	s.stream = stream
	go s.receive(stream, 0)
	return s, nil
}

func fedByAnother(task string, applied int64) error {
	return fmt.Errorf("task %s was fed by another source half (it applied %d messages)", task, applied)
}

// openStream opens a data stream and says what the task applied so far.
// The task's first stream does not wait for the answer (it says -1): the
// target half may not have started yet, and the frames need not wait
// for it, a round trip of the link; the answer comes to receive.
func openStream(ctx context.Context, client proxyv1.ProxyClient, task string, first bool) (proxyv1.Proxy_DataClient, int64, error) {
	// relayCodec sends the frames messages the sender encoded itself.
	stream, err := client.Data(ctx, grpc.ForceCodecV2(relayCodec{}))
	if err != nil {
		return nil, 0, err
	}
	if err := stream.Send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Open{Open: &proxyv1.DataOpen{Task: task, Await: first}}}); err != nil {
		if errors.Is(err, io.EOF) {
			_, err = stream.Recv() // the status the stream ended with
		}
		return nil, 0, err
	}
	if first {
		return stream, -1, nil
	}
	r, err := stream.Recv()
	if err != nil {
		return nil, 0, err
	}
	opened := r.GetOpened()
	if opened == nil {
		return nil, 0, fmt.Errorf("the target proxy answered the opening of task %s with %T", task, r.GetReply())
	}
	return stream, opened.GetApplied(), nil
}

// retryable reports whether a stream error is the connection's (resume)
// rather than the task's (give up).
func retryable(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	return status.Code(err) == codes.Unavailable
}

// receive reads the replies of one stream: acknowledgements free the
// window, replies go to the oldest waiting request.
func (s *sender) receive(stream proxyv1.Proxy_DataClient, gen int) {
	for {
		msg, err := stream.Recv()
		if err != nil {
			s.fail(gen, err)
			return
		}
		if err := s.accept(msg); err != nil {
			s.mu.Lock()
			s.setBroken(err)
			s.mu.Unlock()
			return
		}
	}
}

// accept takes one reply.
func (s *sender) accept(msg *proxyv1.DataReply) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r := msg.GetReply().(type) {
	case *proxyv1.DataReply_Applied:
		s.ack(r.Applied)
		return nil
	case *proxyv1.DataReply_Opened:
		if s.confirmed {
			return errors.New("the target proxy answered an opening twice")
		}
		if n := r.Opened.GetApplied(); n != 0 {
			return fedByAnother(s.task, n)
		}
		s.confirmed = true
		return nil
	}
	for i, o := range s.out {
		if o.reply == nil {
			continue
		}
		s.out = append(s.out[:i], s.out[i+1:]...)
		// A reply says every message before its request was applied.
		s.ack(o.seq)
		o.reply <- reply{msg: msg}
		return nil
	}
	return fmt.Errorf("the target proxy sent a reply nobody asked for (%T)", msg.GetReply())
}

// ack drops the frames up to seq from what may be sent again. Callers
// hold s.mu.
func (s *sender) ack(seq int64) {
	if seq <= s.acked {
		return
	}
	s.acked = seq
	keep := s.out[:0]
	for _, o := range s.out {
		if o.reply == nil && o.seq <= seq {
			o.enc.Free()
			s.window.Release(o.size)
			continue
		}
		keep = append(keep, o)
	}
	clear(s.out[len(keep):])
	s.out = keep
}

// setBroken ends the task: every waiting request gets err. Callers hold
// s.mu.
func (s *sender) setBroken(err error) {
	if s.broken != nil {
		return
	}
	s.broken = err
	for _, o := range s.out {
		if o.reply != nil {
			o.reply <- reply{err: err}
		}
		o.enc.Free()
	}
	s.out = nil
}

// fail handles the end of stream generation gen: a connection error
// starts a new stream (or tells the resume under way that its stream
// failed too), anything else ends the task.
func (s *sender) fail(gen int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.broken != nil {
		return
	}
	if !retryable(err) || s.ctx.Err() != nil || !s.confirmed {
		if errors.Is(err, io.EOF) {
			err = errors.New("the target proxy ended the data stream")
		}
		s.setBroken(err)
		return
	}
	if s.resuming {
		s.failed = true
		return
	}
	s.resuming, s.failed = true, false
	go s.resume(err)
}

// resume opens a new stream and sends again what the target did not
// apply, retrying with backoff for resumeFor.
func (s *sender) resume(cause error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	deadline := time.Now().Add(s.resumeFor)
	wait := 100 * time.Millisecond
	for {
		stream, applied, err := s.open(s.ctx, false)
		if err == nil && s.restart(stream, applied) {
			return
		}
		if err == nil {
			err = cause
		}
		if !retryable(err) || time.Now().After(deadline) || s.ctx.Err() != nil {
			s.mu.Lock()
			s.resuming = false
			s.setBroken(fmt.Errorf("the data stream broke (%v) and could not be opened again: %w", cause, err))
			s.mu.Unlock()
			return
		}
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// restart makes stream the task's and sends it what the target has not
// applied; it reports whether that went through without the stream
// failing. Callers hold s.sendMu.
func (s *sender) restart(stream proxyv1.Proxy_DataClient, applied int64) bool {
	s.mu.Lock()
	s.reconnects++
	s.failed = false
	s.ack(applied)
	s.gen++
	gen := s.gen
	s.stream = stream
	again := append([]*outgoing(nil), s.out...)
	for _, o := range again {
		o.enc.Ref() // an acknowledgement may free the sender's meanwhile
	}
	s.mu.Unlock()
	go s.receive(stream, gen)
	ok := true
	for i, o := range again {
		if err := o.sendOn(stream); err != nil {
			ok = false
			for _, o := range again[i+1:] {
				o.enc.Free()
			}
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok || s.failed {
		s.gen++ // this stream is done with
		return false
	}
	s.resuming = false
	return true
}

// send numbers a message and sends it; it is kept to be sent again until
// acknowledged. size is what it holds of the window. Frames (size > 0)
// are encoded here, once: m need not outlive the call.
func (s *sender) send(m *proxyv1.DataMessage, size int64, want bool) (chan reply, error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	// Only send numbers messages, and sendMu holds off the others.
	m.Seq = s.seq + 1
	o := &outgoing{seq: m.Seq, msg: m, size: size}
	var err error
	if size > 0 {
		// Encoded outside s.mu: acknowledgements flow meanwhile.
		o.msg = nil
		if o.enc, err = encodeData(m); err != nil {
			s.window.Release(size)
			return nil, err
		}
	}
	s.mu.Lock()
	if s.broken != nil {
		err := s.broken
		s.mu.Unlock()
		o.enc.Free()
		if size > 0 {
			s.window.Release(size)
		}
		return nil, err
	}
	s.seq = o.seq
	if want {
		o.reply = make(chan reply, 1)
	}
	s.out = append(s.out, o)
	stream, gen := s.stream, s.gen
	o.enc.Ref() // this send's, which gRPC frees
	s.mu.Unlock()
	if err := o.sendOn(stream); err != nil {
		// The message is kept: the new stream sends it again. A stream
		// that ended says only io.EOF to a send; before the target
		// answered the opening, receive reports how it ended.
		s.mu.Lock()
		why := s.confirmed || !errors.Is(err, io.EOF)
		s.mu.Unlock()
		if why {
			s.fail(gen, err)
		}
	}
	return o.reply, nil
}

func (s *sender) call(ctx context.Context, m *proxyv1.DataMessage) (*proxyv1.DataReply, error) {
	ch, err := s.send(m, 0, true)
	if err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r.msg, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Send sends whole frames; it keeps them, encoded, until the target
// applied them.
func (s *sender) Send(ctx context.Context, frame []byte) error {
	n := int64(len(frame))
	if err := s.window.Acquire(ctx, min(n, Window)); err != nil {
		return err
	}
	if _, err := s.send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Frames{Frames: frame}}, min(n, Window), false); err != nil {
		return fmt.Errorf("send to the target proxy: %w", err)
	}
	s.sent.Add(n)
	return nil
}

// Sync returns once every frame sent before it is durable on the replica.
func (s *sender) Sync(ctx context.Context) error {
	r, err := s.call(ctx, &proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Sync{Sync: &proxyv1.DataSync{}}})
	if err != nil {
		return fmt.Errorf("sync on the target proxy: %w", err)
	}
	if r.GetSynced() == nil {
		return fmt.Errorf("the target proxy answered a sync with %T", r.GetReply())
	}
	return nil
}

// Digests returns the digests of the replica's blocks in [from, to),
// computed on the target proxy.
func (s *sender) Digests(ctx context.Context, from, to int64, blockSize int) ([]datamover.Digest, error) {
	r, err := s.call(ctx, &proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Digests{Digests: &proxyv1.DataDigests{From: from, To: to, BlockSize: int32(blockSize)}}})
	if err != nil {
		return nil, fmt.Errorf("digests from the target proxy: %w", err)
	}
	raw, ok := r.GetReply().(*proxyv1.DataReply_Digests)
	if !ok {
		return nil, fmt.Errorf("the target proxy answered a digest request with %T", r.GetReply())
	}
	return unpackDigests(raw.Digests)
}

// SyncClose is Sync for the last writes of the disk: it sends the Close
// behind the Sync without waiting for the Sync's answer, so that both
// take one round trip. It returns once the Sync is answered; Close then
// returns the Close's answer. Nothing is sent after it.
func (s *sender) SyncClose(ctx context.Context) error {
	syncReply, err := s.send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Sync{Sync: &proxyv1.DataSync{}}}, 0, true)
	if err != nil {
		return fmt.Errorf("sync on the target proxy: %w", err)
	}
	closeReply, err := s.send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Close{Close: &proxyv1.DataClose{}}}, 0, true)
	if err != nil {
		return fmt.Errorf("close the replica disk on the target proxy: %w", err)
	}
	s.mu.Lock()
	s.closing = closeReply
	s.mu.Unlock()
	var r reply
	select {
	case r = <-syncReply:
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.err != nil {
		return fmt.Errorf("sync on the target proxy: %w", r.err)
	}
	if r.msg.GetSynced() == nil {
		return fmt.Errorf("the target proxy answered a sync with %T", r.msg.GetReply())
	}
	return nil
}

// Close flushes and closes the replica disk and ends the stream; it
// returns what the target wrote.
func (s *sender) Close(ctx context.Context) (*proxyv1.DataClosed, error) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	var r *proxyv1.DataReply
	var err error
	if closing == nil {
		r, err = s.call(ctx, &proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Close{Close: &proxyv1.DataClose{}}})
	} else {
		select {
		case rep := <-closing:
			r, err = rep.msg, rep.err
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("close the replica disk on the target proxy: %w", err)
	}
	c := r.GetClosed()
	if c == nil {
		return nil, fmt.Errorf("the target proxy answered a close with %T", r.GetReply())
	}
	s.end(nil)
	return c, nil
}

// Abort ends the stream without closing the replica disk.
func (s *sender) Abort() { s.end(errors.New("aborted")) }

func (s *sender) end(err error) {
	s.mu.Lock()
	if err == nil {
		err = errors.New("closed")
	}
	s.setBroken(err)
	s.gen++
	s.mu.Unlock()
	s.cancel() // ends the stream and any resume
}

// Reconnects is how many times the stream was opened again.
func (s *sender) Reconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

const digestBytes = len(datamover.Digest{})

func packDigests(d []datamover.Digest) []byte {
	b := make([]byte, 0, len(d)*digestBytes)
	for _, x := range d {
		b = append(b, x[:]...)
	}
	return b
}

func unpackDigests(b []byte) ([]datamover.Digest, error) {
	if len(b)%digestBytes != 0 {
		return nil, fmt.Errorf("%d bytes of digests: not a multiple of %d", len(b), digestBytes)
	}
	d := make([]datamover.Digest, len(b)/digestBytes)
	for i := range d {
		copy(d[i][:], b[i*digestBytes:])
	}
	return d, nil
}
