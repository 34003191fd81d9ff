package vmdk

import (
	"encoding/binary"
	"io"
)

// ESX's vmfsSparse delta ("COWD"), from VMware's Virtual Disk Format 1.1,
// "ESX Server Sparse Extents". Little-endian uint32 fields of a 2048-byte
// header:
//
//	0 magic "COWD"   4 version   8 flags   12 numSectors   16 grainSize
//	20 gdOffset      24 numGDEntries       28 freeSector
//
// then the parent's name, generations and an unclean-shutdown word this
// reader does not need. gdOffset is the sector of the grain directory:
// numGDEntries uint32 sector numbers of grain tables (0: none), each of
// 4096 uint32 sector numbers of grains of grainSize sectors (0: not in
// this file, read the parent).

const (
	cowdMagic      = "COWD"
	cowdHeaderSize = 2048
	cowdPerGT      = 4096
	// maxGrainSectors bounds a grain (1 GiB); real grains are 512 bytes to
	// 1 MiB.
	maxGrainSectors = 1 << 21
	// maxGDEntries bounds a grain directory, as qemu does (32 Mi).
	maxGDEntries = 32 << 20
)

// cowdHeader holds the fields of a COWD header this reader uses.
type cowdHeader struct {
	sectors, grain, gdOffset, gdEntries int64
}

func parseCOWDHeader(b []byte) (cowdHeader, error) {
	var h cowdHeader
	if len(b) < 32 || string(b[:4]) != cowdMagic {
		return h, corrupt("COWD header", "no %q magic", cowdMagic)
	}
	le := binary.LittleEndian
	h.sectors = int64(le.Uint32(b[12:]))
	h.grain = int64(le.Uint32(b[16:]))
	h.gdOffset = int64(le.Uint32(b[20:]))
	h.gdEntries = int64(le.Uint32(b[24:]))
	switch {
	case h.grain < 1 || h.grain > maxGrainSectors:
		return h, corrupt("COWD header grainSize", "%d sectors: want 1 to %d", h.grain, maxGrainSectors)
	case h.gdEntries > maxGDEntries:
		return h, corrupt("COWD header numGDEntries", "%d: more than %d", h.gdEntries, maxGDEntries)
	case h.gdOffset == 0:
		return h, corrupt("COWD header gdOffset", "0: the grain directory would overlap the header")
	}
	return h, nil
}

// openCOWD reads the COWD file r (fileSize bytes) as an extent of sectors
// sectors.
func openCOWD(r io.ReaderAt, fileSize, sectors int64) (*grid, error) {
	b := make([]byte, 32)
	if err := readFull(r, b, 0, "COWD header"); err != nil {
		return nil, err
	}
	h, err := parseCOWDHeader(b)
	if err != nil {
		return nil, err
	}
	if h.sectors < sectors {
		return nil, corrupt("COWD header numSectors", "%d sectors; the descriptor's extent has %d", h.sectors, sectors)
	}
	gd, err := readDirectory(r, fileSize, h.gdOffset*sectorSize, h.gdEntries, 4, "COWD grain directory")
	if err != nil {
		return nil, err
	}
	g := &grid{r: r, fileSize: fileSize, size: sectors * sectorSize, grain: h.grain * sectorSize, perGT: cowdPerGT, width: 4}
	g.gts = make([]int64, len(gd))
	for i, e := range gd {
		g.gts[i] = int64(e) * sectorSize
	}
	g.decode = func(e uint64) (kind, int64, error) {
		if e == 0 {
			return kindParent, 0, nil
		}
		return kindData, int64(e) * sectorSize, nil
	}
	if err := g.checkTables("COWD grain directory"); err != nil {
		return nil, err
	}
	return g, nil
}
