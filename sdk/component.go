package sdk

import (
	"context"
	"io"
)

// Source reads VMs from a hypervisor. Every method is safe for concurrent
// use and honours ctx cancellation. VMs are named by id or by name.
type Source interface {
	// ListVMs lists every VM the source can replicate.
	ListVMs(ctx context.Context) ([]VM, error)
	// DescribeVM returns one VM; errdefs.ErrNotFound when it does not exist.
	DescribeVM(ctx context.Context, vm string) (*VM, error)
	// CreateSnapshot freezes every disk of the VM. Reads of the snapshot see
	// the disks as they were at this moment however the VM goes on writing.
	CreateSnapshot(ctx context.Context, req SnapshotRequest) (*Snapshot, error)
	// RemoveSnapshot removes a snapshot, keeping every write made since in
	// the VM's disks. Removing a snapshot that is gone succeeds.
	RemoveSnapshot(ctx context.Context, vm, snapshot string) error
	// ListSnapshots lists the snapshots of a VM, oldest first, so leftovers
	// of a killed run can be found by name and removed.
	ListSnapshots(ctx context.Context, vm string) ([]Snapshot, error)
	// ChangedAreas calls fn with sorted, non-overlapping batches of the areas
	// of a snapshot's disk that changed since changeID. An empty changeID asks
	// for every allocated area. When tracking cannot answer for changeID it
	// returns an error of class errdefs.ErrChangeIDReset. Only sources with
	// the ChangeTracking capability are asked for a non-empty changeID.
	ChangedAreas(ctx context.Context, req ChangedAreasRequest, fn func([]Extent) error) error
	// OpenSnapshotDisk opens a disk of a snapshot for reading.
	OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (DiskReader, error)
}

// SnapshotRequest asks for a snapshot.
type SnapshotRequest struct {
	VM      string
	Name    string // the core names its snapshots so leftovers can be found
	Quiesce bool   // application-consistent, when the Quiesce capability is declared
}

// ChangedAreasRequest asks what changed in one disk of a snapshot.
type ChangedAreasRequest struct {
	VM       string
	Snapshot string
	Disk     int
	ChangeID string
}

// Target keeps replicas and their restore points. Every method is safe for
// concurrent use and honours ctx cancellation.
type Target interface {
	// GetPlacement lists where replicas can go.
	GetPlacement(ctx context.Context) (*Placement, error)
	// CreateReplica creates a replica with empty disks shaped like req.VM,
	// recording req.Owner and a new Incarnation with it. Creating a replica
	// whose name exists returns the existing one unchanged, except that a
	// replica without an owner (created before owners existed) gets
	// req.Owner; the caller compares the owner it gets back with its own.
	CreateReplica(ctx context.Context, req ReplicaRequest) (*Replica, error)
	// GetReplica returns a replica by id or name; errdefs.ErrNotFound when
	// there is none.
	GetReplica(ctx context.Context, replica string) (*Replica, error)
	// ListReplicas lists every replica of the target.
	ListReplicas(ctx context.Context) ([]Replica, error)
	// DeleteReplica deletes a replica and all its restore points.
	DeleteReplica(ctx context.Context, replica string) error
	// OpenReplicaDisk opens the replica's working state of a disk for
	// writing, growing the disk to size first when it is larger. Writes
	// become part of the next restore point; the restore points that exist
	// never change. A writer supersedes the writers of the same disk
	// opened before it: a target should refuse their later writes
	// (errdefs.ErrFailedPrecondition), since writes of an abandoned writer
	// can still be on their way when the next run opens its writer, and
	// must never land after the newer writer's.
	OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (DiskWriter, error)
	// CreateRestorePoint freezes the replica's working state as a new restore
	// point. The point exists only once this returns without error.
	CreateRestorePoint(ctx context.Context, replica string, labels map[string]string) (*RestorePoint, error)
	// ListRestorePoints lists a replica's restore points, oldest first.
	ListRestorePoints(ctx context.Context, replica string) ([]RestorePoint, error)
	// DeleteRestorePoint deletes a restore point and frees its space; the
	// others stay readable. Deleting a point that is not there deletes
	// nothing and returns nil or an error of class errdefs.ErrNotFound;
	// ferry's retention takes either as the point gone already.
	DeleteRestorePoint(ctx context.Context, replica, point string) error
	// OpenRestorePointDisk opens a disk of a restore point for reading. An
	// empty point opens the working state instead: what the replica's disk
	// holds now, which the next restore point will freeze. The core reads
	// it to rebuild lost metadata; the reader sees a consistent view only
	// while no writer is open.
	OpenRestorePointDisk(ctx context.Context, replica, point string, disk int) (DiskReader, error)
	// Failover starts the replica from a restore point (the newest when point
	// is empty) with the network settings applied.
	Failover(ctx context.Context, req FailoverRequest) (*Replica, error)
	// UndoFailover stops a failed-over replica and returns it to the state it
	// had before the failover; nothing of its restore points is lost.
	UndoFailover(ctx context.Context, replica string) (*Replica, error)
	// CommitFailover makes a failed-over replica the production VM: it stops
	// being a replica and leaves replication.
	CommitFailover(ctx context.Context, replica string) (*Replica, error)
	// ApplyNetwork rewrites the replica's network settings now.
	ApplyNetwork(ctx context.Context, replica string, net NetworkConfig) (*Replica, error)
}

// ReplicaRequest asks for a replica of a source VM.
type ReplicaRequest struct {
	Name       string
	VM         VM // the source VM's description; disks are created empty
	NetworkMap []NetworkMapping
	Owner      ReplicaOwner
}

// FailoverRequest asks to fail a replica over.
type FailoverRequest struct {
	Replica string
	Point   string
	Network NetworkConfig
}

// Repository keeps replica metadata as named objects with compare-and-swap.
// Every method is safe for concurrent use, also from several processes.
type Repository interface {
	// Put stores data under key when the object's generation equals
	// ifGeneration (IfAbsent: the object must not exist; IfAny: always) and
	// returns the new generation. A lost race returns an error of class
	// errdefs.ErrFailedPrecondition and changes nothing. A put is atomic:
	// readers see the old or the new object, never a mix.
	Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error)
	// Get returns an object; errdefs.ErrNotFound when there is none,
	// errdefs.ErrDataLoss when it exists but is damaged (its content is
	// never returned; Put and Delete with IfAny still replace and remove
	// it).
	Get(ctx context.Context, key string) ([]byte, ObjectInfo, error)
	// List lists the objects whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes an object when its generation equals ifGeneration (or
	// always with IfAny). Deleting a missing object with IfAny succeeds.
	Delete(ctx context.Context, key string, ifGeneration int64) error
}

// ReplicaMapper is implemented by a Target with the MapReplicas
// capability: it makes a VM it already has (restored from a backup, an
// old copy, a seed) the replica of a source VM, so that the first run
// compares the two block by block and sends only what differs, never a
// full copy.
type ReplicaMapper interface {
	// MapReplica makes the VM named req.Name, which must exist and be no
	// replica, the replica req describes: its disks keep their content,
	// its description becomes req.VM's as CreateReplica's would (with
	// req.NetworkMap applied), and it has no restore point yet. Its disks
	// must be req.VM's, as many and of the same capacities, in order;
	// otherwise it is refused with errdefs.ErrFailedPrecondition naming
	// what differs. A VM that is gone is errdefs.ErrNotFound. Mapping a
	// VM that is the replica req describes already returns it; one that
	// is another replica is errdefs.ErrAlreadyExists. A MapReplica that
	// was interrupted is finished by the next.
	MapReplica(ctx context.Context, req ReplicaRequest) (*Replica, error)
}

// ObjectLocator is a Repository whose objects each lie whole in a file
// (the direct lane of repository objects, protocol minor 6). A host on the
// same machine as the plugin reads such an object itself with one read
// instead of a stream through the plugin; it checks the data against the
// CRC-32C and asks again through Get when the file changed under it.
type ObjectLocator interface {
	// LocateObject says where the current data of key lies, with the
	// errors of Get (ErrNotFound, ErrDataLoss when the object is damaged).
	LocateObject(ctx context.Context, key string) (ObjectFile, error)
}

// ObjectFile is where an object's data lies: Info.Size bytes at Offset of
// the file at Path.
type ObjectFile struct {
	Info   ObjectInfo
	Path   string
	Offset int64
	CRC32C uint32 // of the data, Castagnoli
}

// DiskReader reads a disk. ReadAt is safe for concurrent use. Close ends the
// read and reports anything found wrong on the way (for example a disk that
// changed under its snapshot); callers must check it before trusting what
// they read.
type DiskReader interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// DiskWriter writes a disk. WriteAt is safe for concurrent use on disjoint
// ranges. A write that returned is durable once Sync or Close returns nil
// after it; until then a crash may lose it (a writer may keep writes in
// memory to apply them in batches).
type DiskWriter interface {
	io.WriterAt
	Size() int64
	// Sync makes every write that returned before the call durable. The
	// data mover calls it before it records digests of what it wrote, so
	// that ferry's metadata never describes writes a crash could lose.
	Sync() error
	Close() error
}

// TransportReporter is implemented by a DiskReader that can say how its
// component reads the disk (a transport mode of its own, such as vSphere's
// "direct", "hotadd" or "network") and why that one was chosen. ferry
// records both with the disk's result in the session.
type TransportReporter interface {
	Transport() (mode, why string)
}

// Transport modes a TransportReporter or TransportProber names.
const (
	TransportDirect  = "direct"  // the storage is reached from this machine's file system
	TransportHotAdd  = "hotadd"  // the disks are attached to the VM this plugin runs in
	TransportNetwork = "network" // the disks are read or written over the network
)

// TransportProber is implemented by a Source or Target that can say,
// without opening a disk, how this instance would reach a VM's disks (a
// source's VM, a target's replica; "" for the target's storage in
// general) from the machine it runs on: TransportDirect, TransportHotAdd
// or TransportNetwork, or "" when it cannot reach them from here. disk is
// -1 for the VM's disks in general. ferry asks the instances its proxies
// run, to place each disk where the data path is best; an instance that
// does not implement it is taken as reaching the disks over the network.
type TransportProber interface {
	ProbeTransport(ctx context.Context, vm string, disk int) (mode, why string, err error)
}

// LocalPather is implemented by a DiskReader or DiskWriter whose data sits
// in a local file the data mover may open itself (the direct lane). A
// component offers it only with the DirectData capability. Readers may read
// the file, writers may write it, within Size; Close must still be called.
type LocalPather interface {
	LocalPath() string
}

// WritePreparer is implemented by a DiskWriter that offers its local file
// (LocalPather) while it keeps restore points of that file: before the data
// mover writes a range of the file itself, it calls PrepareWrites with the
// range, and the writer makes the range safe to overwrite (it saves, and
// makes durable, whatever a restore point still needs of it) before it
// returns. Writes through WriteAt need no preparing. A prepared range stays
// prepared until the writer is closed, so a writer that offers this must
// refuse changes to its restore points while it is open. The file is
// offered only to hosts that prepare (protocol minor 4); others write
// through WriteAt.
type WritePreparer interface {
	PrepareWrites(extents []Extent) error
}

// TagLister is implemented by a Source with the Tags capability: it lists
// every tag its endpoint knows, whether or not a VM carries it, so that
// ferry can tell a tag nobody carries from a tag that does not exist. The
// tags are in the form of VM.Tags, sorted. An endpoint that has no tags
// (a vSphere source connected to an ESXi host rather than vCenter) returns
// an error of class errdefs.ErrUnimplemented that says why. Safe for
// concurrent use; honours ctx cancellation.
type TagLister interface {
	ListTags(ctx context.Context) ([]string, error)
}

// Stopper is implemented by components that hold resources (sessions,
// connections) to release when the plugin stops.
type Stopper interface {
	Stop(ctx context.Context) error
}
