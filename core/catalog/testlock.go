package catalog

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// One test of a failover plan at a time, across processes: a test first
// removes the test VMs of the plan it finds as leftovers, so a second test
// would remove the first one's. A test holds a lock on a file of its plan
// in the folder of the job locks (as a session holds its job's), from
// before it looks for leftovers until its test VMs are removed; the
// operating system drops it when the process dies. A file beside it says
// who holds it (Windows refuses reads of a locked range).

// TestHolder is who holds the lock of a plan's tests.
type TestHolder struct {
	// What is the command or service, such as "ferry server" or
	// "ferry failover plan shop --test".
	What  string    `json:"what"`
	PID   int       `json:"pid"`
	Host  string    `json:"host,omitempty"`
	Since time.Time `json:"since"`
}

func (h TestHolder) String() string {
	if h.PID == 0 {
		return "another process"
	}
	s := fmt.Sprintf("%s (process %d", h.What, h.PID)
	if h.Host != "" {
		s += " on " + h.Host
	}
	return s + ", since " + h.Since.UTC().Format(time.RFC3339) + ")"
}

// testLockKey keys a plan's test lock among the job locks: no job name
// holds a NUL, so it never names a job's.
func testLockKey(plan string) string { return "\x00test/" + plan }

// testVMLockKey keys the lock of the tests of one VM alone.
func testVMLockKey(job, vm string) string { return "\x00test-vm/" + job + "\x00" + vm }

// LockTest takes the lock of the tests of plan for h until release is
// called. It fails with errdefs.ErrFailedPrecondition, naming the holder,
// while another test of plan holds it, in this process or another.
func (c *Catalog) LockTest(plan string, h TestHolder) (release func(), err error) {
	return c.lockTest(testLockKey(plan), fmt.Sprintf("test of failover plan %q", plan), "the plan", h)
}

// LockTestVM takes the lock of the tests of vm of job alone (`ferry
// failover JOB VM --test`, and its --cleanup) for h, as LockTest does for
// a plan: such a test first removes the test VMs earlier tests of the VM
// left, so a second one would remove the first one's. Tests of plans
// holding the VM take their plan's lock, not this one: they leave the
// VM's own tests alone, and these theirs.
func (c *Catalog) LockTestVM(job, vm string, h TestHolder) (release func(), err error) {
	return c.lockTest(testVMLockKey(job, vm), fmt.Sprintf("test failover of job %q vm %q", job, vm), "the VM", h)
}

func (c *Catalog) lockTest(key, what, of string, h TestHolder) (release func(), err error) {
	l, err := tryLockJob(c.path, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	info := lockFile(c.path, key) + ".json"
	if l == nil {
		holder := TestHolder{}
		if b, err := os.ReadFile(info); err == nil && len(b) <= 4096 {
			_ = json.Unmarshal(b, &holder)
		}
		return nil, fmt.Errorf("%s: another test of %s runs, by %s: %w; try again when it ends", what, of, holder, errdefs.ErrFailedPrecondition)
	}
	b, _ := json.Marshal(h)
	tmp := info + ".tmp"
	err = os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, info)
	}
	if err != nil {
		l.release()
		return nil, fmt.Errorf("%s: say who tests it: %w", what, err)
	}
	return l.release, nil
}
