package proxy

import (
	"fmt"
	"sort"

	"github.com/ferry-dr/ferry/scheduler"
)

// Candidate is a proxy a task may be placed on, as the pool knows it.
type Candidate struct {
	Name     string
	Site     string
	MaxTasks int
	Running  int // task halves running on it now, of every control plane
}

// Placement is where the halves of a task go, and why.
type Placement struct {
	Source, Target       string
	SourceWhy, TargetWhy string
}

// Choose places the two halves of a task on candidates (the proxies that
// can be reached and that the task may use): the source half preferably
// at sourceSite, the target half at targetSite; among those, the job's
// order of proxies (preferred, when given), else the least loaded
// (scheduler.Place).
// ok is false when every candidate is busy. It is pure.
func Choose(cands []Candidate, preferred []string, sourceSite, targetSite, vm string) (p Placement, ok bool) {
	slots := make([]scheduler.Slot, 0, len(cands))
	for _, c := range cands {
		slots = append(slots, scheduler.Slot{Proxy: c.Name, Site: c.Site, MaxTasks: c.MaxTasks, Running: c.Running})
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i].Proxy < slots[j].Proxy })
	sp, _ := scheduler.Place([]scheduler.Task{{ID: "source", VM: vm, Proxies: bySite(cands, preferred, sourceSite), Site: sourceSite}}, slots)
	if len(sp) != 1 {
		return Placement{}, false
	}
	for i := range slots {
		if slots[i].Proxy == sp[0].Proxy {
			slots[i].Running++
		}
	}
	tp, _ := scheduler.Place([]scheduler.Task{{ID: "target", VM: vm, Proxies: bySite(cands, preferred, targetSite), Site: targetSite}}, slots)
	if len(tp) != 1 {
		return Placement{}, false
	}
	p = Placement{Source: sp[0].Proxy, Target: tp[0].Proxy}
	p.SourceWhy = reason(cands, preferred, p.Source, sourceSite, "source")
	p.TargetWhy = reason(cands, preferred, p.Target, targetSite, "target")
	return p, true
}

// bySite orders the job's proxies for one half: those at the half's site
// first, each group in the job's order. The job's order says which proxy
// it prefers; the site says which half it can serve best.
func bySite(cands []Candidate, preferred []string, site string) []string {
	if len(preferred) == 0 || site == "" {
		return preferred
	}
	siteOf := map[string]string{}
	for _, c := range cands {
		siteOf[c.Name] = c.Site
	}
	out := make([]string, 0, len(preferred))
	for _, n := range preferred {
		if siteOf[n] == site {
			out = append(out, n)
		}
	}
	for _, n := range preferred {
		if siteOf[n] != site {
			out = append(out, n)
		}
	}
	return out
}

// reason says why a half went to proxy chosen.
func reason(cands []Candidate, preferred []string, chosen, site, side string) string {
	var at *Candidate
	sameSite := 0
	for i, c := range cands {
		if c.Name == chosen {
			at = &cands[i]
		}
		if site != "" && c.Site == site {
			sameSite++
		}
	}
	var why string
	switch {
	case site == "":
		why = fmt.Sprintf("the %s names no site", side)
	case at != nil && at.Site == site:
		why = fmt.Sprintf("at the %s's site %s", side, site)
	case sameSite > 0:
		why = fmt.Sprintf("every proxy at the %s's site %s is busy", side, site)
	default:
		why = fmt.Sprintf("no proxy at the %s's site %s", side, site)
	}
	if len(preferred) > 0 {
		why += ", one of the job's proxies"
	}
	return why
}
