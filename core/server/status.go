package server

import (
	"maps"
	"slices"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
)

// JobStatus is what the server knows of a job now.
type JobStatus struct {
	Name     string `json:"name"`
	Schedule string `json:"schedule,omitempty"` // "" for a job run on demand
	// Next is the next run the schedule makes due; nil on demand only.
	Next    *time.Time `json:"next_run,omitempty"`
	Running bool       `json:"running"`
	// Session is the id of the running session, once it began.
	Session string `json:"session,omitempty"`
	// Waiting is set while a run waits for a session slot.
	Waiting bool `json:"waiting_for_slot,omitempty"`
	// Queued is set when a run fell due while the job's session runs: it
	// starts once that one ends.
	Queued bool `json:"queued,omitempty"`
	// Last is the last session this server ran; nil before the first.
	Last *LastSession `json:"last_session,omitempty"`
	// RPO is the job's recovery point objective, "" when it has none.
	RPO string `json:"rpo,omitempty"`
	// VMs are the RPO states of the job's VMs, when it has an RPO.
	VMs []RPOState `json:"vms,omitempty"`
}

// LastSession is the end of a session.
type LastSession struct {
	ID     string         `json:"id,omitempty"`
	Result catalog.Result `json:"result"`
	Ended  time.Time      `json:"ended"`
	Error  string         `json:"error,omitempty"`
}

// Jobs returns the status of every job, by name.
func (s *Server) Jobs() []JobStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]JobStatus, 0, len(s.jobs))
	for _, name := range slices.Sorted(maps.Keys(s.jobs)) {
		j := s.jobs[name]
		if j.removed {
			continue
		}
		out = append(out, s.status(j))
	}
	return out
}

// Job returns the status of one job; false when the configuration has no
// such job.
func (s *Server) Job(name string) (JobStatus, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := s.jobs[name]
	if j == nil || j.removed {
		return JobStatus{}, false
	}
	return s.status(j), true
}

// status describes j. Callers hold s.mu.
func (s *Server) status(j *job) JobStatus {
	st := JobStatus{Name: j.cfg.Name, Schedule: j.cfg.Schedule.String(), Running: j.running, Waiting: j.waiting, Queued: j.queued}
	if j.cur != nil {
		st.Session = j.cur.session
	}
	if !j.next.IsZero() {
		n := j.next
		st.Next = &n
	}
	switch {
	case j.last != nil:
		st.Last = &LastSession{ID: j.last.ID, Result: j.last.Result, Ended: j.last.Ended, Error: j.last.Error}
		if st.Last.Error == "" && j.lastErr != nil {
			st.Last.Error = j.lastErr.Error()
		}
	case j.lastErr != nil:
		st.Last = &LastSession{Result: catalog.ResultFailed, Ended: j.lastDone, Error: j.lastErr.Error()}
	}
	if j.cfg.RPO > 0 {
		st.RPO = j.cfg.RPO.String()
		for _, k := range slices.SortedFunc(maps.Keys(s.rpo), compareKeys) {
			if k.job == j.cfg.Name {
				st.VMs = append(st.VMs, *s.rpo[k])
			}
		}
	}
	return st
}
