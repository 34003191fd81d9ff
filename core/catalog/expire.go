package catalog

import (
	"encoding/json"
	"fmt"
	"time"
)

// ExpireSessions deletes the sessions that ended before cutoff, with their
// places in the listing order, and returns how many it deleted. A running
// session stays, as do the last session and the last successful session
// of each job (the job's state names them). Restore points and replicas
// are not sessions: they stay whatever made them. Safe for concurrent use.
func (c *Catalog) ExpireSessions(cutoff time.Time) (int, error) {
	var n int
	err := c.Update(func(tx *Tx) error {
		var err error
		n, err = tx.ExpireSessions(cutoff)
		return err
	})
	return n, err
}

// ExpireSessions deletes old sessions. See Catalog.ExpireSessions.
func (t *Tx) ExpireSessions(cutoff time.Time) (int, error) {
	keep := map[string]bool{}
	err := t.bucket(bucketJobs).ForEach(func(_, v []byte) error {
		var st JobState
		if err := json.Unmarshal(v, &st); err != nil {
			return nil // a damaged state keeps nothing; Sessions reports it
		}
		keep[st.LastSession], keep[st.LastSuccess] = true, true
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire sessions: %w", err)
	}
	sessions := t.bucket(bucketSessions)
	expired := map[string]bool{}
	err = sessions.ForEach(func(k, v []byte) error {
		var s Session
		if err := json.Unmarshal(v, &s); err != nil {
			return nil
		}
		if s.Result != ResultRunning && !keep[s.ID] && !s.Ended.IsZero() && s.Ended.Before(cutoff) {
			expired[string(k)] = true
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire sessions: %w", err)
	}
	for _, index := range [][]byte{bucketSessionSeq, bucketJobSessions} {
		b := t.bucket(index)
		var gone [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			if expired[string(v)] {
				gone = append(gone, k)
			}
			return nil
		}); err != nil {
			return 0, fmt.Errorf("expire sessions: %w", err)
		}
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return 0, fmt.Errorf("expire sessions: %w", err)
			}
		}
	}
	for id := range expired {
		if err := sessions.Delete([]byte(id)); err != nil {
			return 0, fmt.Errorf("expire sessions: %w", err)
		}
	}
	return len(expired), nil
}
