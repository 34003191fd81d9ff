package proxy

import "testing"

func TestChoose(t *testing.T) {
	prod := Candidate{Name: "p-prod", Site: "prod", MaxTasks: 2}
	prod2 := Candidate{Name: "p-prod2", Site: "prod", MaxTasks: 2}
	dr := Candidate{Name: "p-dr", Site: "dr", MaxTasks: 2}
	busy := func(c Candidate) Candidate { c.Running = c.MaxTasks; return c }
	tests := []struct {
		name             string
		cands            []Candidate
		preferred        []string
		srcSite, dstSite string
		want             Placement
		full             bool
	}{
		{"each half at its site", []Candidate{prod, dr}, nil, "prod", "dr",
			Placement{"p-prod", "p-dr", "at the source's site prod", "at the target's site dr"}, false},
		{"no site named: least loaded", []Candidate{prod, dr}, nil, "", "",
			Placement{"p-dr", "p-prod", "the source names no site", "the target names no site"}, false},
		{"the target's site has no proxy", []Candidate{prod}, nil, "prod", "dr",
			Placement{"p-prod", "p-prod", "at the source's site prod", "no proxy at the target's site dr"}, false},
		{"the target's site is busy", []Candidate{prod, busy(dr)}, nil, "prod", "dr",
			Placement{"p-prod", "p-prod", "at the source's site prod", "every proxy at the target's site dr is busy"}, false},
		{"the less loaded of a site", []Candidate{{Name: "p-prod", Site: "prod", MaxTasks: 2, Running: 1}, prod2, dr}, nil, "prod", "dr",
			Placement{"p-prod2", "p-dr", "at the source's site prod", "at the target's site dr"}, false},
		{"the job's proxies first", []Candidate{prod, prod2, dr}, []string{"p-prod2", "p-dr"}, "prod", "dr",
			Placement{"p-prod2", "p-dr", "at the source's site prod, one of the job's proxies", "at the target's site dr, one of the job's proxies"}, false},
		{"a proxy takes both halves when it has two slots", []Candidate{{Name: "solo", Site: "dr", MaxTasks: 2}}, nil, "prod", "dr",
			Placement{"solo", "solo", "no proxy at the source's site prod", "at the target's site dr"}, false},
		{"one slot is not enough for both halves", []Candidate{{Name: "solo", Site: "dr", MaxTasks: 1}}, nil, "prod", "dr", Placement{}, true},
		{"everything busy", []Candidate{busy(prod), busy(dr)}, nil, "prod", "dr", Placement{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Choose(tt.cands, tt.preferred, tt.srcSite, tt.dstSite, "web-01")
			if ok == tt.full {
				t.Fatalf("ok = %v", ok)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
