package local

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"unsafe"
)

// A block store keeps fixed-size blocks of one disk in two append-only
// files: NAME.data holds the blocks, NAME.idx says which disk block each
// one is. The source's delta layers and the target's undo stores are block
// stores.
//
// NAME.idx starts with a 16-byte header (magic "FRYBLK02", block size as
// uint32, CRC-32C of the first 12 bytes) followed by 24-byte records:
//
//	block number  uint64   little endian
//	data offset   uint64   where the block sits in NAME.data; all ones
//	                       for a block of zeros, which takes no data
//	data CRC      uint32   CRC-32C of the block
//	record CRC    uint32   CRC-32C of the 20 bytes before it
//
// Stores made before zero blocks took no data have the magic "FRYBLK01"
// and are read as they are; a writer appending to one keeps writing the
// zeros too, so that an older plugin still reads it. An older plugin
// refuses a "FRYBLK02" store as a bad header rather than misread it.
// Write order: the blocks are appended to NAME.data and fsynced before
// their records are appended to NAME.idx and fsynced, so a record always
// points at durable data. A record torn by a crash fails its CRC and ends
// the index; the next writer truncates it away. A later record for the same
// block wins, which makes replaying a merge harmless. Nothing is ever
// overwritten in place, so a reader that loaded the index earlier keeps
// reading what it saw.

const (
	storeMagic      = "FRYBLK02"
	storeMagicV1    = "FRYBLK01"
	storeHeaderSize = 16
	storeRecordSize = 24
	// zeroOff is the data offset of a block of zeros.
	zeroOff = -1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockEntry locates one block in the data file.
type blockEntry struct {
	off int64
	crc uint32
}

// blockIndex maps disk block numbers to their place in the data file.
type blockIndex map[int64]blockEntry

// sortedBlocks returns the block numbers of an index in ascending order.
func (ix blockIndex) sortedBlocks() []int64 {
	bs := make([]int64, 0, len(ix))
	for b := range ix {
		bs = append(bs, b)
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i] < bs[j] })
	return bs
}

func storePaths(dir, name string) (data, idx string) {
	return filepath.Join(dir, name+".data"), filepath.Join(dir, name+".idx")
}

func storeHeader(bs int64) []byte {
	h := make([]byte, storeHeaderSize)
	copy(h, storeMagic)
	binary.LittleEndian.PutUint32(h[8:], uint32(bs))
	binary.LittleEndian.PutUint32(h[12:], crc32.Checksum(h[:12], castagnoli))
	return h
}

// checkHeader reports whether h is a valid header for block size bs, and
// whether its store may hold blocks of zeros without data.
func checkHeader(h []byte, bs int64) (ok, zeros bool) {
	ok = len(h) >= storeHeaderSize && (string(h[:8]) == storeMagic || string(h[:8]) == storeMagicV1) &&
		binary.LittleEndian.Uint32(h[8:]) == uint32(bs) &&
		binary.LittleEndian.Uint32(h[12:]) == crc32.Checksum(h[:12], castagnoli)
	return ok, ok && string(h[:8]) == storeMagic
}

// isHeader reports whether h is a valid header for block size bs.
func isHeader(h []byte, bs int64) bool {
	ok, _ := checkHeader(h, bs)
	return ok
}

// zeroCRC returns the CRC-32C of a block of zeros of bs bytes.
func zeroCRC(bs int64) uint32 {
	return crc32.Update(0, castagnoli, make([]byte, bs))
}

// scanIndex reads the records of idx from byte from to the first torn or
// corrupt one, adds them to ix, and returns the offset just past the last
// good record.
func scanIndex(idx *os.File, from int64, ix blockIndex) (int64, error) {
	st, err := idx.Stat()
	if err != nil {
		return from, fmt.Errorf("stat %s: %w", idx.Name(), err)
	}
	const chunk = 4096 * storeRecordSize
	buf := make([]byte, chunk)
	for from+storeRecordSize <= st.Size() {
		n := min(int64(chunk), st.Size()-from)
		n -= n % storeRecordSize
		m, err := idx.ReadAt(buf[:n], from)
		if err != nil && !errors.Is(err, io.EOF) {
			return from, fmt.Errorf("read %s: %w", idx.Name(), err)
		}
		m -= m % storeRecordSize
		if m == 0 {
			return from, nil
		}
		for i := 0; i < m; i += storeRecordSize {
			r := buf[i : i+storeRecordSize]
			if binary.LittleEndian.Uint32(r[20:]) != crc32.Checksum(r[:20], castagnoli) {
				return from, nil
			}
			b := int64(binary.LittleEndian.Uint64(r[0:]))
			off := int64(binary.LittleEndian.Uint64(r[8:]))
			if b < 0 || (off < 0 && off != zeroOff) {
				return from, nil
			}
			ix[b] = blockEntry{off: off, crc: binary.LittleEndian.Uint32(r[16:])}
			from += storeRecordSize
		}
	}
	return from, nil
}

// storeWriter appends blocks to a block store. It is not safe for
// concurrent use; its owner serialises calls.
type storeWriter struct {
	bs      int64
	data    *os.File
	idx     *os.File
	dataEnd int64
	idxEnd  int64
	index   blockIndex
	// Staged blocks (see stage): their data ends at stagedEnd, their
	// records wait in recs.
	stagedEnd int64
	recs      []byte
	// zeros says blocks of zeros are recorded without data (a
	// "FRYBLK02" store); zeroCRC is their CRC.
	zeros   bool
	zeroCRC uint32
	// direct, when set, writes the data file past the page cache (see
	// writeDirect); pend gathers what it is about to write, at pendAt.
	direct *os.File
	pend   *[]byte
	pendAt int64
}

// directAlign is the alignment of the offsets, lengths and memory of
// writes past the page cache: the largest logical block size of disks.
const directAlign = 4096

// writeDirect makes w write its data past the page cache, where the file
// system allows it, for stores that are written once and seldom read: a
// replica's undo blocks. Written through the cache, every block takes a
// fresh page of memory, which the system must find, zero and later write
// back and evict; on a virtual machine whose host reclaims the guest's
// free memory, each fresh page also costs a fault in the host, and a
// tracked run of 410 MiB spent more CPU on its undo store's writes than on
// anything else. Written directly, the data goes from the caller's buffer
// to the disk. Appends start at a multiple of directAlign: a store written
// through the cache before may end elsewhere, and what lies between is
// bytes no record points at.
func (w *storeWriter) writeDirect() {
	if w.direct != nil || w.bs%directAlign != 0 {
		return
	}
	if w.direct = openDirect(w.data.Name()); w.direct == nil {
		return
	}
	w.dataEnd = (w.dataEnd + directAlign - 1) / directAlign * directAlign
	w.stagedEnd = w.dataEnd
}

// openStoreWriter opens (creating) the block store NAME in dir for
// appending, dropping whatever a crash left torn at the end of the index.
func openStoreWriter(dir, name string, bs int64) (*storeWriter, error) {
	if err := mkdirDurable(dir); err != nil {
		return nil, err
	}
	dataPath, idxPath := storePaths(dir, name)
	data, err := os.OpenFile(dataPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open block store: %w", err)
	}
	idx, err := os.OpenFile(idxPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		data.Close()
		return nil, fmt.Errorf("open block store: %w", err)
	}
	w := &storeWriter{bs: bs, data: data, idx: idx, index: blockIndex{}}
	if err := w.init(); err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *storeWriter) init() error {
	st, err := w.idx.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", w.idx.Name(), err)
	}
	h := make([]byte, storeHeaderSize)
	n, _ := w.idx.ReadAt(h, 0)
	ok, zeros := checkHeader(h, w.bs)
	w.zeros, w.zeroCRC = zeros, zeroCRC(w.bs)
	switch {
	case n == storeHeaderSize && ok:
	case st.Size() <= storeHeaderSize:
		w.zeros = true
		// New, or a header torn by a crash before any record could follow.
		if err := w.idx.Truncate(0); err != nil {
			return fmt.Errorf("reset %s: %w", w.idx.Name(), err)
		}
		if _, err := w.idx.WriteAt(storeHeader(w.bs), 0); err != nil {
			return fmt.Errorf("write %s: %w", w.idx.Name(), err)
		}
		if err := w.idx.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", w.idx.Name(), err)
		}
		if err := syncDir(filepath.Dir(w.idx.Name())); err != nil {
			return err
		}
	default:
		return fmt.Errorf("block store %s: bad header (corrupt, or another block size)", w.idx.Name())
	}
	end, err := scanIndex(w.idx, storeHeaderSize, w.index)
	if err != nil {
		return err
	}
	if st, err := w.idx.Stat(); err != nil {
		return fmt.Errorf("stat %s: %w", w.idx.Name(), err)
	} else if st.Size() > end {
		if err := w.idx.Truncate(end); err != nil {
			return fmt.Errorf("truncate torn %s: %w", w.idx.Name(), err)
		}
	}
	w.idxEnd = end
	st, err = w.data.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", w.data.Name(), err)
	}
	w.dataEnd = st.Size()
	w.stagedEnd = w.dataEnd
	return nil
}

// has reports whether the store holds block b.
func (w *storeWriter) has(b int64) bool {
	_, ok := w.index[b]
	return ok
}

// put appends blocks (buf holds len(blocks) blocks back to back) and makes
// them durable: data first, then the records that point at it.
func (w *storeWriter) put(blocks []int64, buf []byte) error {
	if err := w.stage(blocks, buf); err != nil {
		return err
	}
	return w.commit()
}

// stage appends blocks (buf holds len(blocks) blocks back to back) to the
// data file, not yet durable nor indexed, so that a caller saving more
// blocks than it holds in memory at once makes them durable with one
// fsync pair: commit. Until commit returns, what was staged is not in the
// store: a crash leaves it as bytes no record points at, which the next
// writer appends after. The CRCs are taken here, while buf is in hand.
func (w *storeWriter) stage(blocks []int64, buf []byte) error {
	if len(blocks) == 0 {
		return nil
	}
	if int64(len(buf)) != int64(len(blocks))*w.bs {
		w.abort()
		return fmt.Errorf("block store %s: %d bytes for %d blocks", w.data.Name(), len(buf), len(blocks))
	}
	at := len(w.recs)
	w.recs = slices.Grow(w.recs, len(blocks)*storeRecordSize)[:at+len(blocks)*storeRecordSize]
	// Runs of blocks with data are appended with one write each; blocks
	// of zeros take a record alone.
	end := w.stagedEnd
	run := -1 // the first block of the run of data blocks under way
	flush := func(upTo int) error {
		if run < 0 {
			return nil
		}
		p := buf[int64(run)*w.bs : int64(upTo)*w.bs]
		if err := w.appendData(p, end); err != nil {
			w.abort()
			return fmt.Errorf("append %s: %w", w.data.Name(), err)
		}
		end += int64(len(p))
		run = -1
		return nil
	}
	for i, b := range blocks {
		block := buf[int64(i)*w.bs : int64(i+1)*w.bs]
		r := w.recs[at+i*storeRecordSize : at+(i+1)*storeRecordSize]
		binary.LittleEndian.PutUint64(r[0:], uint64(b))
		if w.zeros && isZeroBlock(block) {
			if err := flush(i); err != nil {
				return err
			}
			binary.LittleEndian.PutUint64(r[8:], uint64(zeroOffBits))
			binary.LittleEndian.PutUint32(r[16:], w.zeroCRC)
		} else {
			if run < 0 {
				run = i
			}
			binary.LittleEndian.PutUint64(r[8:], uint64(end+int64(i-run)*w.bs))
			binary.LittleEndian.PutUint32(r[16:], crc32.Checksum(block, castagnoli))
		}
		binary.LittleEndian.PutUint32(r[20:], crc32.Checksum(r[:20], castagnoli))
	}
	if err := flush(len(blocks)); err != nil {
		return err
	}
	if err := w.drain(); err != nil {
		w.abort()
		return fmt.Errorf("append %s: %w", w.data.Name(), err)
	}
	w.stagedEnd = end
	return nil
}

// appendData writes p at off, the end of what was appended so far: at
// once through the cache, or gathered for one direct write of many runs
// (a run is often a few blocks, and each direct write waits for the disk).
// A run that starts a direct write aligned in memory goes from p itself.
func (w *storeWriter) appendData(p []byte, off int64) error {
	if w.direct == nil {
		_, err := w.data.WriteAt(p, off)
		return err
	}
	if w.pend == nil || len(*w.pend) == 0 {
		if uintptr(unsafe.Pointer(&p[0]))%directAlign == 0 && len(p) >= slabSize/4 {
			return w.writeAt(p, off)
		}
		if w.pend == nil {
			w.pend = alignedSlab()
		}
		*w.pend = (*w.pend)[:0]
		w.pendAt = off
	}
	for len(p) > 0 {
		b := *w.pend
		n := min(len(p), cap(b)-len(b))
		*w.pend = append(b, p[:n]...)
		p = p[n:]
		if len(*w.pend) == cap(b) {
			if err := w.drain(); err != nil {
				return err
			}
			w.pendAt = off + int64(n)
		}
		off += int64(n)
	}
	return nil
}

// alignedSlab returns a slab whose memory starts at a multiple of
// directAlign, as direct writes need. Slabs are large allocations, which
// start at a page of the Go heap, so the pool's are.
func alignedSlab() *[]byte {
	b := getSlab()
	if uintptr(unsafe.Pointer(&(*b)[0]))%directAlign == 0 {
		return b
	}
	putSlab(b)
	nb := make([]byte, slabSize+directAlign)
	k := (directAlign - int(uintptr(unsafe.Pointer(&nb[0]))%directAlign)) % directAlign
	nb = nb[k : k+slabSize : k+slabSize]
	return &nb
}

// drain writes what appendData gathered.
func (w *storeWriter) drain() error {
	if w.pend == nil || len(*w.pend) == 0 {
		return nil
	}
	err := w.writeAt(*w.pend, w.pendAt)
	*w.pend = (*w.pend)[:0]
	return err
}

// writeAt writes p at off past the page cache, or through it from then
// on when the file system refuses (EINVAL: an alignment it wants larger,
// or no direct writes on this file).
func (w *storeWriter) writeAt(p []byte, off int64) error {
	if w.direct != nil {
		_, err := w.direct.WriteAt(p, off)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		w.direct.Close()
		w.direct = nil
	}
	_, err := w.data.WriteAt(p, off)
	return err
}

// zeroOffBits is zeroOff as stored: all ones.
const zeroOffBits = ^uint64(0)

// isZeroBlock reports whether b holds only zeros.
func isZeroBlock(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// commit makes the staged blocks durable and adds them to the store: one
// fsync of the data, then their records appended and fsynced.
func (w *storeWriter) commit() error {
	if len(w.recs) == 0 {
		return nil
	}
	defer w.abort()
	if err := w.data.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", w.data.Name(), err)
	}
	if _, err := w.idx.WriteAt(w.recs, w.idxEnd); err != nil {
		return fmt.Errorf("append %s: %w", w.idx.Name(), err)
	}
	if err := w.idx.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", w.idx.Name(), err)
	}
	w.dataEnd = w.stagedEnd
	w.idxEnd += int64(len(w.recs))
	for i := 0; i < len(w.recs); i += storeRecordSize {
		r := w.recs[i : i+storeRecordSize]
		w.index[int64(binary.LittleEndian.Uint64(r[0:]))] = blockEntry{
			off: int64(binary.LittleEndian.Uint64(r[8:])),
			crc: binary.LittleEndian.Uint32(r[16:]),
		}
	}
	return nil
}

// abort forgets what was staged and not committed; the next stage writes
// over it (no record points there).
func (w *storeWriter) abort() {
	w.recs = w.recs[:0]
	w.stagedEnd = w.dataEnd
	if w.pend != nil {
		*w.pend = (*w.pend)[:0]
	}
}

func (w *storeWriter) close() error {
	if w.pend != nil {
		*w.pend = (*w.pend)[:cap(*w.pend)]
		putSlab(w.pend)
		w.pend = nil
	}
	var err0 error
	if w.direct != nil {
		err0 = w.direct.Close()
		w.direct = nil
	}
	err1 := w.data.Close()
	err2 := w.idx.Close()
	return errors.Join(err0, err1, err2)
}

// storeReader reads a block store that may still be growing: refresh picks
// up records appended since it was opened, also by other processes. It is
// safe for concurrent use.
type storeReader struct {
	bs        int64
	dataPath  string
	idxPath   string
	mu        sync.RWMutex
	data, idx *os.File // nil until the store exists
	idxEnd    int64
	index     blockIndex
}

// openStoreReader opens the block store NAME in dir for reading. A store
// that does not exist yet reads as empty until refresh finds it.
func openStoreReader(dir, name string, bs int64) (*storeReader, error) {
	dataPath, idxPath := storePaths(dir, name)
	r := &storeReader{bs: bs, dataPath: dataPath, idxPath: idxPath, index: blockIndex{}}
	if err := r.refresh(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// refresh reads the records appended since the last call.
func (r *storeReader) refresh() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.idx == nil {
		idx, err := os.Open(r.idxPath)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open block store: %w", err)
		}
		h := make([]byte, storeHeaderSize)
		if n, _ := idx.ReadAt(h, 0); n < storeHeaderSize || !isHeader(h, r.bs) {
			st, err := idx.Stat()
			idx.Close()
			if err == nil && st.Size() > storeHeaderSize {
				return fmt.Errorf("block store %s: bad header (corrupt, or another block size)", r.idxPath)
			}
			// Being created right now, or torn before any record: empty.
			return nil
		}
		// The writer creates the data file before the index.
		data, err := os.Open(r.dataPath)
		if err != nil {
			idx.Close()
			return fmt.Errorf("open block store: %w", err)
		}
		r.idx, r.data, r.idxEnd = idx, data, storeHeaderSize
	}
	end, err := scanIndex(r.idx, r.idxEnd, r.index)
	if err != nil {
		return err
	}
	r.idxEnd = end
	return nil
}

// lookup returns where block b is, if the store holds it.
func (r *storeReader) lookup(b int64) (blockEntry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.index[b]
	return e, ok
}

// readBlock reads a block found by lookup into buf, checking its CRC.
func (r *storeReader) readBlock(e blockEntry, buf []byte) error {
	r.mu.RLock()
	data := r.data
	r.mu.RUnlock()
	return readStoredBlock(data, e, buf)
}

// readBlocks reads blocks, each of which ix holds, into buf back to back,
// checking each one's CRC: one read per run of blocks that lie one after
// another in the data file, as the blocks of one write or one batch do.
func (r *storeReader) readBlocks(ix blockIndex, blocks []int64, buf []byte) error {
	r.mu.RLock()
	data := r.data
	r.mu.RUnlock()
	if data == nil {
		return fmt.Errorf("read block store: no data file")
	}
	bs := r.bs
	for i := 0; i < len(blocks); {
		first := ix[blocks[i]]
		if first.off == zeroOff {
			clear(buf[int64(i)*bs : int64(i+1)*bs])
			i++
			continue
		}
		j := i + 1
		for j < len(blocks) && ix[blocks[j]].off == first.off+int64(j-i)*bs {
			j++
		}
		p := buf[int64(i)*bs : int64(j)*bs]
		n, err := data.ReadAt(p, first.off)
		if n < len(p) {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read %s at %d: %w", data.Name(), first.off, err)
		}
		for k := i; k < j; k++ {
			if crc32.Checksum(buf[int64(k)*bs:int64(k+1)*bs], castagnoli) != ix[blocks[k]].crc {
				return fmt.Errorf("read %s at %d: block checksum mismatch (the file is corrupt)", data.Name(), ix[blocks[k]].off)
			}
		}
		i = j
	}
	return nil
}

// snapshotIndex returns a copy of the index as loaded so far.
func (r *storeReader) snapshotIndex() blockIndex {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ix := make(blockIndex, len(r.index))
	for b, e := range r.index {
		ix[b] = e
	}
	return ix
}

func (r *storeReader) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.index)
}

func (r *storeReader) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if r.data != nil {
		errs = append(errs, r.data.Close())
	}
	if r.idx != nil {
		errs = append(errs, r.idx.Close())
	}
	r.data, r.idx = nil, nil
	return errors.Join(errs...)
}

func readStoredBlock(data *os.File, e blockEntry, buf []byte) error {
	if e.off == zeroOff {
		clear(buf)
		return nil
	}
	if data == nil {
		return fmt.Errorf("read block store: no data file")
	}
	n, err := data.ReadAt(buf, e.off)
	if n < len(buf) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read %s at %d: %w", data.Name(), e.off, err)
	}
	if crc32.Checksum(buf, castagnoli) != e.crc {
		return fmt.Errorf("read %s at %d: block checksum mismatch (the file is corrupt)", data.Name(), e.off)
	}
	return nil
}
