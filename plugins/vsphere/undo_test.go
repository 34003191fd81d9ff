package vsphere

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func block(fill byte) []byte { return bytes.Repeat([]byte{fill}, undoBlock) }

func TestUndoStoreRoundTrip(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "p", "disk0.undo")
	s, err := openUndo(path, false)
	if err != nil || s != nil {
		t.Fatalf("opening a missing store without create: %v, %v; want nil, nil", s, err)
	}
	if s, err = openUndo(path, true); err != nil {
		t.Fatal(err)
	}
	load := func(b int64, p []byte) error { copy(p, block(byte(b))); return nil }
	if err := s.save([]int64{3, 1, 3}, load); err != nil {
		t.Fatal(err)
	}
	// A block is saved once: the first save wins.
	if err := s.save([]int64{1, 2}, func(b int64, p []byte) error { copy(p, block(0xee)); return nil }); err != nil {
		t.Fatal(err)
	}
	check := func(s *undoStore) {
		t.Helper()
		buf := make([]byte, undoBlock)
		for b, want := range map[int64]byte{1: 1, 2: 0xee, 3: 3} {
			ok, err := s.read(b, buf)
			if !ok || err != nil || !bytes.Equal(buf, block(want)) {
				t.Fatalf("block %d: %v, %v, first byte %#x; want %#x", b, ok, err, buf[0], want)
			}
		}
		if ok, _ := s.read(4, buf); ok {
			t.Fatal("block 4 was never saved")
		}
		if got := s.blocks(); len(got) != 3 || got[0] != 1 || got[2] != 3 {
			t.Fatalf("blocks = %v", got)
		}
	}
	check(s)
	s.close()
	// A torn record at the end (a crash in the middle of an append) is cut
	// off when the store is opened again; the good records stay.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{7}, undoRecordHead+100))
	f.Close()
	if s, err = openUndo(path, false); err != nil {
		t.Fatal(err)
	}
	check(s)
	if err := s.save([]int64{9}, load); err != nil {
		t.Fatal(err)
	}
	s.close()
	if s, err = openUndo(path, false); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if !s.has(9) || !s.has(3) {
		t.Fatal("a block saved after the torn tail was cut is lost")
	}
	// Four records (blocks 1, 2, 3, 9); the torn bytes are gone.
	st, _ := os.Stat(path)
	if st.Size() != undoHeaderSize+4*(undoRecordHead+undoBlock) {
		t.Fatalf("store size %d", st.Size())
	}
}

func TestUndoStoreConcurrentSavers(t *testing.T) {
	t.Parallel()
	s, err := openUndo(filepath.Join(t.TempDir(), "d.undo"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var mu sync.Mutex
	loads := map[int64]int{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			err := s.save([]int64{int64(g % 3), 5}, func(b int64, p []byte) error {
				mu.Lock()
				loads[b]++
				mu.Unlock()
				copy(p, block(byte(b)))
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for b, n := range loads {
		if n != 1 {
			t.Errorf("block %d was loaded %d times; a block is saved once", b, n)
		}
	}
}

func TestUndoStoreRejectsOtherFiles(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.undo")
	os.WriteFile(path, bytes.Repeat([]byte("x"), 64), 0o644)
	if _, err := openUndo(path, false); err == nil {
		t.Fatal("a file that is not an undo store opened")
	}
}
