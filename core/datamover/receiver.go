package datamover

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
)

// Receiver is the target data mover of one disk: it verifies each frame's
// blocks against their digests and writes them. It is a Sink, so in a
// single process the source side sends straight into it; across machines
// a transport hands it the frames it receives. It is safe for concurrent
// use.
type Receiver struct {
	w       io.WriterAt
	size    int64
	written atomic.Int64
	busy    Busy
}

// Busy is how busy writing the replica disk was: the receiver's writes,
// and whatever its owner counts in (such as the disk's Sync).
func (r *Receiver) Busy() *Busy { return &r.busy }

// NewReceiver writes frames to w, a disk of size bytes.
func NewReceiver(w io.WriterAt, size int64) *Receiver {
	return &Receiver{w: w, size: size}
}

// Written is how many bytes the receiver wrote.
func (r *Receiver) Written() int64 { return r.written.Load() }

// Send applies every frame in b.
func (r *Receiver) Send(ctx context.Context, b []byte) error {
	for len(b) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, n, err := parseFrame(b)
		if err != nil {
			return err
		}
		if err := r.apply(f); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// WriteData writes a run of blocks the source data mover of this process
// read and digested, without a frame: no payload to copy into one, and no
// digests to check again over the same memory. Moves without compression
// whose sink is a Receiver use it.
func (r *Receiver) WriteData(ctx context.Context, off int64, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.busy.Start()
	defer r.busy.Stop()
	if off < 0 || off+int64(len(data)) > r.size {
		return fmt.Errorf("%w: %d bytes at %d past the end of a %d-byte disk", ErrCorrupt, len(data), off, r.size)
	}
	return r.write(data, off)
}

// write writes data, inside the disk, at off.
func (r *Receiver) write(data []byte, off int64) error {
	if _, err := r.w.WriteAt(data, off); err != nil {
		return fmt.Errorf("write at %d: %w", off, err)
	}
	r.written.Add(int64(len(data)))
	return nil
}

func (r *Receiver) apply(f frame) error {
	r.busy.Start()
	defer r.busy.Stop()
	if f.offset+int64(f.length) > r.size {
		return fmt.Errorf("%w: %d bytes at %d past the end of a %d-byte disk", ErrCorrupt, f.length, f.offset, r.size)
	}
	if f.kind == kindZero {
		for done := 0; done < f.length; {
			n := min(f.length-done, len(zeroBlock))
			if _, err := r.w.WriteAt(zeroBlock[:n], f.offset+int64(done)); err != nil {
				return fmt.Errorf("write zeros at %d: %w", f.offset+int64(done), err)
			}
			done += n
		}
		r.written.Add(int64(f.length))
		return nil
	}
	// An uncompressed frame's blocks are written from the frame itself; a
	// compressed one takes a buffer of its own size from the pool.
	var buf []byte
	if f.codec != CodecNone {
		bp := decodeBuffer(f.length)
		defer buffers.put(bp)
		buf = (*bp)[:0]
	}
	data, err := f.decode(buf)
	if err != nil {
		return err
	}
	return r.write(data, f.offset)
}

// decodeSlack is the room zstd's decoder wants past the end of its output
// to copy in blocks of 16 bytes; without it, it copies byte-exact, and a
// frame's last block (most frames' only one) decoded about 7% slower.
const decodeSlack = 16

// decodeBuffer returns a pooled buffer for decompressing a frame of
// length bytes, with decodeSlack bytes of room past them.
func decodeBuffer(length int) *[]byte {
	bp := buffers.get(length + decodeSlack)
	*bp = (*bp)[:length]
	return bp
}
