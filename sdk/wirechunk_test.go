package sdk

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// countingPool counts the buffers it hands out that are not back yet.
type countingPool struct {
	out int
}

func (p *countingPool) Get(n int) *[]byte { p.out++; b := make([]byte, n); return &b }
func (p *countingPool) Put(b *[]byte) {
	p.out--
	for i := range *b {
		(*b)[i] = 0xEE // a reuse would show in the data still referenced
	}
}

// TestReceivedChunksKeepTheirBuffer decodes write and read messages as
// gRPC hands them over (one buffer or several parts, freed by gRPC as soon
// as the codec returns) and checks that the data stays intact until
// release, and that release gives the buffer back.
func TestReceivedChunksKeepTheirBuffer(t *testing.T) {
	data := bytes.Repeat([]byte("ferry"), 40<<10)
	chunk := &pb.Chunk{Offset: 1 << 40, Data: data, Crc32C: 7}
	for _, parts := range []int{1, 3} {
		var pool countingPool
		wire, err := proto.Marshal(&pb.WriteMessage{Msg: &pb.WriteMessage_Chunk{Chunk: chunk}})
		if err != nil {
			t.Fatal(err)
		}
		in := split(wire, parts, &pool)
		var w recvWrite
		if err := (messageCodec{}).Unmarshal(in, &w); err != nil {
			t.Fatal(err)
		}
		in.Free() // as gRPC does
		if parts > 1 && pool.out != 0 {
			t.Fatalf("%d parts: %d parts not given back after decoding into one", parts, pool.out)
		}
		if parts == 1 && pool.out != 1 {
			t.Fatalf("one part: %d buffers out while the chunk holds one", pool.out)
		}
		if !proto.Equal(w.GetChunk(), chunk) {
			t.Fatalf("%d parts: decoded %v", parts, w.GetChunk().GetOffset())
		}
		w.release()
		if pool.out != 0 || w.GetChunk().GetData() != nil {
			t.Fatalf("%d parts: %d buffers out after release", parts, pool.out)
		}

		wire, _ = proto.Marshal(chunk)
		in = split(wire, parts, &pool)
		var c recvChunk
		if err := (messageCodec{}).Unmarshal(in, &c); err != nil {
			t.Fatal(err)
		}
		in.Free()
		if !bytes.Equal(c.GetData(), data) || c.GetOffset() != chunk.Offset {
			t.Fatalf("%d parts: read chunk decoded wrongly", parts)
		}
		c.release()
		if pool.out != 0 {
			t.Fatalf("%d parts: %d buffers out after release", parts, pool.out)
		}
	}
}

// split cuts wire into parts buffers from pool, as gRPC receives a message
// in several frames.
func split(wire []byte, parts int, pool mem.BufferPool) mem.BufferSlice {
	var out mem.BufferSlice
	for i := range parts {
		part := wire[i*len(wire)/parts : (i+1)*len(wire)/parts]
		b := pool.Get(len(part))
		copy(*b, part)
		out = append(out, mem.NewBuffer(b, pool))
	}
	return out
}

// FuzzWireChunk checks the in-place decoders against protobuf's: whatever
// they accept, they decode as protobuf does.
func FuzzWireChunk(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.WriteMessage{Msg: &pb.WriteMessage_Handle{Handle: "h-1"}},
		&pb.WriteMessage{Msg: &pb.WriteMessage_Chunk{Chunk: &pb.Chunk{Offset: 4096, Data: []byte("data"), Crc32C: 9}}},
		&pb.WriteMessage{Msg: &pb.WriteMessage_Chunk{Chunk: &pb.Chunk{Offset: -1, ZeroLength: 1 << 20}}},
		&pb.Chunk{Offset: 7, Data: []byte{0}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Add(protowire.AppendTag(nil, 9, protowire.VarintType))
	f.Fuzz(func(t *testing.T, b []byte) {
		var w recvWrite
		if w.decode(b) {
			var want pb.WriteMessage
			if err := proto.Unmarshal(b, &want); err != nil {
				t.Fatalf("decoded a write message protobuf refuses: %v", err)
			}
			if !proto.Equal(&w.WriteMessage, &want) {
				t.Fatalf("write message %v, protobuf %v", &w.WriteMessage, &want)
			}
		}
		var c pb.Chunk
		if decodeChunk(b, &c) {
			var want pb.Chunk
			if err := proto.Unmarshal(b, &want); err != nil {
				t.Fatalf("decoded a chunk protobuf refuses: %v", err)
			}
			if !proto.Equal(&c, &want) {
				t.Fatalf("chunk %v, protobuf %v", &c, &want)
			}
		}
	})
}
