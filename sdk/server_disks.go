package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// defaultChunkBytes is the payload of one data chunk on the gRPC lane.
const defaultChunkBytes = 1 << 20

// maxChunkBytes is the largest chunk a reader may ask for.
const maxChunkBytes = 16 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// zeros is a run of zeros, never written, for comparisons and zero
// writes. It is an array, not a slice made at init: it lives in the
// binary's zero-filled data and costs nothing until its pages are read,
// where 16 MiB allocated at init cost every process that links the sdk
// (ferry too) a few milliseconds. A zero write hands WriteAt as much of it
// as the chunk covers, up to all of it, as before: a target may treat a
// large write differently from many small ones (a VHDX block written whole
// with zeros stays unallocated; the vSphere target may sync its undo
// store at each write).
var zeros [maxChunkBytes]byte

// zeroWindow is how much of zeros isZero compares at a time: a window
// that stays in the cache, so a comparison reads mostly b.
const zeroWindow = 64 << 10

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), zeroWindow)
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, defaultChunkBytes); return &b }}

// openDisk is a disk opened through a handle: a reader or a writer.
type openDisk struct {
	r DiskReader
	w DiskWriter
}

func (d *openDisk) size() int64 {
	if d.r != nil {
		return d.r.Size()
	}
	return d.w.Size()
}

func (d *openDisk) close() error {
	if d.r != nil {
		return d.r.Close()
	}
	return d.w.Close()
}

func (d *openDisk) localPath() string {
	var v any = d.r
	if d.r == nil {
		v = d.w
	}
	if lp, ok := v.(LocalPather); ok {
		return lp.LocalPath()
	}
	return ""
}

// addDisk registers an open disk and describes its handle. The path of the
// direct lane is offered only when the component declared DirectData.
func (s *Server) addDisk(d *openDisk, direct bool) *pb.DiskHandle {
	h := newID()
	s.mu.Lock()
	s.disks[h] = d
	s.mu.Unlock()
	out := &pb.DiskHandle{Handle: h, Size: d.size()}
	if direct {
		out.Path = d.localPath()
		_, prep := d.w.(WritePreparer)
		out.Prepare = out.Path != "" && prep
	}
	if tr, ok := d.r.(TransportReporter); ok {
		out.Transport, out.TransportReason = tr.Transport()
	}
	return out
}

func (s *Server) disk(handle string) (*openDisk, error) {
	s.mu.Lock()
	d := s.disks[handle]
	s.mu.Unlock()
	if d == nil {
		return nil, fmt.Errorf("disk handle %q is not open: %w", handle, errdefs.ErrNotFound)
	}
	return d, nil
}

type diskService struct {
	pb.UnimplementedDisksServer
	s *Server
}

func (ds *diskService) Read(req *pb.ReadRequest, stream pb.Disks_ReadServer) error {
	d, err := ds.s.disk(req.GetHandle())
	if err != nil {
		return err
	}
	if d.r == nil {
		return fmt.Errorf("disk handle %q is open for writing: %w", req.GetHandle(), errdefs.ErrInvalidArgument)
	}
	chunk := int64(req.GetChunkBytes())
	if chunk <= 0 {
		chunk = defaultChunkBytes
	}
	chunk = min(chunk, maxChunkBytes)
	bufp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bufp)
	if int64(cap(*bufp)) < chunk {
		*bufp = make([]byte, chunk)
	}
	buf := (*bufp)[:chunk]

	pos, end := req.GetOffset(), req.GetOffset()+req.GetLength()
	if pos < 0 || req.GetLength() < 0 {
		return fmt.Errorf("read at %d length %d: %w", pos, req.GetLength(), errdefs.ErrInvalidArgument)
	}
	ctx := stream.Context()
	for pos < end {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(chunk, end-pos)
		k, rerr := d.r.ReadAt(buf[:n], pos)
		if k > 0 {
			data := buf[:k]
			msg := &pb.Chunk{Offset: pos}
			if isZero(data) {
				msg.ZeroLength = int64(k)
			} else {
				msg.Data = data
				msg.Crc32C = crc32.Checksum(data, castagnoli)
			}
			// Send encodes the message before it returns, so buf may be
			// reused for the next chunk.
			if err := stream.Send(msg); err != nil {
				return err
			}
			pos += int64(k)
		}
		if errors.Is(rerr, io.EOF) {
			return nil // the client sees the short read
		}
		if rerr != nil {
			return rerr
		}
	}
	return nil
}

func (ds *diskService) Write(stream pb.Disks_WriteServer) error {
	// Each message's data stays in its receive buffer until it is written
	// (DiskWriter.WriteAt keeps no reference to it).
	var m recvWrite
	defer m.release()
	if err := stream.RecvMsg(&m); err != nil {
		return err
	}
	handle := m.GetHandle()
	d, err := ds.s.disk(handle)
	if err != nil {
		return err
	}
	if d.w == nil {
		return fmt.Errorf("disk handle %q is open for reading: %w", handle, errdefs.ErrInvalidArgument)
	}
	var written int64
	for {
		m.release()
		err := stream.RecvMsg(&m)
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.WriteResponse{BytesWritten: written})
		}
		if err != nil {
			return err
		}
		c := m.GetChunk()
		if c == nil {
			return fmt.Errorf("write: a message after the first carries no chunk: %w", errdefs.ErrInvalidArgument)
		}
		n, err := writeChunk(d.w, c)
		written += n
		if err != nil {
			return err
		}
	}
}

// writeChunk verifies a chunk and writes it.
func writeChunk(w io.WriterAt, c *pb.Chunk) (int64, error) {
	if c.GetOffset() < 0 || c.GetZeroLength() < 0 {
		return 0, fmt.Errorf("chunk at %d: negative offset or length: %w", c.GetOffset(), errdefs.ErrInvalidArgument)
	}
	if len(c.GetData()) > 0 {
		if sum := crc32.Checksum(c.GetData(), castagnoli); sum != c.GetCrc32C() {
			return 0, fmt.Errorf("chunk at %d: checksum %08x, want %08x: %w", c.GetOffset(), sum, c.GetCrc32C(), errdefs.ErrInvalidArgument)
		}
		n, err := w.WriteAt(c.GetData(), c.GetOffset())
		return int64(n), err
	}
	var done int64
	for done < c.GetZeroLength() {
		n := min(c.GetZeroLength()-done, int64(len(zeros)))
		k, err := w.WriteAt(zeros[:n], c.GetOffset()+done)
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (ds *diskService) Sync(ctx context.Context, req *pb.SyncDiskRequest) (*pb.Empty, error) {
	d, err := ds.s.disk(req.GetHandle())
	if err != nil {
		return nil, err
	}
	if d.w == nil {
		return nil, fmt.Errorf("disk handle %q is open for reading: %w", req.GetHandle(), errdefs.ErrInvalidArgument)
	}
	return &pb.Empty{}, d.w.Sync()
}

func (ds *diskService) Prepare(ctx context.Context, req *pb.PrepareRequest) (*pb.Empty, error) {
	d, err := ds.s.disk(req.GetHandle())
	if err != nil {
		return nil, err
	}
	p, ok := d.w.(WritePreparer)
	if !ok {
		return nil, fmt.Errorf("disk handle %q takes no prepared writes: %w", req.GetHandle(), errdefs.ErrInvalidArgument)
	}
	es := make([]Extent, 0, len(req.GetExtents()))
	for _, e := range req.GetExtents() {
		if e.GetOffset() < 0 || e.GetLength() < 0 || e.GetOffset() > d.size()-e.GetLength() {
			return nil, fmt.Errorf("prepare %d bytes at %d of a %d-byte disk: %w", e.GetLength(), e.GetOffset(), d.size(), errdefs.ErrInvalidArgument)
		}
		es = append(es, Extent{Offset: e.GetOffset(), Length: e.GetLength()})
	}
	return &pb.Empty{}, p.PrepareWrites(es)
}

func (ds *diskService) Close(ctx context.Context, req *pb.CloseDiskRequest) (*pb.Empty, error) {
	ds.s.mu.Lock()
	d := ds.s.disks[req.GetHandle()]
	delete(ds.s.disks, req.GetHandle())
	ds.s.mu.Unlock()
	if d == nil {
		return nil, fmt.Errorf("disk handle %q is not open: %w", req.GetHandle(), errdefs.ErrNotFound)
	}
	return &pb.Empty{}, d.close()
}
