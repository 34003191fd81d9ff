package local

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// blockStack is a disk assembled from block stores over a base file: a
// block comes from the first store that holds it, else from the base file
// (zeros past its end). The source's snapshot views (delta layers, newest
// first, over disk<N>.img) and the target's restore points (undo stores,
// oldest first, over the working image) are block stacks.
type blockStack struct {
	bs   int64
	size int64

	mu     sync.RWMutex
	stores []*storeReader
	base   *os.File
}

// find returns the store that serves block b, if any.
func (s *blockStack) find(b int64) (*storeReader, blockEntry, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, st := range s.stores {
		if e, ok := st.lookup(b); ok {
			return st, e, true
		}
	}
	return nil, blockEntry{}, false
}

// readAt reads len(p) bytes at off like io.ReaderAt and returns the blocks
// it took from the base file, so a caller that races with writers can check
// them again.
func (s *blockStack) readAt(p []byte, off int64) (int, []int64, error) {
	if off < 0 {
		return 0, nil, fmt.Errorf("read at %d: negative offset", off)
	}
	if off >= s.size {
		if len(p) == 0 {
			return 0, nil, nil
		}
		return 0, nil, io.EOF
	}
	end := off + int64(len(p))
	var eof error
	if end > s.size {
		end, eof = s.size, io.EOF
	}
	var fromBase []int64
	var scratch []byte
	pos := off
	for pos < end {
		b := pos / s.bs
		if st, e, ok := s.find(b); ok {
			if scratch == nil {
				scratch = make([]byte, s.bs)
			}
			if err := st.readBlock(e, scratch); err != nil {
				return int(pos - off), nil, err
			}
			next := min((b+1)*s.bs, end)
			copy(p[pos-off:next-off], scratch[pos-b*s.bs:])
			pos = next
			continue
		}
		// A run of blocks from the base file, read in one call.
		runEnd := min((b+1)*s.bs, end)
		fromBase = append(fromBase, b)
		for runEnd < end {
			nb := runEnd / s.bs
			if _, _, ok := s.find(nb); ok {
				break
			}
			fromBase = append(fromBase, nb)
			runEnd = min((nb+1)*s.bs, end)
		}
		if err := s.readBase(p[pos-off:runEnd-off], pos); err != nil {
			return int(pos - off), nil, err
		}
		pos = runEnd
	}
	return int(end - off), fromBase, eof
}

// readBase reads the base file, with zeros past its end.
func (s *blockStack) readBase(p []byte, off int64) error {
	s.mu.RLock()
	base := s.base
	s.mu.RUnlock()
	n, err := base.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", base.Name(), err)
	}
	clear(p[n:])
	return nil
}

// reread reads block b's part of p (which starts at off) again, from the
// store that holds it now; it reports whether one did.
func (s *blockStack) reread(p []byte, off, b int64) (bool, error) {
	st, e, ok := s.find(b)
	if !ok {
		return false, nil
	}
	scratch := make([]byte, s.bs)
	if err := st.readBlock(e, scratch); err != nil {
		return true, err
	}
	lo := max(off, b*s.bs)
	hi := min(off+int64(len(p)), (b+1)*s.bs, s.size)
	copy(p[lo-off:hi-off], scratch[lo-b*s.bs:])
	return true, nil
}

func (s *blockStack) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, st := range s.stores {
		errs = append(errs, st.close())
	}
	if s.base != nil {
		errs = append(errs, s.base.Close())
	}
	s.stores, s.base = nil, nil
	return errors.Join(errs...)
}

// openBase opens a base image for reading.
func openBase(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open disk image: %w", err)
	}
	return f, nil
}
