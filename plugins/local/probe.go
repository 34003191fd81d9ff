package local

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferry-dr/ferry/sdk"
)

var (
	_ sdk.TransportProber = (*Source)(nil)
	_ sdk.TransportProber = (*Target)(nil)
)

// ProbeTransport says whether this machine reaches the VM's disk files:
// the local plugin reads them directly or not at all. A proxy elsewhere
// answers "" when the site folder is not there (not mounted).
func (s *Source) ProbeTransport(ctx context.Context, vm string, disk int) (string, string, error) {
	if err := canceled(ctx); err != nil {
		return "", "", err
	}
	return probeFolder(s.site.root, filepath.Join(s.site.root, vm), disk)
}

// ProbeTransport says whether this machine reaches the target's folder,
// where every replica of the target lives.
func (t *Target) ProbeTransport(ctx context.Context, replica string, disk int) (string, string, error) {
	if err := canceled(ctx); err != nil {
		return "", "", err
	}
	return probeFolder(t.root, "", -1)
}

// probeFolder reports direct access when root is a folder here (and vm's
// disk file, when named, is there).
func probeFolder(root, vmDir string, disk int) (string, string, error) {
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return "", fmt.Sprintf("the site folder %s is not on this machine", root), nil
	}
	if vmDir != "" && disk >= 0 {
		if _, err := os.Stat(diskFile(vmDir, disk)); err != nil {
			return "", fmt.Sprintf("%s is not on this machine", diskFile(vmDir, disk)), nil
		}
	}
	return sdk.TransportDirect, fmt.Sprintf("the site folder %s is on this machine's file system", root), nil
}
