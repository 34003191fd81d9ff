package bench

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestTLSFloor(t *testing.T) {
	for _, n := range []int64{0, 1, tlsPiece, 3*tlsPiece + 17} {
		res, err := TLSFloor(n)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if res.Bytes != n || res.Version != "TLS 1.3" || res.CipherSuite == "" {
			t.Errorf("%d bytes: %+v", n, res)
		}
	}
	if _, err := TLSFloor(-1); err == nil {
		t.Error("a negative size was accepted")
	}
}

func TestWriteFloor(t *testing.T) {
	size := int64(2*writeChunk + 5*DigestBlock + 100) // more than two chunks, a short last block
	data := make([]byte, size)
	for _, r := range []struct{ off, n int64 }{
		{0, 1},                                // one byte: its whole block is data
		{3 * DigestBlock, 2 * DigestBlock},    // a run of two blocks
		{writeChunk - 10, 20},                 // across a chunk's end
		{2*writeChunk + 5*DigestBlock, 100},   // the short last block
		{writeChunk + 7*DigestBlock + 100, 1}, // in the middle of a block
	} {
		for i := range r.n {
			data[r.off+i] = byte(i%251 + 1)
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := WriteFloor(bytes.NewReader(data), size, f)
	if err != nil {
		t.Fatal(err)
	}
	// Blocks with data: 0, 3, 4, the two around the chunk's end, the one in
	// the middle, and the short last one.
	if want := int64(6*DigestBlock + 100); n != want {
		t.Errorf("wrote %d bytes, want %d", n, want)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("the file differs from the image")
	}
	if _, err := WriteFloor(bytes.NewReader(data[:1000]), size, f); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("an image shorter than its size: %v, want an unexpected EOF", err)
	}
}
