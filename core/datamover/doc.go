// Package datamover moves the blocks of one disk from a source snapshot to
// a replica: it decides which blocks to send, digests and compresses them,
// frames them for the wire, and on the receiving side verifies every block
// against its digest before writing it.
//
// A disk is compared at a fine granularity (the block size, 4 KiB by
// default) so that scattered guest writes cost about what they changed, and
// neighbouring changed blocks are merged into large reads, frames and
// writes. Zero blocks never carry data. Digests of the replica's blocks are
// kept per segment through a DigestStore, so memory stays bounded whatever
// the disk size.
//
// This package holds the data path only. It never decides what a run
// should do (that is the engine's policy), never talks to plugins except
// through sdk.DiskReader and sdk.DiskWriter, and never commits restore
// points or metadata.
package datamover
