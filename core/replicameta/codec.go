package replicameta

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/ferry-dr/ferry/core/datamover"
)

const digestLen = len(datamover.Digest{})

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// A base object holds the digests of every block of one segment:
//
//	"FDG2", u32 blocks, a bitmap of the blocks that are whole zero blocks
//	(bit i%8 of byte i/8), the digests of the other blocks in order, CRC-32C
//
// Version 2 manifests named objects of the older form, read still:
//
//	"FDG1", u32 blocks, every digest, CRC-32C
func encodeBase(ds []datamover.Digest, zero datamover.Digest) []byte {
	n := len(ds)
	zeros := 0
	for _, d := range ds {
		if d == zero {
			zeros++
		}
	}
	b := make([]byte, 8, 8+(n+7)/8+(n-zeros)*digestLen+4)
	copy(b, "FDG2")
	binary.LittleEndian.PutUint32(b[4:], uint32(n))
	b = b[:8+(n+7)/8] // the bitmap, zeroed by make
	for i, d := range ds {
		if d == zero {
			b[8+i/8] |= 1 << (i % 8)
		}
	}
	for _, d := range ds {
		if d != zero {
			b = append(b, d[:]...)
		}
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// decodeBase decodes a base object.
func decodeBase(b []byte, zero datamover.Digest) ([]datamover.Digest, error) {
	if len(b) < 12 {
		return nil, errors.New("not a digest object")
	}
	if crc32.Checksum(b[:len(b)-4], crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errors.New("checksum mismatch")
	}
	n := int(binary.LittleEndian.Uint32(b[4:]))
	body := b[8 : len(b)-4]
	switch string(b[:4]) {
	case "FDG1":
		if len(body) != n*digestLen {
			return nil, fmt.Errorf("%d bytes for %d digests", len(body), n)
		}
		out := make([]datamover.Digest, n)
		for i := range out {
			copy(out[i][:], body[i*digestLen:])
		}
		return out, nil
	case "FDG2":
		bm := (n + 7) / 8
		if len(body) < bm {
			return nil, fmt.Errorf("%d bytes for a bitmap of %d blocks", len(body), n)
		}
		zeros := 0
		for i := range n {
			if body[i/8]&(1<<(i%8)) != 0 {
				zeros++
			}
		}
		if len(body) != bm+(n-zeros)*digestLen {
			return nil, fmt.Errorf("%d bytes for %d digests, %d of them zero blocks", len(body), n, zeros)
		}
		out := make([]datamover.Digest, n)
		p := bm
		for i := range out {
			if body[i/8]&(1<<(i%8)) != 0 {
				out[i] = zero
				continue
			}
			copy(out[i][:], body[p:])
			p += digestLen
		}
		return out, nil
	}
	return nil, errors.New("not a digest object")
}

// A delta object holds the digests of the blocks a run wrote, in blocks
// of the whole disk, ascending:
//
//	"FDD1", u32 entries, per entry uvarint((block - previous block) << 1 |
//	zero) where the first entry's previous block is -1, then the digest
//	unless it is a whole zero block's; CRC-32C
type entry struct {
	block int64
	d     datamover.Digest
}

func encodeDelta(es []entry, zero datamover.Digest) []byte {
	b := make([]byte, 8, 8+len(es)*(digestLen+3)+4)
	copy(b, "FDD1")
	binary.LittleEndian.PutUint32(b[4:], uint32(len(es)))
	prev := int64(-1)
	for _, e := range es {
		v := uint64(e.block-prev) << 1
		if e.d == zero {
			v |= 1
		}
		b = binary.AppendUvarint(b, v)
		if e.d != zero {
			b = append(b, e.d[:]...)
		}
		prev = e.block
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

func decodeDelta(b []byte, zero datamover.Digest) ([]entry, error) {
	if len(b) < 12 || string(b[:4]) != "FDD1" {
		return nil, errors.New("not a digest delta")
	}
	if crc32.Checksum(b[:len(b)-4], crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errors.New("checksum mismatch")
	}
	n := int(binary.LittleEndian.Uint32(b[4:]))
	body := b[8 : len(b)-4]
	if n > len(body) { // every entry takes at least a byte
		return nil, fmt.Errorf("%d entries in %d bytes", n, len(body))
	}
	out := make([]entry, n)
	prev := int64(-1)
	for i := range out {
		v, k := binary.Uvarint(body)
		if k <= 0 || v>>1 == 0 || v>>1 > 1<<50 {
			return nil, fmt.Errorf("entry %d: bad block number", i)
		}
		body = body[k:]
		out[i].block = prev + int64(v>>1)
		prev = out[i].block
		if v&1 != 0 {
			out[i].d = zero
			continue
		}
		if len(body) < digestLen {
			return nil, fmt.Errorf("entry %d: digest cut short", i)
		}
		copy(out[i].d[:], body)
		body = body[digestLen:]
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%d bytes after the last entry", len(body))
	}
	return out, nil
}
