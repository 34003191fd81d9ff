package sdktest

import (
	"bytes"
	"fmt"
	"io"
)

// readChunk is how much readAll asks of ReadAt at a time: the size of the
// data mover's blocks, so the suites read as the core does.
const readChunk = 1 << 20

// readAll reads [0, size) of r, holding every ReadAt to the io.ReaderAt
// contract on the way: a full buffer inside the disk, io.EOF only at its end.
func readAll(r io.ReaderAt, size int64) ([]byte, error) {
	buf := make([]byte, size)
	for off := int64(0); off < size; off += readChunk {
		end := min(off+readChunk, size)
		n, err := r.ReadAt(buf[off:end], off)
		if n != int(end-off) {
			return nil, fmt.Errorf("ReadAt(%d bytes at %d) read %d bytes: %v", end-off, off, n, err)
		}
		if err != nil && !(err == io.EOF && end == size) {
			return nil, fmt.Errorf("ReadAt(%d bytes at %d): %w", end-off, off, err)
		}
	}
	return buf, nil
}

// compareReader reads r in full and compares it with want, byte for byte.
func compareReader(r io.ReaderAt, want []byte) error {
	got, err := readAll(r, int64(len(want)))
	if err != nil {
		return err
	}
	if msg := diffBytes(got, want, 0); msg != "" {
		return fmt.Errorf("%s", msg)
	}
	return nil
}

// diffBlock is the unit in which diffBytes counts differences.
const diffBlock = 4096

// diffBytes returns "" when got equals want, or else a message naming the
// first differing offset (base is the offset of got[0] on the disk), the
// bytes there, and how many 4 KiB blocks differ in all.
func diffBytes(got, want []byte, base int64) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d bytes, want %d", len(got), len(want))
	}
	if bytes.Equal(got, want) {
		return ""
	}
	first, blocks := -1, 0
	for off := 0; off < len(got); off += diffBlock {
		end := min(off+diffBlock, len(got))
		if bytes.Equal(got[off:end], want[off:end]) {
			continue
		}
		blocks++
		for i := off; first < 0 && i < end; i++ {
			if got[i] != want[i] {
				first = i
			}
		}
	}
	end := min(first+16, len(got))
	return fmt.Sprintf("first difference at offset %d (%#x): got % x, want % x; %d of %d blocks of 4 KiB differ",
		base+int64(first), base+int64(first), got[first:end], want[first:end], blocks, (len(got)+diffBlock-1)/diffBlock)
}
