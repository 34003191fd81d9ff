package vhdx

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
)

// file is what an image needs of its file; *os.File has it, and the fuzz
// tests give an in-memory one.
type file interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

// vhdxFile is one open VHDX file.
type vhdxFile struct {
	f    file
	r    io.ReaderAt // f, or an overlay of a log a read-only open did not replay
	rw   bool
	g    geometry
	p    params
	hdr  header // the current header
	slot int    // which header slot (0 or 1) holds it
	reg  regions
	bat  []uint64

	mu       sync.RWMutex // guards everything below; readers share it
	fileSize int64        // bytes in the file as far as this process knows
	end      int64        // where the next block goes: 1 MiB aligned, past every block in use
	session  bool         // the headers carry this session's write GUIDs
	dirtyBAT map[int64]bool
	// bitmaps caches sector bitmap blocks (1 MiB each) by chunk; bmMu
	// lets readers holding mu.RLock fill it.
	bmMu        sync.Mutex
	bitmaps     map[int64][]byte
	dirtyBitmap map[[2]int64]bool // {chunk, 4 KiB page}
	sector      []byte            // scratch for read-modify-write of one sector
	failed      error             // a failed flush leaves the file's state unknown
}

// openVHDX reads the structures of the VHDX file f. size reports the
// file's size at the moment it is called: once before anything is read,
// to bound every table, and again after the BAT is read, to check the
// blocks the BAT points at (see readBAT).
func openVHDX(f file, size func() (int64, error), rw bool) (*vhdxFile, error) {
	fileSize, err := size()
	if err != nil {
		return nil, err
	}
	v := &vhdxFile{f: f, r: f, rw: rw, fileSize: fileSize, bitmaps: map[int64][]byte{},
		dirtyBAT: map[int64]bool{}, dirtyBitmap: map[[2]int64]bool{}}
	if err := v.readHeaders(); err != nil {
		return nil, err
	}
	if err := v.replayLog(); err != nil {
		return nil, err
	}
	if err := v.readRegions(); err != nil {
		return nil, err
	}
	if err := v.readMetadata(); err != nil {
		return nil, err
	}
	if testHookBeforeBAT != nil {
		testHookBeforeBAT()
	}
	if err := v.readBAT(size); err != nil {
		return nil, err
	}
	v.sector = make([]byte, v.g.sectorSize)
	return v, nil
}

func (v *vhdxFile) readHeaders() error {
	var hs [2]header
	var errs [2]error
	buf := make([]byte, headerSize)
	for i, off := range []int64{header1Offset, header2Offset} {
		field := fmt.Sprintf("header %d", i+1)
		if errs[i] = readFull(v.r, buf, off, field); errs[i] == nil {
			hs[i], errs[i] = parseHeader(buf, field)
		}
	}
	switch {
	case errs[0] != nil && errs[1] != nil:
		return errors.Join(errs[0], errs[1])
	case errs[1] != nil || (errs[0] == nil && hs[0].seq >= hs[1].seq):
		v.hdr, v.slot = hs[0], 0
	default:
		v.hdr, v.slot = hs[1], 1
	}
	return nil
}

// replayLog applies the log's active sequence, if the header says there is
// a log: to the file when writable, else through an in-memory overlay.
func (v *vhdxFile) replayLog() error {
	h := v.hdr
	if h.logGUID.IsZero() || h.logLength == 0 {
		return nil
	}
	if h.logLength > maxLogLength {
		return unsupported("header log length", "%d bytes; logs over %d MiB are not replayed", h.logLength, maxLogLength/mib)
	}
	if int64(h.logOffset)+int64(h.logLength) > v.fileSize {
		return corrupt("header log offset", "[%d, +%d) is past the end of the file (%d bytes)", h.logOffset, h.logLength, v.fileSize)
	}
	log := make([]byte, h.logLength)
	if err := readFull(v.f, log, int64(h.logOffset), "log"); err != nil {
		return err
	}
	r, err := parseLog(log, h.logGUID)
	if err != nil {
		return err
	}
	if len(r.writes) > 0 && int64(r.flushed) > v.fileSize {
		return corrupt("log entry flushed file offset", "%d is past the end of the file (%d bytes): the file was truncated", r.flushed, v.fileSize)
	}
	if len(r.writes) > 0 && int64(r.last) > v.fileSize+maxLogGrowth {
		return corrupt("log entry last file offset", "%d would grow the file (%d bytes) by more than %d MiB", r.last, v.fileSize, maxLogGrowth/mib)
	}
	if !v.rw {
		if len(r.writes) > 0 {
			o := newOverlay(v.f, v.fileSize, r)
			v.r, v.fileSize = o, o.size
		}
		return nil
	}
	for _, w := range r.writes {
		if err := v.applyLogWrite(w); err != nil {
			return fmt.Errorf("replay log: %w", err)
		}
	}
	if len(r.writes) > 0 && int64(r.last) > v.fileSize {
		if err := v.f.Truncate(int64(r.last)); err != nil {
			return fmt.Errorf("replay log: %w", err)
		}
		v.fileSize = int64(r.last)
	}
	if err := v.f.Sync(); err != nil {
		return fmt.Errorf("replay log: %w", err)
	}
	// The log is applied; the header says so, and this session's write
	// GUIDs come with it.
	v.hdr.logGUID = GUID{}
	return v.beginSession()
}

func (v *vhdxFile) applyLogWrite(w logWrite) error {
	if w.data != nil {
		_, err := v.f.WriteAt(w.data, w.off)
		v.fileSize = max(v.fileSize, w.off+w.length)
		return err
	}
	// Zeros past the end of the file are what extending it gives.
	end := w.off + w.length
	if end > v.fileSize {
		if err := v.f.Truncate(end); err != nil {
			return err
		}
		end = v.fileSize
		v.fileSize = w.off + w.length
	}
	for off := w.off; off < end; off += int64(len(zeroBlock)) {
		if _, err := v.f.WriteAt(zeroBlock[:min(int64(len(zeroBlock)), end-off)], off); err != nil {
			return err
		}
	}
	return nil
}

func (v *vhdxFile) readRegions() error {
	buf := make([]byte, regionSize)
	var errs []error
	for i, off := range []int64{region1Offset, region2Offset} {
		field := fmt.Sprintf("region table %d", i+1)
		err := readFull(v.r, buf, off, field)
		if err == nil {
			v.reg, err = parseRegionTable(buf, field)
		}
		if err == nil {
			errs = nil
			break
		}
		if errors.Is(err, ErrUnsupported) {
			return err
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, r := range []struct {
		name string
		reg  region
	}{{"BAT", v.reg.bat}, {"metadata", v.reg.meta}} {
		if int64(r.reg.offset)+int64(r.reg.length) > v.fileSize {
			return corrupt("region table "+r.name+" region", "[%d, +%d) is past the end of the file (%d bytes)", r.reg.offset, r.reg.length, v.fileSize)
		}
		if v.hdr.logLength > 0 && overlaps(r.reg.offset, uint64(r.reg.length), v.hdr.logOffset, uint64(v.hdr.logLength)) {
			return corrupt("region table "+r.name+" region", "overlaps the log")
		}
	}
	return nil
}

func (v *vhdxFile) readMetadata() error {
	base := int64(v.reg.meta.offset)
	table := make([]byte, metaTableSize)
	if err := readFull(v.r, table, base, "metadata table"); err != nil {
		return err
	}
	items, err := parseMetadataTable(table, v.reg.meta.length)
	if err != nil {
		return err
	}
	item := func(id GUID, name string) ([]byte, error) {
		m, ok := items[id]
		if !ok {
			return nil, corrupt("metadata "+name, "missing")
		}
		b := make([]byte, m.length)
		return b, readFull(v.r, b, base+int64(m.offset), "metadata "+name)
	}
	b, err := item(metaFileParams, "file parameters")
	if err != nil {
		return err
	}
	if err := parseFileParams(b, &v.p); err != nil {
		return err
	}
	if b, err = item(metaVirtualSize, "virtual disk size"); err != nil {
		return err
	}
	if len(b) != 8 {
		return corrupt("metadata virtual disk size", "%d bytes, want 8", len(b))
	}
	v.p.size = binary.LittleEndian.Uint64(b)
	if b, err = item(metaPage83, "virtual disk id"); err != nil {
		return err
	}
	if len(b) != 16 {
		return corrupt("metadata virtual disk id", "%d bytes, want 16", len(b))
	}
	copy(v.p.page83[:], b)
	if b, err = item(metaLogicalSect, "logical sector size"); err != nil {
		return err
	}
	if v.p.logicalSector, err = parseSectorSize(b, "metadata logical sector size"); err != nil {
		return err
	}
	if b, err = item(metaPhysicalSect, "physical sector size"); err != nil {
		return err
	}
	if v.p.physicalSector, err = parseSectorSize(b, "metadata physical sector size"); err != nil {
		return err
	}
	if err := checkParams(&v.p); err != nil {
		return err
	}
	if v.p.hasParent {
		if b, err = item(metaParentLoc, "parent locator"); err != nil {
			return err
		}
		if v.p.parent, err = parseParentLocator(b); err != nil {
			return err
		}
	}
	v.g = newGeometry(v.p.size, v.p.blockSize, v.p.logicalSector, v.p.hasParent)
	return nil
}

// testHookBeforeBAT, when set by a test, runs when an open has read
// everything but the BAT (a test writes through another handle there).
var testHookBeforeBAT func()

// readBAT reads the BAT and checks each block it points at against the
// file's size, which it asks size for after reading the BAT. Another
// handle may be writing the file meanwhile (a host reads a disk's size
// while a replica's writer fills it, in this process or another): a
// writer extends the file before any BAT entry points into the new space
// (flush syncs the data, then writes the BAT), so a size taken after the
// BAT covers every entry read, where one taken when the open began may
// not. The file only grows while it is written; the larger size counts.
func (v *vhdxFile) readBAT(size func() (int64, error)) error {
	g := &v.g
	if g.batEntries*8 > int64(v.reg.bat.length) {
		return corrupt("region table BAT region length", "%d bytes hold fewer than the %d entries the disk needs", v.reg.bat.length, g.batEntries)
	}
	raw := make([]byte, g.batEntries*8)
	if err := readFull(v.r, raw, int64(v.reg.bat.offset), "BAT"); err != nil {
		return err
	}
	now, err := size()
	if err != nil {
		return fmt.Errorf("size after reading the BAT: %w", err)
	}
	v.fileSize = max(v.fileSize, now)
	v.bat = make([]uint64, g.batEntries)
	for i := range v.bat {
		v.bat[i] = binary.LittleEndian.Uint64(raw[8*i:])
	}
	v.end = roundUp(v.fileSize, mib)
	var used []span
	var claimed int64
	inUse := func(off, n int64, field string) error {
		if claimed += n; claimed > v.fileSize {
			return corrupt(field, "the BAT claims more blocks than the file (%d bytes) holds", v.fileSize)
		}
		used = append(used, span{off, n, field})
		if off < mib || off+n > v.fileSize {
			return corrupt(field, "[%d, +%d) is outside the file's data area [1 MiB, %d)", off, n, v.fileSize)
		}
		for _, r := range []region{v.reg.bat, v.reg.meta, {v.hdr.logOffset, v.hdr.logLength}} {
			if overlaps(uint64(off), uint64(n), r.offset, uint64(r.length)) {
				return corrupt(field, "[%d, +%d) overlaps a region or the log", off, n)
			}
		}
		v.end = max(v.end, off+n)
		return nil
	}
	for blk := range g.dataBlocks {
		idx := g.payloadIndex(blk)
		e := v.bat[idx]
		field := fmt.Sprintf("BAT entry %d (block %d)", idx, blk)
		switch batState(e) {
		case blockNotPresent, blockUndefined, blockZero, blockUnmapped:
		case blockFullPresent:
			if err := inUse(batOffset(e), g.blockSize, field); err != nil {
				return err
			}
		case blockPartPresent:
			if !g.differencing {
				return corrupt(field, "partially present in a disk without a parent")
			}
			if batState(v.bat[g.bitmapIndex(blk/g.chunkRatio)]) != bitmapPresent {
				return corrupt(field, "partially present, but its chunk has no sector bitmap")
			}
			if err := inUse(batOffset(e), g.blockSize, field); err != nil {
				return err
			}
		default:
			return corrupt(field, "unknown state %d", batState(e))
		}
	}
	if g.differencing {
		for c := range g.batEntries / (g.chunkRatio + 1) {
			idx := g.bitmapIndex(c)
			e := v.bat[idx]
			field := fmt.Sprintf("BAT entry %d (sector bitmap %d)", idx, c)
			switch batState(e) {
			case bitmapNotPresent:
			case bitmapPresent:
				if err := inUse(batOffset(e), bitmapBlock, field); err != nil {
					return err
				}
			default:
				return corrupt(field, "unknown state %d", batState(e))
			}
		}
	}
	v.end = roundUp(v.end, mib)
	// Two entries sharing file space would let a small hostile file
	// claim more data (and bitmap memory) than it holds.
	return checkOverlaps(used)
}

// span is a range of the file that some table entry claims.
type span struct {
	off, n int64
	field  string
}

// checkOverlaps reports two spans that share a byte.
func checkOverlaps(s []span) error {
	slices.SortFunc(s, func(a, b span) int { return cmp.Compare(a.off, b.off) })
	for i := 1; i < len(s); i++ {
		if s[i].off < s[i-1].off+s[i-1].n {
			return corrupt(s[i].field, "[%d, +%d) overlaps %s", s[i].off, s[i].n, s[i-1].field)
		}
	}
	return nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

func (v *vhdxFile) info() Info {
	return Info{
		Format:             FormatVHDX,
		Size:               v.g.size,
		BlockSize:          v.g.blockSize,
		LogicalSectorSize:  v.g.sectorSize,
		PhysicalSectorSize: int64(v.p.physicalSector),
		Fixed:              v.p.leaveAllocated,
		Differencing:       v.p.hasParent,
		DataWriteGUID:      v.dataWriteGUID(),
		VirtualDiskID:      v.p.page83,
	}
}

func (v *vhdxFile) dataWriteGUID() GUID {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.hdr.dataWrite
}

func (v *vhdxFile) close() error { return v.f.Close() }

// bitmap returns the sector bitmap of chunk c, reading it on first use. A
// chunk without a bitmap block reads as all clear.
func (v *vhdxFile) bitmap(c int64) ([]byte, error) {
	v.bmMu.Lock()
	defer v.bmMu.Unlock()
	if b, ok := v.bitmaps[c]; ok {
		return b, nil
	}
	b := make([]byte, bitmapBlock)
	if e := v.bat[v.g.bitmapIndex(c)]; batState(e) == bitmapPresent {
		if err := readFull(v.r, b, batOffset(e), fmt.Sprintf("sector bitmap %d", c)); err != nil {
			return nil, err
		}
	}
	v.bitmaps[c] = b
	return b, nil
}

// sectorRun reports whether sector s of block blk is present in this file,
// and how many sectors from s on, up to limit, share that answer.
func sectorRun(bm []byte, first, limit int64) (bool, int64) {
	bit := func(i int64) bool { return bm[i>>3]&(1<<(i&7)) != 0 }
	set := bit(first)
	full := byte(0)
	if set {
		full = 0xff
	}
	i := first
	end := first + limit
	for i < end {
		if i&7 == 0 && i+8 <= end && bm[i>>3] == full {
			i += 8
			continue
		}
		if bit(i) != set {
			break
		}
		i++
	}
	return set, i - first
}

func (v *vhdxFile) readAt(p []byte, off int64, below func([]byte, int64) error) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	g := &v.g
	for len(p) > 0 {
		blk := off / g.blockSize
		in := off % g.blockSize
		n := min(int64(len(p)), g.blockSize-in)
		e := v.bat[g.payloadIndex(blk)]
		var err error
		switch batState(e) {
		case blockFullPresent:
			err = readFull(v.r, p[:n], batOffset(e)+in, fmt.Sprintf("block %d", blk))
		case blockPartPresent:
			err = v.readPartial(p[:n], blk, batOffset(e), in, below)
		case blockNotPresent:
			if g.differencing {
				err = below(p[:n], off)
			} else {
				clear(p[:n])
			}
		default: // zero, unmapped, undefined
			clear(p[:n])
		}
		if err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

// readPartial reads from a partially present block: the sectors its bitmap
// marks from the file, the others from below.
func (v *vhdxFile) readPartial(p []byte, blk, fileOff, in int64, below func([]byte, int64) error) error {
	g := &v.g
	bm, err := v.bitmap(blk / g.chunkRatio)
	if err != nil {
		return err
	}
	base := (blk % g.chunkRatio) * g.sectorsPerBlock() // first bit of the block
	blockStart := blk * g.blockSize
	for len(p) > 0 {
		s := in / g.sectorSize
		set, run := sectorRun(bm, base+s, g.sectorsPerBlock()-s)
		n := min(int64(len(p)), (s+run)*g.sectorSize-in)
		if set {
			err = readFull(v.r, p[:n], fileOff+in, fmt.Sprintf("block %d", blk))
		} else {
			err = below(p[:n], blockStart+in)
		}
		if err != nil {
			return err
		}
		p = p[n:]
		in += n
	}
	return nil
}

func (v *vhdxFile) extents() ([]Extent, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	g := &v.g
	var out []Extent
	add := func(off, n int64) {
		n = min(n, g.size-off)
		if k := len(out); k > 0 && out[k-1].End() == off {
			out[k-1].Length += n
			return
		}
		out = append(out, Extent{off, n})
	}
	for blk := range g.dataBlocks {
		e := v.bat[g.payloadIndex(blk)]
		start := blk * g.blockSize
		switch st := batState(e); {
		case st == blockFullPresent:
			add(start, g.blockSize)
		case st == blockPartPresent:
			bm, err := v.bitmap(blk / g.chunkRatio)
			if err != nil {
				return nil, err
			}
			base := (blk % g.chunkRatio) * g.sectorsPerBlock()
			for s := int64(0); s < g.sectorsPerBlock(); {
				set, run := sectorRun(bm, base+s, g.sectorsPerBlock()-s)
				if set && start+s*g.sectorSize < g.size {
					add(start+s*g.sectorSize, run*g.sectorSize)
				}
				s += run
			}
		case st != blockNotPresent && g.differencing:
			add(start, g.blockSize) // zero blocks hide the parent
		}
	}
	return out, nil
}

// The write path. Ordering keeps the file consistent at every moment: new
// payload and sector bitmap blocks go past the end of the file, where
// nothing points; flush then syncs the data, writes the bitmaps, syncs,
// and only then writes the BAT entries that point at them, and syncs.

// beginSession gives the headers fresh write GUIDs before the first change
// of this session, as [MS-VHDX] asks: FileWriteGuid for any write,
// DataWriteGuid for a change the guest can see (every write here is).
func (v *vhdxFile) beginSession() error {
	if v.session {
		return nil
	}
	h := v.hdr
	h.fileWrite, h.dataWrite = newGUID(), newGUID()
	if err := v.writeHeaders(h); err != nil {
		return err
	}
	v.session = true
	return nil
}

// writeHeaders writes h into the older slot with the next sequence number,
// syncs, then into the other slot, so both headers stay valid and a torn
// write of either leaves the other.
func (v *vhdxFile) writeHeaders(h header) error {
	buf := make([]byte, headerSize)
	for range 2 {
		h.seq = v.hdr.seq + 1
		slot := 1 - v.slot
		h.marshal(buf)
		if _, err := v.f.WriteAt(buf, []int64{header1Offset, header2Offset}[slot]); err != nil {
			return fmt.Errorf("write header %d: %w", slot+1, err)
		}
		if err := v.f.Sync(); err != nil {
			return fmt.Errorf("write header %d: %w", slot+1, err)
		}
		v.hdr, v.slot = h, slot
	}
	return nil
}

func (v *vhdxFile) writeAt(p []byte, off int64, below func([]byte, int64) error) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.failed != nil {
		return v.failed
	}
	if err := v.beginSession(); err != nil {
		return err
	}
	g := &v.g
	for len(p) > 0 {
		blk := off / g.blockSize
		in := off % g.blockSize
		n := min(int64(len(p)), g.blockSize-in)
		if err := v.writeBlock(blk, in, p[:n], below); err != nil {
			return err
		}
		p = p[n:]
		off += n
	}
	return nil
}

func (v *vhdxFile) writeBlock(blk, in int64, p []byte, below func([]byte, int64) error) error {
	g := &v.g
	idx := g.payloadIndex(blk)
	e := v.bat[idx]
	blockLen := min(g.blockSize, g.size-blk*g.blockSize)
	whole := in == 0 && int64(len(p)) == blockLen
	switch st := batState(e); st {
	case blockFullPresent:
		return v.pwrite(p, batOffset(e)+in)
	case blockPartPresent:
		return v.writeSectors(blk, batOffset(e), in, p, below)
	case blockNotPresent, blockZero:
		if !g.differencing && whole && allZero(p) {
			return nil // reads as zeros already
		}
	}
	// Allocate the block past the end of the file; a partial write leaves
	// the rest of it zero.
	off := v.end
	v.end += g.blockSize
	if !(in == 0 && int64(len(p)) == g.blockSize) {
		if err := v.extend(off + g.blockSize); err != nil {
			return err
		}
	}
	if !g.differencing || batState(e) != blockNotPresent || whole {
		// The whole block is defined by this file: what p does not
		// cover reads as zeros.
		if err := v.pwrite(p, off+in); err != nil {
			return err
		}
		if g.differencing {
			if err := v.setBits(blk, 0, g.sectorsPerBlock(), true); err != nil {
				return err
			}
		}
		v.setBAT(idx, batEntry(blockFullPresent, off))
		return nil
	}
	// A new block over the parent: only the sectors written are this
	// file's. Bits left set by a crashed session are cleared first.
	if err := v.setBits(blk, 0, g.sectorsPerBlock(), false); err != nil {
		return err
	}
	if err := v.writeSectors(blk, off, in, p, below); err != nil {
		return err
	}
	v.setBAT(idx, batEntry(blockPartPresent, off))
	return nil
}

// writeSectors writes p at in into a block of a differencing disk whose
// payload is at fileOff, setting the bits of the sectors written. A sector
// written only in part, and not present yet, is completed from below.
func (v *vhdxFile) writeSectors(blk, fileOff, in int64, p []byte, below func([]byte, int64) error) error {
	g := &v.g
	ss := g.sectorSize
	bm, err := v.bitmap(blk / g.chunkRatio)
	if err != nil {
		return err
	}
	base := (blk % g.chunkRatio) * g.sectorsPerBlock()
	edge := func(in int64, p []byte) error {
		s := in / ss
		if present, _ := sectorRun(bm, base+s, 1); present {
			return v.pwrite(p, fileOff+in)
		}
		if err := below(v.sector, blk*g.blockSize+s*ss); err != nil {
			return err
		}
		copy(v.sector[in-s*ss:], p)
		if err := v.pwrite(v.sector, fileOff+s*ss); err != nil {
			return err
		}
		return v.setBits(blk, s, 1, true)
	}
	if head := in % ss; head != 0 || int64(len(p)) < ss {
		n := min(int64(len(p)), ss-head)
		if err := edge(in, p[:n]); err != nil {
			return err
		}
		in += n
		p = p[n:]
	}
	if mid := int64(len(p)) / ss * ss; mid > 0 {
		if err := v.pwrite(p[:mid], fileOff+in); err != nil {
			return err
		}
		if err := v.setBits(blk, in/ss, mid/ss, true); err != nil {
			return err
		}
		in += mid
		p = p[mid:]
	}
	if len(p) > 0 {
		return edge(in, p)
	}
	return nil
}

// setBits sets or clears n bits of block blk from sector s in its chunk's
// bitmap, allocating the bitmap block if the chunk has none yet.
func (v *vhdxFile) setBits(blk, s, n int64, set bool) error {
	g := &v.g
	c := blk / g.chunkRatio
	if e := v.bat[g.bitmapIndex(c)]; batState(e) != bitmapPresent {
		if !set {
			return nil // no bitmap block: every bit is clear
		}
		off := v.end
		v.end += bitmapBlock
		if err := v.extend(off + bitmapBlock); err != nil {
			return err
		}
		v.setBAT(g.bitmapIndex(c), batEntry(bitmapPresent, off))
	}
	bm, err := v.bitmap(c)
	if err != nil {
		return err
	}
	first := (blk%g.chunkRatio)*g.sectorsPerBlock() + s
	for i := first; i < first+n; {
		if i&7 == 0 && i+8 <= first+n {
			b := byte(0)
			if set {
				b = 0xff
			}
			bm[i>>3] = b
			i += 8
			continue
		}
		if set {
			bm[i>>3] |= 1 << (i & 7)
		} else {
			bm[i>>3] &^= 1 << (i & 7)
		}
		i++
	}
	for pg := (first >> 3) / logSector; pg <= ((first+n-1)>>3)/logSector; pg++ {
		v.dirtyBitmap[[2]int64{c, pg}] = true
	}
	return nil
}

func (v *vhdxFile) setBAT(idx int64, e uint64) {
	v.bat[idx] = e
	v.dirtyBAT[idx*8/logSector] = true
}

func (v *vhdxFile) extend(size int64) error {
	if size <= v.fileSize {
		return nil
	}
	if err := v.f.Truncate(size); err != nil {
		return err
	}
	v.fileSize = size
	return nil
}

func (v *vhdxFile) pwrite(p []byte, off int64) error {
	if _, err := v.f.WriteAt(p, off); err != nil {
		return err
	}
	v.fileSize = max(v.fileSize, off+int64(len(p)))
	return nil
}

// flush makes the writes so far durable, metadata last.
func (v *vhdxFile) flush() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.failed != nil {
		return v.failed
	}
	if err := v.flushLocked(); err != nil {
		v.failed = fmt.Errorf("an earlier flush failed, the image must be reopened: %w", err)
		return err
	}
	return nil
}

// testHookFlush, when set by a test, runs at each step of flush; an error
// stops the flush there, as a crash would.
var testHookFlush func(step string) error

func (v *vhdxFile) flushLocked() error {
	hook := func(step string) error {
		if testHookFlush == nil {
			return nil
		}
		return testHookFlush(step)
	}
	if err := v.f.Sync(); err != nil {
		return err
	}
	if err := hook("data synced"); err != nil {
		return err
	}
	if len(v.dirtyBitmap) > 0 {
		keys := make([][2]int64, 0, len(v.dirtyBitmap))
		for k := range v.dirtyBitmap {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b [2]int64) int {
			if a[0] != b[0] {
				return int(a[0] - b[0])
			}
			return int(a[1] - b[1])
		})
		for _, k := range keys {
			bm := v.bitmaps[k[0]]
			off := batOffset(v.bat[v.g.bitmapIndex(k[0])]) + k[1]*logSector
			if _, err := v.f.WriteAt(bm[k[1]*logSector:(k[1]+1)*logSector], off); err != nil {
				return err
			}
		}
		if err := v.f.Sync(); err != nil {
			return err
		}
		clear(v.dirtyBitmap)
		if err := hook("bitmaps synced"); err != nil {
			return err
		}
	}
	if len(v.dirtyBAT) > 0 {
		pages := make([]int64, 0, len(v.dirtyBAT))
		for pg := range v.dirtyBAT {
			pages = append(pages, pg)
		}
		slices.Sort(pages)
		const perPage = logSector / 8
		var buf []byte
		for i := 0; i < len(pages); {
			j := i + 1
			for j < len(pages) && pages[j] == pages[j-1]+1 {
				j++
			}
			first := pages[i] * perPage
			last := min((pages[j-1]+1)*perPage, int64(len(v.bat)))
			buf = buf[:0]
			for _, e := range v.bat[first:last] {
				buf = binary.LittleEndian.AppendUint64(buf, e)
			}
			if _, err := v.f.WriteAt(buf, int64(v.reg.bat.offset)+first*8); err != nil {
				return err
			}
			if err := hook("BAT run written"); err != nil {
				return err
			}
			i = j
		}
		if err := v.f.Sync(); err != nil {
			return err
		}
		clear(v.dirtyBAT)
	}
	return nil
}
