package lab

import (
	"math/rand/v2"
)

// Disk-like data for the lab's VMs: text that compresses (logs, configs,
// libraries), random bytes that do not (media, encrypted or compressed
// files), and zeros between them that ferry never sends.

const dataBlock = 4096 // writes are aligned to it, as a guest's file system's are

type kind int

const (
	zeros kind = iota
	text
	random
)

// region is a stretch of a disk holding one kind of data.
type region struct {
	off, len int64
	kind     kind
}

// diskLayout lays out a freshly installed disk of size bytes: regions of
// 64 KiB to 2 MiB, about 30% of them text, 15% random, the rest zeros;
// the first region always holds data (a boot area and a file system's
// metadata).
func diskLayout(rng *rand.Rand, size int64) []region {
	var out []region
	for off := int64(0); off < size; {
		n := min(size-off, int64(16+rng.IntN(512-16))*dataBlock)
		k := zeros
		switch p := rng.IntN(100); {
		case off == 0 || p < 30:
			k = text
		case p < 45:
			k = random
		}
		if k != zeros {
			out = append(out, region{off: off, len: n, kind: k})
		}
		off += n
	}
	return out
}

// scatter picks count guest writes of 4 to 64 KiB at aligned places of
// the disks whose sizes are given: all on disk when disk >= 0, else one
// on each disk in turn, then on disks picked at random.
func scatter(rng *rand.Rand, sizes []int64, disk, count int) []Write {
	out := make([]Write, 0, count)
	for i := range count {
		d := disk
		if d < 0 {
			// Every disk first, then any: each disk's next restore point
			// holds a change when there are writes enough.
			d = i
			if i >= len(sizes) {
				d = rng.IntN(len(sizes))
			}
		}
		n := int64(1+rng.IntN(16)) * dataBlock
		n = min(n, sizes[d]/dataBlock*dataBlock)
		blocks := (sizes[d] - n) / dataBlock
		out = append(out, Write{Disk: d, Offset: rng.Int64N(blocks+1) * dataBlock, Length: n})
	}
	return out
}

// words make the text regions: what logs and configuration files hold.
var words = []string{
	"the", "replica", "of", "disk", "block", "server", "config", "request", "user", "session",
	"error", "warning", "info", "GET", "POST", "/api/v1/orders", "200", "404", "timeout", "connection",
	"database", "index", "commit", "rollback", "cache", "hit", "miss", "latency", "ms", "bytes",
	"ferry", "web-01", "db-01", "listen", "127.0.0.1", "port", "8080", "true", "false", "null",
}

// fill fills b with data of a kind.
func fill(rng *rand.Rand, k kind, b []byte) {
	switch k {
	case zeros:
		clear(b)
	case random:
		for i := 0; i < len(b); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < len(b); j++ {
				b[i+j] = byte(v >> (8 * j))
			}
		}
	case text:
		for i, col := 0, 0; i < len(b); {
			w := words[rng.IntN(len(words))]
			i += copy(b[i:], w)
			col += len(w) + 1
			if i < len(b) {
				if col > 72 {
					b[i], col = '\n', 0
				} else {
					b[i] = ' '
				}
				i++
			}
		}
	}
}
