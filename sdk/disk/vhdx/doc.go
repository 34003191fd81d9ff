// Package vhdx reads and writes Hyper-V disk images in pure Go, so any
// plugin can keep replicas as VHDX files and read the frozen disks of a
// Hyper-V checkpoint without Windows.
//
// # Formats
//
// VHDX (written from the public [MS-VHDX] specification v1.0): fixed,
// dynamic and differencing disks (.avhdx), read and written, chains of any
// depth (up to 1024 files). A differencing disk names its parent in a
// parent locator; Open tries relative_path (against the child's folder),
// then volume_path and absolute_win32_path on Windows (elsewhere the
// absolute path's file name next to the child, where a copied chain puts
// it), and refuses a parent whose DataWriteGuid is not the child's
// parent_linkage (or parent_linkage2): that parent was written to after
// the child was made, and the chain would read wrong data (ErrParentMismatch).
//
// VHD (the 2006 format): fixed, dynamic and differencing disks, read only.
//
// # Writes and crash safety
//
// A write to an unallocated block allocates a payload block (and, in a
// differencing disk, the chunk's sector bitmap block) past the end of the
// file; blocks never written stay NOT_PRESENT, and a whole-block write of
// zeros to an unallocated block of a disk without a parent allocates
// nothing. In a differencing disk a block written in part is
// PARTIALLY_PRESENT with the written sectors' bits set; a sector written
// in part is completed from the parent first.
//
// Crash safety comes from write ordering, not from the VHDX log: the
// metadata never points at unwritten data. New blocks go where nothing
// points, so until Sync they are invisible. Sync (and Close) then syncs
// the data, writes the sector bitmaps and syncs, writes the BAT entries
// and syncs. A crash at any point leaves a valid file that reads as before
// or after each write (a block written in place may hold either, as on a
// real disk); at worst some space past the last block is leaked. Before
// the first write of a session FileWriteGuid and DataWriteGuid change, in
// the older header first (sequence number + 1), synced, then in the other,
// so one valid current header survives a torn write. The log was not
// chosen because every update here is a single 8-byte BAT entry or bits
// of a bitmap sector that only ever point at synced data: ordering makes
// each of them atomic without writing everything twice, and the file
// stays readable by every tool without a replay. The log stays empty
// (LogGuid zero).
//
// The same ordering lets a file be opened read-only while another handle,
// in this process or another, writes it: Open takes the file's size after
// reading the BAT, so every block the BAT points at is inside it. The
// reader sees the blocks its BAT names; a block allocated after that
// stays invisible to it, and one written in place may read old or new.
//
// Reading a file whose log is not empty (Hyper-V leaves one after a
// crash) replays the active sequence: into the file, then emptying the
// log, when opened for writing; in memory, leaving the file untouched,
// when read-only.
//
// # Hostile input
//
// Every structure (headers, region tables, metadata table and items, parent
// locator, BAT, log entries, VHD footer, dynamic header and BAT) is checked
// for its checksum and bounds, and sizes against the file's size before
// anything is allocated for them. Open refuses non-regular files (a FIFO
// would hang a read). Errors name the file and the field (FormatError) and
// belong to ErrCorrupt or ErrUnsupported.
//
// # Not supported
//
// Writing VHD; creating a VHDX child of a VHD; resizing; VHD Sets (.vhds);
// the log as a write mechanism; trimming (UNMAPPED blocks read as zeros, as
// do UNDEFINED ones); logs longer than 32 MiB. Never write to a disk that
// has children: its DataWriteGuid changes and they no longer open.
package vhdx
