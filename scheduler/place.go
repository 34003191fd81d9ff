package scheduler

import (
	"cmp"
	"slices"
)

// Task is one unit of work that occupies a proxy's task slot while it runs:
// in a replication session, the copy of one disk.
type Task struct {
	ID string
	VM string // tasks of one VM are kept on one proxy when possible
	// Proxies are the proxies the task prefers, best first (for example
	// the proxies a job names, or those with direct access to the disk's
	// storage).
	Proxies []string
	// Site is the site the task prefers after its proxies: usually the
	// site its data is at.
	Site string
	// Restrict limits the task to Proxies: it waits rather than run
	// anywhere else.
	Restrict bool
}

// Slot describes a proxy's task slots. Proxy names are unique; a slot
// whose name was seen before is ignored.
type Slot struct {
	Proxy    string
	Site     string
	MaxTasks int // slots of the proxy
	Running  int // slots already taken
}

// Placement assigns a task to a proxy.
type Placement struct {
	Task  Task
	Proxy string
}

// Place assigns tasks to the free slots of proxies and returns the tasks
// that must wait for a slot.
//
// The order of tasks is their priority: tasks are grouped by VM in the
// order each VM first appears (tasks of one VM with different preferences
// form separate groups), and a group is placed before the groups after it.
// For each group Place looks at its preferred proxies first, in the order
// given, then the proxies of its preferred site, then any proxy (the last
// two unless the tasks are restricted). Within the best tier that has a free
// slot it puts the whole group on one proxy when one has room (the first
// preferred one that fits, or among site and other proxies the one with the
// most free slots, ties by name), and otherwise fills the proxies with the
// most free slots first. Only what does not fit spills to the next tier. So
// a preferred proxy wins over keeping a VM's disks together: the
// preferences stand for faster data paths.
//
// Placements come in the order the tasks were placed; waiting tasks in
// their input order. Place is deterministic and does not modify its
// arguments.
func Place(tasks []Task, slots []Slot) (placements []Placement, waiting []Task) {
	proxies := make([]*proxyState, 0, len(slots))
	byName := make(map[string]*proxyState, len(slots))
	for _, s := range slots {
		if _, dup := byName[s.Proxy]; dup {
			continue
		}
		p := &proxyState{Slot: s, free: max(s.MaxTasks-s.Running, 0)}
		proxies = append(proxies, p)
		byName[s.Proxy] = p
	}
	slices.SortFunc(proxies, func(a, b *proxyState) int { return cmp.Compare(a.Proxy, b.Proxy) })

	placed := make(map[int]string, len(tasks)) // index in tasks -> proxy
	for _, g := range groupTasks(tasks) {
		rest := g.tasks
		for _, tier := range tiers(tasks[g.tasks[0]], proxies, byName) {
			if len(rest) == 0 {
				break
			}
			rest = fill(rest, tier, placed)
		}
	}
	for i, t := range tasks {
		if _, ok := placed[i]; !ok {
			waiting = append(waiting, t)
		}
	}
	// Report placements in placing order: by group, then task order.
	for _, g := range groupTasks(tasks) {
		for _, i := range g.tasks {
			if p, ok := placed[i]; ok {
				placements = append(placements, Placement{Task: tasks[i], Proxy: p})
			}
		}
	}
	return placements, waiting
}

type proxyState struct {
	Slot
	free int
}

type taskGroup struct {
	tasks []int // indices into the task list, in input order
}

// groupTasks groups tasks of one VM with the same preferences, in the order
// each group first appears.
func groupTasks(tasks []Task) []taskGroup {
	var groups []taskGroup
	index := map[string]int{}
	for i, t := range tasks {
		key := groupKey(t)
		g, ok := index[key]
		if !ok {
			g = len(groups)
			index[key] = g
			groups = append(groups, taskGroup{})
		}
		groups[g].tasks = append(groups[g].tasks, i)
	}
	return groups
}

func groupKey(t Task) string {
	// NUL cannot occur in names users write, so the fields cannot run
	// into each other.
	key := t.VM + "\x00" + t.Site + "\x00"
	if t.Restrict {
		key += "r"
	}
	for _, p := range t.Proxies {
		key += "\x00" + p
	}
	return key
}

// tier is a list of candidate proxies and whether its order is a
// preference order (preferred proxies) or may be rearranged by free slots.
type tier struct {
	proxies []*proxyState
	ordered bool
}

// tiers returns the proxies a task may use, in tiers of preference.
func tiers(t Task, all []*proxyState, byName map[string]*proxyState) []tier {
	seen := map[string]bool{}
	var preferred, site, other []*proxyState
	for _, name := range t.Proxies {
		if p, ok := byName[name]; ok && !seen[name] {
			seen[name] = true
			preferred = append(preferred, p)
		}
	}
	if !t.Restrict {
		for _, p := range all {
			switch {
			case seen[p.Proxy]:
			case t.Site != "" && p.Site == t.Site:
				site = append(site, p)
			default:
				other = append(other, p)
			}
		}
	}
	return []tier{{preferred, true}, {site, false}, {other, false}}
}

// fill places as many of the tasks as tier has room for and returns the
// rest.
func fill(rest []int, t tier, placed map[int]string) []int {
	for len(rest) > 0 {
		p := choose(t, len(rest))
		if p == nil {
			return rest
		}
		n := min(p.free, len(rest))
		for _, i := range rest[:n] {
			placed[i] = p.Proxy
		}
		p.free -= n
		rest = rest[n:]
	}
	return rest
}

// choose returns the proxy of the tier that takes the next tasks: one that
// fits all n of them if there is one, otherwise the one with the most free
// slots; nil when the tier is full.
func choose(t tier, n int) *proxyState {
	candidates := make([]*proxyState, 0, len(t.proxies))
	for _, p := range t.proxies {
		if p.free > 0 {
			candidates = append(candidates, p)
		}
	}
	if len(candidates) == 0 {
		return nil
	}
	if !t.ordered {
		// Most free first, so load spreads; names break ties (the slice is
		// sorted by name and the sort is stable).
		slices.SortStableFunc(candidates, func(a, b *proxyState) int { return cmp.Compare(b.free, a.free) })
	}
	for _, p := range candidates {
		if p.free >= n {
			return p
		}
	}
	return slices.MaxFunc(candidates, func(a, b *proxyState) int {
		// MaxFunc returns the first maximum; prefer the earlier candidate
		// on equal room.
		return cmp.Compare(a.free, b.free)
	})
}
