// Package host is the seam between the Hyper-V plugin and a Hyper-V host:
// the Host interface, which names every call the plugin makes to Hyper-V,
// and the types those calls take and return. The plugin's logic (package
// hyperv) talks to Hyper-V only through it.
//
// simhost implements it: a simulated host on any OS that keeps VMs as
// folders with VHDX files, for tests and the lab. wmihost implements it on
// Windows through WMI (root\virtualization\v2); each method's comment
// names the WMI call it stands for, and the plugin's README lists what
// wmihost calls for each.
//
// This package holds declarations only; it never talks to a host.
package host

import (
	"context"
	"time"

	"github.com/ferry-dr/ferry/sdk"
)

// Host is a Hyper-V host as the plugin needs it. Every method is safe for
// concurrent use and honours ctx cancellation. VMs are named by id (the
// VM's GUID) or by name. Errors carry an errdefs class: ErrNotFound for an
// unknown VM or checkpoint, ErrChangeIDReset when change tracking cannot
// answer, ErrUnavailable when the host cannot be reached.
type Host interface {
	// Name names the host for messages and placement ("hv01", "sim:/dir").
	Name() string
	// Local reports whether the VMs' files are on this machine's file
	// system, so the plugin can read and write them itself.
	Local() bool

	// ListVMs lists every VM of the host, in a stable order.
	ListVMs(ctx context.Context) ([]VM, error)
	// GetVM returns one VM by id or name.
	GetVM(ctx context.Context, vm string) (*VM, error)
	// Switches lists the virtual switches NICs can connect to.
	Switches(ctx context.Context) ([]string, error)

	// CreateVM defines a new VM, stopped, with new empty dynamic VHDX
	// disks (Msvm_VirtualSystemManagementService.DefineSystem,
	// AddResourceSettings; Msvm_ImageManagementService.CreateVirtualHardDisk).
	CreateVM(ctx context.Context, spec VMSpec) (*VM, error)
	// DeleteVM stops and removes a VM with its checkpoints and its files
	// (DestroySystem). An unknown VM is ErrNotFound.
	DeleteVM(ctx context.Context, vm string) error
	// SetNotes replaces the VM's notes (Msvm_VirtualSystemSettingData.Notes).
	SetNotes(ctx context.Context, vm, notes string) error
	// SetRunning starts or turns off the VM (RequestStateChange 2 or 3).
	SetRunning(ctx context.Context, vm string, running bool) error
	// ConnectNIC connects network adapter nic (an index in VM.NICs) to a
	// virtual switch (the port's Msvm_EthernetPortAllocationSettingData).
	ConnectNIC(ctx context.Context, vm string, nic int, vswitch string) error
	// SetGuestNetwork records the guest's IP settings of adapter nic, which
	// Hyper-V applies in the guest through its integration services
	// (Msvm_GuestNetworkAdapterConfiguration,
	// SetGuestNetworkAdapterConfiguration), as Hyper-V Replica does at
	// failover.
	SetGuestNetwork(ctx context.Context, vm string, nic int, g GuestNetwork) error
	// GrowDisk grows disk (an index in VM.Disks) of the VM's current state
	// to size bytes. Hyper-V cannot resize a disk that has checkpoints
	// (Msvm_ImageManagementService.ResizeVirtualHardDisk refuses an AVHDX
	// chain), so the current state gets a new VHDX of the new size with the
	// disk's content (ModifyResourceSettings of its
	// Msvm_StorageAllocationSettingData); checkpoints keep their files and
	// their sizes. A size not larger than the disk's changes nothing.
	GrowDisk(ctx context.Context, vm string, disk int, size int64) error

	// CreateCheckpoint takes a checkpoint of every disk
	// (Msvm_VirtualSystemSnapshotService.CreateSnapshot): each disk's
	// current file is frozen and the VM writes into a new differencing
	// disk (.avhdx) on it from then on.
	CreateCheckpoint(ctx context.Context, vm string, req CheckpointRequest) (*Checkpoint, error)
	// ListCheckpoints lists the VM's checkpoints, oldest first.
	ListCheckpoints(ctx context.Context, vm string) ([]Checkpoint, error)
	// DestroyCheckpoint deletes a checkpoint (DestroySnapshot): its
	// differencing disks are merged as Hyper-V merges them, and every
	// other checkpoint and the current state read as before. An unknown
	// checkpoint is ErrNotFound.
	DestroyCheckpoint(ctx context.Context, vm, checkpoint string) error
	// ApplyCheckpoint makes the VM's current state that of a checkpoint
	// (ApplySnapshot): the current differencing disks are discarded and
	// the VM writes into new ones on the checkpoint's disks.
	ApplyCheckpoint(ctx context.Context, vm, checkpoint string) error
	// ConvertToReferencePoint turns a recovery checkpoint into a reference
	// point (ConvertToReferencePoint): the checkpoint goes, its
	// differencing disks merged, and the reference point keeps the disks'
	// change tracking ids.
	ConvertToReferencePoint(ctx context.Context, vm, checkpoint string) (*ReferencePoint, error)
	// ListReferencePoints lists the VM's reference points, oldest first.
	ListReferencePoints(ctx context.Context, vm string) ([]ReferencePoint, error)
	// DestroyReferencePoint removes a reference point
	// (Msvm_VirtualSystemReferencePointService.DestroyReferencePoint).
	DestroyReferencePoint(ctx context.Context, vm, ref string) error
	// DiskChanges calls fn with sorted batches of the byte ranges of disk
	// (an index in the checkpoint's disks) that changed between the change
	// tracking id since and the checkpoint
	// (Msvm_ImageManagementService.GetVirtualDiskChanges with LimitId =
	// since). It reports at least every range written; an id tracking
	// cannot answer for (unknown, from before a reset) is ErrChangeIDReset.
	DiskChanges(ctx context.Context, vm, checkpoint string, disk int, since string, fn func([]Extent) error) error
}

// Cluster is a Hyper-V failover cluster as the plugin needs it: its nodes,
// each a Host that sees the VMs registered on it, and the highly
// available roles that keep a VM running on another node when its node
// fails (root\MSCluster). The VMs' files are on storage every node
// reaches (Cluster Shared Volumes). Errors carry an errdefs class as
// Host's do; a node that is down answers ErrUnavailable.
type Cluster interface {
	// Name names the cluster for messages and placement.
	Name() string
	// Local reports whether the VMs' files are on this machine's file
	// system (Host.Local).
	Local() bool
	// Nodes lists the cluster's nodes (MSCluster_Node) in a stable order.
	Nodes(ctx context.Context) ([]Node, error)
	// Node returns the Hyper-V host of a node.
	Node(name string) Host
	// AddVMRole makes a VM registered on node a highly available role of
	// the cluster (MSCluster_ResourceGroup.CreateGroup, then
	// AddVirtualMachine). A VM that is one already is left as it is.
	AddVMRole(ctx context.Context, node, vm string) error
}

// Node is a node of a cluster.
type Node struct {
	Name string
	Up   bool // MSCluster_Node.State is up
}

// VM is a virtual machine of the host and its current settings.
type VM struct {
	ID         string // the VM's GUID (Msvm_ComputerSystem.Name)
	Name       string // ElementName
	Generation int    // 1 (BIOS) or 2 (UEFI)
	CPUs       int
	MemoryMiB  int64
	SecureBoot bool
	// SecureBootTemplate is the Secure Boot template
	// (Msvm_VirtualSystemSettingData.SecureBootTemplateId) by ferry's name:
	// sdk.SecureBootMicrosoftWindows or sdk.SecureBootMicrosoftUEFICA; ""
	// when unknown.
	SecureBootTemplate string
	TPM                bool
	Running            bool
	// GuestBackup says the guest's Backup (VSS) integration service is
	// enabled and answering, so a checkpoint can be application-consistent.
	GuestBackup bool
	Notes       string
	Disks       []Disk
	NICs        []NIC
	// Dir is the folder holding the VM's configuration and its new disks.
	Dir string
	// Clustered says the VM is a highly available role of the host's
	// failover cluster (MSCluster_ResourceGroup of type Virtual Machine).
	Clustered bool
	// BootOrder is the firmware's boot order as far as it names the VM's
	// disks and adapters (by index in Disks and NICs): generation 2's boot
	// source order (Msvm_VirtualSystemSettingData.BootSourceOrder), or
	// generation 1's BIOS order (BootOrder), whose IDE entry is the first
	// IDE disk and whose network entry the first legacy adapter. Empty
	// when the host does not say.
	BootOrder []BootDevice
}

// BootDevice is an entry of a boot order: a disk or an adapter by its
// index, or the DVD drive (generation 1's BIOS lists it whether or not
// the VM has one).
type BootDevice = sdk.BootDevice

// Disk is a virtual hard disk attached to the VM.
type Disk struct {
	Controller string // "scsi" (synthetic SCSI) or "ide"
	Bus        int    // the controller's number
	Location   int    // the position on the controller
	Path       string // the file the VM reads and writes now: a VHDX, or the newest AVHDX of its chain
	Capacity   int64  // the virtual size in bytes
}

// NIC is a network adapter: synthetic (Msvm_SyntheticEthernetPortSettingData)
// or, on generation 1 only, legacy (Msvm_EmulatedEthernetPortSettingData).
type NIC struct {
	Switch string // the virtual switch it is connected to; "" when none
	MAC    string
	Guest  GuestNetwork
	Legacy bool `json:",omitempty"`
}

// GuestNetwork is the IP configuration of a guest's adapter.
type GuestNetwork struct {
	Addresses []string // CIDR form: "10.1.0.5/24"
	Gateway   string
	DNS       []string
}

// VMSpec describes a VM to create.
type VMSpec struct {
	Name       string
	Generation int
	CPUs       int
	MemoryMiB  int64
	SecureBoot bool
	// SecureBootTemplate: as VM's; "" leaves the host's default
	// (Microsoft Windows).
	SecureBootTemplate string
	TPM                bool
	Notes              string
	Disks              []DiskSpec
	NICs               []NICSpec
	// Dir is where the VM's files go; "" lets the host choose.
	Dir string
	// BootOrder is the boot order to give the VM (as VM's, by index in
	// Disks and NICs); empty leaves Hyper-V's default. Generation 1 boots
	// from IDE (its first disk entry must be the first IDE disk, and the
	// BIOS cannot tell other disks apart) or a legacy adapter; generation
	// 2 from any disk or adapter it has, and not a DVD drive, which a
	// VMSpec cannot give it.
	BootOrder []BootDevice
}

// DiskSpec is a disk of a VM to create.
type DiskSpec struct {
	Controller string // "scsi" or "ide"
	Bus        int
	Location   int
	Capacity   int64 // a multiple of 512
}

// NICSpec is a network adapter of a VM to create.
type NICSpec struct {
	Switch string
	Guest  GuestNetwork
	Legacy bool // a legacy adapter (generation 1 only)
}

// CheckpointType is the kind of a checkpoint
// (Msvm_VirtualSystemSnapshotService.CreateSnapshot's SnapshotType).
type CheckpointType int

const (
	// Standard is a full checkpoint a VM can be applied to (2).
	Standard CheckpointType = 2
	// Recovery is the checkpoint backups take and convert to a reference
	// point once the backup is done (32768).
	Recovery CheckpointType = 32768
)

// Consistency is how consistent a checkpoint is
// (Msvm_VirtualSystemSnapshotSettingData.ConsistencyLevel).
type Consistency int

const (
	// ApplicationConsistent: the guest flushed its applications through
	// VSS (1).
	ApplicationConsistent Consistency = 1
	// CrashConsistent: the disks as a power cut would leave them (2).
	CrashConsistent Consistency = 2
)

// CheckpointRequest asks for a checkpoint.
type CheckpointRequest struct {
	Name  string
	Type  CheckpointType
	Notes string
	// Consistency is the level asked for; a host gives
	// ApplicationConsistent only when the guest's Backup integration
	// service answers, and says which it gave in Checkpoint.Consistency.
	Consistency Consistency
}

// Checkpoint is a frozen state of every disk of a VM.
type Checkpoint struct {
	ID          string // the snapshot's Msvm_VirtualSystemSettingData InstanceID
	Name        string
	Type        CheckpointType
	Created     time.Time
	Consistency Consistency
	Notes       string
	Parent      string // the checkpoint it was taken on; "" for the first
	Disks       []CheckpointDisk
}

// CheckpointDisk is one disk of a checkpoint.
type CheckpointDisk struct {
	Path     string // the frozen file: the chain up to it holds the disk's state
	Capacity int64
	// RCT is the disk's change tracking id at the checkpoint: changes
	// since it are what DiskChanges reports on a later checkpoint.
	RCT string
}

// ReferencePoint is what stays of a recovery checkpoint once converted:
// the change tracking ids of its disks
// (Msvm_VirtualSystemReferencePoint.ResilientChangeTrackingIdentifiers).
type ReferencePoint struct {
	ID          string
	Checkpoint  string // the checkpoint it was converted from
	Created     time.Time
	Consistency Consistency
	RCT         []string // per disk
}

// Extent is a byte range of a virtual disk.
type Extent struct {
	Offset, Length int64
}
