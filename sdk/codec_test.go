package sdk

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"

	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// TestMessageCodec round-trips small and large messages, decoded from one
// buffer and from several (as gRPC hands over a message that arrived in
// frames), and checks that a decoded message does not share the buffers
// given back to the pool.
func TestMessageCodec(t *testing.T) {
	c := messageCodec{}
	for _, size := range []int{0, 10, smallMessage, smallMessage + 1, 40 << 10, 1 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i*7 + size)
		}
		enc, err := c.Marshal(&pb.GetMessage{Msg: &pb.GetMessage_Data{Data: data}})
		if err != nil {
			t.Fatal(err)
		}
		wire := enc.Materialize()
		enc.Free()
		for _, parts := range []int{1, 3} {
			var in mem.BufferSlice
			for k := range parts {
				part := wire[k*len(wire)/parts : (k+1)*len(wire)/parts]
				buf := messageBuffers.Get(len(part))
				copy(*buf, part)
				in = append(in, mem.NewBuffer(buf, messageBuffers))
			}
			var got pb.GetMessage
			if err := c.Unmarshal(in, &got); err != nil {
				t.Fatalf("%d bytes in %d parts: %v", size, parts, err)
			}
			in.Free()
			// Reuse the freed buffers: the decoded message must not change.
			for range parts {
				b := messageBuffers.Get(len(wire))
				for i := range *b {
					(*b)[i] = 0xEE
				}
				messageBuffers.Put(b)
			}
			if !bytes.Equal(got.GetData(), data) {
				t.Fatalf("%d bytes in %d parts: decoded data differs", size, parts)
			}
		}
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Fatal("encoded a string")
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff, 0xff})}, &pb.GetMessage{}); err == nil {
		t.Fatal("decoded garbage")
	}
}
