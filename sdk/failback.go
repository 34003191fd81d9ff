package sdk

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Failback brings a failed-over replica's disks home to production. The
// host moves the data (its data mover); the two sides each answer for
// their own VM, so both optional interfaces below are declared with the
// Failback capability: on a Target it promises FailbackReader, on a Source
// FailbackWriter. A plugin may offer either or both.

// FailbackReader is implemented by a Target with the Failback capability:
// it lets the host read a failed-over replica while it runs and say what
// the replica wrote since its failover, so that failback sends only that.
// Every method is safe for concurrent use and honours ctx cancellation.
type FailbackReader interface {
	// FailedOverChanges calls fn with sorted, non-overlapping batches of
	// the areas of a failed-over replica's disk written after Since (a
	// mark an earlier call returned; "" for the moment of the failover)
	// up to now, and returns a new mark for "now" that a later call may
	// pass as Since. A write that lands while the call runs is either
	// reported or after the mark returned, never lost between two calls.
	// When the target cannot tell (tracking was never started for this
	// failover, was reset, or Since is unknown) it returns an error of
	// class errdefs.ErrChangeIDReset and the host compares digests.
	FailedOverChanges(ctx context.Context, req FailedOverChangesRequest, fn func([]Extent) error) (mark string, err error)
	// OpenFailedOverDisk opens a disk of a failed-over replica for
	// reading: what it holds now. The replica may be running; a read
	// sees each block as before or after a concurrent write.
	OpenFailedOverDisk(ctx context.Context, replica string, disk int) (DiskReader, error)
	// SetReplicaPower powers a failed-over replica off (on false) or on.
	// Setting the state it has succeeds and changes nothing.
	SetReplicaPower(ctx context.Context, replica string, on bool) (*Replica, error)
}

// FailedOverChangesRequest asks what a failed-over replica's disk wrote.
type FailedOverChangesRequest struct {
	Replica string
	Disk    int
	// Since is a mark FailedOverChanges returned; "" asks for everything
	// written since the failover.
	Since string
}

// FailbackWriter is implemented by a Source with the Failback capability:
// it lets the host write a failed-over replica's data into a production
// VM, keeping what it overwrites so the failback can be undone until it is
// committed. A failback is named by the host (CheckFailbackID); a VM takes
// one failback at a time. Every method is safe for concurrent use, honours
// ctx cancellation, and may be called again after a process died in it:
// each finishes what the killed call began.
type FailbackWriter interface {
	// BeginFailback readies req.VM for failback req.ID: it powers the VM
	// off (writing into a running VM's disks would corrupt them), keeping
	// its power state to restore on undo, and starts the failback's undo
	// store. When the VM does not exist and req.Create is set, it creates
	// a VM of that description with empty disks (undo removes it). Begin
	// of a failback that began already returns the VM as it is; a VM in
	// another failback is ErrFailedPrecondition, and one that does not
	// exist without req.Create ErrNotFound.
	BeginFailback(ctx context.Context, req FailbackRequest) (*VM, error)
	// OpenFailbackDisk opens a disk of a VM in failback id for writing.
	// Before a write overwrites a block for the first time in this
	// failback, the block's old content is saved, durably, in the undo
	// store. Writes are tracked as the guest's would be (ChangedAreas
	// reports them), so that replication after the commit goes on
	// incrementally. size grows the disk first when it is larger.
	OpenFailbackDisk(ctx context.Context, vm, id string, disk int, size int64) (DiskWriter, error)
	// StartFailback powers the VM on with its own (production) network
	// settings: the failback's switch is done. Starting a VM that runs
	// succeeds.
	StartFailback(ctx context.Context, vm, id string) (*VM, error)
	// UndoFailback returns the VM to what it was before BeginFailback:
	// every block the failback overwrote is written back, the power state
	// restored (a VM the failback created is removed), and the undo store
	// dropped. Undoing a failback the VM does not know succeeds.
	UndoFailback(ctx context.Context, vm, id string) error
	// CommitFailback makes the failback's writes permanent: the undo store
	// is dropped. Committing a failback the VM does not know succeeds.
	CommitFailback(ctx context.Context, vm, id string) error
}

// FailbackRequest asks a source to ready a VM for a failback.
type FailbackRequest struct {
	ID string // the host's name for the failback (CheckFailbackID)
	VM string // the production VM's id or name
	// Create, when set, describes the VM to create when VM does not
	// exist: its name, disks (created empty), NICs and the rest.
	Create *VM
}

// CheckFailbackID reports an id a source may not accept: the rules of
// CheckTestID (errdefs.ErrInvalidArgument).
func CheckFailbackID(id string) error {
	if err := CheckTestID(id); err != nil {
		return fmt.Errorf("failback id: %w", err)
	}
	return nil
}

// FailbackUnsupported is the error for a component without the Failback
// capability, naming what the host asked it to do.
func FailbackUnsupported(what, plugin, vm string) error {
	return fmt.Errorf("%s of plugin %s cannot fail vm %q back (no failback capability): %w", what, plugin, vm, errdefs.ErrUnimplemented)
}
