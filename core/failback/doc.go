// Package failback decides what `ferry failback` does for one VM: from the
// state a failback reached (kept in the catalog) and the action asked
// (sync, switch, commit, undo), the steps to run, in order, and the state
// each step records before and after it. The decision is a pure function,
// so that a failback killed at any step is resumed by asking again: every
// step may run again after a kill, and the state recorded before a step
// makes the next command run it again.
//
// This package holds the decision only. It never calls plugins, moves
// data or writes the catalog; core/engine executes what it decides.
package failback
