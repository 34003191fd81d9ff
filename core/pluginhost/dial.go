package pluginhost

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"github.com/ferry-dr/ferry/sdk"
)

// dialOptions raise the host's message limits to the SDK's, matching what
// the plugin side accepts, and take message buffers from the SDK's pool.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes),
		),
		experimental.WithBufferPool(sdk.MessageBuffers()),
	}
}
