package bench

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeebo/xxh3"
)

// naiveHash is the hash floor's sum computed one block at a time.
func naiveHash(data []byte) HashSum {
	var s HashSum
	for i := 0; i < len(data); i += DigestBlock {
		s.foldDigest(int64(i/DigestBlock), xxh3.Hash128(data[i:min(i+DigestBlock, len(data))]))
	}
	s.Bytes = int64(len(data))
	return s
}

func TestHashFloor(t *testing.T) {
	im, err := NewImage(3, 9<<20+3*DigestBlock+100, DiskMix) // more than two chunks, a short last block
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, im.Size())
	if _, err := im.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	want := naiveHash(data)
	if want.Blocks != (im.Size()+DigestBlock-1)/DigestBlock {
		t.Fatalf("naive sum of %d blocks", want.Blocks)
	}
	for _, workers := range []int{1, 2, 3, 7, 10000} {
		got, err := HashFloor(bytes.NewReader(data), int64(len(data)), workers)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%d workers: %+v, want %+v", workers, got, want)
		}
	}
	// One changed byte, or the same digests in other places, change the fold.
	data[5<<20] ^= 1
	if got, _ := HashFloor(bytes.NewReader(data), int64(len(data)), 2); got.Fold == want.Fold {
		t.Error("a changed byte left the fold as it was")
	}
	data[5<<20] ^= 1
	swapped := append(append([]byte{}, data[DigestBlock:2*DigestBlock]...), data[:DigestBlock]...)
	copy(data, swapped)
	if got, _ := HashFloor(bytes.NewReader(data), int64(len(data)), 2); got.Fold == want.Fold {
		t.Error("two swapped blocks left the fold as it was")
	}
	if _, err := HashFloor(bytes.NewReader(data[:1000]), int64(len(data)), 2); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a disk shorter than its size: %v, want an unexpected EOF", err)
	}
}

func TestCopyFloor(t *testing.T) {
	const size = 5 << 20
	dir := t.TempDir()
	newer := bytes.Repeat([]byte("new!"), size/4)
	older := bytes.Repeat([]byte("old."), size/4)
	path := filepath.Join(dir, "copy")
	if err := os.WriteFile(path, older, 0o644); err != nil {
		t.Fatal(err)
	}
	es := []Extent{{0, 4096}, {8192, 3 << 20}, {size - 100, 100}} // one extent longer than a piece
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := CopyFloor(bytes.NewReader(newer), f, es, 4)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(4096 + 3<<20 + 100); n != want {
		t.Errorf("copied %d bytes, want %d", n, want)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{}, older...)
	for _, e := range es {
		copy(want[e.Offset:e.End()], newer[e.Offset:e.End()])
	}
	if !bytes.Equal(got, want) {
		t.Error("the copy does not hold the new extents over the old content")
	}
	if _, err := CopyFloor(bytes.NewReader(newer), f, []Extent{{size - 10, 20}}, 4); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("an extent past the source's end: %v, want an unexpected EOF", err)
	}
}

func TestExtentsFile(t *testing.T) {
	cs, err := NewChanges(5, 64<<20, 1, DiskMix)
	if err != nil {
		t.Fatal(err)
	}
	es := cs.Extents()
	var b bytes.Buffer
	if err := WriteExtents(&b, es); err != nil {
		t.Fatal(err)
	}
	got, err := ReadExtents(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(es) {
		t.Fatalf("read %d extents, wrote %d", len(got), len(es))
	}
	for i := range es {
		if got[i] != es[i] {
			t.Fatalf("extent %d: read %+v, wrote %+v", i, got[i], es[i])
		}
	}

	for _, tc := range []struct{ name, in, err string }{
		{"empty", "", ""},
		{"one field", "12\n", "line 1"},
		{"negative offset", "-1 4096\n", "offset"},
		{"zero length", "0 0\n", "length"},
		{"past the largest offset", "9223372036854775807 2\n", "length"},
		{"overlapping", "0 8192\n4096 4096\n", "line 2"},
		{"unsorted", "8192 4096\n0 4096\n", "line 2"},
		{"not a number", "0x10 4096\n", "offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadExtents(strings.NewReader(tc.in))
			if tc.err == "" && err != nil {
				t.Fatalf("error %v, want none", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
		})
	}
}

func FuzzReadExtents(f *testing.F) {
	f.Add("0 4096\n8192 65536\n")
	f.Add("1 2\n2 3")
	f.Fuzz(func(t *testing.T, in string) {
		es, err := ReadExtents(strings.NewReader(in))
		if err != nil {
			return
		}
		var b bytes.Buffer
		if err := WriteExtents(&b, es); err != nil {
			t.Fatal(err)
		}
		again, err := ReadExtents(&b)
		if err != nil || len(again) != len(es) {
			t.Fatalf("extents read back as %v, %v; wrote %v", again, err, es)
		}
		for i := range es {
			if es[i].Length <= 0 || (i > 0 && es[i].Offset < es[i-1].End()) || again[i] != es[i] {
				t.Fatalf("extent %d: %+v (read back %+v)", i, es[i], again[i])
			}
		}
	})
}
