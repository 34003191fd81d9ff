package vsphere

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// undoBlock is the granularity of undo stores: the first write to a 64 KiB
// block after a restore point saves the whole block once.
const undoBlock = 64 << 10

// Undo store file layout: a 32-byte header (magic, block size), then
// records of a 16-byte head (block number, CRC-32C of the data, CRC-32C of
// the first 12 bytes of the head) and one block of data.
const (
	undoMagic      = "FERRYUNDO1\x00\x00\x00\x00\x00\x00"
	undoHeaderSize = 32
	undoRecordHead = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// undoStore keeps blocks of a disk as they were before they were
// overwritten: the data of one restore point that the working image no
// longer holds. It is append-only; a block is saved once (the first record
// of a block wins); records are fsynced before the caller overwrites the
// working image, so a crash never loses a saved block, and a record torn
// by a crash is cut off when the store is opened again. It is safe for
// concurrent use.
type undoStore struct {
	path string

	mu    sync.Mutex
	f     *os.File
	index map[int64]int64 // block -> offset of its data
	end   int64
}

// openUndo opens a store, creating it when create is set; a missing store
// that is not to be created is an empty one (nil, nil).
func openUndo(path string, create bool) (*undoStore, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if errors.Is(err, os.ErrNotExist) && !create {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := &undoStore{path: path, f: f, index: map[int64]int64{}}
	if err := s.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("undo store %s: %w", path, err)
	}
	return s, nil
}

// load reads the header (writing it to a new store) and indexes the
// records, cutting off a torn or corrupt tail.
func (s *undoStore) load() error {
	st, err := s.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < undoHeaderSize {
		hdr := make([]byte, undoHeaderSize)
		copy(hdr, undoMagic)
		binary.LittleEndian.PutUint32(hdr[16:], undoBlock)
		if _, err := s.f.WriteAt(hdr, 0); err != nil {
			return err
		}
		if err := s.f.Truncate(undoHeaderSize); err != nil {
			return err
		}
		if err := s.f.Sync(); err != nil {
			return err
		}
		s.end = undoHeaderSize
		return nil
	}
	hdr := make([]byte, undoHeaderSize)
	if _, err := s.f.ReadAt(hdr, 0); err != nil {
		return err
	}
	if string(hdr[:16]) != undoMagic || binary.LittleEndian.Uint32(hdr[16:]) != undoBlock {
		return fmt.Errorf("not an undo store of %d-byte blocks", undoBlock)
	}
	head := make([]byte, undoRecordHead)
	data := make([]byte, undoBlock)
	off := int64(undoHeaderSize)
	for off+undoRecordHead+undoBlock <= st.Size() {
		if _, err := s.f.ReadAt(head, off); err != nil {
			return err
		}
		if crc32.Checksum(head[:12], castagnoli) != binary.LittleEndian.Uint32(head[12:]) {
			break
		}
		if _, err := s.f.ReadAt(data, off+undoRecordHead); err != nil {
			return err
		}
		if crc32.Checksum(data, castagnoli) != binary.LittleEndian.Uint32(head[8:]) {
			break
		}
		block := int64(binary.LittleEndian.Uint64(head))
		if _, dup := s.index[block]; !dup {
			s.index[block] = off + undoRecordHead
		}
		off += undoRecordHead + undoBlock
	}
	s.end = off
	if off != st.Size() {
		// A record a crash tore: it was never acknowledged, so it is not
		// needed; the next append starts where the good records end.
		if err := s.f.Truncate(off); err != nil {
			return err
		}
	}
	return nil
}

// has reports whether a block is saved.
func (s *undoStore) has(block int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.index[block]
	return ok
}

// blocks lists the saved blocks, sorted.
func (s *undoStore) blocks() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int64, 0, len(s.index))
	for b := range s.index {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// read reads a saved block into p (undoBlock bytes); false when the block
// is not saved.
func (s *undoStore) read(block int64, p []byte) (bool, error) {
	s.mu.Lock()
	off, ok := s.index[block]
	f := s.f
	s.mu.Unlock()
	if !ok {
		return false, nil
	}
	if _, err := f.ReadAt(p[:undoBlock], off); err != nil {
		return true, fmt.Errorf("undo store %s block %d: %w", s.path, block, err)
	}
	return true, nil
}

// save saves, for each block not saved yet, what load returns for it, and
// fsyncs; only then may the caller overwrite those blocks. Blocks are
// saved under the store's lock, so concurrent savers of one block save it
// once, and any write to a block happens after its save.
func (s *undoStore) save(blocks []int64, load func(block int64, p []byte) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rec []byte
	added := map[int64]int64{}
	off := s.end
	for _, b := range blocks {
		if _, ok := s.index[b]; ok {
			continue
		}
		if _, ok := added[b]; ok {
			continue
		}
		buf := make([]byte, undoRecordHead+undoBlock)
		if err := load(b, buf[undoRecordHead:]); err != nil {
			return err
		}
		binary.LittleEndian.PutUint64(buf, uint64(b))
		binary.LittleEndian.PutUint32(buf[8:], crc32.Checksum(buf[undoRecordHead:], castagnoli))
		binary.LittleEndian.PutUint32(buf[12:], crc32.Checksum(buf[:12], castagnoli))
		added[b] = off + int64(len(rec)) + undoRecordHead
		rec = append(rec, buf...)
	}
	if len(rec) == 0 {
		return nil
	}
	if _, err := s.f.WriteAt(rec, off); err != nil {
		return fmt.Errorf("undo store %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("undo store %s: %w", s.path, err)
	}
	for b, o := range added {
		s.index[b] = o
	}
	s.end = off + int64(len(rec))
	return nil
}

func (s *undoStore) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// readBlock reads block b of a file into p (undoBlock bytes), zeros past
// the file's end.
func readBlock(f io.ReaderAt, b int64, p []byte) error {
	p = p[:undoBlock]
	n, err := f.ReadAt(p, b*undoBlock)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	clear(p[n:])
	return nil
}
