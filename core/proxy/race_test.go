//go:build race

package proxy

// raceEnabled: the race detector makes sync.Pool drop what it is given at
// random, so tests of what a path allocates skip.
const raceEnabled = true
