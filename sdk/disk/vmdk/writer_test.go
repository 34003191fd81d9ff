package vmdk

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A test-only writer of the chains ESXi makes: a flat base under COWD
// (vmfsSparse) or seSparse deltas. qemu-img judges what it writes.

// layer is what a delta holds, by grain: data (a grain's bytes), a zero
// grain (nil), and an unmapped grain (seSparse; reads as zeros).
type layer struct {
	grains   map[int64][]byte
	unmapped []int64
}

// apply writes what l holds over want, as a reader must see it.
func (l layer) apply(want []byte, grain int64) {
	for g, b := range l.grains {
		at := g * grain
		if b == nil {
			clear(want[at:min(at+grain, int64(len(want)))])
		} else {
			copy(want[at:], b)
		}
	}
	for _, g := range l.unmapped {
		at := g * grain
		clear(want[at:min(at+grain, int64(len(want)))])
	}
}

// sortedGrains lists l's grains in order.
func (l layer) sortedGrains() []int64 {
	var out []int64
	for g := range l.grains {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

func descriptorText(cid, parentCID uint32, createType, parent, extent string) []byte {
	s := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=%08x\nparentCID=%08x\ncreateType=%q\n", cid, parentCID, createType)
	if parent != "" {
		s += fmt.Sprintf("parentFileNameHint=%q\n", parent)
	}
	s += "\n# Extent description\n" + extent + "\n\n# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"14\"\nddb.adapterType = \"lsilogic\"\n"
	return []byte(s)
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeFlat writes name.vmdk and name-flat.vmdk holding data, as ESXi
// does for a base disk.
func writeFlat(t testing.TB, dir, name string, data []byte, cid uint32) string {
	writeFile(t, filepath.Join(dir, name+"-flat.vmdk"), data)
	ext := fmt.Sprintf("RW %d VMFS %q", len(data)/sectorSize, name+"-flat.vmdk")
	p := filepath.Join(dir, name+".vmdk")
	writeFile(t, p, descriptorText(cid, NoParent, "vmfs", "", ext))
	return p
}

// cowdBytes is a COWD file of size bytes holding l, grains of grainSectors
// sectors. Grains are laid out in reverse order, so neighbours in the disk
// are not neighbours in the file.
func cowdBytes(size, grainSectors int64, l layer, parentFile string) []byte {
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
		copy(b[place[g]*sectorSize:(place[g]+grainSectors)*sectorSize], l.grains[g])
	}
	return b
}

// writeCOWD writes a vmfsSparse delta: name.vmdk and name-delta.vmdk.
func writeCOWD(t testing.TB, dir, name, parent string, parentCID, cid uint32, size, grainSectors int64, l layer) string {
	writeFile(t, filepath.Join(dir, name+"-delta.vmdk"), cowdBytes(size, grainSectors, l, parent))
	ext := fmt.Sprintf("RW %d VMFSSPARSE %q", size/sectorSize, name+"-delta.vmdk")
	p := filepath.Join(dir, name+".vmdk")
	writeFile(t, p, descriptorText(cid, parentCID, "vmfsSparse", parent, ext))
	return p
}

// seGrainNumber encodes grain number n as an allocated grain table entry.
func seGrainEntry(n int64) uint64 {
	return 3<<60 | uint64(n&0xfff)<<48 | uint64(n>>12)
}

// seSparseBytes is a seSparse file of size bytes holding l (4 KiB grains);
// far, when not 0, is the grain number of the first data grain, so the
// grain numbers use both parts of an entry (the file then has a hole).
func seSparseBytes(size int64, l layer, far int64, dirty bool) []byte {
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
	for _, g := range l.unmapped {
		if _, ok := tables[g/sePerGT]; !ok {
			tables[g/sePerGT] = int64(len(tables))
		}
	}
	bitmapOff := tablesOff + int64(len(tables))*seGTSectors
	grainsOff := bitmapOff + 2
	var data []int64
	for _, g := range l.sortedGrains() {
		if l.grains[g] != nil {
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
		copy(b[(grainsOff+n*seGrainSectors)*sectorSize:][:grain], l.grains[g])
	}
	for _, g := range l.sortedGrains() {
		if l.grains[g] == nil {
			entry(g, 2<<60)
		}
	}
	for _, g := range l.unmapped {
		entry(g, 1<<60)
	}
	return b
}

// writeSESparse writes a seSparse delta: name.vmdk and name-sesparse.vmdk.
func writeSESparse(t testing.TB, dir, name, parent string, parentCID, cid uint32, size int64, l layer, far int64) string {
	writeFile(t, filepath.Join(dir, name+"-sesparse.vmdk"), seSparseBytes(size, l, far, false))
	ext := fmt.Sprintf("RW %d SESPARSE %q", size/sectorSize, name+"-sesparse.vmdk")
	p := filepath.Join(dir, name+".vmdk")
	writeFile(t, p, descriptorText(cid, parentCID, "seSparse", parent, ext))
	return p
}
