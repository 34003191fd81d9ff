package datamover

import (
	"sync"
	"testing"
	"time"
)

func TestBufferClasses(t *testing.T) {
	prev := 0
	for n := 1; n <= 1<<maxBufferShift; n += 1 + n/7 {
		c, size := bufferClass(n)
		if c < 0 {
			t.Fatalf("%d bytes: no class", n)
		}
		if size < n || (n > minBuffer && size > n+n/4+1) {
			t.Fatalf("%d bytes: class size %d", n, size)
		}
		if c < prev {
			t.Fatalf("%d bytes: class %d after %d", n, c, prev)
		}
		if c2, size2 := bufferClass(size); c2 != c || size2 != size {
			t.Fatalf("class size %d maps to class %d (%d), want %d", size, c2, size2, c)
		}
		prev = c
	}
	if c, _ := bufferClass(1<<maxBufferShift + 1); c != -1 {
		t.Fatalf("a buffer past the largest class has class %d", c)
	}
}

// TestBufferPoolBoundsAndReuse checks that the pool keeps no more than its
// limit, that a buffer it hands out fits its request, and, under -race,
// that no buffer is handed to two holders at once.
func TestBufferPoolBoundsAndReuse(t *testing.T) {
	p := &bufferPool{limit: 1 << 20}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				n := 1 + (g*7919+i*104729)%(64<<10)
				b := p.get(n)
				if len(*b) != n {
					t.Errorf("get(%d) has length %d", n, len(*b))
					return
				}
				for k := range *b {
					(*b)[k] = byte(g)
				}
				for k := range *b {
					if (*b)[k] != byte(g) {
						t.Errorf("buffer shared with another holder")
						return
					}
				}
				p.put(b)
				p.mu.Lock()
				kept := p.kept
				p.mu.Unlock()
				if kept > p.limit {
					t.Errorf("pool keeps %d bytes, limit %d", kept, p.limit)
					return
				}
			}
		})
	}
	wg.Wait()
}

// countingSource is a slow disk that records the most bytes its readers
// asked for at once.
type countingSource struct {
	synthDisk
	mu       sync.Mutex
	now, max int64
}

func (c *countingSource) ReadAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.now += int64(len(p))
	c.max = max(c.max, c.now)
	c.mu.Unlock()
	time.Sleep(time.Millisecond)
	n, err := c.synthDisk.ReadAt(p, off)
	c.mu.Lock()
	c.now -= int64(len(p))
	c.mu.Unlock()
	return n, err
}

// TestInFlightBytesAreCapped moves many scattered extents with a small cap
// and checks that the reads in flight, with their frames, never held more.
func TestInFlightBytesAreCapped(t *testing.T) {
	const size = 256 << 20
	changed := scatterExtents(3, size, 2)
	opts := Options{ReadSize: 256 << 10, InFlight: 1 << 20}
	for _, codec := range []Codec{CodecNone, CodecS2} {
		src := &countingSource{synthDisk: synthDisk{size}}
		opts.Codec = codec
		req := Request{Source: src, Size: size, Changed: changed, Sink: NewReceiver(discard{}, size)}
		st := move(t, req, opts)
		if st.BytesRead == 0 {
			t.Fatal("nothing read")
		}
		if src.max > opts.InFlight {
			t.Errorf("%v: %d bytes read at once, cap %d", codec, src.max, opts.InFlight)
		}
		if src.max <= opts.InFlight/4 {
			t.Errorf("%v: at most %d bytes read at once: the reads did not overlap", codec, src.max)
		}
	}
}

func TestDecodeBufferLeavesZstdItsSlack(t *testing.T) {
	// Frame lengths of whole blocks, some the size of a buffer class.
	for _, n := range []int{4 << 10, 96 << 10, 128 << 10, 160 << 10, 1 << 20} {
		bp := decodeBuffer(n)
		if len(*bp) != n || cap(*bp) < n+decodeSlack {
			t.Errorf("a buffer for %d bytes: length %d, capacity %d, want %d and at least %d", n, len(*bp), cap(*bp), n, n+decodeSlack)
		}
		buffers.put(bp)
	}
}
