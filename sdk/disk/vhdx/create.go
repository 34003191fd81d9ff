package vhdx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Options describe a new VHDX.
type Options struct {
	// Size is the virtual size in bytes, a multiple of LogicalSectorSize,
	// at most 64 TiB.
	Size int64
	// BlockSize is the payload block size, a power of two from 1 MiB to
	// 256 MiB; 0 means 32 MiB, Hyper-V's default.
	BlockSize int64
	// LogicalSectorSize is 512 (the default) or 4096.
	LogicalSectorSize int64
	// PhysicalSectorSize is 512 or 4096 (the default).
	PhysicalSectorSize int64
	// Fixed allocates every block when the file is created (in a sparse
	// file where the file system allows).
	Fixed bool
}

func (o *Options) check() error {
	if o.BlockSize == 0 {
		o.BlockSize = 32 * mib
	}
	if o.LogicalSectorSize == 0 {
		o.LogicalSectorSize = 512
	}
	if o.PhysicalSectorSize == 0 {
		o.PhysicalSectorSize = 4096
	}
	switch {
	case o.LogicalSectorSize != 512 && o.LogicalSectorSize != 4096:
		return fmt.Errorf("logical sector size %d: want 512 or 4096: %w", o.LogicalSectorSize, ErrInvalidOptions)
	case o.PhysicalSectorSize != 512 && o.PhysicalSectorSize != 4096:
		return fmt.Errorf("physical sector size %d: want 512 or 4096: %w", o.PhysicalSectorSize, ErrInvalidOptions)
	case o.BlockSize < minBlockSize || o.BlockSize > maxBlockSize || bits.OnesCount64(uint64(o.BlockSize)) != 1:
		return fmt.Errorf("block size %d: want a power of two from 1 MiB to 256 MiB: %w", o.BlockSize, ErrInvalidOptions)
	case o.Size <= 0 || o.Size > maxVirtualSize || o.Size%o.LogicalSectorSize != 0:
		return fmt.Errorf("size %d: want a positive multiple of %d up to 64 TiB: %w", o.Size, o.LogicalSectorSize, ErrInvalidOptions)
	}
	return nil
}

// Create makes a new VHDX at path, which must not exist, and opens it for
// writing. A crash during Create leaves a file Open refuses (its headers
// are written last).
func Create(path string, o Options) (*Image, error) {
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	if err := writeNew(path, o, nil); err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	return Open(path, os.O_RDWR)
}

// CreateDifferencing makes a new differencing VHDX at path (an .avhdx, by
// convention) whose parent is the VHDX at parentPath, and opens it for
// writing. The child has its parent's size, block size and sector sizes,
// and records the parent's DataWriteGuid: writing to the parent afterwards
// breaks the chain, which Open then refuses.
func CreateDifferencing(path, parentPath string) (*Image, error) {
	parent, err := Open(parentPath, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	info := parent.Info()
	if err := parent.Close(); err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	if info.Format != FormatVHDX {
		return nil, fmt.Errorf("create %q: parent %q is %s; a VHDX child needs a VHDX parent: %w", path, parentPath, info.Format, ErrInvalidOptions)
	}
	keys := []string{"parent_linkage"}
	// Lower case: libvhdi parses only that, and every reader accepts it.
	values := []string{"{" + strings.ToLower(info.DataWriteGUID.String()) + "}"}
	absChild, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	absParent, err := filepath.Abs(parentPath)
	if err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	if rel, err := filepath.Rel(filepath.Dir(absChild), absParent); err == nil {
		rel = strings.ReplaceAll(filepath.ToSlash(rel), "/", `\`)
		if !strings.HasPrefix(rel, `..\`) {
			rel = `.\` + rel
		}
		keys, values = append(keys, "relative_path"), append(values, rel)
	}
	if runtime.GOOS == "windows" {
		keys, values = append(keys, "absolute_win32_path"), append(values, absParent)
	}
	o := Options{Size: info.Size, BlockSize: info.BlockSize, LogicalSectorSize: info.LogicalSectorSize,
		PhysicalSectorSize: info.PhysicalSectorSize}
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	if err := writeNew(path, o, marshalParentLocator(keys, values)); err != nil {
		return nil, fmt.Errorf("create %q: %w", path, err)
	}
	return Open(path, os.O_RDWR)
}

// The layout of the files this package creates: the header section, a
// 1 MiB log (kept empty), the metadata region, the BAT, then payload.
const (
	newLogOffset  = 1 * mib
	newLogLength  = 1 * mib
	newMetaOffset = 2 * mib
	newMetaLength = 1 * mib
	newBATOffset  = 3 * mib
)

func writeNew(path string, o Options, locator []byte) (err error) {
	g := newGeometry(uint64(o.Size), uint32(o.BlockSize), uint32(o.LogicalSectorSize), locator != nil)
	batLen := roundUp(g.batEntries*8, mib)
	if batLen > 1<<32-mib {
		return fmt.Errorf("BAT of %d bytes is larger than a region can be: %w", batLen, ErrInvalidOptions)
	}
	dataStart := newBATOffset + batLen
	fileSize := dataStart
	if o.Fixed {
		fileSize += g.dataBlocks * g.blockSize
	}
	// A differencing disk gets its sector bitmap blocks now, empty (every
	// sector read from the parent), as holes of the file: the same disk
	// for MS-VHDX as one without them, but libvhdi (Debian's 20210425)
	// reads a chunk without one as zeros instead of as its parent.
	var bat []byte
	if locator != nil || o.Fixed {
		bat = make([]byte, g.batEntries*8)
	}
	if locator != nil {
		chunks := (g.dataBlocks + g.chunkRatio - 1) / g.chunkRatio
		for c := range chunks {
			binary.LittleEndian.PutUint64(bat[8*g.bitmapIndex(c):], batEntry(bitmapPresent, fileSize))
			fileSize += bitmapBlock
		}
	}

	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			err = errors.Join(err, os.Remove(path))
		}
	}()
	if err := f.Truncate(fileSize); err != nil {
		return err
	}
	if _, err := f.WriteAt(newMetadata(o, locator), newMetaOffset); err != nil {
		return err
	}
	if o.Fixed {
		for blk := range g.dataBlocks {
			e := batEntry(blockFullPresent, dataStart+blk*g.blockSize)
			binary.LittleEndian.PutUint64(bat[8*g.payloadIndex(blk):], e)
		}
	}
	if bat != nil {
		if _, err := f.WriteAt(bat, newBATOffset); err != nil {
			return err
		}
	}
	rt := make([]byte, regionSize)
	marshalRegionTable(rt, regions{
		bat:  region{offset: newBATOffset, length: uint32(batLen)},
		meta: region{offset: newMetaOffset, length: newMetaLength},
	})
	for _, off := range []int64{region1Offset, region2Offset} {
		if _, err := f.WriteAt(rt, off); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}

	// Headers last: until they are written, the file is not a VHDX.
	id := make([]byte, 8+512)
	copy(id, fileIDSignature)
	copy(id[8:], encodeUTF16LE("ferry"))
	if _, err := f.WriteAt(id, 0); err != nil {
		return err
	}
	h := header{version: 1, logLength: newLogLength, logOffset: newLogOffset}
	h.fileWrite, h.dataWrite = newGUID(), newGUID()
	buf := make([]byte, headerSize)
	for i, off := range []int64{header1Offset, header2Offset} {
		h.seq = uint64(i + 1)
		h.marshal(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// newMetadata lays out the metadata region: the table, then the items.
func newMetadata(o Options, locator []byte) []byte {
	b := make([]byte, metaTableSize, metaTableSize+4*kib+len(locator))
	copy(b[0:8], metaSignature)
	page83 := newGUID()
	var fileParams [8]byte
	binary.LittleEndian.PutUint32(fileParams[0:4], uint32(o.BlockSize))
	flags := uint32(0)
	if o.Fixed {
		flags |= 1
	}
	if locator != nil {
		flags |= 2
	}
	binary.LittleEndian.PutUint32(fileParams[4:8], flags)
	u32 := func(v int64) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }
	items := []struct {
		id    GUID
		flags uint32
		data  []byte
	}{
		{metaFileParams, metaIsRequired, fileParams[:]},
		{metaVirtualSize, metaIsRequired | metaIsVirtualDisk, binary.LittleEndian.AppendUint64(nil, uint64(o.Size))},
		{metaPage83, metaIsRequired | metaIsVirtualDisk, page83[:]},
		{metaLogicalSect, metaIsRequired | metaIsVirtualDisk, u32(o.LogicalSectorSize)},
		{metaPhysicalSect, metaIsRequired | metaIsVirtualDisk, u32(o.PhysicalSectorSize)},
	}
	if locator != nil {
		items = append(items, struct {
			id    GUID
			flags uint32
			data  []byte
		}{metaParentLoc, metaIsRequired, locator})
	}
	binary.LittleEndian.PutUint16(b[10:12], uint16(len(items)))
	for i, it := range items {
		e := b[32+32*i:]
		copy(e[0:16], it.id[:])
		binary.LittleEndian.PutUint32(e[16:20], uint32(len(b)))
		binary.LittleEndian.PutUint32(e[20:24], uint32(len(it.data)))
		binary.LittleEndian.PutUint32(e[24:28], it.flags)
		b = append(b, it.data...)
		for len(b)%8 != 0 {
			b = append(b, 0)
		}
	}
	return b
}
