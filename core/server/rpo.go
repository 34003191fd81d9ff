package server

import (
	"cmp"
	"maps"
	"slices"
	"time"
)

// RPOState is how old a VM's newest restore point is, against its job's
// RPO.
type RPOState struct {
	Job string `json:"job"`
	VM  string `json:"vm"`
	// Newest is when its newest restore point was made; nil when it has
	// none.
	Newest *time.Time `json:"newest_point,omitempty"`
	// Age is how old that point is, or for a VM without one how long the
	// server has watched it.
	Age time.Duration `json:"age_ns"`
	// Breached is set while Age exceeds the job's RPO.
	Breached bool `json:"breached"`
	// Since is when the breach began, when breached.
	Since *time.Time `json:"breached_since,omitempty"`
}

// RPOAlarm says that a VM's RPO breach began or ended.
type RPOAlarm struct {
	RPOState
	RPO time.Duration
}

type rpoKey struct{ job, vm string }

func compareKeys(a, b rpoKey) int {
	return cmp.Or(cmp.Compare(a.job, b.job), cmp.Compare(a.vm, b.vm))
}

// RPO returns the RPO state of every VM of the jobs that have an RPO.
func (s *Server) RPO() []RPOState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RPOState, 0, len(s.rpo))
	for _, k := range slices.SortedFunc(maps.Keys(s.rpo), compareKeys) {
		out = append(out, *s.rpo[k])
	}
	return out
}

// checkRPO works out how old each VM's newest restore point is, for the
// jobs with an RPO, and raises or clears their alarms. The VMs are those
// the job names and those its selectors picked at its last session; a VM
// without a point yet counts from when the server started watching it.
func (s *Server) checkRPO() {
	now := time.Now()
	s.mu.Lock()
	type watch struct {
		name    string
		rpo     time.Duration
		vms     []string
		selects bool
	}
	var jobs []watch
	for name, j := range s.jobs {
		if !j.removed && j.cfg.RPO > 0 {
			jobs = append(jobs, watch{name: name, rpo: j.cfg.RPO, vms: j.cfg.VMs, selects: j.cfg.Selects()})
		}
	}
	started := s.started
	s.mu.Unlock()

	seen := map[rpoKey]bool{}
	var alarms []RPOAlarm
	for _, w := range jobs {
		newest := map[string]time.Time{}
		for _, vm := range w.vms {
			newest[vm] = time.Time{}
		}
		if w.selects {
			// The VMs its selectors picked at its last session.
			if st, err := s.cat.JobState(w.name); err == nil {
				for vm := range st.Selected {
					newest[vm] = time.Time{}
				}
			}
		}
		points, err := s.cat.RestorePoints(w.name, "")
		if err != nil {
			s.log.Warn("read the job's restore points for its RPO", "job", w.name, "error", err)
			continue
		}
		for _, p := range points {
			if t, watched := newest[p.VM]; watched && p.Created.After(t) {
				newest[p.VM] = p.Created
			}
		}
		s.mu.Lock()
		for vm, t := range newest {
			k := rpoKey{w.name, vm}
			seen[k] = true
			st := s.rpo[k]
			if st == nil {
				st = &RPOState{Job: w.name, VM: vm}
				s.rpo[k] = st
			}
			if t.IsZero() {
				st.Newest, st.Age = nil, now.Sub(started)
			} else {
				tt := t
				st.Newest, st.Age = &tt, now.Sub(t)
			}
			breached := st.Age > w.rpo
			if breached != st.Breached {
				st.Breached = breached
				if breached {
					since := now
					st.Since = &since
				} else {
					st.Since = nil
				}
				alarms = append(alarms, RPOAlarm{RPOState: *st, RPO: w.rpo})
			}
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	for k, st := range s.rpo {
		if !seen[k] {
			if st.Breached {
				// The job or its RPO is gone: the alarm ends with it.
				st.Breached, st.Since = false, nil
				alarms = append(alarms, RPOAlarm{RPOState: *st})
			}
			delete(s.rpo, k)
		}
	}
	s.mu.Unlock()
	for _, a := range alarms {
		if a.Breached {
			s.log.Warn("RPO breached: the newest restore point is older than the job's RPO", "job", a.Job, "vm", a.VM, "age", a.Age.Round(time.Second), "rpo", a.RPO)
		} else {
			s.log.Info("RPO met again", "job", a.Job, "vm", a.VM, "age", a.Age.Round(time.Second))
		}
		if s.Alarm != nil {
			s.Alarm(a)
		}
	}
}

// rpoOf is a job's RPO; false when it has none or is not configured.
func (s *Server) rpoOf(job string) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[job]
	if j == nil || j.removed || j.cfg.RPO <= 0 {
		return 0, false
	}
	return j.cfg.RPO, true
}
