package local

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

// fakeRanges answers queryRanges from a list of allocated ranges as
// FSCTL_QUERY_ALLOCATED_RANGES does: the ranges that overlap the window,
// cut to it, as many as fit, and more when some were left out.
func fakeRanges(all []allocRange, calls *int) queryRanges {
	return func(off, length int64, buf []allocRange) (int, bool, error) {
		*calls++
		n := 0
		for _, r := range all {
			start, end := max(r.Offset, off), min(r.Offset+r.Length, off+length)
			if end <= start {
				continue
			}
			if n == len(buf) {
				return n, true, nil
			}
			buf[n] = allocRange{start, end - start}
			n++
		}
		return n, false, nil
	}
}

func TestCollectAllocated(t *testing.T) {
	three := []allocRange{{0, 10}, {20, 10}, {40, 10}}
	for _, tc := range []struct {
		name      string
		all       []allocRange
		size      int64
		room      int
		want      []sdk.Extent
		wantCalls int
	}{
		{"empty file", nil, 0, 4, nil, 0},
		{"all holes", nil, 100, 4, nil, 1},
		{"fits in one answer", three, 100, 4, []sdk.Extent{{Offset: 0, Length: 10}, {Offset: 20, Length: 10}, {Offset: 40, Length: 10}}, 1},
		{"one range per answer", three, 100, 1, []sdk.Extent{{Offset: 0, Length: 10}, {Offset: 20, Length: 10}, {Offset: 40, Length: 10}}, 3},
		{"cut at size", three, 45, 1, []sdk.Extent{{Offset: 0, Length: 10}, {Offset: 20, Length: 10}, {Offset: 40, Length: 5}}, 3},
		{"touching ranges merge", []allocRange{{0, 10}, {10, 10}}, 100, 1, []sdk.Extent{{Offset: 0, Length: 20}}, 2},
		{"whole file", []allocRange{{0, 100}}, 100, 1, []sdk.Extent{{Offset: 0, Length: 100}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			got, err := collectAllocated(tc.size, make([]allocRange, tc.room), fakeRanges(tc.all, &calls))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
			if calls != tc.wantCalls {
				t.Errorf("%d queries, want %d", calls, tc.wantCalls)
			}
		})
	}
}

func TestCollectAllocatedRefusesBadAnswers(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name  string
		query queryRanges
	}{
		{"error", func(int64, int64, []allocRange) (int, bool, error) { return 0, false, boom }},
		{"more without ranges", func(int64, int64, []allocRange) (int, bool, error) { return 0, true, nil }},
		{"more without progress", func(off int64, _ int64, buf []allocRange) (int, bool, error) {
			buf[0] = allocRange{0, off}
			return 1, true, nil
		}},
		{"too many", func(int64, int64, []allocRange) (int, bool, error) { return 5, false, nil }},
		{"out of order", func(_ int64, _ int64, buf []allocRange) (int, bool, error) {
			buf[0], buf[1] = allocRange{20, 5}, allocRange{10, 5}
			return 2, false, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := collectAllocated(100, make([]allocRange, 2), tc.query); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestAllocatedExtentsFindData checks this system's allocatedExtents on a
// real sparse file: every written byte lies in a listed extent, and the
// extents stay within the size.
func TestAllocatedExtentsFindData(t *testing.T) {
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "disk0.img")
	if err := createSparse(path, size); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	written := []int64{0, 3 << 20, size - 1}
	for _, off := range written {
		if _, err := f.WriteAt([]byte{0xaa}, off); err != nil {
			t.Fatal(err)
		}
	}
	ext, err := allocatedExtents(f, size)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range written {
		found := false
		for _, e := range ext {
			found = found || (off >= e.Offset && off < e.End())
		}
		if !found {
			t.Errorf("byte %d was written but lies in no extent of %v", off, ext)
		}
	}
	for _, e := range ext {
		if e.Offset < 0 || e.End() > size {
			t.Errorf("extent %v outside [0, %d)", e, size)
		}
	}
}
