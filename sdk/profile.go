package sdk

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
)

// CPUProfileEnv names the environment variable that turns CPU profiling
// on, for measurements: when it names a folder, every ferry process (any
// command) and every plugin it starts (through Serve) writes a CPU
// profile of its whole run there, as NAME-PID.pprof (go tool pprof reads
// it), when it ends. A process that is killed writes none.
const CPUProfileEnv = "FERRY_CPUPROFILE"

// StartCPUProfile starts the CPU profile of this process, named name,
// when FERRY_CPUPROFILE is set, and returns the function that stops it
// and writes the file; stopping it again writes nothing and says so (an
// error). Unset, both are no-ops.
func StartCPUProfile(name string) (stop func() error, err error) {
	dir := os.Getenv(CPUProfileEnv)
	if dir == "" {
		return func() error { return nil }, nil
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return func() error { return nil }, fmt.Errorf("%s: %w", CPUProfileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		os.Remove(path)
		return func() error { return nil }, fmt.Errorf("%s: profile to %s: %w", CPUProfileEnv, path, err)
	}
	var once sync.Once
	return func() error {
		err := fmt.Errorf("%s: profile %s already written", CPUProfileEnv, path)
		once.Do(func() {
			pprof.StopCPUProfile()
			err = f.Close()
		})
		return err
	}, nil
}

// stopProfile stops a served plugin's CPU profile: when Serve returns, or
// before the process ends itself (exitGroup).
var stopProfile = func() error { return nil }
