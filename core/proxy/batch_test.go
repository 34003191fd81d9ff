package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/credentials"

	"github.com/ferry-dr/ferry/core/pki"
)

// countingConn counts the writes made to a socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestAWriteLeavesInOneWriteToTheSocket(t *testing.T) {
	_, creds := proxyCreds(t, "p1", "p2")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type served struct {
		conn net.Conn
		err  error
	}
	accepted := make(chan served, 1)
	go func() {
		raw, err := lis.Accept()
		if err != nil {
			accepted <- served{err: err}
			return
		}
		conn, _, err := batchedTLS{credentials.NewTLS(creds["p1"].ServerConfig(pki.RoleProxy))}.ServerHandshake(raw)
		accepted <- served{conn, err}
	}()
	raw, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	client, _, err := batchedTLS{credentials.NewTLS(creds["p2"].ClientConfig(pki.Identity{Role: pki.RoleProxy, Name: "p1"}))}.ClientHandshake(context.Background(), "p1", counted)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	s := <-accepted
	if s.err != nil {
		t.Fatal(s.err)
	}
	defer s.conn.Close()

	data := frameOf(5, writeBuffer) // 16 TLS records
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(data))
		io.ReadFull(s.conn, b)
		got <- b
	}()
	before := counted.writes.Load()
	if _, err := client.Write(data); err != nil {
		t.Fatal(err)
	}
	if n := counted.writes.Load() - before; n != 1 {
		t.Errorf("a write of %d bytes took %d writes to the socket, want 1", len(data), n)
	}
	if !bytes.Equal(<-got, data) {
		t.Error("the other end read something else")
	}
}
