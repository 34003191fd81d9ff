package vsphere

import (
	"errors"
	"reflect"
	"testing"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestParseChangeID(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in    string
		epoch string
		seq   uint64
		ok    bool
	}{
		{"52 b9 50 03 e9 72 41 51-4a 9b a0 52 3c 7e 1f 0a/17", "52 b9 50 03 e9 72 41 51-4a 9b a0 52 3c 7e 1f 0a", 17, true},
		{"52 de c0 8c/0", "52 de c0 8c", 0, true},
		{"a/b/3", "a/b", 3, true},
		{"*", "", 0, false},
		{"", "", 0, false},
		{"/5", "", 0, false},
		{"52 aa/", "", 0, false},
		{"52 aa/x", "", 0, false},
		{"52 aa/-1", "", 0, false},
		{"sdktest-bogus-change-id", "", 0, false},
	}
	for _, tc := range cases {
		got, ok := parseChangeID(tc.in)
		if ok != tc.ok || (ok && (got.epoch != tc.epoch || got.seq != tc.seq)) {
			t.Errorf("parseChangeID(%q) = %+v, %v; want %q/%d, %v", tc.in, got, ok, tc.epoch, tc.seq, tc.ok)
		}
	}
}

func TestCheckChangeID(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, since, current string
		reset                bool
	}{
		{"same epoch, older", "52 aa bb/3", "52 aa bb/7", false},
		{"same epoch, same", "52 aa bb/7", "52 aa bb/7", false},
		{"epoch changed", "52 aa bb/3", "52 cc dd/1", true},
		{"newer than the snapshot", "52 aa bb/9", "52 aa bb/7", true},
		{"snapshot without tracking", "52 aa bb/3", "", true},
		{"bogus id", "not-a-change-id", "52 aa bb/7", true},
		{"bogus current", "52 aa bb/3", "garbage", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkChangeID(tc.since, tc.current)
			if tc.reset != errors.Is(err, errdefs.ErrChangeIDReset) || (!tc.reset && err != nil) {
				t.Fatalf("checkChangeID(%q, %q) = %v, want reset %v", tc.since, tc.current, err, tc.reset)
			}
		})
	}
}

func TestClipAreas(t *testing.T) {
	t.Parallel()
	ext := func(s, l int64) types.DiskChangeExtent { return types.DiskChangeExtent{Start: s, Length: l} }
	cases := []struct {
		name     string
		areas    []types.DiskChangeExtent
		from, to int64
		want     []sdk.Extent
	}{
		{"none", nil, 0, 100, nil},
		{"sorted and merged", []types.DiskChangeExtent{ext(50, 10), ext(0, 10), ext(5, 10), ext(60, 5)}, 0, 100,
			[]sdk.Extent{{Offset: 0, Length: 15}, {Offset: 50, Length: 15}}},
		{"clipped to the window", []types.DiskChangeExtent{ext(0, 30), ext(90, 30)}, 10, 100,
			[]sdk.Extent{{Offset: 10, Length: 20}, {Offset: 90, Length: 10}}},
		{"empty after clipping", []types.DiskChangeExtent{ext(0, 10)}, 10, 20, nil},
		{"contained", []types.DiskChangeExtent{ext(0, 100), ext(10, 5)}, 0, 100, []sdk.Extent{{Offset: 0, Length: 100}}},
	}
	for _, tc := range cases {
		if got := clipAreas(tc.areas, tc.from, tc.to); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: clipAreas = %v, want %v", tc.name, got, tc.want)
		}
	}
}
