package hyperv

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// connectWMI refuses: this build has no WMI backend yet.
func connectWMI(_ context.Context, addr string) (host.Host, error) {
	return nil, fmt.Errorf("hyper-v host %q: this build has no WMI backend; only host = \"sim:DIR\" works: %w", addr, errdefs.ErrUnimplemented)
}
