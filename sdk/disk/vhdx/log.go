package vhdx

import (
	"encoding/binary"
	"io"
)

// The VHDX log: a circular buffer of entries, each a header, descriptors
// and data sectors, that a writer uses to update metadata atomically. This
// package never writes one (see the package doc), but Hyper-V leaves them,
// so a reader must apply the active sequence before trusting the BAT and
// the metadata.
const (
	logSector        = 4 * kib
	logEntryHeader   = 64
	logDescSize      = 32
	logDataPayload   = 4084 // bytes of a data sector that carry data
	maxLogLength     = 32 * mib
	maxLogScanBytes  = 1 << 30 // checksum work a hostile log may cost
	maxLastFileBytes = 128 << 40
	// maxLogGrowth bounds how much longer than the file a log may say it
	// was: a crash can lose the extension of a file, but only by the few
	// blocks the last entries allocated, and everything past the real end
	// reads as zeros that nothing justifies allocating for.
	maxLogGrowth = 256 * mib
)

// logWrite is one write the log asks for: a 4 KiB sector of data, or a
// zeroed range when data is nil.
type logWrite struct {
	off    int64
	length int64
	data   []byte
}

// logReplay is what the active sequence of a log amounts to.
type logReplay struct {
	writes  []logWrite
	flushed uint64 // the file must be at least this long
	last    uint64 // the file is extended to this size
}

// logEntry is a valid entry found at some position of the log.
type logEntry struct {
	seq     uint64
	length  uint32
	tail    uint32
	flushed uint64
	last    uint64
	writes  []logWrite
}

// parseLog finds the active sequence of the log (the bytes of the whole log
// region) and returns the writes to replay, in order. A log without a valid
// entry returns an empty replay: nothing was in flight.
func parseLog(log []byte, id GUID) (logReplay, error) {
	var r logReplay
	n := len(log)
	if n == 0 || n%logSector != 0 {
		return r, corrupt("log length", "%d is not a positive multiple of 4 KiB", n)
	}
	// ring returns n bytes at pos, wrapping around the end of the log.
	ring := func(pos, size int) []byte {
		if pos+size <= n {
			return log[pos : pos+size]
		}
		b := make([]byte, 0, size)
		b = append(b, log[pos:]...)
		return append(b, log[:size-(n-pos)]...)
	}
	budget := maxLogScanBytes
	entries := map[int]*logEntry{}
	entryAt := func(pos int) (*logEntry, error) {
		if e, ok := entries[pos]; ok {
			return e, nil
		}
		e, cost := parseLogEntry(ring, pos, n, id)
		budget -= cost
		if budget < 0 {
			return nil, corrupt("log", "too many overlapping entries to scan")
		}
		entries[pos] = e
		return e, nil
	}

	type sequence struct {
		start []int // positions of the entries, in order
		head  *logEntry
	}
	var best *sequence
	for pos := 0; pos < n; pos += logSector {
		first, err := entryAt(pos)
		if err != nil {
			return r, err
		}
		if first == nil {
			continue
		}
		s := &sequence{start: []int{pos}, head: first}
		used := int(first.length)
		for next := (pos + int(first.length)) % n; used < n; {
			e, err := entryAt(next)
			if err != nil {
				return r, err
			}
			if e == nil || e.seq != s.head.seq+1 || used+int(e.length) > n {
				break
			}
			s.start = append(s.start, next)
			s.head = e
			used += int(e.length)
			next = (next + int(e.length)) % n
		}
		if best == nil || s.head.seq > best.head.seq {
			best = s
		}
	}
	if best == nil {
		return r, nil
	}
	// Entries before the head's tail were applied already; replaying from
	// the tail is enough. A tail outside the sequence replays all of it.
	from := 0
	for i, p := range best.start {
		if p == int(best.head.tail) {
			from = i
		}
	}
	for _, p := range best.start[from:] {
		e := entries[p]
		r.writes = append(r.writes, e.writes...)
	}
	r.flushed, r.last = best.head.flushed, best.head.last
	if r.last < r.flushed || r.last > maxLastFileBytes {
		return r, corrupt("log entry last file offset", "%d is below the flushed offset %d or beyond 128 TiB", r.last, r.flushed)
	}
	return r, nil
}

// parseLogEntry returns the entry at pos, or nil if none is valid there,
// and the bytes it checksummed.
func parseLogEntry(ring func(pos, size int) []byte, pos, n int, id GUID) (*logEntry, int) {
	h := ring(pos, logEntryHeader)
	if string(h[0:4]) != "loge" {
		return nil, 0
	}
	e := &logEntry{
		length:  binary.LittleEndian.Uint32(h[8:12]),
		tail:    binary.LittleEndian.Uint32(h[12:16]),
		seq:     binary.LittleEndian.Uint64(h[16:24]),
		flushed: binary.LittleEndian.Uint64(h[48:56]),
		last:    binary.LittleEndian.Uint64(h[56:64]),
	}
	count := int(binary.LittleEndian.Uint32(h[24:28]))
	var guid GUID
	copy(guid[:], h[32:48])
	if guid != id || e.seq == 0 || e.length == 0 || e.length%logSector != 0 || int(e.length) > n ||
		e.tail%logSector != 0 || int(e.tail) >= n {
		return nil, 0
	}
	descSectors := (count + 2 + 127) / 128
	if count > int(e.length)/logDescSize || descSectors*logSector > int(e.length) {
		return nil, 0
	}
	b := ring(pos, int(e.length))
	if binary.LittleEndian.Uint32(b[4:8]) != checksum(b, 4) {
		return nil, len(b)
	}
	data := descSectors * logSector
	for i := range count {
		d := b[logEntryHeader+logDescSize*i:]
		off := int64(binary.LittleEndian.Uint64(d[16:24]))
		if binary.LittleEndian.Uint64(d[24:32]) != e.seq || off < 0 || off%logSector != 0 {
			return nil, len(b)
		}
		switch string(d[0:4]) {
		case "zero":
			length := int64(binary.LittleEndian.Uint64(d[8:16]))
			if length <= 0 || length%logSector != 0 || off+length < off || uint64(off+length) > maxLastFileBytes {
				return nil, len(b)
			}
			e.writes = append(e.writes, logWrite{off: off, length: length})
		case "desc":
			if data+logSector > len(b) {
				return nil, len(b)
			}
			s := b[data : data+logSector]
			data += logSector
			seq := uint64(binary.LittleEndian.Uint32(s[4:8]))<<32 | uint64(binary.LittleEndian.Uint32(s[4092:4096]))
			if string(s[0:4]) != "data" || seq != e.seq {
				return nil, len(b)
			}
			sector := make([]byte, logSector)
			copy(sector[0:8], d[8:16])                  // leading bytes
			copy(sector[8:8+logDataPayload], s[8:4092]) // the data
			copy(sector[4092:4096], d[4:8])             // trailing bytes
			e.writes = append(e.writes, logWrite{off: off, length: logSector, data: sector})
		default:
			return nil, len(b)
		}
	}
	return e, len(b)
}

// overlay serves reads of a file as if a log replay had been applied to
// it, for a read-only open of a file whose log is not empty.
type overlay struct {
	f       io.ReaderAt
	size    int64            // the file's size after the replay
	sectors map[int64][]byte // 4 KiB sectors written by the log
	zeros   []logWrite       // ranges zeroed by the log, unless a later sector overrides
}

func newOverlay(f io.ReaderAt, fileSize int64, r logReplay) *overlay {
	o := &overlay{f: f, size: max(fileSize, int64(r.last)), sectors: map[int64][]byte{}}
	for _, w := range r.writes {
		if w.data != nil {
			o.sectors[w.off] = w.data
			continue
		}
		for off := range o.sectors {
			if off >= w.off && off < w.off+w.length {
				delete(o.sectors, off)
			}
		}
		o.zeros = append(o.zeros, w)
	}
	return o
}

func (o *overlay) ReadAt(p []byte, off int64) (int, error) {
	if off >= o.size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > o.size-off {
		p = p[:o.size-off]
	}
	n, err := o.f.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:]) // the log extended the file
		err = nil
	}
	if err != nil {
		return n, err
	}
	end := off + int64(len(p))
	for _, z := range o.zeros {
		lo, hi := max(z.off, off), min(z.off+z.length, end)
		if lo < hi {
			clear(p[lo-off : hi-off])
		}
	}
	if len(o.sectors) > 0 {
		for s, data := range o.sectors { // sectors never overlap: any order will do
			lo, hi := max(s, off), min(s+logSector, end)
			if lo < hi {
				copy(p[lo-off:hi-off], data[lo-s:hi-s])
			}
		}
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}
