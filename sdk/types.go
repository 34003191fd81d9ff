package sdk

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Kind is the kind of a component.
type Kind string

const (
	KindSource     Kind = "source"
	KindTarget     Kind = "target"
	KindRepository Kind = "repository"
)

// Capabilities are optional features a component declares. The core never
// guesses them from versions.
type Capabilities struct {
	ChangeTracking bool // a Source reports changed areas since a change id
	DirectData     bool // disks may come with a local path the data mover opens itself
	Quiesce        bool // a Source takes application-consistent snapshots
	ReIP           bool // a Target applies re-IP rules at failover
	Folders        bool // a Source reports each VM's inventory folder (VM.Folder)
	Tags           bool // a Source reports each VM's tags (VM.Tags) and lists its tags (TagLister)
	TestFailover   bool // a Target starts test VMs from restore points (TestFailoverer)
	MapReplicas    bool // a Target makes a VM it has the replica of a source VM (ReplicaMapper)
	// Failback: a Target reads failed-over replicas (FailbackReader), a
	// Source writes failbacks into production VMs (FailbackWriter).
	Failback bool
}

// Limits are bounds a component cannot go beyond. ferry checks them when it
// loads the configuration, so a job that asks for more is a configuration
// error naming the file and line, not a failure in the middle of a run.
// Zero values mean no limit.
type Limits struct {
	// MaxRestorePoints is the most restore points a Target keeps per
	// replica.
	MaxRestorePoints int
	// MaxRestorePointsReason says why, in a sentence ferry shows with the
	// error: "VMware supports at most 32 snapshots in a chain".
	MaxRestorePointsReason string
}

// VM describes a virtual machine, at the source or as a replica.
type VM struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	CPUs       int               `json:"cpus"`
	MemoryMiB  int64             `json:"memory_mib"`
	Firmware   string            `json:"firmware,omitempty"` // "bios" or "efi"
	GuestOS    string            `json:"guest_os,omitempty"`
	PowerState string            `json:"power_state,omitempty"`
	Disks      []Disk            `json:"disks"`
	NICs       []NIC             `json:"nics,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// Folder is the inventory folder holding the VM, a path from the root
	// of the inventory with "/" between names ("/Prod/vm/web"); empty when
	// the source has no folders. Sources with the Folders capability set it.
	Folder string `json:"folder,omitempty"`
	// Tags are the VM's tags as "Category/Name" ("Name" alone where the
	// source's tags have no category), sorted. Sources with the Tags
	// capability set it.
	Tags []string `json:"tags,omitempty"`
	// Hardware is the virtual hardware besides disks and NICs (protocol
	// minor 8; see NormalizeHardware for VMs of older plugins).
	Hardware Hardware `json:"hardware,omitzero"`
}

// Disk is a virtual disk of a VM. Index is its position in VM.Disks and
// names it in every call.
type Disk struct {
	Index      int    `json:"index"`
	Name       string `json:"name,omitempty"`
	Capacity   int64  `json:"capacity_bytes"`
	Controller string `json:"controller,omitempty"`
	Thin       bool   `json:"thin,omitempty"`
	// Independent says VM snapshots do not capture the disk (vSphere's
	// independent modes): its snapshot reads see it change as the guest
	// writes. ferry skips such disks unless the job asks to copy them.
	Independent bool `json:"independent,omitempty"`
	// Bus, ControllerModel, ControllerNumber and Unit place the disk
	// (protocol minor 8): Controller "scsi0:1" is Bus scsi, number 0, unit
	// 1, and ControllerModel says which SCSI adapter the guest sees.
	Bus              Bus             `json:"bus,omitempty"`
	ControllerModel  ControllerModel `json:"controller_model,omitempty"`
	ControllerNumber int             `json:"controller_number,omitempty"`
	Unit             int             `json:"unit,omitempty"`
}

// NIC is a network adapter of a VM.
type NIC struct {
	Index     int      `json:"index"`
	Network   string   `json:"network"`
	MAC       string   `json:"mac,omitempty"`
	Addresses []string `json:"addresses,omitempty"` // CIDR form: "10.1.0.5/24"
	Gateway   string   `json:"gateway,omitempty"`
	DNS       []string `json:"dns,omitempty"`
	// Model is the adapter the guest sees (protocol minor 8); empty when
	// the source does not say.
	Model NICModel `json:"model,omitempty"`
}

// Extent is a byte range of a disk.
type Extent struct {
	Offset int64
	Length int64
}

// End is the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// Snapshot is a frozen, point-in-time view of every disk of a VM.
type Snapshot struct {
	ID       string
	VM       string
	Name     string
	Created  time.Time
	Quiesced bool
	Disks    []SnapshotDisk
}

// MergeExtents sorts extents by offset, drops the empty ones and merges
// those that touch or overlap, in place: the result shares es's array.
func MergeExtents(es []Extent) []Extent {
	if !slices.IsSortedFunc(es, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) }) {
		slices.SortFunc(es, func(a, b Extent) int { return cmp.Compare(a.Offset, b.Offset) })
	}
	out := es[:0]
	for _, e := range es {
		if e.Length <= 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && e.Offset <= out[k].End() {
			out[k].Length = max(out[k].End(), e.End()) - out[k].Offset
			continue
		}
		out = append(out, e)
	}
	return out
}

// SnapshotDisk is the state of one disk in a snapshot or restore point.
type SnapshotDisk struct {
	Index    int
	Capacity int64
	// ChangeID names the disk state for change tracking: pass it to
	// ChangedAreas on the next run. Empty when the source does not track
	// changes.
	ChangeID string
}

// ReplicaState is where a replica is in its failover life.
type ReplicaState string

const (
	ReplicaReady      ReplicaState = "ready"       // receiving replication runs
	ReplicaFailedOver ReplicaState = "failed_over" // running from a restore point
	ReplicaCommitted  ReplicaState = "committed"   // permanent failover: now a production VM
)

// Replica is the copy of a source VM on a target.
type Replica struct {
	ID            string
	Name          string
	SourceVM      string
	VM            VM
	State         ReplicaState
	FailoverPoint string // the restore point it runs from when failed over
	// Incarnation changes whenever the replica is created anew, even when
	// the target reuses an ID or a name: ferry binds the replica's metadata
	// to ID and Incarnation, so metadata of a replica that was deleted and
	// created again is never taken for the new one's. Empty from targets
	// older than protocol minor 2.
	Incarnation string
	// Owner is whom the replica belongs to, as CreateReplica recorded it;
	// zero for a replica created before owners existed.
	Owner ReplicaOwner
}

// ReplicaOwner names the job and the source VM a replica belongs to. The
// core refuses to write into a replica owned by another.
type ReplicaOwner struct {
	Job      string // the job's name
	Source   string // the job's source, as the configuration names it
	SourceVM string // the source VM's id
}

// IsZero reports whether no owner is recorded.
func (o ReplicaOwner) IsZero() bool { return o == ReplicaOwner{} }

// String names the owner for messages.
func (o ReplicaOwner) String() string {
	return fmt.Sprintf("job %q (VM %s of %s)", o.Job, o.SourceVM, o.Source)
}

// RestorePoint is one complete state of a replica.
type RestorePoint struct {
	ID      string
	Replica string
	Created time.Time
	Size    int64 // bytes of storage the point holds on its own
	Labels  map[string]string
	Disks   []SnapshotDisk
}

// NetworkMapping maps a source network name to a target network name.
type NetworkMapping struct {
	From string
	To   string
}

// ReIPRule rewrites addresses in FromSubnet into ToSubnet, keeping the host
// part, and sets the gateway and DNS servers.
type ReIPRule struct {
	FromSubnet string
	ToSubnet   string
	Gateway    string
	DNS        []string
}

// NetworkConfig is what a target applies to a replica's network settings.
type NetworkConfig struct {
	NetworkMap []NetworkMapping
	ReIP       []ReIPRule
}

// Placement lists where a target can put replicas.
type Placement struct {
	Hosts      []string
	Datastores []string
	Networks   []string
	Folders    []string
}

// ObjectInfo describes a repository object.
type ObjectInfo struct {
	Key        string
	Generation int64 // starts at 1 and grows with every put
	Size       int64
	Modified   time.Time
}

// Generation conditions for Repository.Put and Delete.
const (
	// IfAny makes a put or delete unconditional.
	IfAny int64 = -1
	// IfAbsent makes a put succeed only when the object does not exist.
	IfAbsent int64 = 0
)
