package pluginhost

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"github.com/ferry-dr/ferry/sdk"
)

// dialOptions raise the host's message limits to the SDK's, matching what
// the plugin side accepts, and take message buffers from the SDK's pool,
// in the transport and in the codec.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes),
			grpc.ForceCodecV2(sdk.MessageCodec()),
		),
		experimental.WithBufferPool(sdk.MessageBuffers()),
	}
}
