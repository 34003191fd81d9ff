// Package simhost is a simulated Hyper-V host: it implements host.Host on
// any OS, with VMs as folders and their disks as VHDX and AVHDX files
// written with sdk/disk/vhdx. It is for the Hyper-V plugin's tests and for
// the lab, as govmomi's vcsim is for vSphere; it is not Hyper-V and proves
// nothing about WMI. The plugin selects it with host = "sim:DIR", and a
// simulated failover cluster (Cluster: nodes sharing one such folder, with
// roles that move between them) with host = "simcluster:DIR".
//
// # Layout
//
// DIR/host.json names the virtual switches; DIR/.lock serialises every
// change; DIR/vms/<id>/vm.json is a VM's configuration (vmState), beside
// its disk files. vm.json is the single commit point of every change: it is
// replaced atomically (temporary file, fsync, rename, fsync of the folder),
// and a disk file it does not name is a leftover of a change that never
// committed, removed by the next change of the VM (sweep).
//
// # Checkpoints and merges
//
// A checkpoint freezes each disk's current file and gives the VM a new
// differencing disk (AVHDX) on it. The files of a disk form a tree (a file's
// parent is the file its parent locator names); the current state and each
// checkpoint refer to one file per disk. Deleting a checkpoint, applying
// one, or converting one to a reference point drops references; then
// compact merges: a file no one refers to and with no children goes; one
// with a single child that is not the current file takes its child's
// content (the child is merged into it, as Hyper-V merges an AVHDX into
// its parent) and every file above is made again on the merged file. The
// current file is never merged into its parent, so it always holds exactly
// the writes since the last checkpoint (Hyper-V merges it and keeps the
// changes in .rct files instead).
//
// sdk/disk/vhdx cannot re-point a child at a parent whose DataWriteGuid
// changed (it has no call to rewrite a parent locator), so a merge cannot
// write into the parent in place as Hyper-V does: it writes the merged file
// and the files above it anew, under new names, syncs them, commits vm.json,
// then removes the old files. A crash before the commit leaves the old
// chain, which vm.json still names, and new files the next change sweeps
// (the merge is undone); a crash after it leaves old files the next change
// sweeps (the merge is finished). Every checkpoint reads the same bytes at
// every moment. The cost is a copy of the merged state and of the files
// above it, where Hyper-V copies only the merged child.
//
// # Change tracking (RCT)
//
// Each disk has a tracking epoch and a sequence; every checkpoint gives
// each disk a new id "rct:<epoch>:<seq>". A file records the id its writes
// start at and, once frozen, the id they end at, so the changes between
// two ids are the extents (sdk/disk/vhdx Extents) of the files between
// them; a merge records the extents of the files it merges in a per-disk
// log first. An id of another epoch (ResetChangeTracking starts a new one)
// or one no file and no log entry reaches is ErrChangeIDReset.
package simhost
