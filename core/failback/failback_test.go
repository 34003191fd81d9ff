package failback

import (
	"errors"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestDecide(t *testing.T) {
	sw := []Step{StopReplica, FinalSync, StartProduction}
	cases := []struct {
		state  State
		action Action
		steps  []Step
		err    error // the class of the refusal, nil for none
	}{
		{None, Sync, []Step{Begin, SyncData}, nil},
		{Syncing, Sync, []Step{Begin, SyncData}, nil},
		{Synced, Sync, []Step{Begin, SyncData}, nil},
		{Switching, Sync, nil, errdefs.ErrFailedPrecondition},
		{Starting, Sync, nil, errdefs.ErrFailedPrecondition},
		{Switched, Sync, nil, errdefs.ErrFailedPrecondition},
		{Committing, Sync, nil, errdefs.ErrFailedPrecondition},
		{Undoing, Sync, nil, errdefs.ErrFailedPrecondition},

		{None, Switch, append([]Step{Begin, SyncData}, sw...), nil},
		{Syncing, Switch, append([]Step{Begin, SyncData}, sw...), nil},
		{Synced, Switch, sw, nil},
		{Switching, Switch, sw, nil},
		{Starting, Switch, []Step{StartProduction}, nil},
		{Switched, Switch, nil, nil},
		{Committing, Switch, nil, errdefs.ErrFailedPrecondition},
		{Undoing, Switch, nil, errdefs.ErrFailedPrecondition},

		{None, Commit, nil, errdefs.ErrNotFound},
		{Syncing, Commit, nil, errdefs.ErrFailedPrecondition},
		{Synced, Commit, nil, errdefs.ErrFailedPrecondition},
		{Switching, Commit, nil, errdefs.ErrFailedPrecondition},
		{Starting, Commit, nil, errdefs.ErrFailedPrecondition},
		{Switched, Commit, []Step{CommitProduction, ReturnReplica, End}, nil},
		{Committing, Commit, []Step{CommitProduction, ReturnReplica, End}, nil},
		{Undoing, Commit, nil, errdefs.ErrFailedPrecondition},

		{None, Undo, nil, errdefs.ErrNotFound},
		{Syncing, Undo, []Step{UndoProduction, StartReplica, End}, nil},
		{Synced, Undo, []Step{UndoProduction, StartReplica, End}, nil},
		{Switching, Undo, []Step{UndoProduction, StartReplica, End}, nil},
		{Starting, Undo, []Step{UndoProduction, StartReplica, End}, nil},
		{Switched, Undo, []Step{UndoProduction, StartReplica, End}, nil},
		{Committing, Undo, nil, errdefs.ErrFailedPrecondition},
		{Undoing, Undo, []Step{UndoProduction, StartReplica, End}, nil},

		{Synced, "rewind", nil, errdefs.ErrInvalidArgument},
		{"exploded", Sync, nil, errdefs.ErrFailedPrecondition},
	}
	for _, c := range cases {
		t.Run(string(c.action)+" from "+string(c.state), func(t *testing.T) {
			steps, err := Decide(c.state, c.action)
			if c.err != nil {
				var fe *Error
				if !errors.Is(err, c.err) || !errors.As(err, &fe) || fe.Error() == "" || steps != nil {
					t.Fatalf("Decide = %v, %v; want a refusal of class %v", steps, err, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(steps, c.steps) {
				t.Fatalf("Decide = %v, %v; want %v", steps, err, c.steps)
			}
		})
	}
}

// TestResumable walks every action from every state: a kill before any
// step leaves the state that step records before it, and asking the same
// action again from there must run that step again (nothing is skipped)
// and end where an uninterrupted run ends.
func TestResumable(t *testing.T) {
	states := []State{None, Syncing, Synced, Switching, Starting, Switched, Committing, Undoing}
	for _, from := range states {
		for _, a := range []Action{Sync, Switch, Commit, Undo} {
			steps, err := Decide(from, a)
			if err != nil {
				continue
			}
			end := run(from, steps)
			for k, step := range steps {
				// Killed as step k began: its Before state is recorded.
				at := state(from, steps[:k])
				if b := Entries[step].Before; b != "" {
					at = b
				}
				again, err := Decide(at, a)
				if err != nil {
					t.Errorf("%s from %s, killed at %s (state %q): asking again is refused: %v", a, from, step, at, err)
					continue
				}
				if !slices.Contains(again, step) && step != Begin {
					t.Errorf("%s from %s, killed at %s (state %q): asking again runs %v, skipping the step", a, from, step, at, again)
				}
				if got := run(at, again); got != end {
					t.Errorf("%s from %s, killed at %s: ends %q, an uninterrupted run %q", a, from, step, got, end)
				}
			}
		}
	}
}

// state is the state recorded after steps ran whole from s.
func state(s State, steps []Step) State {
	for _, st := range steps {
		e := Entries[st]
		if e.Before != "" {
			s = e.Before
		}
		if e.After != "" {
			s = e.After
		}
		if st == End {
			s = None
		}
	}
	return s
}

func run(s State, steps []Step) State { return state(s, steps) }

func TestEveryStepHasAnEntry(t *testing.T) {
	for _, s := range []State{None, Syncing, Synced, Switching, Starting, Switched, Committing, Undoing} {
		for _, a := range []Action{Sync, Switch, Commit, Undo} {
			steps, _ := Decide(s, a)
			for _, st := range steps {
				if _, ok := Entries[st]; !ok {
					t.Errorf("step %s (of %s from %q) has no entry", st, a, s)
				}
			}
		}
	}
}

func TestPlanDisk(t *testing.T) {
	cases := []struct {
		name string
		in   DiskInput
		mode string
		rep  bool
		prod bool
		cmp  bool
	}{
		{"first sync, both sides track", DiskInput{ReplicaKnown: true, ProductionKnown: true}, ModeTracked, true, true, false},
		{"first sync, production lost tracking", DiskInput{ReplicaKnown: true}, ModeDigest, false, false, true},
		{"first sync, the replica lost tracking", DiskInput{ProductionKnown: true}, ModeDigest, false, false, true},
		{"first sync, neither tracks", DiskInput{}, ModeDigest, false, false, true},
		{"later sync, the replica tracks", DiskInput{Synced: true, ReplicaKnown: true}, ModeTracked, true, false, false},
		{"later sync, the replica tracks, production does not", DiskInput{Synced: true, ReplicaKnown: true, ProductionKnown: false}, ModeTracked, true, false, false},
		{"later sync, the replica lost tracking", DiskInput{Synced: true, ProductionKnown: true}, ModeDigest, false, false, true},
		{"created, first sync", DiskInput{Created: true, ReplicaKnown: true}, ModeFull, false, false, false},
		{"created, first sync, no tracking", DiskInput{Created: true}, ModeFull, false, false, false},
		{"created, later sync", DiskInput{Created: true, Synced: true, ReplicaKnown: true}, ModeTracked, true, false, false},
		{"created, later sync, the replica lost tracking", DiskInput{Created: true, Synced: true}, ModeDigest, false, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := PlanDisk(c.in)
			if p.Mode != c.mode || p.ReplicaChanges != c.rep || p.ProductionChanges != c.prod || p.CompareProduction != c.cmp || p.Why == "" {
				t.Fatalf("PlanDisk(%+v) = %+v", c.in, p)
			}
		})
	}
}
