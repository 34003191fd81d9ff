package proxy

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"

	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
)

func TestSlotsCountBusySlotsAndWaitingTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		task := Task{Job: "web", VM: "web-01"}
		// p1 says it takes 4 tasks, the configuration allows 2; p2 was
		// not reached: its slots are the configuration's.
		p := NewPool([]Member{{Name: "p1", Site: "prod", MaxTasks: 2}, {Name: "p2", Site: "dr", MaxTasks: 3}}, nil, "test", nil)
		p1 := p.members["p1"]
		p1.hello = &proxyv1.HelloResponse{Name: "p1", Site: "prod", MaxTasks: 4}
		p1.reach = map[string][2]Reach{reachKey(task): {}} // known: no probe
		want := func(what string, busy, waiting int) {
			t.Helper()
			got, w := p.Slots()
			states := []SlotState{{"p1", "prod", 2, busy}, {"p2", "dr", 3, 0}}
			if !slices.Equal(got, states) || w != waiting {
				t.Fatalf("%s: slots %+v, %d waiting; want %+v, %d", what, got, w, states, waiting)
			}
		}
		want("idle", 0, 0)
		ctx := context.Background()
		// One task holds both halves on p1: its two slots.
		src, dst, _, err := p.place(ctx, task)
		if err != nil {
			t.Fatal(err)
		}
		want("one task placed", 2, 0)
		// The next waits, and is counted, until they free.
		placed := make(chan error, 1)
		go func() {
			s, d, _, err := p.place(ctx, task)
			if err == nil {
				want("the second task placed", 2, 0)
				p.release(s, d)
			}
			placed <- err
		}()
		synctest.Wait()
		want("a task waits", 2, 1)
		p.release(src, dst)
		if err := <-placed; err != nil {
			t.Fatal(err)
		}
		want("all released", 0, 0)

		// Summed over pools: an older pool's tasks count on the proxy the
		// current one has; a proxy only an older pool has shows while busy.
		older := NewPool([]Member{{Name: "p1", MaxTasks: 8}, {Name: "p0", Site: "old", MaxTasks: 1}}, nil, "test", nil)
		older.members["p1"].ours, older.waiting = 1, 2
		got, waiting := SlotsOf(p, older)
		if want := []SlotState{{"p1", "prod", 2, 1}, {"p2", "dr", 3, 0}}; !slices.Equal(got, want) || waiting != 2 {
			t.Fatalf("summed: %+v, %d waiting; want %+v, 2", got, waiting, want)
		}
		older.members["p0"].ours = 1
		if got, _ := SlotsOf(nil, older); !slices.Equal(got, []SlotState{{"p0", "old", 1, 1}, {"p1", "", 8, 1}}) {
			t.Fatalf("older pools alone: %+v", got)
		}
	})
}
