package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// disks returns the tasks of n disks of one VM with the given preferences.
func disks(vm string, n int, prefs Task) []Task {
	var ts []Task
	for i := range n {
		t := prefs
		t.ID = fmt.Sprintf("%s/disk%d", vm, i)
		t.VM = vm
		ts = append(ts, t)
	}
	return ts
}

func concat(lists ...[]Task) []Task { return slices.Concat(lists...) }

// render writes placements as "task@proxy" and waiting tasks by ID.
func render(ps []Placement, waiting []Task) (string, string) {
	var p, w []string
	for _, pl := range ps {
		p = append(p, pl.Task.ID+"@"+pl.Proxy)
	}
	for _, t := range waiting {
		w = append(w, t.ID)
	}
	return strings.Join(p, " "), strings.Join(w, " ")
}

func TestPlace(t *testing.T) {
	prod := func(name string, max, running int) Slot {
		return Slot{Proxy: name, Site: "prod", MaxTasks: max, Running: running}
	}
	dr := func(name string, max, running int) Slot {
		return Slot{Proxy: name, Site: "dr", MaxTasks: max, Running: running}
	}
	tests := []struct {
		name        string
		tasks       []Task
		slots       []Slot
		wantPlaced  string
		wantWaiting string
	}{
		{"nothing to do", nil, []Slot{prod("p1", 4, 0)}, "", ""},
		{"no proxies", disks("web", 1, Task{}), nil, "", "web/disk0"},
		{"one task one slot", disks("web", 1, Task{}), []Slot{prod("p1", 1, 0)}, "web/disk0@p1", ""},
		{
			"preferred proxy wins over more room",
			disks("web", 1, Task{Proxies: []string{"p2"}}),
			[]Slot{prod("p1", 8, 0), prod("p2", 1, 0)},
			"web/disk0@p2", "",
		},
		{
			"preferred proxies in the order given",
			disks("web", 2, Task{Proxies: []string{"p2", "p1"}}),
			[]Slot{prod("p1", 4, 0), prod("p2", 4, 0)},
			"web/disk0@p2 web/disk1@p2", "",
		},
		{
			"first preferred proxy that holds the whole vm",
			disks("web", 2, Task{Proxies: []string{"p1", "p2"}}),
			[]Slot{prod("p1", 1, 0), prod("p2", 4, 0)},
			"web/disk0@p2 web/disk1@p2", "",
		},
		{
			"preferred proxy full, same site next",
			disks("web", 1, Task{Proxies: []string{"p1"}, Site: "prod"}),
			[]Slot{prod("p1", 2, 2), dr("d1", 8, 0), prod("p2", 1, 0)},
			"web/disk0@p2", "",
		},
		{
			"site full, any proxy last",
			disks("web", 1, Task{Site: "prod"}),
			[]Slot{prod("p1", 1, 1), dr("d1", 1, 0)},
			"web/disk0@d1", "",
		},
		{
			"restricted task waits rather than run elsewhere",
			disks("web", 2, Task{Proxies: []string{"p1"}, Restrict: true}),
			[]Slot{prod("p1", 1, 0), prod("p2", 8, 0)},
			"web/disk0@p1", "web/disk1",
		},
		{
			"restricted to unknown proxies waits",
			disks("web", 1, Task{Proxies: []string{"gone"}, Restrict: true}),
			[]Slot{prod("p1", 8, 0)},
			"", "web/disk0",
		},
		{
			"unknown preferred proxy is skipped",
			disks("web", 1, Task{Proxies: []string{"gone", "p2"}}),
			[]Slot{prod("p1", 8, 0), prod("p2", 1, 0)},
			"web/disk0@p2", "",
		},
		{
			"disks of a vm kept together on the proxy that fits",
			disks("web", 3, Task{}),
			[]Slot{prod("p1", 2, 0), prod("p2", 3, 0)},
			"web/disk0@p2 web/disk1@p2 web/disk2@p2", "",
		},
		{
			"split when no proxy fits, most room first, names break ties",
			disks("web", 3, Task{}),
			[]Slot{prod("p2", 2, 0), prod("p1", 2, 0)},
			"web/disk0@p1 web/disk1@p1 web/disk2@p2", "",
		},
		{
			"split spills from the preferred tier to the site",
			disks("web", 3, Task{Proxies: []string{"p1"}, Site: "prod"}),
			[]Slot{prod("p1", 2, 0), prod("p2", 4, 0), dr("d1", 9, 0)},
			"web/disk0@p1 web/disk1@p1 web/disk2@p2", "",
		},
		{
			"load spreads across equal proxies",
			concat(disks("a", 1, Task{}), disks("b", 1, Task{}), disks("c", 1, Task{})),
			[]Slot{prod("p1", 2, 0), prod("p2", 2, 0)},
			"a/disk0@p1 b/disk0@p2 c/disk0@p1", "",
		},
		{
			"first vm has priority, the rest waits",
			concat(disks("a", 2, Task{}), disks("b", 2, Task{})),
			[]Slot{prod("p1", 3, 0)},
			"a/disk0@p1 a/disk1@p1 b/disk0@p1", "b/disk1",
		},
		{
			"tasks of a vm grouped even when interleaved",
			[]Task{{ID: "a1", VM: "a"}, {ID: "b1", VM: "b"}, {ID: "a2", VM: "a"}},
			[]Slot{prod("p1", 1, 0), prod("p2", 2, 0)},
			"a1@p2 a2@p2 b1@p1", "",
		},
		{
			"running tasks take slots",
			disks("web", 2, Task{}),
			[]Slot{prod("p1", 4, 3), prod("p2", 2, 1)},
			"web/disk0@p1 web/disk1@p2", "",
		},
		{
			"overcommitted proxy has no free slots",
			disks("web", 1, Task{}),
			[]Slot{prod("p1", 2, 5)},
			"", "web/disk0",
		},
		{
			"duplicate slot names: the first counts",
			disks("web", 2, Task{}),
			[]Slot{prod("p1", 1, 0), prod("p1", 9, 0)},
			"web/disk0@p1", "web/disk1",
		},
		{
			"different preferences in one vm place separately",
			[]Task{{ID: "a1", VM: "a", Proxies: []string{"p1"}}, {ID: "a2", VM: "a", Proxies: []string{"p2"}}},
			[]Slot{prod("p1", 4, 0), prod("p2", 4, 0)},
			"a1@p1 a2@p2", "",
		},
		{
			"waiting tasks keep input order",
			[]Task{{ID: "z", VM: "z", Restrict: true}, {ID: "a", VM: "a"}, {ID: "m", VM: "m", Restrict: true}},
			[]Slot{prod("p1", 1, 0)},
			"a@p1", "z m",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tasksBefore := slices.Clone(tt.tasks)
			slotsBefore := slices.Clone(tt.slots)
			placed, waiting := Place(tt.tasks, tt.slots)
			gotPlaced, gotWaiting := render(placed, waiting)
			if gotPlaced != tt.wantPlaced || gotWaiting != tt.wantWaiting {
				t.Fatalf("placed %q, waiting %q\nwant placed %q, waiting %q", gotPlaced, gotWaiting, tt.wantPlaced, tt.wantWaiting)
			}
			if len(placed)+len(waiting) != len(tt.tasks) {
				t.Fatalf("%d placed + %d waiting != %d tasks", len(placed), len(waiting), len(tt.tasks))
			}
			if !slices.EqualFunc(tt.tasks, tasksBefore, func(a, b Task) bool { return a.ID == b.ID && slices.Equal(a.Proxies, b.Proxies) }) || !slices.Equal(tt.slots, slotsBefore) {
				t.Fatal("Place modified its arguments")
			}
			// The same input in another slot order places the same way.
			reversed := slices.Clone(tt.slots)
			slices.Reverse(reversed)
			if !hasDuplicateProxy(tt.slots) {
				p2, w2 := render(Place(tt.tasks, reversed))
				if p2 != gotPlaced || w2 != gotWaiting {
					t.Fatalf("slot order changed the result: %q %q", p2, w2)
				}
			}
		})
	}
}

func hasDuplicateProxy(slots []Slot) bool {
	seen := map[string]bool{}
	for _, s := range slots {
		if seen[s.Proxy] {
			return true
		}
		seen[s.Proxy] = true
	}
	return false
}

// TestPlaceNeverOverfills checks the capacity invariant over many shapes.
func TestPlaceNeverOverfills(t *testing.T) {
	for n := 0; n < 40; n++ {
		var tasks []Task
		for vm := 0; vm < n%7+1; vm++ {
			tasks = append(tasks, disks(fmt.Sprintf("vm%d", vm), vm%4+1, Task{Site: []string{"prod", "dr", ""}[vm%3]})...)
		}
		slots := []Slot{
			{Proxy: "p1", Site: "prod", MaxTasks: n % 5, Running: n % 3},
			{Proxy: "p2", Site: "dr", MaxTasks: n % 4, Running: 0},
			{Proxy: "p3", Site: "prod", MaxTasks: 2, Running: n % 2},
		}
		placed, waiting := Place(tasks, slots)
		used := map[string]int{}
		for _, p := range placed {
			used[p.Proxy]++
		}
		free := 0
		for _, s := range slots {
			f := max(s.MaxTasks-s.Running, 0)
			free += f
			if used[s.Proxy] > f {
				t.Fatalf("case %d: %d tasks on %s with %d free slots", n, used[s.Proxy], s.Proxy, f)
			}
		}
		if want := min(free, len(tasks)); len(placed) != want {
			t.Fatalf("case %d: placed %d tasks, want %d (free %d)", n, len(placed), want, free)
		}
		if len(placed)+len(waiting) != len(tasks) {
			t.Fatalf("case %d: tasks lost", n)
		}
	}
}
