// Package replicameta keeps replica metadata in a repository: for each
// replica disk, the digests of the blocks its working state holds, in
// segments, and a manifest naming the current segment objects.
//
// The manifest describes the replica's working state, not a restore point,
// and never claims more than the replica holds: a segment is dropped from
// the manifest before its blocks are written and comes back, with new
// digests, only after they were. A segment the manifest does not name is
// unknown; it is recomputed from the replica itself (or taken as zeros on a
// replica created empty in this run), never guessed. So a run killed at any
// point, or a repository that lost its metadata, costs a re-read, never a
// wrong replica and never a full transfer.
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
// segment unknown, and Distrusted says why. Unknown is never assumed equal:
// it is zeros on a replica created empty in this run, else read back.
//
// Layout (keys escaped with url.PathEscape):
//
//	ferry/v1/<job>/<vm>/disk-<n>/manifest      JSON (version 2), replaced with compare-and-swap
//	ferry/v1/<job>/<vm>/disk-<n>/seg/<i>-<id>  digests of segment i: "FDG1", u32 count, digests, CRC-32C
//
// This package decides nothing about what to copy; it stores what the
// data mover computed.
package replicameta
