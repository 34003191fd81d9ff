package sdk

import "testing"

func TestBufferPoolSizes(t *testing.T) {
	p := newBufferPool()
	for _, size := range []int{0, 1, 255, 256, 257, 4096, 40 << 10, 1 << 20, 1<<20 + 1, 4 << 20, 4<<20 + 1, 9 << 20} {
		b := p.Get(size)
		if len(*b) != size {
			t.Fatalf("Get(%d): length %d", size, len(*b))
		}
		if size <= 4<<20 && size > 256 && cap(*b) >= 2*size {
			t.Errorf("Get(%d): capacity %d, more than twice the size", size, cap(*b))
		}
		p.Put(b)
	}
}

func TestBufferPoolReusesWithoutClearing(t *testing.T) {
	p := newBufferPool()
	// sync.Pool may drop what it is given (at a GC, and at random under
	// the race detector): give back several marked buffers.
	var given []*[]byte
	for range 16 {
		b := p.Get(40 << 10)
		for i := range *b {
			(*b)[i] = 0xAB
		}
		given = append(given, b)
	}
	for _, b := range given {
		p.Put(b)
	}
	for range 16 {
		c := p.Get(33 << 10)
		if len(*c) != 33<<10 || cap(*c) < 33<<10 {
			t.Fatalf("Get(33 KiB): length %d capacity %d", len(*c), cap(*c))
		}
		if cap(*c) == 64<<10 && (*c)[0] == 0xAB {
			return // a buffer given back, not cleared
		}
	}
	t.Fatal("no buffer given back was handed out again")
}

func TestBufferPoolTiers(t *testing.T) {
	p := newBufferPool()
	// A buffer goes back to the largest tier its capacity fills, so a
	// buffer handed out is never smaller than asked.
	odd := make([]byte, 0, 100<<10) // between 64 and 128 KiB
	p.Put(&odd)
	for range 100 {
		b := p.Get(100 << 10)
		if cap(*b) < 100<<10 {
			t.Fatalf("Get(100 KiB) returned capacity %d", cap(*b))
		}
		p.Put(b)
	}
	small := make([]byte, 10)
	p.Put(&small) // too small for any tier: dropped, no panic
	huge := make([]byte, 16<<20)
	p.Put(&huge)
	if b := p.Get(4 << 20); cap(*b) < 4<<20 {
		t.Fatalf("Get(4 MiB) returned capacity %d", cap(*b))
	}
	for _, tc := range []struct{ size, tier int }{{0, 0}, {1, 0}, {256, 0}, {257, 1}, {1 << 20, 12}, {4 << 20, 14}, {4<<20 + 1, -1}} {
		if got := tierFor(tc.size); got != tc.tier {
			t.Errorf("tierFor(%d) = %d, want %d", tc.size, got, tc.tier)
		}
	}
}
