package sdk

import (
	"unicode/utf8"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// Received chunks keep their data in the buffer gRPC received them in, a
// buffer of the SDK's pool, until they are released: protobuf's decoder
// copies every bytes field into fresh memory, and on a write stream of
// scattered changes that fresh memory, one chunk after another, was a
// quarter of the CPU time (page faults) on each side.
//
// recvChunk and recvWrite embed the generated messages, so a codec other
// than the SDK's decodes them as ordinary messages (with a copy).

// retainer is a message the SDK's codec decodes in place: it keeps buf,
// with one reference of its own, until it is released.
type retainer interface {
	retain(buf mem.Buffer) error
}

// recvChunk is a Chunk received on a read stream.
type recvChunk struct {
	pb.Chunk
	buf mem.Buffer
}

func (c *recvChunk) retain(buf mem.Buffer) error {
	c.release()
	if decodeChunk(buf.ReadOnlyData(), &c.Chunk) {
		c.buf = buf
		return nil
	}
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), &c.Chunk)
}

// release gives the received buffer back; the data is gone after it.
func (c *recvChunk) release() {
	if c.buf != nil {
		c.buf.Free()
		c.buf = nil
	}
	c.Data = nil
}

// recvWrite is a message received on a write stream.
type recvWrite struct {
	pb.WriteMessage
	chunk pb.Chunk
	oneof pb.WriteMessage_Chunk
	buf   mem.Buffer
}

func (w *recvWrite) retain(buf mem.Buffer) error {
	w.release()
	if w.decode(buf.ReadOnlyData()) {
		w.buf = buf
		return nil
	}
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), &w.WriteMessage)
}

func (w *recvWrite) release() {
	if w.buf != nil {
		w.buf.Free()
		w.buf = nil
	}
	w.chunk.Data = nil
}

// decode reads the usual shapes of a write message (a handle, or one
// chunk) into w, the chunk's data aliasing b; it reports false for any
// other shape (unknown or repeated fields), which protobuf's decoder then
// handles.
func (w *recvWrite) decode(b []byte) bool {
	w.WriteMessage.Reset()
	seen := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || seen {
			return false
		}
		b = b[n:]
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch num {
		case 1:
			if !utf8.Valid(v) {
				return false
			}
			w.Msg = &pb.WriteMessage_Handle{Handle: string(v)}
		case 2:
			if !decodeChunk(v, &w.chunk) {
				return false
			}
			w.oneof.Chunk = &w.chunk
			w.Msg = &w.oneof
		default:
			return false
		}
		seen = true
	}
	return true
}

// decodeChunk reads a chunk with each field at most once and no unknown
// fields into c, its data aliasing b; it reports false for anything else.
func decodeChunk(b []byte, c *pb.Chunk) bool {
	c.Reset()
	var seen [5]bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num < 1 || num > 4 || seen[num] {
			return false
		}
		seen[num] = true
		b = b[n:]
		switch {
		case (num == 1 || num == 3) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num == 1 {
				c.Offset = int64(v)
			} else {
				c.ZeroLength = int64(v)
			}
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if len(v) > 0 {
				c.Data = v[:len(v):len(v)]
			}
		case num == 4 && typ == protowire.Fixed32Type:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			c.Crc32C = v
		default:
			return false
		}
	}
	return true
}
