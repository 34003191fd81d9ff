package faultnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Direction names one or both directions of the relayed connections.
type Direction int

const (
	// Up is what the client sends to the server.
	Up Direction = 1 << iota
	// Down is what the server sends to the client.
	Down
	// Both is Up and Down.
	Both = Up | Down
)

func (d Direction) String() string {
	switch d {
	case Up:
		return "up"
	case Down:
		return "down"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

const (
	// readSize is the most a relay reads at once: one chunk of the delay
	// line.
	readSize = 32 << 10
	// queueChunks bounds the chunks in flight per connection and
	// direction: 8 MiB at most, enough for 20 ms of latency at 400 MB/s.
	queueChunks = 256
	// dialTimeout bounds the relay's connect to the target.
	dialTimeout = 5 * time.Second
)

// Relay accepts connections on a loopback address and forwards each to a
// target address, applying the faults set on it. Its methods are safe for
// concurrent use and take effect at once, on the connections open and on
// those to come.
type Relay struct {
	target string
	addr   string
	links  [2]*link // Up, Down
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the relay started

	mu    sync.Mutex
	ln    net.Listener // nil while refusing
	conns map[*conn]struct{}
	cuts  int // how many times Cut or Reset ran
	// resetLast says the last of them was a Reset.
	resetLast bool
	refuse    bool
	closed    bool
	dialErr   error
}

// Listen starts a relay on a free loopback port that forwards to target.
// The caller must Close it.
func Listen(target string) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("relay to %s: %w", target, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{
		target: target,
		addr:   ln.Addr().String(),
		links:  [2]*link{newLink(), newLink()},
		ctx:    ctx,
		cancel: cancel,
		ln:     ln,
		conns:  map[*conn]struct{}{},
	}
	r.wg.Add(1)
	go r.accept(ln)
	return r, nil
}

// Addr is the address clients dial instead of the target's.
func (r *Relay) Addr() string { return r.addr }

// each calls f with the links d names.
func (r *Relay) each(d Direction, f func(*link)) {
	if d&Up != 0 {
		f(r.links[0])
	}
	if d&Down != 0 {
		f(r.links[1])
	}
}

// SetLatency delays every byte by delay, one way, in the directions d
// names: a delay line, so throughput does not drop (up to about 8 MiB in
// flight per connection and direction). Zero removes the delay. Bytes
// already waiting leave at their arrival plus the new delay.
func (r *Relay) SetLatency(d Direction, delay time.Duration) {
	r.each(d, func(l *link) { l.set(func() { l.latency = max(delay, 0) }) })
}

// SetBandwidth caps the directions d names at bytesPerSec, shared by all
// connections, as one link would be; zero or less removes the cap.
func (r *Relay) SetBandwidth(d Direction, bytesPerSec int64) {
	r.each(d, func(l *link) { l.set(func() { l.rate = max(bytesPerSec, 0) }) })
}

// Stall stops forwarding in the directions d names and keeps every
// connection open: what the sender writes waits in the relay (and then in
// the socket buffers) until Resume.
func (r *Relay) Stall(d Direction) {
	r.each(d, func(l *link) { l.set(func() { l.stalled = true }) })
}

// Resume ends a Stall in the directions d names.
func (r *Relay) Resume(d Direction) {
	r.each(d, func(l *link) { l.set(func() { l.stalled = false }) })
}

// Forwarded is how many bytes the relay has written in direction d (Up or
// Down; Both sums them) since it started.
func (r *Relay) Forwarded(d Direction) int64 {
	var n int64
	r.each(d, func(l *link) { n += l.bytes.Load() })
	return n
}

// Active is the number of connections the relay forwards now.
func (r *Relay) Active() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.conns)
}

// Cut closes every connection, both ends: the client and the server each
// see their stream end (EOF, or an error for data they had not read).
// Connections made later are accepted, or refused after SetRefuse(true).
func (r *Relay) Cut() { r.cutAll(false) }

// Reset resets every connection, both ends: the relay closes its sockets
// with SO_LINGER 0, so each peer gets an RST and reads "connection reset".
func (r *Relay) Reset() { r.cutAll(true) }

func (r *Relay) cutAll(reset bool) {
	r.mu.Lock()
	r.cuts++
	r.resetLast = reset
	conns := make([]*conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.close(reset)
	}
}

// SetRefuse makes new connections fail to connect (the relay stops
// listening: "connection refused") or, with false, be accepted again on
// the same address. Open connections are left alone; Cut them.
func (r *Relay) SetRefuse(refuse bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return net.ErrClosed
	}
	if refuse == r.refuse {
		return nil
	}
	if refuse {
		r.refuse = true
		err := r.ln.Close()
		r.ln = nil
		return err
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		return fmt.Errorf("listen again on %s: %w", r.addr, err)
	}
	r.refuse, r.ln = false, ln
	r.wg.Add(1)
	go r.accept(ln)
	return nil
}

// DialErr is the last error the relay got connecting to the target, nil
// if none. A client whose target could not be reached is reset.
func (r *Relay) DialErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dialErr
}

// Close stops listening, closes every connection and returns once every
// goroutine of the relay has ended. Closing twice is harmless.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	var err error
	if r.ln != nil {
		err = r.ln.Close()
		r.ln = nil
	}
	r.mu.Unlock()
	r.cancel()
	r.cutAll(false)
	r.wg.Wait()
	return err
}

// accept serves the connections of one listener until it is closed.
func (r *Relay) accept(ln net.Listener) {
	defer r.wg.Done()
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			client.Close()
			return
		}
		cuts := r.cuts
		r.wg.Add(1)
		r.mu.Unlock()
		go r.serve(client, cuts)
	}
}

// serve connects client to the target and forwards both ways until both
// directions end or the connection is cut. cuts is the relay's cut count
// when client was accepted: a cut during the dial cuts it too.
func (r *Relay) serve(client net.Conn, cuts int) {
	defer r.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	server, err := d.DialContext(r.ctx, "tcp", r.target)
	if err != nil {
		r.mu.Lock()
		r.dialErr = err
		r.mu.Unlock()
		c := &conn{client: client, done: make(chan struct{})}
		c.close(true)
		return
	}
	c := &conn{client: client, server: server, done: make(chan struct{})}
	r.mu.Lock()
	if r.closed || r.cuts != cuts {
		// Cut or reset while it was dialled (the server may have
		// accepted already): it goes the way the others went.
		reset := !r.closed && r.resetLast
		r.mu.Unlock()
		c.close(reset)
		return
	}
	r.conns[c] = struct{}{}
	r.mu.Unlock()

	var pipes sync.WaitGroup
	pipes.Add(2)
	go func() { defer pipes.Done(); r.pipe(c, client, server, r.links[0]) }()
	go func() { defer pipes.Done(); r.pipe(c, server, client, r.links[1]) }()
	pipes.Wait()
	c.close(false)
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
}

// chunk is what one read got, stamped with when it arrived.
type chunk struct {
	data []byte
	at   time.Time
}

// pipe forwards src to dst through l: a reader goroutine queues what
// arrives, and pipe writes each chunk once it is due, so the delay holds
// chunks without slowing the reads. At src's EOF it half-closes dst once
// the queue is drained; a reset of src resets dst.
func (r *Relay) pipe(c *conn, src, dst net.Conn, l *link) {
	queue := make(chan chunk, queueChunks)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(queue)
		buf := make([]byte, readSize)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case queue <- chunk{data: append([]byte(nil), buf[:n]...), at: time.Now()}:
				case <-c.done:
					return
				}
			}
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				c.close(true) // no-op when the relay closed it already
				return
			}
		}
	}()
	for {
		select {
		case ch, ok := <-queue:
			if !ok {
				if tc, isTCP := dst.(*net.TCPConn); isTCP {
					tc.CloseWrite()
				}
				return
			}
			if err := l.forward(c, ch, dst); err != nil {
				c.close(false)
				return
			}
		case <-c.done:
			return
		}
	}
}

// conn is one relayed connection: the client's socket and the relay's
// socket to the server.
type conn struct {
	client, server net.Conn // server is nil when the dial failed
	once           sync.Once
	done           chan struct{}
}

// close closes both sockets once, with an RST when reset, and wakes every
// goroutine of the connection.
func (c *conn) close(reset bool) {
	c.once.Do(func() {
		for _, s := range []net.Conn{c.client, c.server} {
			if s == nil {
				continue
			}
			if tc, ok := s.(*net.TCPConn); ok && reset {
				tc.SetLinger(0)
			}
			s.Close()
		}
		close(c.done)
	})
}

// sleep waits for d (forever when d < 0), for changed, or for the
// connection's end; false means the connection ended.
func (c *conn) sleep(d time.Duration, changed <-chan struct{}) bool {
	var timeout <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
	case <-changed:
	case <-c.done:
		return false
	}
	return true
}
