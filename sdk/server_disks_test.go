package sdk

import (
	"fmt"
	"testing"

	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

func TestIsZero(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, 1, zeroWindow - 1, zeroWindow, zeroWindow + 1, 1 << 20, maxChunkBytes + 1} {
		b := make([]byte, size)
		if !isZero(b) {
			t.Errorf("%d zeros: not zero", size)
		}
		for _, at := range []int{0, zeroWindow - 1, zeroWindow, size - 1} {
			if at < 0 || at >= size {
				continue
			}
			b[at] = 1
			if isZero(b) {
				t.Errorf("%d bytes with a 1 at %d: zero", size, at)
			}
			b[at] = 0
		}
	}
}

// writeSizes records the writes a DiskWriter is given.
type writeSizes struct{ writes []string }

func (w *writeSizes) WriteAt(p []byte, off int64) (int, error) {
	if !isZero(p) {
		return 0, fmt.Errorf("write at %d is not zeros", off)
	}
	w.writes = append(w.writes, fmt.Sprintf("%d+%d", off, len(p)))
	return len(p), nil
}

// TestZeroChunkWrites pins how a run of zeros reaches the writer: in as
// few writes as before, each as large as the run allows (up to 16 MiB),
// since a target may treat one large write differently from many small
// ones.
func TestZeroChunkWrites(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		off, length int64
		want        string
	}{
		{0, 1, "[0+1]"},
		{4096, 1 << 20, "[4096+1048576]"},
		{0, maxChunkBytes, "[0+16777216]"},
		{8, maxChunkBytes + 5, "[8+16777216 16777224+5]"},
	} {
		var w writeSizes
		n, err := writeChunk(&w, &pb.Chunk{Offset: tc.off, ZeroLength: tc.length})
		if err != nil || n != tc.length {
			t.Fatalf("zeros at %d+%d: wrote %d, %v", tc.off, tc.length, n, err)
		}
		if got := fmt.Sprint(w.writes); got != tc.want {
			t.Errorf("zeros at %d+%d: writes %s, want %s", tc.off, tc.length, got, tc.want)
		}
	}
}
