// Package replicameta keeps replica metadata in a repository: for each
// replica disk, the digests of the blocks its working state holds, and a
// manifest naming the objects that hold them.
//
// Digests are kept by segment (datamover.DefaultSegmentBlocks blocks). A
// segment's base object holds every digest of it as of one write; delta
// objects hold the digests of the blocks later runs wrote, so that a run
// costs what it changed: a change-tracked run of a few blocks per segment
// writes one small delta per group of segments and loads only the deltas
// (what was written lately), comparing the rest of what change tracking
// named with nothing (it is sent). A run that writes much of a segment (at
// least 1/DenseLoad of it) loads the segment's base too. Once the deltas of
// a segment hold 1/CompactEntries of its blocks, or CompactDeltas deltas
// name it, the next run that writes it folds them into a new base; deltas
// no segment needs are deleted. A run that reads every block (by digests)
// compares them all with base and deltas, and stores only what differs.
// Zero blocks cost a bit in a base and a byte in a delta.
//
// The manifest never claims more than the replica holds: before the data
// mover writes blocks, their byte ranges are recorded as dirty (one write
// of the manifest per group), and they leave the dirty list only with the
// write that stores their new digests, after the replica made them
// durable. Whatever a base or delta says of a dirty block is unknown; a
// segment without a base is unknown. Unknown is never guessed: it is zeros
// on a replica created empty in this run, else read back from the replica
// (only the dirty ranges when the segment's base is known). So a run
// killed at any point, or a repository that lost its metadata, costs a
// re-read of what was being written, never a wrong replica and never a
// full transfer.
//
// The manifest is bound to what it describes: the replica's id and
// incarnation (which its target changes whenever the replica is created
// anew), the restore point the session started from (Base), and whether
// the session finished (then the session's own restore point is what it
// describes). Open trusts it only when the replica's newest restore point
// is that point: a replica deleted, recreated or replaced, a replica or a
// repository restored from an older copy, a run cut short between its
// metadata and its restore point, a disk replaced by a smaller one, a
// manifest of version 1 (which named no replica) or a damaged one (an
// object the repository reports as errdefs.ErrDataLoss) all make every
// segment unknown, and Distrusted says why. A trusted version 2 manifest
// (one whole object per segment) is taken over as it is: its objects
// become the bases, and the next write of the manifest is version 3.
//
// Layout (keys escaped with url.PathEscape):
//
//	ferry/v1/<job>/<vm>/disk-<n>/manifest             JSON (version 3), replaced with compare-and-swap
//	ferry/v1/<job>/<vm>/disk-<n>/seg/<i>-<seq>-<id>   base of segment i: "FDG2", u32 blocks, zero-block bitmap, other digests, CRC-32C
//	ferry/v1/<job>/<vm>/disk-<n>/delta/<seq>-<id>     delta: "FDD1", u32 entries, (uvarint block gap<<1|zero, digest unless zero)..., CRC-32C
//
// Version 2 base objects ("FDG1": u32 count, every digest, CRC-32C) are
// still read. This package decides nothing about what to copy; it stores
// what the data mover computed.
package replicameta
