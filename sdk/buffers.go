package sdk

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// Message buffer sizes: one pool per power of two from 2^minBufferShift to
// 2^maxBufferShift bytes; larger messages get a buffer of their own.
const (
	minBufferShift = 8
	maxBufferShift = 22
)

// messageBuffers is the pool gRPC takes message buffers from, on both ends
// of a plugin connection.
//
// gRPC's own pools clear a buffer each time they hand it out (and the
// default one has no size between 32 KiB and 1 MiB, so a 40 KiB disk write
// cleared 1 MiB). gRPC fills every buffer it takes before it reads it (a
// message is marshalled into it, or a frame read into it), so clearing
// only costs: it was a tenth of the host's CPU time on a run of scattered
// writes. With a size per power of two a buffer is at most twice its
// message.
var messageBuffers = newBufferPool()

// MessageBuffers is the gRPC buffer pool the SDK's server uses; a host
// dials plugins with it too (grpc/experimental.WithBufferPool).
func MessageBuffers() mem.BufferPool { return messageBuffers }

// bufferPool is a mem.BufferPool that hands out buffers without clearing
// them.
type bufferPool struct {
	tiers [maxBufferShift - minBufferShift + 1]sync.Pool
}

func newBufferPool() *bufferPool { return &bufferPool{} }

// tierFor returns the index of the smallest tier that holds size bytes,
// or -1 when none does.
func tierFor(size int) int {
	switch {
	case size > 1<<maxBufferShift:
		return -1
	case size <= 1<<minBufferShift:
		return 0
	}
	return bits.Len(uint(size-1)) - minBufferShift
}

// Get returns a buffer of length size; its contents are arbitrary.
func (p *bufferPool) Get(size int) *[]byte {
	t := tierFor(size)
	if t < 0 {
		b := make([]byte, size)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<(t+minBufferShift))
	return &b
}

// Put gives a buffer back, to the largest tier its capacity fills.
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minBufferShift {
		return
	}
	t := min(bits.Len(uint(c))-1, maxBufferShift) - minBufferShift
	*b = (*b)[:0]
	p.tiers[t].Put(b)
}
