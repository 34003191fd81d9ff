package vmdk

import (
	"encoding/binary"
	"io"
)

// The hosted sparse extent ("KDMV", VMware Workstation's monolithicSparse
// and twoGbMaxExtentSparse, and what qemu-img writes), from VMware's
// Virtual Disk Format 1.1. A 512-byte little-endian header:
//
//	0 magic "KDMV"  4 version  8 flags  12 capacity (sectors)
//	20 grainSize (sectors)  28 descriptorOffset  36 descriptorSize (sectors)
//	44 numGTEsPerGT (uint32)  48 rgdOffset  56 gdOffset  64 overHead
//	72 uncleanShutdown (byte)  77 compressAlgorithm (uint16)
//
// The grain directory at gdOffset holds uint32 sector numbers of grain
// tables, which hold uint32 sector numbers of grains: 0 is not in this
// file (the parent), and 1, when flag bit 2 is set, a grain of zeros.
// Compressed (streamOptimized) files are not read.

const (
	hostedMagic      = "KDMV"
	hostedHeaderSize = 512
	flagZeroGrain    = 1 << 2
	flagCompressed   = 1 << 16
	gdAtEnd          = ^uint64(0)
)

type hostedHeader struct {
	version, flags       uint32
	capacity, grain      int64
	descOffset, descSize int64
	perGT                int64
	gdOffset             uint64
	compress             uint16
}

func parseHostedHeader(b []byte) (hostedHeader, error) {
	var h hostedHeader
	if len(b) < hostedHeaderSize || string(b[:4]) != hostedMagic {
		return h, corrupt("sparse header", "no %q magic", hostedMagic)
	}
	le := binary.LittleEndian
	h.version, h.flags = le.Uint32(b[4:]), le.Uint32(b[8:])
	capacity, grain := le.Uint64(b[12:]), le.Uint64(b[20:])
	descOffset, descSize := le.Uint64(b[28:]), le.Uint64(b[36:])
	h.perGT = int64(le.Uint32(b[44:]))
	h.gdOffset = le.Uint64(b[56:])
	h.compress = le.Uint16(b[77:])
	switch {
	case h.version < 1 || h.version > 3:
		return h, unsupported("sparse header version", "%d: this package reads 1 to 3", h.version)
	case h.compress != 0 || h.flags&flagCompressed != 0:
		return h, unsupported("sparse header", "compressed grains (streamOptimized) are not read")
	case capacity > maxSectors:
		return h, corrupt("sparse header capacity", "%d sectors: more than %d", capacity, int64(maxSectors))
	case descOffset > maxSectors || descSize > maxDescriptor/sectorSize:
		return h, corrupt("sparse header descriptorOffset", "descriptor of %d sectors at sector %d", descSize, descOffset)
	}
	h.capacity, h.descOffset, h.descSize = int64(capacity), int64(descOffset), int64(descSize)
	if h.capacity == 0 {
		return h, nil // a descriptor in a sparse file's clothing: no grains
	}
	switch {
	case grain < 1 || grain > maxGrainSectors:
		return h, corrupt("sparse header grainSize", "%d sectors: want 1 to %d", grain, maxGrainSectors)
	case h.perGT < 1 || h.perGT > 512:
		return h, corrupt("sparse header numGTEsPerGT", "%d: want 1 to 512", h.perGT)
	case h.gdOffset == gdAtEnd:
		return h, unsupported("sparse header gdOffset", "the grain directory is in a footer (streamOptimized)")
	case h.gdOffset == 0 || h.gdOffset > maxSectors:
		return h, corrupt("sparse header gdOffset", "sector %d", h.gdOffset)
	}
	h.grain = int64(grain)
	return h, nil
}

// openHosted reads the hosted sparse file r as an extent of sectors
// sectors.
func openHosted(r io.ReaderAt, fileSize, sectors int64) (*grid, error) {
	b := make([]byte, hostedHeaderSize)
	if err := readFull(r, b, 0, "sparse header"); err != nil {
		return nil, err
	}
	h, err := parseHostedHeader(b)
	if err != nil {
		return nil, err
	}
	if h.capacity < sectors {
		return nil, corrupt("sparse header capacity", "%d sectors; the descriptor's extent has %d", h.capacity, sectors)
	}
	cover := h.grain * h.perGT
	n := (h.capacity + cover - 1) / cover
	if n > maxGDEntries {
		return nil, corrupt("sparse header", "%d grain directory entries: more than %d", n, maxGDEntries)
	}
	gd, err := readDirectory(r, fileSize, int64(h.gdOffset)*sectorSize, n, 4, "sparse grain directory")
	if err != nil {
		return nil, err
	}
	g := &grid{r: r, fileSize: fileSize, size: sectors * sectorSize, grain: h.grain * sectorSize, perGT: h.perGT, width: 4}
	g.gts = make([]int64, len(gd))
	for i, e := range gd {
		g.gts[i] = int64(e) * sectorSize
	}
	zeroGrain := h.flags&flagZeroGrain != 0
	g.decode = func(e uint64) (kind, int64, error) {
		switch {
		case e == 0:
			return kindParent, 0, nil
		case e == 1 && zeroGrain:
			return kindZero, 0, nil
		}
		return kindData, int64(e) * sectorSize, nil
	}
	if err := g.checkTables("sparse grain directory"); err != nil {
		return nil, err
	}
	return g, nil
}
