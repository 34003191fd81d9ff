package retention

import (
	"fmt"
	"testing"
	"time"
)

func points(n int, pinned ...int) []Point {
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var out []Point
	for i := 0; i < n; i++ {
		p := Point{ID: fmt.Sprintf("p%d", i), Created: base.Add(time.Duration(i) * time.Hour)}
		for _, k := range pinned {
			if k == i {
				p.Pinned = true
			}
		}
		out = append(out, p)
	}
	return out
}

func ids(ps []Point) string {
	s := ""
	for _, p := range ps {
		s += p.ID + " "
	}
	return s
}

func TestApply(t *testing.T) {
	shuffled := points(4)
	shuffled[0], shuffled[3] = shuffled[3], shuffled[0]
	sameTime := points(3)
	sameTime[1].Created, sameTime[2].Created = sameTime[0].Created, sameTime[0].Created
	tests := []struct {
		name    string
		points  []Point
		policy  Policy
		dropped string
	}{
		{"none", nil, Policy{RestorePoints: 3}, ""},
		{"fewer than the policy", points(2), Policy{RestorePoints: 3}, ""},
		{"exactly the policy", points(3), Policy{RestorePoints: 3}, ""},
		{"oldest go first", points(5), Policy{RestorePoints: 3}, "p0 p1 "},
		{"keep one", points(3), Policy{RestorePoints: 1}, "p0 p1 "},
		{"order of input does not matter", shuffled, Policy{RestorePoints: 2}, "p0 p1 "},
		{"pinned survive", points(5, 0), Policy{RestorePoints: 2}, "p1 p2 "},
		{"ties broken by id", sameTime, Policy{RestorePoints: 2}, "p0 "},
		{"a bad policy keeps all", points(4), Policy{RestorePoints: 0}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ids(Dropped(tt.points, tt.policy)); got != tt.dropped {
				t.Fatalf("dropped %q, want %q", got, tt.dropped)
			}
			for _, d := range Apply(tt.points, tt.policy) {
				if d.Reason == "" {
					t.Fatalf("decision for %s has no reason", d.Point.ID)
				}
			}
		})
	}
}
