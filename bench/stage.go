package bench

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"time"
)

// The stage floors of a full copy through two proxies (issue 12): each
// stage of the pipeline measured alone, by the plainest program that does
// it, so the proxies' throughput can be read as a share of the slowest
// one's. Compression is the zstd command itself (zstd -1 -T0, every
// core); the two others are here, run as `ferry-bench floor tls` and
// `ferry-bench floor write`:
//
//   - the TLS floor pushes the bytes the proxies' data stream carried from
//     a client to a server over TLS 1.3 on loopback, both in one process
//     (one encrypts while the other decrypts, as the two proxies do);
//   - the write floor writes the image's data (every 4 KiB block that is
//     not all zeros, at its offset) into a new file of the image's size
//     and syncs it once, as a replica's first copy must.

// tlsPiece is what the TLS floor's client writes at once; TLS cuts it
// into records of 16 KiB.
const tlsPiece = 1 << 20

// TLSResult is what the TLS floor did.
type TLSResult struct {
	Bytes       int64  // what the server received
	Version     string // "TLS 1.3"
	CipherSuite string // as negotiated (AES-GCM where the CPU has AES)
}

// TLSFloor pushes n bytes from a client to a server over TLS 1.3 on a
// loopback connection and returns once the server has received them all
// and said so. The certificate is made on the spot (ECDSA P-256, like
// ferry's CA) and its making is not part of the work pushed.
func TLSFloor(n int64) (TLSResult, error) {
	if n < 0 {
		return TLSResult{}, fmt.Errorf("tls floor: negative size %d", n)
	}
	cert, pool, err := selfSigned("ferry-bench")
	if err != nil {
		return TLSResult{}, err
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		return TLSResult{}, fmt.Errorf("tls floor: %w", err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() { served <- tlsServe(ln) }()

	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "ferry-bench", MinVersion: tls.VersionTLS13})
	if err != nil {
		return TLSResult{}, fmt.Errorf("tls floor: %w", err)
	}
	defer conn.Close()
	res, err := tlsPush(conn, n)
	if serr := <-served; err == nil {
		err = serr
	}
	return res, err
}

// tlsPush writes n bytes on conn, ends its sending side and reads the
// count the server received.
func tlsPush(conn *tls.Conn, n int64) (TLSResult, error) {
	buf := make([]byte, tlsPiece)
	if _, err := rand.Read(buf); err != nil { // what it holds does not matter to AES-GCM; random keeps it honest
		return TLSResult{}, err
	}
	for left := n; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := conn.Write(buf[:k]); err != nil {
			return TLSResult{}, fmt.Errorf("tls floor: write: %w", err)
		}
		left -= k
	}
	if err := conn.CloseWrite(); err != nil {
		return TLSResult{}, fmt.Errorf("tls floor: close: %w", err)
	}
	var got [8]byte
	if _, err := io.ReadFull(conn, got[:]); err != nil {
		return TLSResult{}, fmt.Errorf("tls floor: the server's count: %w", err)
	}
	st := conn.ConnectionState()
	res := TLSResult{Bytes: int64(binary.BigEndian.Uint64(got[:])), Version: tls.VersionName(st.Version), CipherSuite: tls.CipherSuiteName(st.CipherSuite)}
	if res.Bytes != n {
		return res, fmt.Errorf("tls floor: the server received %d bytes of %d", res.Bytes, n)
	}
	return res, nil
}

// tlsServe accepts one connection, reads it to its end and writes back how
// many bytes it read.
func tlsServe(ln net.Listener) error {
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("tls floor: accept: %w", err)
	}
	defer c.Close()
	n, err := io.CopyBuffer(io.Discard, c, make([]byte, tlsPiece))
	if err != nil {
		return fmt.Errorf("tls floor: read: %w", err)
	}
	var out [8]byte
	binary.BigEndian.PutUint64(out[:], uint64(n))
	if _, err := c.Write(out[:]); err != nil {
		return fmt.Errorf("tls floor: reply: %w", err)
	}
	return nil
}

// selfSigned makes a certificate for name and a pool that trusts it.
func selfSigned(name string) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("tls floor: certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

// writeChunk is what the write floor reads at once.
const writeChunk = 4 << 20

// WriteFile is a new file the write floor fills.
type WriteFile interface {
	SyncWriterAt
	Truncate(size int64) error
}

// WriteFloor sizes dst to size bytes (holes) and writes into it, at the
// same offsets, every DigestBlock-byte block of src that is not all
// zeros, neighbours merged into one write; then it syncs dst once. It
// returns the bytes written.
func WriteFloor(src io.ReaderAt, size int64, dst WriteFile) (int64, error) {
	if size < 0 {
		return 0, fmt.Errorf("write floor: negative size %d", size)
	}
	if err := dst.Truncate(size); err != nil {
		return 0, fmt.Errorf("write floor: %w", err)
	}
	var zero [DigestBlock]byte
	buf := make([]byte, writeChunk)
	var written int64
	for off := int64(0); off < size; off += writeChunk {
		n := min(writeChunk, size-off)
		if k, err := src.ReadAt(buf[:n], off); int64(k) < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return written, fmt.Errorf("write floor: read %d bytes at %d: %w", n, off, err)
		}
		// Runs of blocks that are not all zeros, each written at once.
		for p := int64(0); p < n; {
			end := min(p+DigestBlock, n)
			if bytes.Equal(buf[p:end], zero[:end-p]) {
				p = end
				continue
			}
			q := end
			for q < n {
				e := min(q+DigestBlock, n)
				if bytes.Equal(buf[q:e], zero[:e-q]) {
					break
				}
				q = e
			}
			if _, err := dst.WriteAt(buf[p:q], off+p); err != nil {
				return written, fmt.Errorf("write floor: write %d bytes at %d: %w", q-p, off+p, err)
			}
			written += q - p
			p = q
		}
	}
	if err := dst.Sync(); err != nil {
		return written, fmt.Errorf("write floor: sync: %w", err)
	}
	return written, nil
}
