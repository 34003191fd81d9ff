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
				p.release(task, s, d)
			}
			placed <- err
		}()
		synctest.Wait()
		want("a task waits", 2, 1)
		p.release(task, src, dst)
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

// TestAReplicaIsWrittenByOneProxy: the disks of a replica have their
// target halves on the proxy that writes the replica already, and wait
// for its slots rather than go to another proxy with free ones (a target
// plugin may let one process write a replica); another replica's go where
// there is room.
func TestAReplicaIsWrittenByOneProxy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := NewPool([]Member{{Name: "p-prod", Site: "prod", MaxTasks: 6}, {Name: "p-dr", Site: "dr", MaxTasks: 1}}, nil, "test", nil)
		disk := func(replica string, n int) Task {
			return Task{Job: "web", VM: "web-01", Replica: replica, Disk: n, SourceSite: "prod", TargetSite: "dr"}
		}
		for _, m := range p.members {
			m.hello = &proxyv1.HelloResponse{Name: m.Name, Site: m.Site, MaxTasks: 8}
			m.reach = map[string][2]Reach{reachKey(disk("", 0)): {}} // known: no probe
		}
		ctx := context.Background()
		first := disk("r1", 0)
		src, dst, pl, err := p.place(ctx, first)
		if err != nil || pl.Source != "p-prod" || pl.Target != "p-dr" {
			t.Fatalf("the first disk: %+v, %v", pl, err)
		}
		// p-dr is full: the replica's second disk waits for it.
		second := make(chan Placement, 1)
		go func() {
			s, d, pl, err := p.place(ctx, disk("r1", 1))
			if err != nil {
				t.Error(err)
			}
			second <- pl
			p.release(disk("r1", 1), s, d)
		}()
		synctest.Wait()
		if _, waiting := p.Slots(); waiting != 1 {
			t.Fatalf("%d tasks wait, want the replica's second disk", waiting)
		}
		// Another replica's disk goes where there is room.
		s2, d2, pl2, err := p.place(ctx, disk("r2", 0))
		if err != nil || pl2.Target != "p-prod" {
			t.Fatalf("another replica's disk: %+v, %v", pl2, err)
		}
		p.release(disk("r2", 0), s2, d2)
		p.release(first, src, dst)
		if pl := <-second; pl.Target != "p-dr" {
			t.Fatalf("the replica's second disk went to %s, not to p-dr, which writes the replica", pl.Target)
		}
		synctest.Wait()
		if len(p.writing) != 0 {
			t.Fatalf("replicas still written after every task ended: %v", p.writing)
		}
	})
}

// TestARetryWritesWhereTheFailedAttemptDid: when a task's attempt failed
// (its source half could not reach the target proxy, say), the target
// proxy it used may still hold the replica's disk open, and its Hello
// counts that half until it hears the task was abandoned. The next
// attempt goes to that proxy all the same, not to one with more free
// slots that would find the disk written by another process.
func TestARetryWritesWhereTheFailedAttemptDid(t *testing.T) {
	p := NewPool([]Member{{Name: "p-prod", Site: "prod", MaxTasks: 6}, {Name: "p-dr", Site: "dr", MaxTasks: 2}, {Name: "p-dr2", Site: "dr", MaxTasks: 2}}, nil, "test", nil)
	task := Task{Job: "web", VM: "web-01", Replica: "r1", SourceSite: "prod", TargetSite: "dr"}
	for _, m := range p.members {
		m.hello = &proxyv1.HelloResponse{Name: m.Name, Site: m.Site, MaxTasks: 8}
		m.reach = map[string][2]Reach{reachKey(task): {}} // known: no probe
	}
	ctx := context.Background()
	src, dst, pl, err := p.place(ctx, task)
	if err != nil || pl.Target != "p-dr" {
		t.Fatalf("the first attempt: %+v, %v", pl, err)
	}
	// The attempt failed: Run holds its target proxy, then releases.
	p.hold(task, dst.Name)
	p.release(task, src, dst)
	p.members["p-dr"].hello.Running = 1 // the abandoned half, still there
	src, dst, pl, err = p.place(ctx, task)
	if err != nil || pl.Target != "p-dr" {
		t.Fatalf("the second attempt went to %+v (%v), not to p-dr, which held the disk", pl, err)
	}
	p.release(task, src, dst)
	p.unhold(task)
	if len(p.writing) != 0 {
		t.Fatalf("the replica is still written after the task ended: %v", p.writing)
	}
}
