package hyperv

import (
	"context"
	"fmt"
	"strings"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/wmihost"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// connectWMI reaches the Hyper-V host the plugin runs on through WMI.
// Another host is refused: remote WMI (DCOM) is not supported, and the
// plugin must run where the VHDX files are anyway.
func connectWMI(ctx context.Context, addr string) (host.Host, error) {
	if !localHost(addr) {
		return nil, fmt.Errorf("hyper-v host %q: only the host the plugin runs on (host = \".\") is supported; run a ferry proxy on %s and use host = \".\" there: %w", addr, addr, errdefs.ErrUnimplemented)
	}
	h, err := wmihost.Connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("hyper-v host %q: %w", addr, err)
	}
	return h, nil
}

func localHost(addr string) bool {
	a := strings.TrimSpace(addr)
	return a == "." || strings.EqualFold(a, "localhost")
}
