package datamover

import (
	"sort"

	"github.com/ferry-dr/ferry/sdk"
)

// span is a half-open byte range [start, end).
type span struct{ start, end int64 }

// normalize sorts extents, widens them to whole blocks, clips them to
// [0, size) and merges those that touch.
func normalize(es []sdk.Extent, bs, size int64) []span {
	out := make([]span, 0, len(es))
	for _, e := range es {
		if e.Length <= 0 {
			continue
		}
		s := max(e.Offset, 0) / bs * bs
		end := min((e.End()+bs-1)/bs*bs, size)
		if s < end {
			out = append(out, span{s, end})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s.start <= merged[n-1].end {
			merged[n-1].end = max(merged[n-1].end, s.end)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// clip returns the parts of spans inside [lo, hi).
func clip(spans []span, lo, hi int64) []span {
	i := sort.Search(len(spans), func(i int) bool { return spans[i].end > lo })
	var out []span
	for ; i < len(spans) && spans[i].start < hi; i++ {
		out = append(out, span{max(spans[i].start, lo), min(spans[i].end, hi)})
	}
	return out
}

// intersect returns the parts of a that are also in b; both sorted and
// merged.
func intersect(a, b []span) []span {
	var out []span
	for i, j := 0, 0; i < len(a) && j < len(b); {
		s, e := max(a[i].start, b[j].start), min(a[i].end, b[j].end)
		if s < e {
			out = append(out, span{s, e})
		}
		if a[i].end < b[j].end {
			i++
		} else {
			j++
		}
	}
	return out
}

// subtract returns the parts of a not in b; both sorted and merged.
func subtract(a, b []span) []span {
	var out []span
	j := 0
	for _, s := range a {
		cur := s.start
		for j < len(b) && b[j].end <= cur {
			j++
		}
		for k := j; k < len(b) && b[k].start < s.end; k++ {
			if b[k].start > cur {
				out = append(out, span{cur, b[k].start})
			}
			cur = max(cur, b[k].end)
		}
		if cur < s.end {
			out = append(out, span{cur, s.end})
		}
	}
	return out
}

// CoveredBytes is how many bytes of a disk of size the extents cover once
// widened to whole blocks: what Move handles for them.
func CoveredBytes(es []sdk.Extent, blockSize int, size int64) int64 {
	var n int64
	for _, s := range normalize(es, int64(blockSize), size) {
		n += s.end - s.start
	}
	return n
}

// extents turns spans back into extents.
func extents(spans []span) []sdk.Extent {
	out := make([]sdk.Extent, len(spans))
	for i, s := range spans {
		out[i] = sdk.Extent{Offset: s.start, Length: s.end - s.start}
	}
	return out
}
