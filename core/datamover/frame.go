package datamover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"runtime"
	"slices"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

// Frame wire format, version 1, little endian:
//
//	0  u8  version (1)
//	1  u8  kind (1 data, 2 zero)
//	2  u8  codec (0 none, 1 s2, 2 zstd)
//	3  u8  reserved (0)
//	4  u64 offset of the first byte on the disk
//	12 u32 length in bytes on the disk
//	16 u32 block size
//	20 u32 payload length (data frames)
//	24 u32 CRC-32C of bytes 0..23
//	28 [n]digest: one 16-byte xxh3-128 per block (data frames)
//	.. payload: the blocks, compressed with the codec
//
// A data frame's blocks are verified against their digests after
// decompression and before anything is written. A zero frame carries no
// payload: the range becomes zeros.
const (
	frameVersion    = 1
	frameHeaderSize = 28
	digestSize      = 16
	kindData        = 1
	kindZero        = 2
)

// Codec compresses frame payloads.
type Codec uint8

const (
	CodecNone Codec = iota
	CodecS2
	CodecZstd
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecS2:
		return "s2"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// ParseCodec maps a job's compression setting to a codec; "auto" picks
// for the link: none when both data movers share a machine, s2 on a LAN,
// zstd on a WAN.
func ParseCodec(name string, link Link) (Codec, error) {
	switch name {
	case "none":
		return CodecNone, nil
	case "s2":
		return CodecS2, nil
	case "zstd":
		return CodecZstd, nil
	case "auto", "":
		switch link {
		case LinkLocal:
			return CodecNone, nil
		case LinkLAN:
			return CodecS2, nil
		}
		return CodecZstd, nil
	}
	return 0, fmt.Errorf("unknown compression %q (none, s2, zstd, auto)", name)
}

// Link is what lies between the two data movers.
type Link int

const (
	LinkLocal Link = iota // one machine
	LinkLAN
	LinkWAN
)

func (l Link) String() string {
	switch l {
	case LinkLocal:
		return "one host"
	case LinkLAN:
		return "one site"
	case LinkWAN:
		return "between sites"
	}
	return fmt.Sprintf("link(%d)", int(l))
}

// Digest is the xxh3-128 of one block.
type Digest [digestSize]byte

func digestOf(b []byte) Digest {
	return xxh3.Hash128(b).Bytes()
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// zstd coders are costly to build and safe for concurrent EncodeAll and
// DecodeAll, so one of each serves every frame. Their concurrency, one
// coder per core, is how many frames are compressed (or decompressed) at
// once: more workers than cores overlap reads and sends, never
// compression. A pool of single coders measured the same (issue 12) and
// would not bound how many exist.
//
// zstd's own content checksum is left out and ignored: every block's xxh3
// digest is checked after decompression, and the checksum cost the
// decoder a tenth of its time. Frames from senders that still add it
// decode the same.
var (
	zstdOnce sync.Once
	zstdEnc  *zstd.Encoder
	zstdDec  *zstd.Decoder
)

func zstdCoders() (*zstd.Encoder, *zstd.Decoder) {
	zstdOnce.Do(func() {
		var err error
		zstdEnc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithEncoderCRC(false))
		if err != nil {
			panic(fmt.Sprintf("zstd encoder: %v", err))
		}
		zstdDec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(64<<20),
			zstd.IgnoreChecksum(true))
		if err != nil {
			panic(fmt.Sprintf("zstd decoder: %v", err))
		}
	})
	return zstdEnc, zstdDec
}

// maxCodedSpan bounds the disk bytes of a compressed data frame (at least
// one block). zstd and s2 at their fastest gain nothing measurable from
// longer inputs, and the shorter frame keeps the frame buffer a chunk
// holds in flight, and the receiver's decompression buffer, at about 1 MiB
// whatever the read size: more chunks fit under Options.InFlight.
const maxCodedSpan = 1 << 20

// frameSpan is the most disk bytes one data frame covers with codec and
// blocks of bs bytes; 0 means no bound but the read size.
func frameSpan(codec Codec, bs int) int {
	if codec == CodecNone {
		return 0
	}
	return max(maxCodedSpan/bs, 1) * bs
}

// appendFrame appends a data frame for blocks (length a multiple of bs, or
// shorter at the disk's end) at off, with their digests, to dst.
func appendFrame(dst []byte, codec Codec, off int64, bs int, data []byte, digests []Digest) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderSize)...)
	for _, d := range digests {
		dst = append(dst, d[:]...)
	}
	payloadStart := len(dst)
	switch codec {
	case CodecS2:
		dst = slices.Grow(dst, s2.MaxEncodedLen(len(data)))
		enc := s2.Encode(dst[len(dst):cap(dst)], data)
		dst = dst[:len(dst)+len(enc)]
	case CodecZstd:
		enc, _ := zstdCoders()
		dst = enc.EncodeAll(data, dst)
	default:
		dst = append(dst, data...)
	}
	putHeader(dst[start:], kindData, codec, off, len(data), bs, len(dst)-payloadStart)
	return dst
}

// appendZeroFrame appends a frame that makes length bytes at off zero.
func appendZeroFrame(dst []byte, off int64, length, bs int) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderSize)...)
	putHeader(dst[start:], kindZero, CodecNone, off, length, bs, 0)
	return dst
}

func putHeader(h []byte, kind byte, codec Codec, off int64, length, bs, payload int) {
	h[0] = frameVersion
	h[1] = kind
	h[2] = byte(codec)
	h[3] = 0
	binary.LittleEndian.PutUint64(h[4:], uint64(off))
	binary.LittleEndian.PutUint32(h[12:], uint32(length))
	binary.LittleEndian.PutUint32(h[16:], uint32(bs))
	binary.LittleEndian.PutUint32(h[20:], uint32(payload))
	binary.LittleEndian.PutUint32(h[24:], crc32.Checksum(h[:24], crcTable))
}

// frame is a decoded frame header with views into its buffer.
type frame struct {
	kind      byte
	codec     Codec
	offset    int64
	length    int
	blockSize int
	digests   []byte
	payload   []byte
}

// ErrCorrupt reports a frame that fails its checks.
var ErrCorrupt = errors.New("corrupt frame")

// maxFrameLength bounds the disk bytes one frame may describe.
const maxFrameLength = 64 << 20

// parseFrame decodes the frame at the start of b and returns it and the
// number of bytes it took.
func parseFrame(b []byte) (frame, int, error) {
	if len(b) < frameHeaderSize {
		return frame{}, 0, fmt.Errorf("%w: %d bytes, short of a header", ErrCorrupt, len(b))
	}
	h := b[:frameHeaderSize]
	if got, want := crc32.Checksum(h[:24], crcTable), binary.LittleEndian.Uint32(h[24:]); got != want {
		return frame{}, 0, fmt.Errorf("%w: header checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	f := frame{
		kind:      h[1],
		codec:     Codec(h[2]),
		offset:    int64(binary.LittleEndian.Uint64(h[4:])),
		length:    int(binary.LittleEndian.Uint32(h[12:])),
		blockSize: int(binary.LittleEndian.Uint32(h[16:])),
	}
	payloadLen := int(binary.LittleEndian.Uint32(h[20:]))
	switch {
	case h[0] != frameVersion:
		return frame{}, 0, fmt.Errorf("%w: version %d", ErrCorrupt, h[0])
	case f.kind != kindData && f.kind != kindZero:
		return frame{}, 0, fmt.Errorf("%w: kind %d", ErrCorrupt, f.kind)
	case f.codec > CodecZstd:
		return frame{}, 0, fmt.Errorf("%w: codec %d", ErrCorrupt, f.codec)
	case f.offset < 0, f.length <= 0, f.length > maxFrameLength:
		return frame{}, 0, fmt.Errorf("%w: range %d+%d", ErrCorrupt, f.offset, f.length)
	case f.blockSize <= 0, f.blockSize > maxFrameLength:
		return frame{}, 0, fmt.Errorf("%w: block size %d", ErrCorrupt, f.blockSize)
	}
	n := frameHeaderSize
	if f.kind == kindZero {
		if payloadLen != 0 {
			return frame{}, 0, fmt.Errorf("%w: zero frame with a payload", ErrCorrupt)
		}
		return f, n, nil
	}
	blocks := (f.length + f.blockSize - 1) / f.blockSize
	need := blocks*digestSize + payloadLen
	if payloadLen < 0 || len(b)-n < need {
		return frame{}, 0, fmt.Errorf("%w: %d bytes of body, want %d", ErrCorrupt, len(b)-n, need)
	}
	f.digests = b[n : n+blocks*digestSize]
	f.payload = b[n+blocks*digestSize : n+need]
	return f, n + need, nil
}

// decode returns the frame's blocks, decompressed into buf when it has the
// room, and verified against their digests.
func (f frame) decode(buf []byte) ([]byte, error) {
	var data []byte
	var err error
	switch f.codec {
	case CodecNone:
		data = f.payload
	case CodecS2:
		n, derr := s2.DecodedLen(f.payload)
		if derr != nil || n != f.length {
			return nil, fmt.Errorf("%w: s2 payload of %d bytes for %d", ErrCorrupt, n, f.length)
		}
		data, err = s2.Decode(buf[:cap(buf)], f.payload)
	case CodecZstd:
		_, dec := zstdCoders()
		data, err = dec.DecodeAll(f.payload, buf[:0])
	}
	if err != nil {
		return nil, fmt.Errorf("%w: decompress at %d: %v", ErrCorrupt, f.offset, err)
	}
	if len(data) != f.length {
		return nil, fmt.Errorf("%w: %d bytes at %d, want %d", ErrCorrupt, len(data), f.offset, f.length)
	}
	for i, pos := 0, 0; pos < len(data); i, pos = i+1, pos+f.blockSize {
		end := min(pos+f.blockSize, len(data))
		d := digestOf(data[pos:end])
		if string(d[:]) != string(f.digests[i*digestSize:(i+1)*digestSize]) {
			return nil, fmt.Errorf("%w: block at %d does not match its digest", ErrCorrupt, f.offset+int64(pos))
		}
	}
	return data, nil
}

// BlockDigest is the digest of one block, as the data mover computes it.
func BlockDigest(b []byte) Digest { return digestOf(b) }
