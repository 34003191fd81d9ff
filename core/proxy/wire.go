package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/ferry-dr/ferry/core/datamover"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
)

// sender is the source half's end of a task's data stream. Frames go out
// without waiting for anything (HTTP/2 flow control is the window); Sync,
// Digests and Close wait for their reply, which the target half sends in
// the order of the requests. It is a datamover.Sink.
type sender struct {
	stream proxyv1.Proxy_DataClient
	mu     sync.Mutex // orders the stream's sends and the waiters with them
	// waiters are the requests awaiting a reply, oldest first.
	waiters []chan reply
	broken  error // set once the stream failed
	done    chan struct{}
	sent    atomic.Int64
}

type reply struct {
	msg *proxyv1.DataReply
	err error
}

// openSender opens the data stream of a task on the target proxy.
func openSender(ctx context.Context, client proxyv1.ProxyClient, task string) (*sender, error) {
	stream, err := client.Data(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Open{Open: &proxyv1.DataOpen{Task: task}}}); err != nil {
		return nil, recvError(stream, err)
	}
	r, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if r.GetOpened() == nil {
		return nil, fmt.Errorf("the target proxy answered the opening of task %s with %T", task, r.GetReply())
	}
	s := &sender{stream: stream, done: make(chan struct{})}
	go s.receive()
	return s, nil
}

// recvError returns the status a stream ended with when a send failed
// because of it (a send on a broken stream only says io.EOF).
func recvError(stream proxyv1.Proxy_DataClient, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}

// receive hands each reply to the oldest waiter, and the stream's error
// to every waiter when it ends.
func (s *sender) receive() {
	defer close(s.done)
	for {
		msg, err := s.stream.Recv()
		if err == nil {
			s.mu.Lock()
			if len(s.waiters) == 0 {
				err = fmt.Errorf("the target proxy sent a reply nobody asked for (%T)", msg.GetReply())
			} else {
				w := s.waiters[0]
				s.waiters = s.waiters[1:]
				w <- reply{msg: msg}
			}
			s.mu.Unlock()
			if err == nil {
				continue
			}
		}
		if errors.Is(err, io.EOF) {
			err = errors.New("the target proxy ended the data stream")
		}
		s.mu.Lock()
		if s.broken == nil {
			s.broken = err
		}
		for _, w := range s.waiters {
			w <- reply{err: s.broken}
		}
		s.waiters = nil
		s.mu.Unlock()
		return
	}
}

// send sends one message; with want, it returns the channel its reply
// arrives on.
func (s *sender) send(m *proxyv1.DataMessage, want bool) (chan reply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken != nil {
		return nil, s.broken
	}
	var ch chan reply
	if want {
		ch = make(chan reply, 1)
		s.waiters = append(s.waiters, ch)
	}
	if err := s.stream.Send(m); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream ended: its status arrives through receive.
			s.mu.Unlock()
			<-s.done
			s.mu.Lock()
			return nil, s.broken
		}
		s.broken = err
		return nil, err
	}
	return ch, nil
}

func (s *sender) call(ctx context.Context, m *proxyv1.DataMessage) (*proxyv1.DataReply, error) {
	ch, err := s.send(m, true)
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

// Send sends whole frames. The frame is copied into the message before
// Send returns.
func (s *sender) Send(ctx context.Context, frame []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := s.send(&proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Frames{Frames: frame}}, false); err != nil {
		return fmt.Errorf("send to the target proxy: %w", err)
	}
	s.sent.Add(int64(len(frame)))
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

// Close flushes and closes the replica disk and ends the stream; it
// returns the bytes the target wrote.
func (s *sender) Close(ctx context.Context) (int64, error) {
	r, err := s.call(ctx, &proxyv1.DataMessage{Msg: &proxyv1.DataMessage_Close{Close: &proxyv1.DataClose{}}})
	if err != nil {
		return 0, fmt.Errorf("close the replica disk on the target proxy: %w", err)
	}
	c := r.GetClosed()
	if c == nil {
		return 0, fmt.Errorf("the target proxy answered a close with %T", r.GetReply())
	}
	s.mu.Lock()
	err = s.stream.CloseSend()
	s.mu.Unlock()
	return c.BytesWritten, err
}

// Abort ends the stream without closing the replica disk properly.
func (s *sender) Abort() {
	s.mu.Lock()
	_ = s.stream.CloseSend()
	s.mu.Unlock()
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
