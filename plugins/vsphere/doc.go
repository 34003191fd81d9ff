// Package vsphere is ferry's vSphere plugin: a source and a target of type
// "vsphere" that talk to vCenter or ESXi through govmomi.
//
// The source (source.go, cbt.go, diskread.go) lists and describes VMs,
// takes and removes snapshots (switching changed block tracking on when it
// is off), reports changed areas with QueryChangedDiskAreas and reads
// snapshot disks directly from the flat file on a datastore this machine
// mounts (local_datastore_paths; a delta chain read by the plugin with
// sdk/disk/vmdk, chainread.go), through HotAdd (hotadd*.go: the disk
// attached to the proxy VM the plugin runs in and read as the block device
// its guest shows, detached afterwards, leftovers of killed runs detached by
// the next one) or with ranged GETs on the datastore HTTP interface
// (datastore.go). Each VM comes with its folder (folders.go: the
// datacenter's folder tree, one call per listing) and, on vCenter, its tags
// (tags.go: the Automation API in its own REST session, one bulk call per
// listing); an ESXi host has no tags.
//
// The target (target.go, replicadisk.go, restorepoint.go, failover.go,
// network.go, placement.go) creates replica VMs, writes their disks through
// the datastore's local mount (the base flat files) or through HotAdd
// (working.go: the replica's disks attached to a DR proxy VM and written as
// its devices, ferry's folder under state_dir), and keeps restore points as
// VMware snapshots of the replica whose point-in-time data ferry holds
// itself in reverse-incremental undo stores (undo.go): the working image
// holds the newest state, each point the blocks overwritten after it. A
// disk that grows under restore points has their snapshots taken away and
// back around the extension (regrow.go). Failover rolls the working image back to a point, reverts to its
// snapshot, maps NICs, re-IPs through guest customization and powers on;
// undo and commit follow. Failback (failback_target.go reads a running
// replica through changed block tracking between snapshots of it, and its
// delta chain as of a read snapshot;
// failback_source.go and failback_create.go write a production VM's flat
// files through the mount, each block's original saved first in an undo
// store beside its files) brings a failed-over VM home. README.md explains the formats, the transports
// and the limits. The target declares that it keeps at most 28 restore
// points (MaxRestorePoints), which ferry checks in the configuration.
//
// conn (connect.go) is one logged-in session per component instance, with
// TLS verified against a CA file or a pinned thumbprint, logged in again
// when vCenter drops it and logged out at Stop.
//
// This package must never import ferry's core (only the sdk module), never
// hold policy (what to copy, when, how many points to keep), never print on
// stdout when serving (go-plugin reads its handshake there), and never
// remove the HotAdd proxy VM or delete a file of a disk it detaches. The
// simulator and its test doubles live in vcsimtest and are used by tests
// and by the lab (package lab, `ferry lab`), never by this package.
package vsphere
