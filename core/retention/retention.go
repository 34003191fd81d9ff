// Package retention decides which restore points a replica keeps. It is a
// pure function of the points and the policy: the engine executes what it
// decides, deleting points through the target plugin.
//
// It never deletes anything itself and never looks at a clock or a
// plugin.
package retention

import (
	"fmt"
	"sort"
	"time"
)

// Point is what retention needs to know of a restore point.
type Point struct {
	ID      string
	Created time.Time
	// Pinned points are never dropped (for example the point a replica
	// runs from after a failover).
	Pinned bool
}

// Policy is a job's retention.
type Policy struct {
	RestorePoints int // the newest this many points are kept; at least 1
}

// Decision is the fate of one point.
type Decision struct {
	Point  Point
	Keep   bool
	Reason string
}

// Apply sorts points oldest first and decides for each. The newest
// RestorePoints points are kept, older ones dropped, pinned ones kept
// whatever their age. A policy below one keeps everything: a bad policy
// never costs data.
func Apply(points []Point, p Policy) []Decision {
	sorted := append([]Point(nil), points...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if !sorted[i].Created.Equal(sorted[j].Created) {
			return sorted[i].Created.Before(sorted[j].Created)
		}
		return sorted[i].ID < sorted[j].ID
	})
	out := make([]Decision, len(sorted))
	for i, pt := range sorted {
		rank := len(sorted) - i // 1 is the newest
		switch {
		case p.RestorePoints < 1:
			out[i] = Decision{pt, true, "the policy keeps fewer than one point; keeping all"}
		case rank <= p.RestorePoints:
			out[i] = Decision{pt, true, fmt.Sprintf("one of the newest %d", p.RestorePoints)}
		case pt.Pinned:
			out[i] = Decision{pt, true, "pinned"}
		default:
			out[i] = Decision{pt, false, fmt.Sprintf("older than the newest %d", p.RestorePoints)}
		}
	}
	return out
}

// Dropped returns the points Apply would drop, oldest first.
func Dropped(points []Point, p Policy) []Point {
	var out []Point
	for _, d := range Apply(points, p) {
		if !d.Keep {
			out = append(out, d.Point)
		}
	}
	return out
}
