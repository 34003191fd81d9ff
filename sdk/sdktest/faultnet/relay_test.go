package faultnet

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"testing"
	"time"
)

// Every test drives a real TCP client and server through a Relay. The
// timing tests assert lower bounds, and upper bounds only where they are
// far from what the fault predicts: the machine that runs them is shared.

// start starts a relay in front of a fresh loopback server.
func start(t *testing.T) (*Relay, *net.TCPListener) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	r, err := Listen(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, ln.(*net.TCPListener)
}

// pair connects a client through r and returns it with the server's end.
func pair(t *testing.T, r *Relay, ln *net.TCPListener) (client, server *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("the relay did not connect to the server: %v (dial error: %v)", err, r.DialErr())
	}
	t.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func randomBytes(n int) []byte {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// send writes data to w in a goroutine and returns its write error.
func send(w io.Writer, data []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		done <- err
	}()
	return done
}

// readN reads exactly n bytes from r within 30 s.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func TestForwardsBothWaysAndCounts(t *testing.T) {
	r, ln := start(t)
	client, server := pair(t, r, ln)
	up, down := randomBytes(300<<10), randomBytes(5000)
	sent := send(client, up)
	if got := readN(t, server, len(up)); !bytes.Equal(got, up) {
		t.Fatal("the server got other bytes than the client sent")
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write(down); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, client, len(down)); !bytes.Equal(got, down) {
		t.Fatal("the client got other bytes than the server sent")
	}
	waitFor(t, "the counters", func() bool {
		return r.Forwarded(Up) == int64(len(up)) && r.Forwarded(Down) == int64(len(down))
	})
	if got := r.Forwarded(Both); got != int64(len(up)+len(down)) {
		t.Errorf("Forwarded(Both) = %d, want %d", got, len(up)+len(down))
	}
	if r.Active() != 1 {
		t.Errorf("Active() = %d, want 1", r.Active())
	}
	// A half-close crosses the relay: the server reads EOF and can still
	// answer.
	client.CloseWrite()
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := server.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("server read after the client's half-close: %d, %v; want EOF", n, err)
	}
	server.Write([]byte("bye"))
	if got := readN(t, client, 3); string(got) != "bye" {
		t.Fatalf("client got %q after its half-close", got)
	}
}

func TestLatencyDelaysEachWay(t *testing.T) {
	r, ln := start(t)
	r.SetLatency(Both, 20*time.Millisecond)
	client, server := pair(t, r, ln)
	for round := range 3 {
		begin := time.Now()
		client.Write([]byte{byte(round)})
		readN(t, server, 1)
		server.Write([]byte{byte(round)})
		readN(t, client, 1)
		if rtt := time.Since(begin); rtt < 40*time.Millisecond {
			t.Errorf("round %d: round trip %v through 20 ms each way, want at least 40 ms", round, rtt)
		}
	}
}

// TestLatencyKeepsThroughput: a delay line holds chunks without slowing
// the stream; a sleep per read would need 256 × 50 ms for these 8 MiB.
func TestLatencyKeepsThroughput(t *testing.T) {
	r, ln := start(t)
	r.SetLatency(Up, 50*time.Millisecond)
	client, server := pair(t, r, ln)
	data := randomBytes(8 << 20)
	begin := time.Now()
	sent := send(client, data)
	if got := readN(t, server, len(data)); !bytes.Equal(got, data) {
		t.Fatal("the stream changed through the delay")
	}
	took := time.Since(begin)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("8 MiB through a 50 ms delay took %v", took)
	if took < 50*time.Millisecond {
		t.Errorf("8 MiB arrived in %v, under the 50 ms latency", took)
	}
	if took > 5*time.Second {
		t.Errorf("8 MiB took %v through a 50 ms delay: the delay slows the stream", took)
	}
}

func TestBandwidthCap(t *testing.T) {
	r, ln := start(t)
	const rate = 2 << 20 // bytes per second
	r.SetBandwidth(Up, rate)
	client, server := pair(t, r, ln)
	data := randomBytes(2 << 20)
	begin := time.Now()
	sent := send(client, data)
	readN(t, server, len(data))
	took := time.Since(begin)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("2 MiB at 2 MiB/s took %v", took)
	// One second at the cap, less the short burst the cap allows.
	if took < 950*time.Millisecond {
		t.Errorf("2 MiB at 2 MiB/s took %v, want about 1 s", took)
	}
	if took > 3*time.Second {
		t.Errorf("2 MiB at 2 MiB/s took %v, want about 1 s", took)
	}
	r.SetBandwidth(Up, 0)
	begin = time.Now()
	sent = send(client, data)
	readN(t, server, len(data))
	<-sent
	if took := time.Since(begin); took > 900*time.Millisecond {
		t.Errorf("2 MiB took %v with the cap removed", took)
	}
}

func TestStallHoldsAndResumes(t *testing.T) {
	r, ln := start(t)
	client, server := pair(t, r, ln)
	r.Stall(Down)
	server.Write([]byte("held"))
	client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := client.Read(make([]byte, 4)); !isTimeout(err) {
		t.Fatalf("read through a stall: %d bytes, %v; want a timeout", n, err)
	}
	if n := r.Forwarded(Down); n != 0 {
		t.Errorf("forwarded %d bytes down while stalled", n)
	}
	// The other direction still flows, and the connection is open.
	client.Write([]byte("up"))
	if got := readN(t, server, 2); string(got) != "up" {
		t.Fatalf("server got %q", got)
	}
	r.Resume(Down)
	if got := readN(t, client, 4); string(got) != "held" {
		t.Fatalf("client got %q after the stall", got)
	}
}

// isTimeout reports whether err is a deadline's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestCutEndsBothAndRefuses(t *testing.T) {
	r, ln := start(t)
	client, server := pair(t, r, ln)
	r.Cut()
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s read after a cut: %d, %v; want EOF", name, n, err)
		}
	}
	waitFor(t, "the cut connection to go", func() bool { return r.Active() == 0 })

	// New connections are accepted after a cut...
	client, server = pair(t, r, ln)
	client.Write([]byte("again"))
	if got := readN(t, server, 5); string(got) != "again" {
		t.Fatalf("server got %q after a cut", got)
	}
	// ...and refused while the relay refuses them.
	if err := r.SetRefuse(true); err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("dialled a refusing relay")
	}
	if err := r.SetRefuse(false); err != nil {
		t.Fatal(err)
	}
	client, server = pair(t, r, ln)
	server.Write([]byte("back"))
	if got := readN(t, client, 4); string(got) != "back" {
		t.Fatalf("client got %q after refusing ended", got)
	}
}

func TestResetSendsRST(t *testing.T) {
	r, ln := start(t)
	client, server := pair(t, r, ln)
	r.Reset()
	for name, c := range map[string]net.Conn{"client": client, "server": server} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 1))
		t.Logf("%s read after a reset: %v", name, err)
		if err == nil || errors.Is(err, io.EOF) || isTimeout(err) {
			t.Errorf("%s read after a reset: %d, %v; want a connection reset", name, n, err)
		}
	}
}

// TestCloseLeavesNoGoroutines closes a relay with connections in every
// state (flowing, delayed, stalled with data waiting, capped) and checks
// that every goroutine it started has ended.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r, err := Listen(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r.SetLatency(Up, time.Hour)
	r.Stall(Down)
	r.SetBandwidth(Up, 1)
	var ends []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", r.Addr())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, c, s)
		c.Write(randomBytes(64 << 10))
		s.Write(randomBytes(64 << 10))
	}
	waitFor(t, "three connections", func() bool { return r.Active() == 3 })
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r.Active() != 0 {
		t.Errorf("Active() = %d after Close", r.Active())
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := r.SetRefuse(false); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetRefuse after Close: %v, want net.ErrClosed", err)
	}
	for _, c := range ends {
		c.Close()
	}
	ln.Close()
	waitFor(t, "the relay's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
