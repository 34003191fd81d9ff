package pluginhost

import (
	"google.golang.org/grpc"

	"github.com/ferry-dr/ferry/sdk"
)

// dialOptions raise the host's message limits to the SDK's, matching what
// the plugin side accepts.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(sdk.MaxMessageBytes),
		grpc.MaxCallSendMsgSize(sdk.MaxMessageBytes),
	)}
}
