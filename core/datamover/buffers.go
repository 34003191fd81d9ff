package datamover

import (
	"math/bits"
	"sync"
)

// Buffer sizes: classes of a quarter power of two (at most a quarter
// wasted) from minBuffer bytes up to maxFrameLength plus a frame's
// overhead; larger buffers are not kept.
const (
	minBufferShift = 12
	minBuffer      = 1 << minBufferShift
	maxBufferShift = 27 // 128 MiB: a 64 MiB frame's payload and digests
	bufferClasses  = (maxBufferShift-minBufferShift)*4 + 1
)

// keptBuffers bounds the bytes of free buffers the data mover keeps
// between chunks and disks.
const keptBuffers = 48 << 20

// buffers keeps the read, frame and decompression buffers of every Move
// and Receiver in the process, so a run reuses the memory of the chunk and
// the disk before it instead of taking fresh memory (whose page faults
// were a quarter of a scattered run's CPU time). A buffer is sized to its
// chunk: a 4 KiB extent takes a 4 KiB buffer, not a ReadSize one.
var buffers = &bufferPool{limit: keptBuffers}

// bufferPool is a bounded free list of byte buffers by size class. Unlike
// sync.Pool it survives garbage collections, which come often during a
// run; unlike a buffer per worker it holds no more than limit bytes free.
type bufferPool struct {
	mu    sync.Mutex
	free  [bufferClasses][]*[]byte
	kept  int64
	limit int64
}

// bufferClass returns the class of the smallest buffer of at least n
// bytes and that buffer's size; class -1 when n is too large to keep.
func bufferClass(n int) (int, int) {
	if n <= minBuffer {
		return 0, minBuffer
	}
	k := bits.Len(uint(n-1)) - 1 // 2^k < n <= 2^(k+1)
	if k >= maxBufferShift {
		return -1, n
	}
	step := 1 << (k - 2)
	q := (n - 1<<k + step - 1) / step // 1..4
	return (k-minBufferShift)*4 + q, 1<<k + q*step
}

// get returns a buffer of length n; its contents are arbitrary.
func (p *bufferPool) get(n int) *[]byte {
	c, size := bufferClass(n)
	if c >= 0 {
		p.mu.Lock()
		if k := len(p.free[c]); k > 0 {
			b := p.free[c][k-1]
			p.free[c] = p.free[c][:k-1]
			p.kept -= int64(cap(*b))
			p.mu.Unlock()
			*b = (*b)[:n]
			return b
		}
		p.mu.Unlock()
	}
	b := make([]byte, n, size)
	return &b
}

// put gives a buffer back; the caller must hold no reference to it. The
// buffer goes to the largest class its capacity fills, or is dropped when
// the pool holds enough.
func (p *bufferPool) put(b *[]byte) {
	c := cap(*b)
	if c < minBuffer {
		return
	}
	class, size := bufferClass(c)
	if class < 0 {
		return
	}
	if size > c { // between two classes: file it under the smaller one
		class--
	}
	*b = (*b)[:0]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kept+int64(c) > p.limit {
		return
	}
	p.kept += int64(c)
	p.free[class] = append(p.free[class], b)
}
