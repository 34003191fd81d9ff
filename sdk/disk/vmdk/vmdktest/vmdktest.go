// Package vmdktest writes the VMDK chains ESXi makes, for tests: flat
// bases, vmfsSparse ("COWD") and seSparse deltas, and small hosted sparse
// files. qemu-img judges what it writes (sdk/disk/vmdk's tests compare
// its reading of every kind with the intended bytes).
//
// It never imports the reader it tests, and it is not for production:
// it writes whole files in memory.
package vmdktest

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

const (
	sectorSize      = 512
	cowdMagic       = "COWD"
	cowdPerGT       = 4096
	hostedMagic     = "KDMV"
	flagZeroGrain   = 1 << 2
	seMagic         = 0xcafebabe
	seVolatileMagic = 0xcafecafe
	seVersion       = 0x200000001
	seGrainSectors  = 8
	seGTSectors     = 64
	sePerGT         = seGTSectors * sectorSize / 8
)

// NoParent is the parentCID of a disk without a parent.
const NoParent = 0xffffffff

// Layer is what a delta holds, by grain: data (a grain's bytes), a zero
// grain (nil), and an unmapped grain (seSparse; reads as zeros).
type Layer struct {
	Grains   map[int64][]byte
	Unmapped []int64
}

// Apply writes what l holds over want (a disk of grains of grain
// bytes), as a reader must see it.
func (l Layer) Apply(want []byte, grain int64) {
	for g, b := range l.Grains {
		at := g * grain
		if b == nil {
			clear(want[at:min(at+grain, int64(len(want)))])
		} else {
			copy(want[at:], b)
		}
	}
	for _, g := range l.Unmapped {
		at := g * grain
		clear(want[at:min(at+grain, int64(len(want)))])
	}
}

// sortedGrains lists l's grains in order.
func (l Layer) sortedGrains() []int64 {
	var out []int64
	for g := range l.Grains {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// Descriptor is the text of a descriptor of one extent line; parent is
// its parentFileNameHint, "" for none.
func Descriptor(cid, parentCID uint32, createType, parent, extent string) []byte {
	s := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=%08x\nparentCID=%08x\ncreateType=%q\n", cid, parentCID, createType)
	if parent != "" {
		s += fmt.Sprintf("parentFileNameHint=%q\n", parent)
	}
	s += "\n# Extent description\n" + extent + "\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"14\"\nddb.adapterType = \"lsilogic\"\n"
	return []byte(s)
}

// WriteFlat writes name.vmdk and name-flat.vmdk holding data, as ESXi
// does for a base disk, and returns the descriptor's path.
func WriteFlat(dir, name string, data []byte, cid uint32) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, name+"-flat.vmdk"), data, 0o644); err != nil {
		return "", err
	}
	ext := fmt.Sprintf("RW %d VMFS %q", len(data)/sectorSize, name+"-flat.vmdk")
	return writeDescriptor(dir, name, Descriptor(cid, NoParent, "vmfs", "", ext))
}

func writeDescriptor(dir, name string, desc []byte) (string, error) {
	p := filepath.Join(dir, name+".vmdk")
	return p, os.WriteFile(p, desc, 0o644)
}

// COWD is a COWD file of size bytes holding l, grains of grainSectors
// sectors. Grains are laid out in reverse order, so neighbours in the disk
// are not neighbours in the file.
func COWD(size, grainSectors int64, l Layer, parentFile string) []byte {
	le := binary.LittleEndian
	sectors := size / sectorSize
	cover := cowdPerGT * grainSectors
	nGD := (sectors + cover - 1) / cover
	next := int64(4) + (nGD*4+sectorSize-1)/sectorSize
	gts := map[int64]int64{}
	grains := l.sortedGrains()
	for _, g := range grains {
		if _, ok := gts[g/cowdPerGT]; !ok {
			gts[g/cowdPerGT] = next
			next += cowdPerGT * 4 / sectorSize
		}
	}
	place := map[int64]int64{}
	for _, g := range slices.Backward(grains) {
		place[g] = next
		next += grainSectors
	}
	b := make([]byte, next*sectorSize)
	copy(b, cowdMagic)
	le.PutUint32(b[4:], 1)
	le.PutUint32(b[8:], 3)
	le.PutUint32(b[12:], uint32(sectors))
	le.PutUint32(b[16:], uint32(grainSectors))
	le.PutUint32(b[20:], 4)
	le.PutUint32(b[24:], uint32(nGD))
	le.PutUint32(b[28:], uint32(next))
	copy(b[32:32+1024], parentFile)
	for ti, at := range gts {
		le.PutUint32(b[4*sectorSize+ti*4:], uint32(at))
	}
	for _, g := range grains {
		le.PutUint32(b[gts[g/cowdPerGT]*sectorSize+(g%cowdPerGT)*4:], uint32(place[g]))
		copy(b[place[g]*sectorSize:(place[g]+grainSectors)*sectorSize], l.Grains[g])
	}
	return b
}

// WriteCOWD writes a vmfsSparse delta: name.vmdk and name-delta.vmdk.
func WriteCOWD(dir, name, parent string, parentCID, cid uint32, size, grainSectors int64, l Layer) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, name+"-delta.vmdk"), COWD(size, grainSectors, l, parent), 0o644); err != nil {
		return "", err
	}
	ext := fmt.Sprintf("RW %d VMFSSPARSE %q", size/sectorSize, name+"-delta.vmdk")
	return writeDescriptor(dir, name, Descriptor(cid, parentCID, "vmfsSparse", parent, ext))
}

// seGrainEntry encodes grain number n as an allocated grain table entry.
func seGrainEntry(n int64) uint64 {
	return 3<<60 | uint64(n&0xfff)<<48 | uint64(n>>12)
}

// SESparse is a seSparse file of size bytes holding l (4 KiB grains);
// far, when not 0, is the grain number of the first data grain, so the
// grain numbers use both parts of an entry (the file then has a hole).
func SESparse(size int64, l Layer, far int64, dirty bool) []byte {
	le := binary.LittleEndian
	const grain = seGrainSectors * sectorSize
	sectors := size / sectorSize
	nGD := (sectors + sePerGT*seGrainSectors - 1) / (sePerGT * seGrainSectors)
	gdSectors := max(1, (nGD*8+sectorSize-1)/sectorSize)
	tablesOff := 4 + gdSectors
	tables := map[int64]int64{}
	for _, g := range l.sortedGrains() {
		if _, ok := tables[g/sePerGT]; !ok {
			tables[g/sePerGT] = int64(len(tables))
		}
	}
	for _, g := range l.Unmapped {
		if _, ok := tables[g/sePerGT]; !ok {
			tables[g/sePerGT] = int64(len(tables))
		}
	}
	bitmapOff := tablesOff + int64(len(tables))*seGTSectors
	grainsOff := bitmapOff + 2
	var data []int64
	for _, g := range l.sortedGrains() {
		if l.Grains[g] != nil {
			data = append(data, g)
		}
	}
	nGrains := far + int64(len(data))
	b := make([]byte, (grainsOff+nGrains*seGrainSectors)*sectorSize)
	u := func(i int, v uint64) { le.PutUint64(b[i*8:], v) }
	u(0, seMagic)
	u(1, seVersion)
	u(2, uint64(sectors))
	u(3, seGrainSectors)
	u(4, seGTSectors)
	u(10, 1) // volatile header
	u(11, 1)
	u(12, 2) // journal header
	u(13, 1)
	u(14, 3) // journal
	u(15, 1)
	u(16, 4)
	u(17, uint64(gdSectors))
	u(18, uint64(tablesOff))
	u(19, uint64(len(tables))*seGTSectors)
	u(20, uint64(bitmapOff))
	u(21, 1)
	u(22, uint64(bitmapOff+1))
	u(23, 1)
	u(24, uint64(grainsOff))
	u(25, uint64(nGrains*seGrainSectors))
	le.PutUint64(b[sectorSize:], seVolatileMagic)
	le.PutUint64(b[sectorSize+8:], uint64(len(tables)))
	if dirty {
		le.PutUint64(b[sectorSize+24:], 1)
	}
	for ti, n := range tables {
		le.PutUint64(b[4*sectorSize+ti*8:], 0x1000000000000000|uint64(n))
	}
	entry := func(g int64, v uint64) {
		le.PutUint64(b[(tablesOff+tables[g/sePerGT]*seGTSectors)*sectorSize+(g%sePerGT)*8:], v)
	}
	// Data grains in reverse order, the first far into the file.
	for i, g := range slices.Backward(data) {
		n := far + int64(len(data)-1-i)
		entry(g, seGrainEntry(n))
		copy(b[(grainsOff+n*seGrainSectors)*sectorSize:][:grain], l.Grains[g])
	}
	for _, g := range l.sortedGrains() {
		if l.Grains[g] == nil {
			entry(g, 2<<60)
		}
	}
	for _, g := range l.Unmapped {
		entry(g, 1<<60)
	}
	return b
}

// WriteSESparse writes a seSparse delta: name.vmdk and name-sesparse.vmdk.
func WriteSESparse(dir, name, parent string, parentCID, cid uint32, size int64, l Layer, far int64) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, name+"-sesparse.vmdk"), SESparse(size, l, far, false), 0o644); err != nil {
		return "", err
	}
	ext := fmt.Sprintf("RW %d SESPARSE %q", size/sectorSize, name+"-sesparse.vmdk")
	return writeDescriptor(dir, name, Descriptor(cid, parentCID, "seSparse", parent, ext))
}

// Hosted is a small monolithicSparse file: capacity sectors, 4 KiB
// grains, 512-entry tables, its descriptor inside, with l's grains (nil:
// a zero grain).
func Hosted(capacity int64, l Layer) []byte {
	le := binary.LittleEndian
	const grainSectors, perGT = 8, 512
	cover := int64(grainSectors * perGT)
	nGD := (capacity + cover - 1) / cover
	gdOff := int64(2)
	next := gdOff + (nGD*4+sectorSize-1)/sectorSize
	gts := map[int64]int64{}
	for _, g := range l.sortedGrains() {
		if _, ok := gts[g/perGT]; !ok {
			gts[g/perGT] = next
			next += perGT * 4 / sectorSize
		}
	}
	place := map[int64]int64{}
	for _, g := range l.sortedGrains() {
		if l.Grains[g] != nil {
			place[g] = next
			next += grainSectors
		}
	}
	b := make([]byte, next*sectorSize)
	copy(b, hostedMagic)
	le.PutUint32(b[4:], 1)
	le.PutUint32(b[8:], 1|flagZeroGrain)
	le.PutUint64(b[12:], uint64(capacity))
	le.PutUint64(b[20:], grainSectors)
	le.PutUint64(b[28:], 1)
	le.PutUint64(b[36:], 1)
	le.PutUint32(b[44:], perGT)
	le.PutUint64(b[56:], uint64(gdOff))
	le.PutUint64(b[64:], uint64(next))
	copy(b[73:], "\n \r\n")
	desc := Descriptor(0x42, NoParent, "monolithicSparse", "", fmt.Sprintf(`RW %d SPARSE "self.vmdk"`, capacity))
	copy(b[sectorSize:2*sectorSize], desc[:min(len(desc), sectorSize)])
	for ti, at := range gts {
		le.PutUint32(b[gdOff*sectorSize+ti*4:], uint32(at))
	}
	for _, g := range l.sortedGrains() {
		v := uint32(1)
		if l.Grains[g] != nil {
			v = uint32(place[g])
			copy(b[place[g]*sectorSize:][:grainSectors*sectorSize], l.Grains[g])
		}
		le.PutUint32(b[gts[g/perGT]*sectorSize+(g%perGT)*4:], v)
	}
	return b
}
