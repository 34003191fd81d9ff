package proxy

import (
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

func TestChoose(t *testing.T) {
	direct := Reach{Known: true, Mode: sdk.TransportDirect, Why: "mounted"}
	hotadd := Reach{Known: true, Mode: sdk.TransportHotAdd}
	network := Reach{Known: true, Mode: sdk.TransportNetwork}
	none := Reach{Known: true, Why: "not mounted here"}
	prod := Candidate{Name: "p-prod", Site: "prod", MaxTasks: 2}
	prod2 := Candidate{Name: "p-prod2", Site: "prod", MaxTasks: 2}
	dr := Candidate{Name: "p-dr", Site: "dr", MaxTasks: 2}
	busy := func(c Candidate) Candidate { c.Running = c.MaxTasks; return c }
	reach := func(c Candidate, src, dst Reach) Candidate { c.Source, c.Target = src, dst; return c }
	tests := []struct {
		name             string
		cands            []Candidate
		preferred        []string
		srcSite, dstSite string
		want             Placement
		full             bool
	}{
		{"each half at its site", []Candidate{prod, dr}, nil, "prod", "dr",
			Placement{"p-prod", "p-dr", "its plugin does not say how it reaches the disks, at the source's site prod", "its plugin does not say how it reaches the disks, at the target's site dr"}, false},
		{"no site named: most free slots", []Candidate{prod, dr}, nil, "", "",
			Placement{"p-dr", "p-prod", "its plugin does not say how it reaches the disks; the source names no site", "its plugin does not say how it reaches the disks; the target names no site"}, false},
		{"the target's site has no proxy", []Candidate{prod}, nil, "prod", "dr",
			Placement{"p-prod", "p-prod", "its plugin does not say how it reaches the disks, at the source's site prod", "its plugin does not say how it reaches the disks; no proxy at the target's site dr reaches its disks"}, false},
		{"the target's site is busy", []Candidate{prod, busy(dr)}, nil, "prod", "dr",
			Placement{"p-prod", "p-prod", "its plugin does not say how it reaches the disks, at the source's site prod", "its plugin does not say how it reaches the disks; every proxy at the target's site dr is busy"}, false},
		{"the less loaded of a site", []Candidate{{Name: "p-prod", Site: "prod", MaxTasks: 2, Running: 1}, prod2, dr}, nil, "prod", "dr",
			Placement{"p-prod2", "p-dr", "its plugin does not say how it reaches the disks, at the source's site prod", "its plugin does not say how it reaches the disks, at the target's site dr"}, false},
		{"the job's proxies, each at its half's site", []Candidate{prod, prod2, dr}, []string{"p-prod2", "p-dr"}, "prod", "dr",
			Placement{"p-prod2", "p-dr", "its plugin does not say how it reaches the disks, at the source's site prod, one of the job's proxies", "its plugin does not say how it reaches the disks, at the target's site dr, one of the job's proxies"}, false},
		{"direct storage access beats the site", []Candidate{reach(prod, network, none), reach(dr, direct, direct)}, nil, "prod", "dr",
			Placement{"p-dr", "p-dr", "direct storage access; better than the proxies at the source's site prod", "direct storage access, at the target's site dr"}, false},
		{"HotAdd beats the network", []Candidate{reach(prod, network, none), reach(prod2, hotadd, none), reach(dr, network, direct)}, nil, "prod", "dr",
			Placement{"p-prod2", "p-dr", "HotAdd, at the source's site prod", "direct storage access, at the target's site dr"}, false},
		{"a proxy that cannot reach a half never gets it", []Candidate{reach(prod, direct, none), reach(busy(dr), none, direct)}, nil, "prod", "dr", Placement{}, true},
		{"one slot is not enough for both halves", []Candidate{{Name: "solo", Site: "dr", MaxTasks: 1}}, nil, "prod", "dr", Placement{}, true},
		{"everything busy", []Candidate{busy(prod), busy(dr)}, nil, "prod", "dr", Placement{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Choose(tt.cands, tt.preferred, tt.srcSite, tt.dstSite, "web-01")
			if ok == tt.full {
				t.Fatalf("ok = %v (%+v)", ok, got)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestUnable(t *testing.T) {
	none := Reach{Known: true, Why: "not mounted here"}
	cands := []Candidate{{Name: "a", Target: none}, {Name: "b", Target: none}}
	if got := Unable(cands); got != "no proxy reaches the target's disks (proxy a: not mounted here; proxy b: not mounted here)" {
		t.Fatalf("Unable = %q", got)
	}
	cands[1].Target = Reach{}
	if got := Unable(cands); got != "" {
		t.Fatalf("Unable with one able = %q", got)
	}
}
