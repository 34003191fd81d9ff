//go:build !unix

package datamover

import "time"

// cpuTime is unknown here: benchmarks report no "cores".
func cpuTime() time.Duration { return -1 }
