package local

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The change tracker of one source disk is an append-only log,
// .ferry/track/disk<N>.log. A change id is "<epoch>-<seq>": the epoch is
// random and new at every reset (an untracked change, a disk that grew, a
// lost log); seq grows by one with every tracked write. A snapshot appends
// a mark record at the current seq and hands out that id.
//
// Layout: a 32-byte header (magic "FRYCBT01", 8 epoch bytes, the oldest
// seq the log can answer from as uint64, the record count the last
// compaction left as uint32, CRC-32C of the 28 bytes before it) and 32-byte records (seq uint64, offset int64,
// length int64 with -1 for a mark, 4 reserved bytes, CRC-32C). A record is
// appended and fsynced before the write it describes touches the disk, so
// the log never misses a write; a torn last record fails its CRC and is cut
// off. Compaction and reset write a whole new log atomically.

const (
	trackMagic      = "FRYCBT01"
	trackHeaderSize = 32
	trackRecordSize = 32
	// trackKeepMarks is how many snapshot marks a compaction keeps; change
	// ids older than the oldest kept mark report ErrChangeIDReset.
	trackKeepMarks = 64
	// extentBatch is how many extents ChangedAreas hands fn at a time.
	extentBatch = 1024
)

// trackCompactAt is the record count past which the log is compacted (or
// twice what the last compaction left, when that is more). Tests lower it.
var trackCompactAt = 4096

type changeRec struct {
	seq    uint64
	off    int64
	length int64 // -1: a snapshot mark at seq
}

func (r changeRec) isMark() bool { return r.length < 0 }

// changeLog is the loaded change log of one disk.
type changeLog struct {
	path      string
	epoch     string
	baseSeq   uint64 // the log answers for change ids with seq >= baseSeq
	seq       uint64 // the newest seq
	recs      []changeRec
	end       int64 // byte length of the valid part of the file
	compacted int   // records the last compaction left
}

// changeID formats the change id of seq in this log's epoch.
func (l *changeLog) changeID(seq uint64) string {
	return l.epoch + "-" + strconv.FormatUint(seq, 10)
}

// parseChangeID splits a change id; ok is false for a malformed one.
func parseChangeID(id string) (epoch string, seq uint64, ok bool) {
	e, s, found := strings.Cut(id, "-")
	if !found || len(e) != 16 {
		return "", 0, false
	}
	if _, err := hex.DecodeString(e); err != nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return "", 0, false
	}
	return e, n, true
}

func encodeTrackHeader(epoch string, baseSeq uint64, compacted int) ([]byte, error) {
	eb, err := hex.DecodeString(epoch)
	if err != nil || len(eb) != 8 {
		return nil, fmt.Errorf("bad epoch %q", epoch)
	}
	h := make([]byte, trackHeaderSize)
	copy(h, trackMagic)
	copy(h[8:], eb)
	binary.LittleEndian.PutUint64(h[16:], baseSeq)
	binary.LittleEndian.PutUint32(h[24:], uint32(compacted))
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return h, nil
}

func encodeTrackRecord(r changeRec) []byte {
	b := make([]byte, trackRecordSize)
	binary.LittleEndian.PutUint64(b[0:], r.seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(r.off))
	binary.LittleEndian.PutUint64(b[16:], uint64(r.length))
	binary.LittleEndian.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

// loadChangeLog reads a change log; an error wrapping fs.ErrNotExist when
// there is none, and errBadLog when its header is unreadable.
func loadChangeLog(path string) (*changeLog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read change log: %w", err)
	}
	if len(data) < trackHeaderSize || string(data[:8]) != trackMagic ||
		binary.LittleEndian.Uint32(data[28:]) != crc32.Checksum(data[:28], castagnoli) {
		return nil, fmt.Errorf("change log %s: %w", path, errBadLog)
	}
	l := &changeLog{
		path:      path,
		epoch:     hex.EncodeToString(data[8:16]),
		baseSeq:   binary.LittleEndian.Uint64(data[16:]),
		compacted: int(binary.LittleEndian.Uint32(data[24:])),
	}
	l.seq = l.baseSeq
	l.recs = make([]changeRec, 0, (len(data)-trackHeaderSize)/trackRecordSize)
	pos := trackHeaderSize
	for pos+trackRecordSize <= len(data) {
		b := data[pos : pos+trackRecordSize]
		if binary.LittleEndian.Uint32(b[28:]) != crc32.Checksum(b[:28], castagnoli) {
			break
		}
		r := changeRec{
			seq:    binary.LittleEndian.Uint64(b[0:]),
			off:    int64(binary.LittleEndian.Uint64(b[8:])),
			length: int64(binary.LittleEndian.Uint64(b[16:])),
		}
		l.recs = append(l.recs, r)
		l.seq = max(l.seq, r.seq)
		pos += trackRecordSize
	}
	l.end = int64(pos)
	return l, nil
}

// errBadLog marks a change log whose header cannot be read; tracking resets.
var errBadLog = errors.New("unreadable change log")

// resetChangeLog starts a new epoch: a new, empty log replaces the old one
// atomically.
func resetChangeLog(path string) (*changeLog, error) {
	l := &changeLog{path: path, epoch: randomHex(8)}
	if err := l.rewrite(nil); err != nil {
		return nil, err
	}
	return l, nil
}

// rewrite replaces the log file with the header and recs.
func (l *changeLog) rewrite(recs []changeRec) error {
	h, err := encodeTrackHeader(l.epoch, l.baseSeq, len(recs))
	if err != nil {
		return err
	}
	buf := make([]byte, 0, trackHeaderSize+len(recs)*trackRecordSize)
	buf = append(buf, h...)
	for _, r := range recs {
		buf = append(buf, encodeTrackRecord(r)...)
	}
	if err := writeFileAtomic(l.path, buf); err != nil {
		return fmt.Errorf("write change log: %w", err)
	}
	l.recs = recs
	l.compacted = len(recs)
	l.end = int64(len(buf))
	return nil
}

// appendRec appends one record and fsyncs it, cutting off a torn tail first.
func (l *changeLog) appendRec(r changeRec) error {
	f, err := os.OpenFile(l.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open change log: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return fmt.Errorf("stat change log: %w", err)
	} else if st.Size() != l.end {
		if err := f.Truncate(l.end); err != nil {
			return fmt.Errorf("truncate change log: %w", err)
		}
	}
	if _, err := f.WriteAt(encodeTrackRecord(r), l.end); err != nil {
		return fmt.Errorf("append change log: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync change log: %w", err)
	}
	l.end += trackRecordSize
	l.recs = append(l.recs, r)
	return nil
}

// recordWrite logs a write of length bytes at off under the next seq. It
// must return before the write touches the disk.
func (l *changeLog) recordWrite(off, length int64) error {
	if err := l.appendRec(changeRec{seq: l.seq + 1, off: off, length: length}); err != nil {
		return err
	}
	l.seq++
	if len(l.recs) > max(trackCompactAt, 2*l.compacted) {
		return l.compact()
	}
	return nil
}

// mark records that a snapshot took the current seq, and returns its id.
func (l *changeLog) mark() (string, error) {
	if err := l.appendRec(changeRec{seq: l.seq, length: -1}); err != nil {
		return "", err
	}
	return l.changeID(l.seq), nil
}

// compact coalesces the writes between consecutive marks into merged
// extents tagged with the later mark, and forgets all but the newest
// trackKeepMarks marks. Answers for change ids at marks stay exact; an id
// between marks gets a superset, which is safe.
func (l *changeLog) compact() error {
	var marks []uint64
	for _, r := range l.recs {
		if r.isMark() && (len(marks) == 0 || marks[len(marks)-1] != r.seq) {
			marks = append(marks, r.seq)
		}
	}
	baseSeq := l.baseSeq
	if len(marks) > trackKeepMarks {
		marks = marks[len(marks)-trackKeepMarks:]
		baseSeq = marks[0]
	}
	var out []changeRec
	lo := baseSeq
	bounds := append(marks, l.seq)
	for i, hi := range bounds {
		if i > 0 && hi == bounds[i-1] {
			continue
		}
		var ext []sdk.Extent
		for _, r := range l.recs {
			if !r.isMark() && r.seq > lo && r.seq <= hi {
				ext = append(ext, sdk.Extent{Offset: r.off, Length: r.length})
			}
		}
		for _, e := range sdk.MergeExtents(ext) {
			out = append(out, changeRec{seq: hi, off: e.Offset, length: e.Length})
		}
		if i < len(marks) {
			out = append(out, changeRec{seq: hi, length: -1})
		}
		lo = hi
	}
	old := l.baseSeq
	l.baseSeq = baseSeq
	if err := l.rewrite(out); err != nil {
		l.baseSeq = old
		return err
	}
	return nil
}

// changedBetween returns the merged extents written after seq from up to
// and including seq to.
func (l *changeLog) changedBetween(from, to uint64) []sdk.Extent {
	var ext []sdk.Extent
	for _, r := range l.recs {
		if !r.isMark() && r.seq > from && r.seq <= to {
			ext = append(ext, sdk.Extent{Offset: r.off, Length: r.length})
		}
	}
	return sdk.MergeExtents(ext)
}

// answer checks that the log can say what changed between change ids since
// and upTo (upTo being a snapshot's id) and returns the seqs.
func (l *changeLog) answer(since, upTo string) (uint64, uint64, error) {
	ue, useq, ok := parseChangeID(upTo)
	if !ok || ue != l.epoch {
		return 0, 0, fmt.Errorf("snapshot change id %q: tracking was reset since (epoch now %s): %w", upTo, l.epoch, errdefs.ErrChangeIDReset)
	}
	se, sseq, ok := parseChangeID(since)
	switch {
	case !ok:
		return 0, 0, fmt.Errorf("change id %q: unknown: %w", since, errdefs.ErrChangeIDReset)
	case se != l.epoch:
		return 0, 0, fmt.Errorf("change id %q: another epoch (now %s): %w", since, l.epoch, errdefs.ErrChangeIDReset)
	case sseq > useq:
		return 0, 0, fmt.Errorf("change id %q: newer than the snapshot's %q: %w", since, upTo, errdefs.ErrChangeIDReset)
	case sseq < l.baseSeq:
		return 0, 0, fmt.Errorf("change id %q: older than the tracking history kept: %w", since, errdefs.ErrChangeIDReset)
	}
	return sseq, useq, nil
}

// clipExtents cuts extents to [0, size).
func clipExtents(ext []sdk.Extent, size int64) []sdk.Extent {
	out := ext[:0]
	for _, e := range ext {
		if e.Offset >= size {
			continue
		}
		if e.End() > size {
			e.Length = size - e.Offset
		}
		out = append(out, e)
	}
	return out
}
