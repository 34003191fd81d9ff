//go:build !windows

package hyperv

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// connectWMI refuses: WMI exists only on Windows.
func connectWMI(_ context.Context, addr string) (host.Host, error) {
	return nil, fmt.Errorf("hyper-v host %q: WMI needs ferry-plugin-hyperv built for Windows and run there (host = \"sim:DIR\" works anywhere): %w", addr, errdefs.ErrUnimplemented)
}
