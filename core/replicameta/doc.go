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
// Layout (keys escaped with url.PathEscape):
//
//	ferry/v1/<job>/<vm>/disk-<n>/manifest      JSON, replaced with compare-and-swap
//	ferry/v1/<job>/<vm>/disk-<n>/seg/<i>-<id>  digests of segment i: "FDG1", u32 count, digests, CRC-32C
//
// This package decides nothing about what to copy; it stores what the
// data mover computed.
package replicameta
