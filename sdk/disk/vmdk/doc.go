// Package vmdk reads VMware disks in pure Go: a chain of VMDK descriptors
// from a delta down to its base, as one virtual disk. It exists so a
// plugin can read the disks of an ESXi snapshot, whose deltas no other Go
// library reads, through a datastore mount, without VDDK or HotAdd.
//
// # Formats
//
// Descriptors (text files, or the one a hosted sparse file embeds) from
// VMware's "Virtual Disk Format 1.1" and "5.0" specifications; a
// descriptor's parentFileNameHint is followed and its parentCID must be
// the parent's CID (ErrParentMismatch otherwise). Extents:
//
//   - FLAT and VMFS: raw bytes in a file (a file shorter than its extent
//     reads as zeros past its end);
//   - VMFSSPARSE (and SPARSE) with a "COWD" header: ESXi's vmfsSparse
//     delta, -delta.vmdk, with grain tables of 4096 entries;
//   - SESPARSE: ESXi's seSparse delta, -sesparse.vmdk (VMFS6, disks over
//     2 TB). VMware publishes no specification; the layout is the one qemu
//     reads. Zero and unmapped grains read as zeros. A file whose volatile
//     header asks for a journal replay (ESXi has it open, or did not close
//     it cleanly) is refused: read the disk of a snapshot instead;
//   - SPARSE with a "KDMV" header: hosted sparse (monolithicSparse,
//     twoGbMaxExtentSparse), uncompressed, with zero grains.
//
// Proof: each format is checked byte for byte against qemu-img on chains
// the tests write (flat bases under COWD and seSparse deltas with data,
// zero and unallocated grains) and on monolithicSparse chains qemu-img
// writes itself. No file from a real ESXi host was available: the
// formats are proven against qemu's reading of them, not against ESXi.
//
// # Hostile input
//
// Every size and offset is checked against the file's size before it is
// used or anything is allocated for it; grain directories and tables must
// lie inside their file, chains may not loop and stop at 255 disks, a
// virtual disk stops at 128 TiB, and only regular files are opened (a FIFO
// would hang a read). Extent files must be in their descriptor's folder.
// Errors name the file and the field (FormatError) and belong to
// ErrCorrupt, ErrUnsupported, ErrParentMismatch or ErrNotFound.
//
// This package never writes: not a grain, not a CID.
//
// # Not supported
//
// Compressed grains (streamOptimized), ZERO and VMFSRAW/VMFSRDM extents,
// seSparse journal replay, redundant grain tables (the primary ones are
// read), and writing of any kind.
package vmdk
