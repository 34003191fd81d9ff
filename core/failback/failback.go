package failback

import (
	"fmt"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// State is how far a failback went. The replica keeps running until the
// switch; production is written from the first sync on, keeping an undo
// store, until the commit.
type State string

const (
	None       State = ""           // no failback: the VM is failed over
	Syncing    State = "syncing"    // a sync began (and may have been cut short)
	Synced     State = "synced"     // a sync completed; the replica still runs
	Switching  State = "switching"  // the switch began: the replica is stopping or stopped
	Starting   State = "starting"   // the final sync is done: production is being started
	Switched   State = "switched"   // production runs with the replica's data; the replica is off
	Committing State = "committing" // the commit began; it can only be finished
	Undoing    State = "undoing"    // the undo began; it can only be finished
)

// Known reports whether s is a state this package knows.
func Known(s State) bool {
	switch s {
	case None, Syncing, Synced, Switching, Starting, Switched, Committing, Undoing:
		return true
	}
	return false
}

// Action is what the operator asks.
type Action string

const (
	Sync   Action = "sync"   // send what differs while the replica runs
	Switch Action = "switch" // stop the replica, a final sync, start production
	Commit Action = "commit" // make it permanent: the VM replicates again
	Undo   Action = "undo"   // back to the failed-over state
)

// Step is one thing the engine does.
type Step string

const (
	// Begin records the failback and readies production: powered off, an
	// undo store started (created when gone or named otherwise).
	Begin Step = "begin"
	// SyncData sends what differs from the replica to production.
	SyncData Step = "sync"
	// StopReplica powers the failed-over replica off.
	StopReplica Step = "stop-replica"
	// FinalSync sends what the replica wrote until it stopped.
	FinalSync Step = "final-sync"
	// StartProduction powers production on, with its own networks.
	StartProduction Step = "start-production"
	// CommitProduction drops production's undo store.
	CommitProduction Step = "commit-production"
	// ReturnReplica returns the replica to replication: its failover is
	// undone on the target (its restore points are all there).
	ReturnReplica Step = "return-replica"
	// UndoProduction writes back what the failback overwrote at
	// production, and its power state.
	UndoProduction Step = "undo-production"
	// StartReplica powers the failed-over replica on again.
	StartReplica Step = "start-replica"
	// End forgets the failback.
	End Step = "end"
)

// Entry is the state a step records before it runs and after it succeeds
// ("" for none: the state does not change).
type Entry struct{ Before, After State }

// Entries is the table of the states the steps record. A step recorded
// before it runs is run again by the next command after a kill.
var Entries = map[Step]Entry{
	Begin:            {Before: Syncing},
	SyncData:         {Before: Syncing, After: Synced},
	StopReplica:      {Before: Switching},
	FinalSync:        {Before: Switching, After: Starting},
	StartProduction:  {Before: Starting, After: Switched},
	CommitProduction: {Before: Committing},
	ReturnReplica:    {Before: Committing},
	UndoProduction:   {Before: Undoing},
	StartReplica:     {Before: Undoing},
	End:              {},
}

// Error is a refusal: the action does not apply in the failback's state.
// It says what to do instead.
type Error struct {
	State  State
	Action Action
	msg    string
	class  error
}

func (e *Error) Error() string { return e.msg }

// Is makes a refusal match its class (errdefs.ErrNotFound when there is
// no failback, errdefs.ErrFailedPrecondition otherwise).
func (e *Error) Is(target error) bool { return target == e.class }

func refuse(s State, a Action, class error, format string, args ...any) *Error {
	return &Error{State: s, Action: a, class: class, msg: fmt.Sprintf(format, args...)}
}

var (
	switchSteps = []Step{StopReplica, FinalSync, StartProduction}
	commitSteps = []Step{CommitProduction, ReturnReplica, End}
	undoSteps   = []Step{UndoProduction, StartReplica, End}
)

// Decide returns the steps that action runs from state s, in order; none
// when there is nothing left to do. A refusal is an *Error.
func Decide(s State, a Action) ([]Step, error) {
	if !Known(s) {
		return nil, refuse(s, a, errdefs.ErrFailedPrecondition, "unknown failback state %q (written by a newer ferry?)", s)
	}
	switch a {
	case Sync:
		switch s {
		case None, Syncing, Synced:
			return []Step{Begin, SyncData}, nil
		case Switching, Starting:
			return nil, refuse(s, a, errdefs.ErrFailedPrecondition, "the switch to production began: run the switch again to finish it, or undo")
		case Switched:
			return nil, refuse(s, a, errdefs.ErrFailedPrecondition, "production runs already: commit the failback, or undo it")
		}
	case Switch:
		switch s {
		case None, Syncing:
			// The replica goes on running during the first sync, so that
			// the final one, with the replica off, is short.
			return append([]Step{Begin, SyncData}, switchSteps...), nil
		case Synced, Switching:
			return switchSteps, nil
		case Starting:
			// Production may run already, its guest writing: no sync may
			// overwrite what it wrote.
			return []Step{StartProduction}, nil
		case Switched:
			return nil, nil
		}
	case Commit:
		switch s {
		case Switched, Committing:
			return commitSteps, nil
		case None:
			return nil, refuse(s, a, errdefs.ErrNotFound, "there is no failback to commit")
		case Syncing, Synced, Switching, Starting:
			return nil, refuse(s, a, errdefs.ErrFailedPrecondition, "production does not run yet: switch first")
		}
	case Undo:
		switch s {
		case Syncing, Synced, Switching, Starting, Switched, Undoing:
			return undoSteps, nil
		case None:
			return nil, refuse(s, a, errdefs.ErrNotFound, "there is no failback to undo")
		}
	default:
		return nil, refuse(s, a, errdefs.ErrInvalidArgument, "no failback action %q", a)
	}
	switch s {
	case Committing:
		return nil, refuse(s, a, errdefs.ErrFailedPrecondition, "the commit began and cannot be undone: run the commit again to finish it")
	case Undoing:
		return nil, refuse(s, a, errdefs.ErrFailedPrecondition, "the undo began: run the undo again to finish it")
	}
	return nil, refuse(s, a, errdefs.ErrFailedPrecondition, "cannot %s a failback that is %s", a, s)
}
