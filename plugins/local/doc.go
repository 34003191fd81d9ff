// Package local is ferry's file-backed reference plugin: a source, a target
// and a repository that keep virtual machines, replicas and metadata as
// plain files in folders. It is the embedded default for the demo and the
// tests, and the model a plugin author copies.
//
// A site is a folder; each VM is a sub-folder holding vm.json (an sdk.VM)
// and raw, sparse disk images disk<N>.img (site.go). The source gives
// frozen snapshots through redirect-on-write delta layers (snapshot.go),
// stored as block stores (blockstore.go) and read as block stacks
// (layers.go), and tracks changes in a per-disk log (tracker.go). The
// target keeps one working image per replica disk and makes restore points
// reverse-incremental: each point owns an undo store of the blocks
// overwritten after it (replica.go, restorepoint.go, failover.go,
// network.go). The repository keeps one file per object with
// compare-and-swap generations (repository.go). cli.go and the cmd_vm_*.go
// files are the person-facing CLI of ferry-plugin-local.
//
// Every metadata file is written atomically (temp file, fsync, rename, fsync
// of the folder), block stores are append-only with checksummed records, and
// every multi-step change is journalled first so that a process killed at
// any moment leaves existing snapshots and restore points intact and the
// interrupted call retry-able. README.md lists the guarantees.
//
// It runs on Unix and on Windows (a Hyper-V host runs a proxy with it).
// The system-specific parts are in _unix.go and _windows.go files:
//
//   - lock: flock(2) on Unix, LockFileEx (exclusive, fail immediately, the
//     same wait-and-retry loop) on Windows.
//   - sparse: data regions from SEEK_DATA/SEEK_HOLE on Unix and from
//     FSCTL_QUERY_ALLOCATED_RANGES on Windows, where new disk images are
//     marked sparse (FSCTL_SET_SPARSE) so that their holes stay holes. A
//     Windows file system without those controls gets the whole file as
//     data and allocated zeros: correct, only slower and larger. The
//     allocated size is st_blocks on Unix and GetCompressedFileSizeW on
//     Windows; a disk's fingerprint uses the inode or the NTFS file index.
//   - durable: Windows cannot fsync a folder, so syncDir does nothing there
//     (NTFS journals its metadata; see durable_windows.go), and a rename
//     over a file that someone has open waits, briefly, for them to close
//     it instead of failing at once.
//
// This package must never import ferry's core (only the sdk module), never
// hold policy (what to copy, when, how long to keep it), and never print on
// stdout when serving the host: go-plugin reads its handshake there.
package local
