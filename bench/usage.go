package bench

import "time"

// Usage is what one tool run cost: its process and every descendant it
// waited for (a ferry run starts plugin processes; rsync forks a receiver).
type Usage struct {
	Wall time.Duration `json:"wall_ns"`
	User time.Duration `json:"user_ns"`
	Sys  time.Duration `json:"sys_ns"`
	// MaxRSS is the kernel's peak resident set of the largest single
	// process of the tree (ru_maxrss of the child, which covers the
	// descendants it waited for).
	MaxRSS int64 `json:"max_rss_bytes"`
	// TreeRSS is the largest sum of the resident sets of the tree seen by
	// sampling /proc every SampleEvery; short peaks between samples can be
	// missed.
	TreeRSS int64 `json:"tree_rss_bytes"`
	// Procs is the peak resident set (VmHWM) of each process of the tree,
	// as last seen by sampling; their sum bounds the tree's peak from above.
	Procs []ProcPeak `json:"procs,omitempty"`
	// DiskRead and DiskWrite are the bytes the tree made the kernel read
	// from storage and dirty for writing (ru_inblock, ru_oublock): near
	// zero reads on a warm cache.
	DiskRead  int64 `json:"disk_read_bytes"`
	DiskWrite int64 `json:"disk_write_bytes"`
	// OtherCPU is the CPU time the rest of the machine used while the
	// tool ran (all CPUs' busy time from /proc/stat, less the tool's): a
	// busy machine makes the figures noisy.
	OtherCPU time.Duration `json:"other_cpu_ns"`
}

// CPU is user plus system time.
func (u Usage) CPU() time.Duration { return u.User + u.Sys }

// PeakBound is the most the tree can have held at once: the sum of every
// process's own peak, or the largest single process if that is more.
func (u Usage) PeakBound() int64 {
	var sum int64
	for _, p := range u.Procs {
		sum += p.HWM
	}
	return max(sum, u.MaxRSS, u.TreeRSS)
}

// Peak is the largest peak of a process named name.
func (u Usage) Peak(name string) int64 {
	var n int64
	for _, p := range u.Procs {
		if p.Name == name {
			n = max(n, p.HWM)
		}
	}
	return n
}

// ProcPeak is one process's peak resident set.
type ProcPeak struct {
	Name string `json:"name"` // the base name of its executable
	PID  int    `json:"pid"`
	HWM  int64  `json:"hwm_bytes"`
}
