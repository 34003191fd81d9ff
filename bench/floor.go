package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zeebo/xxh3"
)

// The floors are the least work a run of each kind must do, done by the
// plainest program that does it: ferry's time is reported as a ratio to
// them (issue 11). They run as child processes (`ferry-bench floor ...`),
// measured like every tool.
//
//   - The hash floor of a digest run reads the whole disk and computes the
//     xxh3-128 of every 4 KiB block, as ferry's digests are, on all cores.
//   - The copy floor of a tracked run reads only the changed extents of the
//     new disk and writes them at the same offsets into a copy of the
//     previous state, then syncs the copy once.

// DigestBlock is the block ferry computes a digest of.
const DigestBlock = 4 << 10

// hashChunk is how much one read of the hash floor asks for.
const hashChunk = 4 << 20

// copyPiece is the most one read of the copy floor asks for: extents are
// cut into pieces so that a long extent is read in parallel too.
const copyPiece = 1 << 20

// CopyInflight is how many reads the copy floor keeps in flight, what the
// floor of scattered reads from one disk is.
const CopyInflight = 16

// HashSum is what the hash floor computed: a fold of every block's digest
// and its index, so the work cannot be skipped and two runs over the same
// bytes agree whatever the number of workers.
type HashSum struct {
	Blocks int64
	Bytes  int64
	Fold   xxh3.Uint128
}

func (s *HashSum) add(o HashSum) {
	s.Blocks += o.Blocks
	s.Bytes += o.Bytes
	s.Fold.Lo += o.Fold.Lo
	s.Fold.Hi += o.Fold.Hi
}

// foldDigest adds block i's digest into sum. Addition keeps the fold
// independent of how the blocks were split between workers; the index
// keeps it dependent on where each digest was.
func (s *HashSum) foldDigest(i int64, d xxh3.Uint128) {
	const k = 0x9e3779b97f4a7c15
	s.Blocks++
	s.Fold.Lo += d.Lo ^ (uint64(i) * k)
	s.Fold.Hi += d.Hi ^ (uint64(i) * k)
}

// HashFloor reads size bytes of r with workers readers, each on its own
// contiguous range, and digests every DigestBlock-byte block (the last one
// may be short). It is safe for r to be read concurrently (an *os.File).
func HashFloor(r io.ReaderAt, size int64, workers int) (HashSum, error) {
	if size < 0 {
		return HashSum{}, fmt.Errorf("hash floor: negative size %d", size)
	}
	blocks := (size + DigestBlock - 1) / DigestBlock
	workers = int(max(min(int64(workers), blocks), 1))
	sums := make([]HashSum, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		first, last := blocks*int64(w)/int64(workers), blocks*int64(w+1)/int64(workers)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[w], errs[w] = hashRange(r, size, first, last)
		}()
	}
	wg.Wait()
	var total HashSum
	for w := range workers {
		if errs[w] != nil {
			return HashSum{}, errs[w]
		}
		total.add(sums[w])
	}
	return total, nil
}

// hashRange digests blocks [first, last) of a disk of size bytes.
func hashRange(r io.ReaderAt, size, first, last int64) (HashSum, error) {
	var s HashSum
	buf := make([]byte, hashChunk)
	for b := first; b < last; {
		off := b * DigestBlock
		n := min(int64(len(buf)), (last-b)*DigestBlock, size-off)
		if k, err := r.ReadAt(buf[:n], off); int64(k) < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return HashSum{}, fmt.Errorf("hash floor: read %d bytes at %d: %w", n, off, err)
		}
		for p := int64(0); p < n; p += DigestBlock {
			s.foldDigest(b, xxh3.Hash128(buf[p:min(p+DigestBlock, n)]))
			b++
		}
		s.Bytes += n
	}
	return s, nil
}

// SyncWriterAt is a file the copy floor writes into.
type SyncWriterAt interface {
	io.WriterAt
	Sync() error
}

// CopyFloor reads each extent from src and writes it at the same offset
// into dst, with inflight pieces of at most copyPiece bytes in flight, and
// then syncs dst once. It returns the bytes copied. src must be safe for
// concurrent reads and dst for concurrent writes at disjoint offsets (an
// *os.File is both).
func CopyFloor(src io.ReaderAt, dst SyncWriterAt, es []Extent, inflight int) (int64, error) {
	var pieces []Extent
	for _, e := range es {
		for off := e.Offset; off < e.End(); off += copyPiece {
			pieces = append(pieces, Extent{Offset: off, Length: min(copyPiece, e.End()-off)})
		}
	}
	inflight = max(min(inflight, len(pieces)), 1)
	var next atomic.Int64
	var copied atomic.Int64
	errs := make([]error, inflight)
	var wg sync.WaitGroup
	for w := range inflight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, copyPiece)
			for {
				i := next.Add(1) - 1
				if i >= int64(len(pieces)) {
					return
				}
				p := pieces[i]
				b := buf[:p.Length]
				if k, err := src.ReadAt(b, p.Offset); k < len(b) {
					if err == nil || errors.Is(err, io.EOF) {
						err = io.ErrUnexpectedEOF
					}
					errs[w] = fmt.Errorf("copy floor: read %d bytes at %d: %w", p.Length, p.Offset, err)
					next.Store(int64(len(pieces))) // the others stop too
					return
				}
				if _, err := dst.WriteAt(b, p.Offset); err != nil {
					errs[w] = fmt.Errorf("copy floor: write %d bytes at %d: %w", p.Length, p.Offset, err)
					next.Store(int64(len(pieces)))
					return
				}
				copied.Add(p.Length)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return copied.Load(), err
	}
	if err := dst.Sync(); err != nil {
		return copied.Load(), fmt.Errorf("copy floor: sync: %w", err)
	}
	return copied.Load(), nil
}

// WriteExtents writes extents one a line, "OFFSET LENGTH" in decimal: the
// extents file the copy floor reads.
func WriteExtents(w io.Writer, es []Extent) error {
	bw := bufio.NewWriter(w)
	for _, e := range es {
		fmt.Fprintf(bw, "%d %d\n", e.Offset, e.Length)
	}
	return bw.Flush()
}

// ReadExtents reads what WriteExtents wrote. The extents must be sorted,
// apart (not overlapping) and not empty, as Changes.Extents makes them;
// anything else is an error naming the line.
func ReadExtents(r io.Reader) ([]Extent, error) {
	var es []Extent
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			return nil, fmt.Errorf("extents line %d: %q: want OFFSET LENGTH", line, sc.Text())
		}
		off, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || off < 0 {
			return nil, fmt.Errorf("extents line %d: offset %q: want a number of bytes at least 0", line, f[0])
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil || n <= 0 || off > (1<<63-1)-n {
			return nil, fmt.Errorf("extents line %d: length %q: want a positive number of bytes that ends on the disk", line, f[1])
		}
		e := Extent{Offset: off, Length: n}
		if k := len(es); k > 0 && e.Offset < es[k-1].End() {
			return nil, fmt.Errorf("extents line %d: %d+%d starts before the end of the previous extent (%d): want sorted extents apart", line, off, n, es[k-1].End())
		}
		es = append(es, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read extents: %w", err)
	}
	return es, nil
}
