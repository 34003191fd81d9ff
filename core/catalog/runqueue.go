package catalog

import (
	"fmt"
	"slices"
	"time"
)

// A ferry server keeps here the runs it owes: a run queued behind its
// job's session, one waiting for a session slot, one asked through the
// API that has not begun its session yet. Written before the server
// answers, so a server that stops or dies runs them when it starts again.

// QueuedRun is a run a server owes a job.
type QueuedRun struct {
	Job string `json:"job"`
	// Seq orders the queue: the run queued first has the lowest.
	Seq    uint64    `json:"seq"`
	Queued time.Time `json:"queued"`
	// Why the run was asked: "schedule", "asked" (the API), "queued".
	Why string `json:"why,omitempty"`
}

// QueueRun records that a run of job is owed. A job already queued keeps
// its place (and its Why): a job is queued once, never stacked. Durable
// when it returns. Safe for concurrent use. Errors: ErrInvalidArgument for
// an empty job.
func (c *Catalog) QueueRun(job, why string) error {
	if err := checkName("job", job); err != nil {
		return fmt.Errorf("queue a run: %w", err)
	}
	return c.Update(func(tx *Tx) error {
		b := tx.bucket(bucketRunQueue)
		if b.Get([]byte(job)) != nil {
			return nil
		}
		seq, err := b.NextSequence()
		if err != nil {
			return fmt.Errorf("queue a run of job %q: %w", job, err)
		}
		r := QueuedRun{Job: job, Seq: seq, Queued: c.now(), Why: why}
		if err := putJSON(b, []byte(job), &r); err != nil {
			return fmt.Errorf("queue a run of job %q: %w", job, err)
		}
		return nil
	})
}

// UnqueueRun records that no run of job is owed any more (its session
// began, or the job is gone). Idempotent. Safe for concurrent use.
func (c *Catalog) UnqueueRun(job string) error {
	if err := checkName("job", job); err != nil {
		return fmt.Errorf("unqueue a run: %w", err)
	}
	return c.Update(func(tx *Tx) error {
		if err := tx.bucket(bucketRunQueue).Delete([]byte(job)); err != nil {
			return fmt.Errorf("unqueue the run of job %q: %w", job, err)
		}
		return nil
	})
}

// QueuedRuns returns the runs owed, in the order they were queued. Safe
// for concurrent use.
func (c *Catalog) QueuedRuns() ([]QueuedRun, error) {
	var out []QueuedRun
	err := c.View(func(tx *Tx) error {
		return tx.bucket(bucketRunQueue).ForEach(func(k, _ []byte) error {
			var r QueuedRun
			if _, err := getJSON(tx.bucket(bucketRunQueue), k, &r); err != nil {
				return fmt.Errorf("queued runs: %w", err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b QueuedRun) int { return compareUint(a.Seq, b.Seq) })
	return out, nil
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
