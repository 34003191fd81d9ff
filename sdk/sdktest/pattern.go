package sdktest

import (
	"encoding/binary"
	"math/rand/v2"
)

// randomBytes returns n bytes of noise drawn from rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	var seed [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(seed[8*i:], rng.Uint64())
	}
	b := make([]byte, n)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// differentBytes returns bytes that differ from old at every offset, so a
// read that returns old data anywhere is caught.
func differentBytes(rng *rand.Rand, old []byte) []byte {
	b := make([]byte, len(old))
	for i := range old {
		b[i] = old[i] ^ byte(1+rng.IntN(255))
	}
	return b
}

// addZeroRuns clears a few runs of data, of lengths that are not multiples
// of any block size, as disks have: zero runs are what a data mover skips
// and a target must still get right.
func addZeroRuns(rng *rand.Rand, data []byte) {
	if len(data) < 2 {
		return
	}
	for range 1 + len(data)/(256<<10) {
		n := 1 + rng.IntN(min(len(data)/2, 70_001))
		off := rng.IntN(len(data) - n + 1)
		clear(data[off : off+n])
	}
}

// span is a write: data at an offset.
type span struct {
	off  int64
	data []byte
}

func (s span) end() int64 { return s.off + int64(len(s.data)) }

// randomSpan returns a write of 1 to maxLen random bytes somewhere inside
// a disk of size bytes.
func randomSpan(rng *rand.Rand, size int64, maxLen int) span {
	n := 1 + rng.IntN(int(min(int64(maxLen), size)))
	off := rng.Int64N(size - int64(n) + 1)
	return span{off: off, data: randomBytes(rng, n)}
}

// apply writes the spans, in order, into a model of a disk.
func apply(model []byte, spans []span) {
	for _, s := range spans {
		copy(model[s.off:], s.data)
	}
}

// scattered returns writes that cover the awkward places of a disk of size
// bytes: its first and last byte, odd offsets and lengths, single bytes.
func scattered(rng *rand.Rand, size int64, count int) []span {
	spans := []span{
		{off: 0, data: randomBytes(rng, int(min(size, 1+int64(rng.IntN(5000)))))},
	}
	tail := min(size, 1+int64(rng.IntN(5000)))
	spans = append(spans, span{off: size - tail, data: randomBytes(rng, int(tail))})
	spans = append(spans, span{off: rng.Int64N(size), data: randomBytes(rng, 1)})
	for len(spans) < count {
		spans = append(spans, randomSpan(rng, size, 64<<10))
	}
	return spans
}
