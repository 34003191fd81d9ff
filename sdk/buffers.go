package sdk

import (
	"google.golang.org/grpc/mem"
)

// messageBuffers is the pool gRPC takes message buffers from, on both ends
// of a plugin connection. gRPC's default pool has no size between 32 KiB
// and 1 MiB and clears a whole buffer each time it hands one out, so every
// disk write of 33 KiB to 1 MiB cost a 1 MiB clear on each side; with a
// size for each power of two up to 4 MiB, a buffer is at most twice its
// message.
var messageBuffers mem.BufferPool

func init() {
	p, err := mem.NewBinaryTieredBufferPool(8, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22)
	if err != nil {
		panic(err) // the sizes above are valid
	}
	messageBuffers = p
}

// MessageBuffers is the gRPC buffer pool the SDK's server uses; a host
// dials plugins with it too (grpc/experimental.WithBufferPool).
func MessageBuffers() mem.BufferPool { return messageBuffers }
