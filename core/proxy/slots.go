package proxy

import (
	"maps"
	"slices"
)

// SlotState is a proxy's task slots as a pool sees them.
type SlotState struct {
	Proxy, Site string
	// Slots is how many tasks the proxy takes at once: what it said when
	// it was last greeted, bounded by the configuration's max_tasks; the
	// configuration's alone before a greeting (0 when it says nothing).
	Slots int
	// Busy is how many of them the pool's tasks hold.
	Busy int
}

// Slots says the task slots of the pool's proxies, by name, and how many
// of its tasks wait for free slots (every proxy they may use is busy).
func (p *Pool) Slots() (proxies []SlotState, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(p.members)) {
		m := p.members[name]
		slots := m.MaxTasks
		if m.hello != nil {
			slots = int(m.hello.GetMaxTasks())
			if m.MaxTasks > 0 {
				slots = min(slots, m.MaxTasks)
			}
		}
		proxies = append(proxies, SlotState{Proxy: name, Site: m.Site, Slots: slots, Busy: m.ours})
	}
	return proxies, p.waiting
}

// SlotsOf adds up the slots of pools that share proxies: current, the
// pool of the configuration now (nil when it has no proxies), and older
// ones, newest first, from configurations before a reload, whose
// sessions may still run tasks. A proxy's slots and site are those of
// the newest pool that has it; its busy slots and the tasks waiting are
// every pool's. A proxy only older pools have is told while their tasks
// hold its slots.
func SlotsOf(current *Pool, older ...*Pool) (proxies []SlotState, waiting int) {
	by := map[string]*SlotState{}
	for i, p := range append([]*Pool{current}, older...) {
		if p == nil {
			continue
		}
		states, w := p.Slots()
		waiting += w
		for _, st := range states {
			sum := by[st.Proxy]
			if sum == nil {
				if i > 0 && st.Busy == 0 {
					continue
				}
				sum = &SlotState{Proxy: st.Proxy, Site: st.Site, Slots: st.Slots}
				by[st.Proxy] = sum
			}
			sum.Busy += st.Busy
		}
	}
	for _, name := range slices.Sorted(maps.Keys(by)) {
		proxies = append(proxies, *by[name])
	}
	return proxies, waiting
}
