package sdk

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// openReader wraps a disk handle as a DiskReader: the direct lane when the
// plugin offered a path and the file opens here, the gRPC stream otherwise.
func (c *Client) openReader(h *pb.DiskHandle) (DiskReader, error) {
	hd := c.newHandle(h)
	if h.GetPath() != "" && !c.opts.NoDirect {
		if f, err := os.Open(h.GetPath()); err == nil {
			return &directReader{diskHandle: hd, f: f}, nil
		}
	}
	return &streamReader{diskHandle: hd}, nil
}

// openWriter wraps a disk handle as a DiskWriter, like openReader.
func (c *Client) openWriter(h *pb.DiskHandle) (DiskWriter, error) {
	hd := c.newHandle(h)
	if h.GetPath() != "" && !c.opts.NoDirect {
		if f, err := os.OpenFile(h.GetPath(), os.O_RDWR, 0); err == nil {
			if h.GetPrepare() {
				return &preparedWriter{diskHandle: hd, f: f}, nil
			}
			return &directWriter{diskHandle: hd, f: f}, nil
		}
	}
	return &streamWriter{diskHandle: hd}, nil
}

// diskHandle is the part common to every remote disk: the handle, its
// size, and a context that Close cancels so no call outlives it.
type diskHandle struct {
	c      *Client
	rpc    pb.DisksClient
	handle string
	size   int64
	// transport and why are what the plugin said of how it reads the disk.
	transport, why string
	ctx            context.Context
	cancel         context.CancelFunc
	once           sync.Once
}

func (c *Client) newHandle(h *pb.DiskHandle) *diskHandle {
	ctx, cancel := context.WithCancel(context.Background())
	return &diskHandle{c: c, rpc: pb.NewDisksClient(c.conn), handle: h.GetHandle(), size: h.GetSize(),
		transport: h.GetTransport(), why: h.GetTransportReason(), ctx: ctx, cancel: cancel}
}

func (d *diskHandle) Size() int64 { return d.size }

// Transport is what the plugin said of how it reads the disk; empty when it
// said nothing.
func (d *diskHandle) Transport() (mode, why string) { return d.transport, d.why }

// closeRemote ends the handle in the plugin once and reports its verdict.
func (d *diskHandle) closeRemote() error {
	err := errors.New("disk already closed")
	d.once.Do(func() {
		_, err = d.rpc.Close(context.Background(), &pb.CloseDiskRequest{Handle: d.handle})
		err = d.c.err(err)
		d.cancel()
	})
	return err
}

// clip bounds a read of n bytes at off to the disk.
func (d *diskHandle) clip(n int, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at negative offset %d: %w", off, errdefs.ErrInvalidArgument)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	return int(min(int64(n), d.size-off)), nil
}

// streamReader reads through the plugin's gRPC stream.
type streamReader struct{ *diskHandle }

var (
	_ DiskReader        = (*streamReader)(nil)
	_ TransportReporter = (*streamReader)(nil)
)

func (r *streamReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.clip(len(p), off)
	if n == 0 {
		return 0, err
	}
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	stream, err := r.rpc.Read(ctx, &pb.ReadRequest{Handle: r.handle, Offset: off, Length: int64(n), ChunkBytes: defaultChunkBytes})
	if err != nil {
		return 0, r.c.err(err)
	}
	got := 0
	// Each chunk's data stays in its receive buffer until it is copied.
	var c recvChunk
	defer c.release()
	for got < n {
		c.release()
		err := stream.RecvMsg(&c)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return got, r.c.err(err)
		}
		if c.GetOffset() != off+int64(got) {
			return got, fmt.Errorf("read %s at %d: chunk at %d, want %d: %w", r.c.opts.Name, off, c.GetOffset(), off+int64(got), errdefs.ErrUnavailable)
		}
		var k int
		if data := c.GetData(); len(data) > 0 {
			if crc32.Checksum(data, castagnoli) != c.GetCrc32C() {
				return got, fmt.Errorf("read %s at %d: chunk checksum mismatch: %w", r.c.opts.Name, c.GetOffset(), errdefs.ErrUnavailable)
			}
			if len(data) > n-got {
				return got, fmt.Errorf("read %s at %d: chunk runs past the request: %w", r.c.opts.Name, c.GetOffset(), errdefs.ErrUnavailable)
			}
			k = copy(p[got:n], data)
		} else {
			z := c.GetZeroLength()
			if z <= 0 || z > int64(n-got) {
				return got, fmt.Errorf("read %s at %d: bad zero run of %d: %w", r.c.opts.Name, c.GetOffset(), z, errdefs.ErrUnavailable)
			}
			k = int(z)
			clear(p[got : got+k])
		}
		got += k
	}
	if got < n {
		return got, io.ErrUnexpectedEOF
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *streamReader) Close() error { return r.closeRemote() }

// directReader reads the file the plugin named, in this process.
type directReader struct {
	*diskHandle
	f *os.File
}

var _ DiskReader = (*directReader)(nil)
var _ LocalPather = (*directReader)(nil)

func (r *directReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := r.clip(len(p), off)
	if n == 0 {
		return 0, err
	}
	k, err := r.f.ReadAt(p[:n], off)
	if k < n {
		// A sparse or short file reads as zeros up to the disk size.
		if errors.Is(err, io.EOF) {
			clear(p[k:n])
			k, err = n, nil
		} else {
			return k, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return k, err
}

func (r *directReader) LocalPath() string { return r.f.Name() }

func (r *directReader) Close() error {
	ferr := r.f.Close()
	if err := r.closeRemote(); err != nil {
		return err
	}
	return ferr
}

// streamWriter writes through the plugin's gRPC stream. One Write stream
// stays open across many WriteAt calls, which return once their chunks are
// handed to the transport: the host never waits for a reply per write.
// Sync and Close end the stream, which waits until the plugin applied every
// chunk, before they ask the plugin to make the writes durable. A failed
// stream fails every later call with the plugin's error.
type streamWriter struct {
	*diskHandle
	mu     sync.Mutex
	stream pb.Disks_WriteClient // nil between streams
	end    context.CancelFunc
	sent   int64 // bytes of the open stream
	err    error // the first failure, returned from then on
}

var _ DiskWriter = (*streamWriter)(nil)

func (w *streamWriter) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.size {
		return 0, fmt.Errorf("write of %d bytes at %d outside a disk of %d bytes: %w", len(p), off, w.size, errdefs.ErrInvalidArgument)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	if w.stream == nil {
		ctx, cancel := context.WithCancel(w.ctx)
		stream, err := w.rpc.Write(ctx)
		if err != nil {
			cancel()
			w.err = w.c.err(err)
			return 0, w.err
		}
		w.stream, w.end, w.sent = stream, cancel, 0
		if err := stream.Send(&pb.WriteMessage{Msg: &pb.WriteMessage_Handle{Handle: w.handle}}); err != nil {
			return 0, w.failLocked(err)
		}
	}
	for pos := 0; pos < len(p); {
		n := min(len(p)-pos, defaultChunkBytes)
		data := p[pos : pos+n]
		c := &pb.Chunk{Offset: off + int64(pos)}
		if isZero(data) {
			c.ZeroLength = int64(n)
		} else {
			c.Data = data
			c.Crc32C = crc32.Checksum(data, castagnoli)
		}
		// Send encodes the message before it returns: p may be reused.
		if err := w.stream.Send(&pb.WriteMessage{Msg: &pb.WriteMessage_Chunk{Chunk: c}}); err != nil {
			return 0, w.failLocked(err)
		}
		pos += n
	}
	w.sent += int64(len(p))
	return len(p), nil
}

// failLocked ends a stream whose Send failed: the plugin's verdict comes
// with its reply.
func (w *streamWriter) failLocked(sendErr error) error {
	if err := w.endLocked(); err != nil {
		return err
	}
	w.err = w.c.err(sendErr)
	return w.err
}

// endLocked ends the open stream, if any, once the plugin applied all of
// it, and checks that it did.
func (w *streamWriter) endLocked() error {
	if w.err != nil || w.stream == nil {
		return w.err
	}
	resp, err := w.stream.CloseAndRecv()
	w.end()
	w.stream = nil
	switch {
	case err != nil:
		w.err = fmt.Errorf("write %s: %w", w.c.opts.Name, w.c.err(err))
	case resp.GetBytesWritten() != w.sent:
		w.err = fmt.Errorf("write %s: %d of %d bytes written: %w", w.c.opts.Name, resp.GetBytesWritten(), w.sent, io.ErrShortWrite)
	}
	return w.err
}

func (w *streamWriter) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.endLocked(); err != nil {
		return err
	}
	if _, err := w.rpc.Sync(w.ctx, &pb.SyncDiskRequest{Handle: w.handle}); err != nil {
		w.err = w.c.err(err)
	}
	return w.err
}

func (w *streamWriter) Close() error {
	w.mu.Lock()
	err := w.endLocked()
	w.mu.Unlock()
	if cerr := w.closeRemote(); err == nil {
		err = cerr
	}
	return err
}

// directWriter writes the file the plugin named, in this process.
type directWriter struct {
	*diskHandle
	f     *os.File
	dirty atomic.Int64 // bytes written since writeback was last started
}

// writebackEvery is how many bytes a direct writer writes between two
// starts of writeback.
const writebackEvery = 32 << 20

var _ DiskWriter = (*directWriter)(nil)
var _ LocalPather = (*directWriter)(nil)

func (w *directWriter) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.size {
		return 0, fmt.Errorf("write of %d bytes at %d outside a disk of %d bytes: %w", len(p), off, w.size, errdefs.ErrInvalidArgument)
	}
	n, err := w.f.WriteAt(p, off)
	if w.dirty.Add(int64(n)) >= writebackEvery {
		w.dirty.Store(0)
		startWriteback(w.f)
	}
	return n, err
}

func (w *directWriter) LocalPath() string { return w.f.Name() }

// Sync makes this process's writes durable, then the plugin's writer.
func (w *directWriter) Sync() error {
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("flush %s: %w", w.f.Name(), err)
	}
	_, err := w.rpc.Sync(w.ctx, &pb.SyncDiskRequest{Handle: w.handle})
	return w.c.err(err)
}

// Close makes the writes durable before the plugin is told the disk is
// closed.
func (w *directWriter) Close() error {
	serr := w.f.Sync()
	cerr := w.f.Close()
	if serr != nil || cerr != nil {
		w.closeRemote()
		return fmt.Errorf("flush %s: %w", w.f.Name(), errors.Join(serr, cerr))
	}
	return w.closeRemote()
}
