package sdk

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The prepared ranges a host writer keeps: added in any order, merged,
// and a write is covered only when one range holds all of it.
func TestPreparedRanges(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	const size = 1 << 16
	for round := range 200 {
		var ready []Extent
		model := make([]bool, size)
		for range 1 + r.IntN(8) {
			var es []Extent
			for range 1 + r.IntN(6) {
				off := r.Int64N(size - 1)
				es = append(es, Extent{Offset: off, Length: 1 + r.Int64N(min(4096, size-off-1))})
			}
			for _, e := range es {
				for i := e.Offset; i < e.End(); i++ {
					model[i] = true
				}
			}
			ready = addExtents(ready, MergeExtents(es))
		}
		for i := 1; i < len(ready); i++ {
			if ready[i].Offset <= ready[i-1].End() {
				t.Fatalf("round %d: ranges %v are not sorted and merged", round, ready)
			}
		}
		for range 100 {
			off := r.Int64N(size - 1)
			n := 1 + r.Int64N(min(2048, size-off-1))
			want := true
			for i := off; i < off+n; i++ {
				want = want && model[i]
			}
			if got := covers(ready, off, n); got != want {
				t.Fatalf("round %d: covers(%d, %d) = %v, want %v; ranges %v", round, off, n, got, want, fmt.Sprint(ready))
			}
		}
	}
}
