package catalog

import (
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// JobState is what the catalog keeps about a job between runs.
type JobState struct {
	Job string `json:"job"`
	// Fingerprint is the engine's digest of the job's settings at its last
	// run; `ferry plan` compares it with the configuration's.
	Fingerprint string    `json:"fingerprint,omitempty"`
	LastSession string    `json:"last_session,omitempty"` // id of the job's last session
	LastSuccess string    `json:"last_success,omitempty"` // id of its last successful session
	Updated     time.Time `json:"updated"`
	// Selected holds, for a job with folder or tag selectors, the
	// selectors that picked each VM at its last run, by VM: `ferry plan`
	// and the next run say which selector a VM left.
	Selected map[string][]string `json:"selected,omitempty"`
}

// PutJobState inserts or replaces the state of s.Job. See
// Catalog.PutJobState.
func (t *Tx) PutJobState(s *JobState) error {
	if err := checkName("job", s.Job); err != nil {
		return fmt.Errorf("put job state: %w", err)
	}
	s.Updated = t.c.now()
	if err := putJSON(t.bucket(bucketJobs), []byte(s.Job), s); err != nil {
		return fmt.Errorf("put state of job %q: %w", s.Job, err)
	}
	return nil
}

// JobState returns the state of job. See Catalog.JobState.
func (t *Tx) JobState(job string) (*JobState, error) {
	if err := checkName("job", job); err != nil {
		return nil, fmt.Errorf("get job state: %w", err)
	}
	var s JobState
	found, err := getJSON(t.bucket(bucketJobs), []byte(job), &s)
	if err != nil {
		return nil, fmt.Errorf("get state of job %q: %w", job, err)
	}
	if !found {
		return nil, fmt.Errorf("get state of job %q: %w", job, errdefs.ErrNotFound)
	}
	return &s, nil
}

// PutJobState inserts or replaces the state of s.Job and sets s.Updated to
// now. Idempotent. Safe for concurrent use. Errors: ErrInvalidArgument for
// an empty job.
func (c *Catalog) PutJobState(s *JobState) error {
	return c.Update(func(tx *Tx) error { return tx.PutJobState(s) })
}

// JobState returns the state of job, or an error matching ErrNotFound for
// a job that never ran (ErrInvalidArgument for an empty job). Safe for
// concurrent use.
func (c *Catalog) JobState(job string) (*JobState, error) {
	var s *JobState
	err := c.View(func(tx *Tx) error {
		var err error
		s, err = tx.JobState(job)
		return err
	})
	return s, err
}
