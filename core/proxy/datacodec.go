package proxy

import (
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/sdk"
)

// Frames cross the data stream without copies of their own (issue 12):
// the source half encodes each frames message once, into a buffer of the
// SDK's pool, and keeps that encoding to send again after a broken
// connection (encodedMessage); the target half decodes a frames message
// in the buffer gRPC received it in (recvData), where protobuf's decoder
// would copy every frame into fresh memory. Each was about a tenth of its
// proxy's CPU time on a full copy.

// encodedMessage is a message encoded already; relayCodec sends it as it
// is. Each send gives gRPC one reference to data, which gRPC frees once
// the message is written: the sender takes that reference before the
// send and keeps one of its own until the message is acknowledged.
type encodedMessage struct{ data mem.BufferSlice }

// encodeData encodes a data message in a buffer of the SDK's pool, with
// one reference, the caller's.
func encodeData(m *proxyv1.DataMessage) (mem.BufferSlice, error) {
	data, err := sdk.MessageCodec().Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode a data message: %w", err)
	}
	return data, nil
}

// recvData is a data message received by the target half. A frames
// message keeps its frames in the buffer it was received in, until
// release; any other message is decoded by protobuf as usual.
type recvData struct {
	proxyv1.DataMessage
	frames proxyv1.DataMessage_Frames
	buf    mem.Buffer
}

// retain decodes the message in buf, which it keeps (with the one
// reference it was given) when the frames alias it, and frees otherwise.
func (r *recvData) retain(buf mem.Buffer) error {
	r.release()
	if r.decode(buf.ReadOnlyData()) {
		r.buf = buf
		return nil
	}
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), &r.DataMessage)
}

// release gives the received buffer back; the frames are gone after it.
func (r *recvData) release() {
	if r.buf != nil {
		r.buf.Free()
		r.buf = nil
	}
	r.frames.Frames = nil
}

// decode reads a frames message (the frames field and seq, each at most
// once, in any order) into r, the frames aliasing b; it reports false for
// any other shape (other fields, unknown or repeated ones), which
// protobuf's decoder then handles.
func (r *recvData) decode(b []byte) bool {
	r.DataMessage.Reset()
	var frames, seq bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 2 && typ == protowire.BytesType && !frames:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			r.frames.Frames = v[:len(v):len(v)]
			r.Msg = &r.frames
			frames = true
		case num == 6 && typ == protowire.VarintType && !seq:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			r.Seq = int64(v)
			seq = true
		default:
			return false
		}
	}
	return frames
}
