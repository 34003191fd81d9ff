package vhdx

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math/bits"
	"unicode/utf16"
)

// On-disk layout of VHDX, from [MS-VHDX] v1.0. All integers are
// little-endian; checksums are CRC-32C over the structure with its checksum
// field zeroed.
const (
	kib = 1 << 10
	mib = 1 << 20

	fileIDSignature = "vhdxfile"
	headerSignature = "head"
	regionSignature = "regi"
	metaSignature   = "metadata"

	header1Offset = 64 * kib
	header2Offset = 128 * kib
	region1Offset = 192 * kib
	region2Offset = 256 * kib
	headerSize    = 4 * kib  // checksummed part of a header
	regionSize    = 64 * kib // checksummed region table
	metaTableSize = 64 * kib // metadata table at the start of its region

	maxRegionEntries = 2047
	maxMetaEntries   = 2047
	maxMetaItemSize  = 1 * mib

	minBlockSize   = 1 * mib
	maxBlockSize   = 256 * mib
	maxVirtualSize = 64 << 40
	bitmapBlock    = 1 * mib // a sector bitmap block covers 2^23 sectors

	// BAT entry states (bits 0-2) and the file offset in MiB (bits 20-63).
	blockNotPresent  = 0
	blockUndefined   = 1
	blockZero        = 2
	blockUnmapped    = 3
	blockFullPresent = 6
	blockPartPresent = 7
	bitmapNotPresent = 0
	bitmapPresent    = 6
	batStateMask     = 7
	batOffsetShift   = 20
)

var (
	regionBAT      = mustGUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
	regionMetadata = mustGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

	metaFileParams   = mustGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
	metaVirtualSize  = mustGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
	metaPage83       = mustGUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
	metaLogicalSect  = mustGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
	metaPhysicalSect = mustGUID("CDA348C7-445D-4471-9CC9-E9885251C556")
	metaParentLoc    = mustGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

	parentLocatorType = mustGUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum is the CRC-32C of b with the four bytes at off taken as zero.
func checksum(b []byte, off int) uint32 {
	var zero [4]byte
	c := crc32.Update(0, castagnoli, b[:off])
	c = crc32.Update(c, castagnoli, zero[:])
	return crc32.Update(c, castagnoli, b[off+4:])
}

// header is one of the two VHDX headers.
type header struct {
	seq        uint64
	fileWrite  GUID
	dataWrite  GUID
	logGUID    GUID
	logVersion uint16
	version    uint16
	logLength  uint32
	logOffset  uint64
}

func parseHeader(b []byte, field string) (header, error) {
	var h header
	if len(b) < headerSize {
		return h, corrupt(field, "%d bytes, want %d", len(b), headerSize)
	}
	b = b[:headerSize]
	if string(b[0:4]) != headerSignature {
		return h, corrupt(field+" signature", "%q, want %q", b[0:4], headerSignature)
	}
	if got, want := binary.LittleEndian.Uint32(b[4:8]), checksum(b, 4); got != want {
		return h, corrupt(field+" checksum", "%#08x, computed %#08x", got, want)
	}
	h.seq = binary.LittleEndian.Uint64(b[8:16])
	copy(h.fileWrite[:], b[16:32])
	copy(h.dataWrite[:], b[32:48])
	copy(h.logGUID[:], b[48:64])
	h.logVersion = binary.LittleEndian.Uint16(b[64:66])
	h.version = binary.LittleEndian.Uint16(b[66:68])
	h.logLength = binary.LittleEndian.Uint32(b[68:72])
	h.logOffset = binary.LittleEndian.Uint64(b[72:80])
	if h.version != 1 {
		return h, unsupported(field+" version", "%d, want 1", h.version)
	}
	if h.logVersion != 0 {
		return h, unsupported(field+" log version", "%d, want 0", h.logVersion)
	}
	if h.logLength%mib != 0 {
		return h, corrupt(field+" log length", "%d is not a multiple of 1 MiB", h.logLength)
	}
	if h.logOffset%mib != 0 || (h.logLength > 0 && h.logOffset < mib) {
		return h, corrupt(field+" log offset", "%d is not 1 MiB aligned past the header section", h.logOffset)
	}
	return h, nil
}

func (h *header) marshal(b []byte) {
	clear(b[:headerSize])
	copy(b[0:4], headerSignature)
	binary.LittleEndian.PutUint64(b[8:16], h.seq)
	copy(b[16:32], h.fileWrite[:])
	copy(b[32:48], h.dataWrite[:])
	copy(b[48:64], h.logGUID[:])
	binary.LittleEndian.PutUint16(b[64:66], h.logVersion)
	binary.LittleEndian.PutUint16(b[66:68], h.version)
	binary.LittleEndian.PutUint32(b[68:72], h.logLength)
	binary.LittleEndian.PutUint64(b[72:80], h.logOffset)
	binary.LittleEndian.PutUint32(b[4:8], checksum(b[:headerSize], 4))
}

// region is one entry of the region table.
type region struct {
	offset uint64
	length uint32
}

// regions is what a region table says about the two regions we need.
type regions struct {
	bat, meta region
}

func parseRegionTable(b []byte, field string) (regions, error) {
	var r regions
	if len(b) < regionSize {
		return r, corrupt(field, "%d bytes, want %d", len(b), regionSize)
	}
	b = b[:regionSize]
	if string(b[0:4]) != regionSignature {
		return r, corrupt(field+" signature", "%q, want %q", b[0:4], regionSignature)
	}
	if got, want := binary.LittleEndian.Uint32(b[4:8]), checksum(b, 4); got != want {
		return r, corrupt(field+" checksum", "%#08x, computed %#08x", got, want)
	}
	n := binary.LittleEndian.Uint32(b[8:12])
	if n > maxRegionEntries {
		return r, corrupt(field+" entry count", "%d, at most %d", n, maxRegionEntries)
	}
	seen := map[GUID]bool{}
	for i := range int(n) {
		e := b[16+32*i : 16+32*(i+1)]
		var id GUID
		copy(id[:], e[0:16])
		reg := region{offset: binary.LittleEndian.Uint64(e[16:24]), length: binary.LittleEndian.Uint32(e[24:28])}
		required := binary.LittleEndian.Uint32(e[28:32])&1 != 0
		f := field + " entry " + id.String()
		if seen[id] {
			return r, corrupt(f, "appears twice")
		}
		seen[id] = true
		switch id {
		case regionBAT:
			r.bat = reg
		case regionMetadata:
			r.meta = reg
		default:
			if required {
				return r, unsupported(f, "unknown required region")
			}
			continue
		}
		if reg.offset%mib != 0 || reg.offset < mib {
			return r, corrupt(f+" offset", "%d is not 1 MiB aligned past the header section", reg.offset)
		}
		if reg.length == 0 || reg.length%mib != 0 {
			return r, corrupt(f+" length", "%d is not a positive multiple of 1 MiB", reg.length)
		}
	}
	if !seen[regionBAT] {
		return r, corrupt(field, "no BAT region")
	}
	if !seen[regionMetadata] {
		return r, corrupt(field, "no metadata region")
	}
	if overlaps(r.bat.offset, uint64(r.bat.length), r.meta.offset, uint64(r.meta.length)) {
		return r, corrupt(field, "BAT and metadata regions overlap")
	}
	return r, nil
}

func overlaps(a, alen, b, blen uint64) bool { return a < b+blen && b < a+alen }

func marshalRegionTable(b []byte, r regions) {
	clear(b[:regionSize])
	copy(b[0:4], regionSignature)
	binary.LittleEndian.PutUint32(b[8:12], 2)
	for i, e := range []struct {
		id  GUID
		reg region
	}{{regionBAT, r.bat}, {regionMetadata, r.meta}} {
		p := b[16+32*i:]
		copy(p[0:16], e.id[:])
		binary.LittleEndian.PutUint64(p[16:24], e.reg.offset)
		binary.LittleEndian.PutUint32(p[24:28], e.reg.length)
		binary.LittleEndian.PutUint32(p[28:32], 1)
	}
	binary.LittleEndian.PutUint32(b[4:8], checksum(b[:regionSize], 4))
}

// metaEntry locates one metadata item inside the metadata region.
type metaEntry struct {
	offset, length uint32
}

// Metadata entry flags.
const (
	metaIsUser        = 1
	metaIsVirtualDisk = 2
	metaIsRequired    = 4
)

// parseMetadataTable reads the table at the start of the metadata region
// (regionLen bytes long) and returns the known items it locates.
func parseMetadataTable(b []byte, regionLen uint32) (map[GUID]metaEntry, error) {
	const field = "metadata table"
	if len(b) < metaTableSize {
		return nil, corrupt(field, "%d bytes, want %d", len(b), metaTableSize)
	}
	if string(b[0:8]) != metaSignature {
		return nil, corrupt(field+" signature", "%q, want %q", b[0:8], metaSignature)
	}
	n := binary.LittleEndian.Uint16(b[10:12])
	if n > maxMetaEntries {
		return nil, corrupt(field+" entry count", "%d, at most %d", n, maxMetaEntries)
	}
	known := map[GUID]bool{metaFileParams: true, metaVirtualSize: true, metaPage83: true,
		metaLogicalSect: true, metaPhysicalSect: true, metaParentLoc: true}
	items := map[GUID]metaEntry{}
	type key struct {
		id   GUID
		user bool
	}
	seen := map[key]bool{}
	for i := range int(n) {
		e := b[32+32*i : 32+32*(i+1)]
		var id GUID
		copy(id[:], e[0:16])
		m := metaEntry{offset: binary.LittleEndian.Uint32(e[16:20]), length: binary.LittleEndian.Uint32(e[20:24])}
		flags := binary.LittleEndian.Uint32(e[24:28])
		f := field + " item " + id.String()
		k := key{id, flags&metaIsUser != 0}
		if seen[k] {
			return nil, corrupt(f, "appears twice")
		}
		seen[k] = true
		if m.length > maxMetaItemSize {
			return nil, corrupt(f+" length", "%d, at most 1 MiB", m.length)
		}
		if m.length == 0 && m.offset != 0 {
			return nil, corrupt(f+" offset", "%d for an empty item, want 0", m.offset)
		}
		if m.length > 0 && (m.offset < metaTableSize || uint64(m.offset)+uint64(m.length) > uint64(regionLen)) {
			return nil, corrupt(f+" offset", "[%d, +%d) is outside the region's items [64 KiB, %d)", m.offset, m.length, regionLen)
		}
		if flags&metaIsUser == 0 && known[id] {
			items[id] = m
			continue
		}
		if flags&metaIsRequired != 0 {
			return nil, unsupported(f, "unknown required metadata item")
		}
	}
	return items, nil
}

// params are the metadata items every VHDX has, plus the parent locator.
type params struct {
	blockSize      uint32
	leaveAllocated bool
	hasParent      bool
	size           uint64
	page83         GUID
	logicalSector  uint32
	physicalSector uint32
	parent         map[string]string // parent locator entries, differencing only
}

func parseFileParams(b []byte, p *params) error {
	const field = "metadata file parameters"
	if len(b) != 8 {
		return corrupt(field, "%d bytes, want 8", len(b))
	}
	p.blockSize = binary.LittleEndian.Uint32(b[0:4])
	flags := binary.LittleEndian.Uint32(b[4:8])
	p.leaveAllocated = flags&1 != 0
	p.hasParent = flags&2 != 0
	if p.blockSize < minBlockSize || p.blockSize > maxBlockSize || bits.OnesCount32(p.blockSize) != 1 {
		return corrupt(field+" block size", "%d is not a power of two from 1 MiB to 256 MiB", p.blockSize)
	}
	return nil
}

func parseSectorSize(b []byte, field string) (uint32, error) {
	if len(b) != 4 {
		return 0, corrupt(field, "%d bytes, want 4", len(b))
	}
	v := binary.LittleEndian.Uint32(b)
	if v != 512 && v != 4096 {
		return 0, corrupt(field, "%d, want 512 or 4096", v)
	}
	return v, nil
}

// checkParams checks the items against each other once all are read.
func checkParams(p *params) error {
	if p.size == 0 || p.size > maxVirtualSize {
		return corrupt("metadata virtual disk size", "%d is not in (0, 64 TiB]", p.size)
	}
	if p.size%uint64(p.logicalSector) != 0 {
		return corrupt("metadata virtual disk size", "%d is not a multiple of the logical sector size %d", p.size, p.logicalSector)
	}
	return nil
}

// parseParentLocator decodes a parent locator item into its key/value
// pairs.
func parseParentLocator(b []byte) (map[string]string, error) {
	const field = "metadata parent locator"
	if len(b) < 20 {
		return nil, corrupt(field, "%d bytes, want at least 20", len(b))
	}
	var typ GUID
	copy(typ[:], b[0:16])
	if typ != parentLocatorType {
		return nil, unsupported(field+" type", "%s, want %s", typ, parentLocatorType)
	}
	n := int(binary.LittleEndian.Uint16(b[18:20]))
	if 20+12*n > len(b) {
		return nil, corrupt(field+" key/value count", "%d entries do not fit in %d bytes", n, len(b))
	}
	kv := make(map[string]string, n)
	for i := range n {
		e := b[20+12*i:]
		str := func(what string, off uint32, n uint16) (string, error) {
			if n == 0 || n%2 != 0 || uint64(off)+uint64(n) > uint64(len(b)) || off < 20 {
				return "", corrupt(field+" "+what, "entry %d: [%d, +%d) is not an even, non-empty range inside the item (%d bytes)", i, off, n, len(b))
			}
			return decodeUTF16LE(b[off : off+uint32(n)]), nil
		}
		k, err := str("key", binary.LittleEndian.Uint32(e[0:4]), binary.LittleEndian.Uint16(e[8:10]))
		if err != nil {
			return nil, err
		}
		v, err := str("value", binary.LittleEndian.Uint32(e[4:8]), binary.LittleEndian.Uint16(e[10:12]))
		if err != nil {
			return nil, err
		}
		if _, dup := kv[k]; dup {
			return nil, corrupt(field+" key", "%q appears twice", k)
		}
		kv[k] = v
	}
	if _, ok := kv["parent_linkage"]; !ok {
		return nil, corrupt(field, "no parent_linkage entry")
	}
	return kv, nil
}

// marshalParentLocator encodes key/value pairs in the order given.
func marshalParentLocator(keys, values []string) []byte {
	var strs bytes.Buffer
	head := make([]byte, 20+12*len(keys))
	copy(head[0:16], parentLocatorType[:])
	binary.LittleEndian.PutUint16(head[18:20], uint16(len(keys)))
	base := uint32(len(head))
	for i := range keys {
		e := head[20+12*i:]
		k, v := encodeUTF16LE(keys[i]), encodeUTF16LE(values[i])
		binary.LittleEndian.PutUint32(e[0:4], base+uint32(strs.Len()))
		strs.Write(k)
		binary.LittleEndian.PutUint32(e[4:8], base+uint32(strs.Len()))
		strs.Write(v)
		binary.LittleEndian.PutUint16(e[8:10], uint16(len(k)))
		binary.LittleEndian.PutUint16(e[10:12], uint16(len(v)))
	}
	return append(head, strs.Bytes()...)
}

func decodeUTF16LE(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

func encodeUTF16LE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// geometry is the arithmetic of the BAT for one disk.
type geometry struct {
	size         int64 // virtual size in bytes
	blockSize    int64
	sectorSize   int64 // logical
	chunkRatio   int64 // payload blocks per sector bitmap block
	dataBlocks   int64
	batEntries   int64
	differencing bool
}

func newGeometry(size uint64, blockSize, logicalSector uint32, differencing bool) geometry {
	g := geometry{
		size:         int64(size),
		blockSize:    int64(blockSize),
		sectorSize:   int64(logicalSector),
		chunkRatio:   (int64(1) << 23) * int64(logicalSector) / int64(blockSize),
		differencing: differencing,
	}
	g.dataBlocks = (g.size + g.blockSize - 1) / g.blockSize
	bitmapBlocks := (g.dataBlocks + g.chunkRatio - 1) / g.chunkRatio
	if differencing {
		g.batEntries = bitmapBlocks * (g.chunkRatio + 1)
	} else {
		g.batEntries = g.dataBlocks + (g.dataBlocks-1)/g.chunkRatio
	}
	return g
}

// payloadIndex is the BAT index of payload block i.
func (g *geometry) payloadIndex(i int64) int64 { return i + i/g.chunkRatio }

// bitmapIndex is the BAT index of the sector bitmap block of chunk c.
func (g *geometry) bitmapIndex(c int64) int64 { return c*(g.chunkRatio+1) + g.chunkRatio }

// sectorsPerBlock is the number of logical sectors in a payload block.
func (g *geometry) sectorsPerBlock() int64 { return g.blockSize / g.sectorSize }

func batState(e uint64) uint64 { return e & batStateMask }
func batOffset(e uint64) int64 { return int64(e>>batOffsetShift) * mib }
func batEntry(state uint64, off int64) uint64 {
	return state | uint64(off/mib)<<batOffsetShift
}
