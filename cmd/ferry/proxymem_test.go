package main

import (
	"runtime/debug"
	"testing"
)

// A proxy bounds its own memory unless GOMEMLIMIT says otherwise, which
// the Go runtime has read already.
func TestAProxyLimitsItsMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	debug.SetMemoryLimit(1 << 40) // as GOMEMLIMIT=1TiB would have set it
	set := func(env map[string]string) func(string) string { return func(k string) string { return env[k] } }
	if got := limitMemory(set(map[string]string{"GOMEMLIMIT": "1TiB"})); got != 1<<40 || debug.SetMemoryLimit(-1) != 1<<40 {
		t.Fatalf("with GOMEMLIMIT: the limit in effect is %d, the runtime's %d; want the environment's, 1 TiB", got, debug.SetMemoryLimit(-1))
	}
	if got := limitMemory(set(nil)); got != proxyMemoryLimit || debug.SetMemoryLimit(-1) != proxyMemoryLimit {
		t.Fatalf("without GOMEMLIMIT: the limit in effect is %d, the runtime's %d; want %d", got, debug.SetMemoryLimit(-1), proxyMemoryLimit)
	}
}
