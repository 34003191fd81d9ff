package sdk

import (
	"context"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// TestFailoverer is implemented by a Target with the TestFailover
// capability: it rehearses a failover without touching the replica. A test
// VM is a disposable clone of one restore point of a replica, started in
// an isolated network; the replica, its restore points and replication
// (writers, new points, retention) go on as if there were no test, and
// nothing the test VM writes ever reaches them. Every method is safe for
// concurrent use and honours ctx cancellation.
//
// A host that was killed leaves its test VMs behind; it finds them with
// ListTests (by the labels it gave them) and removes them with StopTest,
// so a target must list a test from the moment StartTest began to leave
// anything behind until StopTest removed all of it.
type TestFailoverer interface {
	// StartTest clones req.Point of req.Replica (the newest point when
	// empty) into a new VM and starts it. Each NIC goes on the network
	// req.Network.NetworkMap maps its network to, or else on the target's
	// isolated network; a target that has none refuses the test
	// (errdefs.ErrFailedPrecondition) rather than connect a test VM to a
	// network it did not map. req.Network.ReIP applies as at failover.
	// Starting an id that runs already returns it unchanged; an id in use
	// by a test that did not finish starting is ErrAlreadyExists (stop it
	// first). A StartTest that fails leaves nothing, or a test that
	// ListTests lists as not running.
	StartTest(ctx context.Context, req TestRequest) (*TestVM, error)
	// ListTests lists every test VM the target keeps, by id, running or
	// left behind by a start that did not finish.
	ListTests(ctx context.Context) ([]TestVM, error)
	// OpenTestDisk opens a disk of a test VM for reading: what the test VM
	// holds now, its own writes included.
	OpenTestDisk(ctx context.Context, id string, disk int) (DiskReader, error)
	// StopTest powers a test VM off and removes it with everything it
	// wrote. Stopping a test that is gone succeeds, and so does stopping
	// one whose start did not finish.
	StopTest(ctx context.Context, id string) error
}

// TestRequest asks for a test VM.
type TestRequest struct {
	// ID is the host's name for the test (CheckTestID): unique on the
	// target, so the host finds it again after a crash.
	ID      string
	Replica string // the replica's id or name
	Point   string // a restore point's id; "" for the newest
	Network NetworkConfig
	// Labels are the host's, kept with the test and listed with it.
	Labels map[string]string
}

// TestVM is a test VM a target keeps.
type TestVM struct {
	ID      string
	Replica string // the id of the replica it was cloned from
	Point   string // the restore point it was cloned from
	Started time.Time
	// Running is false for a test whose start did not finish: a leftover
	// to stop.
	Running bool
	// VM describes the test VM: its own name and id, its disks, its NICs
	// on the test networks.
	VM     VM
	Labels map[string]string
}

// MaxTestIDLength bounds a test id, so that targets can use it in the
// names of VMs and folders.
const MaxTestIDLength = 64

// CheckTestID reports an id a target may not accept: empty, longer than
// MaxTestIDLength, or with characters other than ASCII letters, digits,
// '-', '_' and '.', or starting with '.' (errdefs.ErrInvalidArgument).
func CheckTestID(id string) error {
	if id == "" || len(id) > MaxTestIDLength || id[0] == '.' {
		return fmt.Errorf("test id %q: 1 to %d characters, not starting with '.': %w", id, MaxTestIDLength, errdefs.ErrInvalidArgument)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return fmt.Errorf("test id %q: %q is not a letter, a digit, '-', '_' or '.': %w", id, r, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
