package proxy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/ferry-dr/ferry/scheduler"
	"github.com/ferry-dr/ferry/sdk"
)

// Candidate is a proxy a task may be placed on, as the pool knows it.
type Candidate struct {
	Name     string
	Site     string
	MaxTasks int
	Running  int // task halves running on it now, of every control plane
	// Source and Target are how the proxy's plugin instances would reach
	// the task's source disks and the target's storage.
	Source, Target Reach
}

// Reach is how a proxy's instance of a plugin block would reach its disks
// (see sdk.TransportProber).
type Reach struct {
	Known bool   // false: the plugin cannot say; taken as the network
	Mode  string // sdk.TransportDirect, TransportHotAdd, TransportNetwork; "" (Known) when it cannot
	Why   string
}

// rank orders the ways a half's data path can go: direct storage access,
// then HotAdd, then the network (or a plugin that does not say); -1 when
// the proxy cannot reach the disks at all.
func (r Reach) rank() int {
	if !r.Known {
		return 1
	}
	switch r.Mode {
	case sdk.TransportDirect:
		return 3
	case sdk.TransportHotAdd:
		return 2
	case sdk.TransportNetwork:
		return 1
	}
	return -1
}

// Placement is where the halves of a task go, and why.
type Placement struct {
	Source, Target       string
	SourceWhy, TargetWhy string
}

// Choose places the two halves of a task on candidates (the proxies that
// can be reached and that the task may use), each half on the proxy with
// the best data path to its disks: direct storage access, then HotAdd,
// then the network; among equals one at the half's site (sourceSite,
// targetSite), then the job's order of proxies (preferred, when given),
// then the one with the most free slots. A proxy whose plugin cannot
// reach a half's disks never gets it. ok is false when no candidate can
// take a half now (every one able to is busy, or none is able: unable
// says so). It is pure.
func Choose(cands []Candidate, preferred []string, sourceSite, targetSite, vm string) (p Placement, ok bool) {
	slots := make([]scheduler.Slot, 0, len(cands))
	for _, c := range cands {
		slots = append(slots, scheduler.Slot{Proxy: c.Name, Site: c.Site, MaxTasks: c.MaxTasks, Running: c.Running})
	}
	half := func(id, site string, reach func(Candidate) Reach) string {
		order := ranked(cands, slots, preferred, site, reach)
		if len(order) == 0 {
			return ""
		}
		pl, _ := scheduler.Place([]scheduler.Task{{ID: id, VM: vm, Proxies: order, Restrict: true}}, slots)
		if len(pl) != 1 {
			return ""
		}
		for i := range slots {
			if slots[i].Proxy == pl[0].Proxy {
				slots[i].Running++
			}
		}
		return pl[0].Proxy
	}
	p.Source = half("source", sourceSite, func(c Candidate) Reach { return c.Source })
	if p.Source == "" {
		return Placement{}, false
	}
	p.Target = half("target", targetSite, func(c Candidate) Reach { return c.Target })
	if p.Target == "" {
		return Placement{}, false
	}
	p.SourceWhy = reason(cands, preferred, p.Source, sourceSite, "source", func(c Candidate) Reach { return c.Source })
	p.TargetWhy = reason(cands, preferred, p.Target, targetSite, "target", func(c Candidate) Reach { return c.Target })
	return p, true
}

// ranked lists the candidates able to take a half, best first.
func ranked(cands []Candidate, slots []scheduler.Slot, preferred []string, site string, reach func(Candidate) Reach) []string {
	free := map[string]int{}
	for _, s := range slots {
		free[s.Proxy] = s.MaxTasks - s.Running
	}
	able := make([]Candidate, 0, len(cands))
	for _, c := range cands {
		if reach(c).rank() >= 0 {
			able = append(able, c)
		}
	}
	jobIndex := func(name string) int {
		if i := slices.Index(preferred, name); i >= 0 {
			return i
		}
		return len(preferred)
	}
	atSite := func(c Candidate) int {
		if site != "" && c.Site == site {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(able, func(a, b Candidate) int {
		return cmp.Or(
			cmp.Compare(reach(b).rank(), reach(a).rank()),
			cmp.Compare(atSite(a), atSite(b)),
			cmp.Compare(jobIndex(a.Name), jobIndex(b.Name)),
			cmp.Compare(free[b.Name], free[a.Name]),
			cmp.Compare(a.Name, b.Name),
		)
	})
	out := make([]string, len(able))
	for i, c := range able {
		out[i] = c.Name
	}
	return out
}

// Unable says why no candidate can take a half of a task at all (none
// reaches its disks); "" when some can (they may be busy).
func Unable(cands []Candidate) string {
	for _, side := range []struct {
		name  string
		reach func(Candidate) Reach
	}{{"source", func(c Candidate) Reach { return c.Source }}, {"target", func(c Candidate) Reach { return c.Target }}} {
		var why []string
		for _, c := range cands {
			if r := side.reach(c); r.rank() < 0 {
				why = append(why, fmt.Sprintf("proxy %s: %s", c.Name, r.Why))
			}
		}
		if len(cands) > 0 && len(why) == len(cands) {
			return fmt.Sprintf("no proxy reaches the %s's disks (%s)", side.name, strings.Join(why, "; "))
		}
	}
	return ""
}

// reason says why a half went to proxy chosen.
func reason(cands []Candidate, preferred []string, chosen, site, side string, reach func(Candidate) Reach) string {
	var at Candidate
	sameSite, busy := 0, 0
	for _, c := range cands {
		if c.Name == chosen {
			at = c
		}
		if site != "" && c.Site == site && reach(c).rank() >= 0 {
			sameSite++
			if c.Running >= c.MaxTasks {
				busy++
			}
		}
	}
	var why string
	switch r := reach(at); {
	case !r.Known:
		why = "its plugin does not say how it reaches the disks"
	case r.Mode == sdk.TransportDirect:
		why = "direct storage access"
	case r.Mode == sdk.TransportHotAdd:
		why = "HotAdd"
	default:
		why = "over the network"
	}
	switch {
	case site == "":
		why += fmt.Sprintf("; the %s names no site", side)
	case at.Site == site:
		why += fmt.Sprintf(", at the %s's site %s", side, site)
	case sameSite > 0 && busy == sameSite:
		why += fmt.Sprintf("; every proxy at the %s's site %s is busy", side, site)
	case sameSite > 0:
		why += fmt.Sprintf("; better than the proxies at the %s's site %s", side, site)
	default:
		why += fmt.Sprintf("; no proxy at the %s's site %s reaches its disks", side, site)
	}
	if len(preferred) > 0 {
		why += ", one of the job's proxies"
	}
	return why
}
