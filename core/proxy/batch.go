package proxy

import (
	"context"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// batchedTLS wraps a proxy connection's TLS credentials so that each write
// of gRPC's (a batch of HTTP/2 frames, up to writeBuffer bytes) leaves in
// one write to the socket: crypto/tls writes every record, at most 16 KiB,
// with a system call of its own, and on a full copy those calls, and the
// wake-ups of the reading proxy each one caused, were a good part of both
// proxies' CPU time outside compression (issue 12).
type batchedTLS struct {
	credentials.TransportCredentials
}

// writeBuffer is the gRPC write buffer of a proxy's connections: how many
// bytes of frames go out in one write.
const writeBuffer = 256 << 10

func (c batchedTLS) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	b := &batchConn{Conn: raw}
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, b)
	if err != nil {
		return nil, nil, err
	}
	return &batchedConn{Conn: conn, raw: b}, info, nil
}

func (c batchedTLS) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	b := &batchConn{Conn: raw}
	conn, info, err := c.TransportCredentials.ServerHandshake(b)
	if err != nil {
		return nil, nil, err
	}
	return &batchedConn{Conn: conn, raw: b}, info, nil
}

func (c batchedTLS) Clone() credentials.TransportCredentials {
	return batchedTLS{c.TransportCredentials.Clone()}
}

// batchedConn is a TLS connection whose Write gathers the records it
// makes and writes them to the socket at once.
type batchedConn struct {
	net.Conn // the TLS connection
	raw      *batchConn
}

func (c *batchedConn) Write(p []byte) (int, error) {
	c.raw.hold()
	n, err := c.Conn.Write(p)
	if ferr := c.raw.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// batchConn is the socket under a TLS connection: while held, what TLS
// writes is kept, and written at once by flush.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.holding {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) hold() {
	b.mu.Lock()
	b.holding = true
	b.mu.Unlock()
}

// flush writes what was kept since hold.
func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holding = false
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}
