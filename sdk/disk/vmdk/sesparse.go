package vmdk

import (
	"encoding/binary"
	"io"
)

// ESXi's seSparse delta (VMFS6, and disks over 2 TB). VMware publishes no
// specification; this follows the format as qemu documents it by reading
// it (block/vmdk.c). All fields are little-endian uint64, sizes and
// offsets in sectors. The constant header (sector 0):
//
//	0 magic 0xcafebabe  8 version 0x200000001  16 capacity  24 grainSize (8)
//	32 grainTableSize (64)  40 flags (0)  48..80 reserved (0)
//	80 volatileHeaderOffset  88 volatileHeaderSize  96..128 journal
//	128 grainDirOffset  136 grainDirSize  144 grainTablesOffset
//	152 grainTablesSize  160..192 free bitmap, backmap  192 grainsOffset
//	200 grainsSize
//
// The volatile header (magic 0xcafecafe) says at byte 24 whether the
// journal must be replayed: a file ESXi did not close cleanly keeps
// metadata there, so it is refused. A grain directory entry is 0 (no
// table) or 0x1 in the top nibble with a table number in the low 32 bits;
// a grain table entry's top nibble says: 0 not here (the parent), 1
// unmapped and 2 zero (both read as zeros), 3 allocated, with a grain
// number whose low 12 bits are in bits 48-59 and the rest in bits 0-47.

const (
	seMagic         = 0xcafebabe
	seVolatileMagic = 0xcafecafe
	seVersion       = 0x200000001
	seGrainSectors  = 8
	seGTSectors     = 64
	sePerGT         = seGTSectors * sectorSize / 8
)

type seHeader struct {
	capacity                 int64
	volatileOffset           int64
	gdOffset, gdSize         int64
	tablesOffset, tablesSize int64
	grainsOffset             int64
}

func parseSEHeader(b []byte) (seHeader, error) {
	var h seHeader
	if len(b) < sectorSize {
		return h, corrupt("seSparse header", "shorter than a sector")
	}
	le := binary.LittleEndian
	u := func(i int) uint64 { return le.Uint64(b[i*8:]) }
	if u(0) != seMagic {
		return h, corrupt("seSparse header magic", "%#x, not %#x", u(0), seMagic)
	}
	switch {
	case u(1) != seVersion:
		return h, unsupported("seSparse header version", "%#x: this package reads %#x", u(1), seVersion)
	case u(3) != seGrainSectors:
		return h, unsupported("seSparse header grainSize", "%d sectors: this package reads %d", u(3), seGrainSectors)
	case u(4) != seGTSectors:
		return h, unsupported("seSparse header grainTableSize", "%d sectors: this package reads %d", u(4), seGTSectors)
	case u(5) != 0:
		return h, unsupported("seSparse header flags", "%#x: this package reads 0", u(5))
	case u(6)|u(7)|u(8)|u(9) != 0:
		return h, unsupported("seSparse header", "reserved fields are not zero")
	}
	for i := 16; i <= 25; i++ {
		if u(i) > maxSectors {
			return h, corrupt("seSparse header", "field at byte %d: %d sectors", i*8, u(i))
		}
	}
	if u(2) > maxSectors || u(10) > maxSectors {
		return h, corrupt("seSparse header", "capacity %d, volatile header at %d", u(2), u(10))
	}
	h.capacity, h.volatileOffset = int64(u(2)), int64(u(10))
	h.gdOffset, h.gdSize = int64(u(16)), int64(u(17))
	h.tablesOffset, h.tablesSize = int64(u(18)), int64(u(19))
	h.grainsOffset = int64(u(24))
	return h, nil
}

// checkSEVolatile refuses a file whose journal must be replayed.
func checkSEVolatile(b []byte) error {
	le := binary.LittleEndian
	if len(b) < 32 || le.Uint64(b) != seVolatileMagic {
		return corrupt("seSparse volatile header", "no magic %#x", seVolatileMagic)
	}
	if le.Uint64(b[24:]) != 0 {
		return unsupported("seSparse volatile header", "the journal must be replayed (ESXi did not close the file cleanly, or it is open now): read the disk of a snapshot, or once ESXi has closed it")
	}
	return nil
}

// openSESparse reads the seSparse file r as an extent of sectors sectors.
func openSESparse(r io.ReaderAt, fileSize, sectors int64) (*grid, error) {
	b := make([]byte, sectorSize)
	if err := readFull(r, b, 0, "seSparse header"); err != nil {
		return nil, err
	}
	h, err := parseSEHeader(b)
	if err != nil {
		return nil, err
	}
	if h.capacity < sectors {
		return nil, corrupt("seSparse header capacity", "%d sectors; the descriptor's extent has %d", h.capacity, sectors)
	}
	if h.volatileOffset > (fileSize-sectorSize)/sectorSize {
		return nil, corrupt("seSparse header volatileHeaderOffset", "sector %d is outside the file (%d bytes)", h.volatileOffset, fileSize)
	}
	if err := readFull(r, b, h.volatileOffset*sectorSize, "seSparse volatile header"); err != nil {
		return nil, err
	}
	if err := checkSEVolatile(b); err != nil {
		return nil, err
	}
	gd, err := readDirectory(r, fileSize, h.gdOffset*sectorSize, h.gdSize*sectorSize/8, 8, "seSparse grain directory")
	if err != nil {
		return nil, err
	}
	g := &grid{r: r, fileSize: fileSize, size: sectors * sectorSize, grain: seGrainSectors * sectorSize, perGT: sePerGT, width: 8}
	g.gts = make([]int64, len(gd))
	for i, e := range gd {
		switch {
		case e == 0:
		case e>>32 != 0x10000000:
			return nil, corrupt("seSparse grain directory", "entry %d is %#x: neither empty nor a table", i, e)
		case int64(e&0xffffffff) >= h.tablesSize/seGTSectors:
			return nil, corrupt("seSparse grain directory", "entry %d names table %d; the file has %d", i, e&0xffffffff, h.tablesSize/seGTSectors)
		default:
			g.gts[i] = (h.tablesOffset + int64(e&0xffffffff)*seGTSectors) * sectorSize
		}
	}
	grains := h.grainsOffset
	g.decode = func(e uint64) (kind, int64, error) {
		switch e >> 60 {
		case 0:
			if e != 0 {
				return 0, 0, corrupt("seSparse grain table", "entry %#x: unallocated with bits set", e)
			}
			return kindParent, 0, nil
		case 1, 2:
			return kindZero, 0, nil
		case 3:
			n := int64((e&0x0fff000000000000)>>48 | (e&0x0000ffffffffffff)<<12)
			if n > maxSectors/seGrainSectors {
				return 0, 0, corrupt("seSparse grain table", "entry %#x: grain %d", e, n)
			}
			return kindData, (grains + n*seGrainSectors) * sectorSize, nil
		}
		return 0, 0, corrupt("seSparse grain table", "entry %#x: unknown type %d", e, e>>60)
	}
	if err := g.checkTables("seSparse grain directory"); err != nil {
		return nil, err
	}
	return g, nil
}
