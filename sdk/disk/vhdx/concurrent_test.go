package vhdx

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenWhileAnotherHandleWrites opens a disk read-only while another
// handle writes it, as a host does when it reads the size of a disk that a
// replica's writer is filling: between the start of the open and its read
// of the BAT, the writer allocates new blocks and syncs, so the BAT points
// past the end the file had when the open began. The open must succeed and
// read the disk as its BAT says, new blocks included.
func TestOpenWhileAnotherHandleWrites(t *testing.T) {
	for _, diff := range []bool{false, true} {
		t.Run(fmt.Sprintf("differencing=%v", diff), func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Size: 8*mib + 5*kib, BlockSize: mib}
			path := filepath.Join(dir, "base.vhdx")
			img, err := Create(path, o)
			if err != nil {
				t.Fatal(err)
			}
			base := bytes.Repeat([]byte{0x5a}, mib)
			if _, err := img.WriteAt(base, 0); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			m := newModel(make([]byte, o.Size), mib, 512, false)
			m.write(base, 0)
			if diff {
				child := filepath.Join(dir, "child.avhdx")
				if img, err = CreateDifferencing(child, path); err != nil {
					t.Fatal(err)
				}
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				path, m = child, newModel(m.data, mib, 512, true)
			}

			w, err := Open(path, os.O_RDWR)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			// Writes the open has not seen yet: in part of a block (the
			// file grows by a whole block first), a whole block, and the
			// short last block.
			writes := []struct {
				off int64
				p   []byte
			}{
				{mib + 4096, bytes.Repeat([]byte{1}, 1000)},
				{3 * mib, bytes.Repeat([]byte{2}, mib)},
				{8 * mib, bytes.Repeat([]byte{3}, 5*kib)},
				{100, bytes.Repeat([]byte{4}, 700)}, // into block 0, over the parent's data when differencing
			}
			wrote := false
			testHookBeforeBAT = func() {
				if wrote {
					return // the parent's open
				}
				wrote = true
				for _, x := range writes {
					if _, err := w.WriteAt(x.p, x.off); err != nil {
						t.Error(err)
						return
					}
					m.write(x.p, x.off)
				}
				if err := w.Sync(); err != nil {
					t.Error(err)
				}
			}
			defer func() { testHookBeforeBAT = nil }()

			r, err := Open(path, os.O_RDONLY)
			if err != nil {
				t.Fatalf("open while another handle writes: %v", err)
			}
			defer r.Close()
			if !wrote {
				t.Fatal("the writes were not made during the open")
			}
			checkImage(t, r, m)
		})
	}
}
