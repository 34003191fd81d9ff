package vsphere

import (
	"context"
	"fmt"
	"os"

	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

var (
	_ sdk.TransportProber = (*Source)(nil)
	_ sdk.TransportProber = (*Target)(nil)
)

// ProbeTransport says how this instance would read the VM's disks from the
// machine it runs on, as OpenSnapshotDisk would choose, without a snapshot:
// direct when every disk's datastore is mapped and its file is there,
// HotAdd when this machine is a proxy VM of the vCenter, the network
// otherwise (which always works for reading).
func (s *Source) ProbeTransport(ctx context.Context, key string, disk int) (string, string, error) {
	if s.transport == TransportNetwork {
		return sdk.TransportNetwork, `the configuration sets transport = "network"`, nil
	}
	if key == "" {
		return "", "", fmt.Errorf("which datastores a source reaches depends on the VM: %w", errdefs.ErrUnimplemented)
	}
	vm, err := s.c.vmObject(ctx, key)
	if err != nil {
		return "", "", err
	}
	reason := ""
	if s.transport != TransportHotAdd {
		reason = s.c.unmapped(vm.Name, virtualDiskFiles(vm.Config), disk)
		if reason == "" {
			return sdk.TransportDirect, "the VM's datastores are mapped and its disk files are there", nil
		}
		if s.transport == TransportDirect {
			return "", `transport = "direct" but ` + reason, nil
		}
	}
	if s.hot != nil {
		if _, none, err := s.hot.resolve(ctx); err != nil {
			return "", "", err
		} else if none == "" {
			return sdk.TransportHotAdd, joinWhy(reason, "this machine is a proxy VM that can attach the disks"), nil
		} else if s.transport == TransportHotAdd {
			return "", `transport = "hotadd" but ` + none, nil
		}
	}
	return sdk.TransportNetwork, joinWhy(reason, "reading over the network"), nil
}

// ProbeTransport says how this instance would write replica disks from the
// machine it runs on: directly when the target datastore is mounted here,
// through HotAdd when this machine is the proxy VM; "" when neither works
// (a target cannot write over the network).
func (t *Target) ProbeTransport(ctx context.Context, replica string, disk int) (string, string, error) {
	if t.cfg.Transport == TransportHotAdd {
		_, none, err := t.hot.resolve(ctx)
		if err != nil {
			return "", "", err
		}
		if none != "" {
			return "", `transport = "hotadd" but ` + none, nil
		}
		return sdk.TransportHotAdd, "this machine is a proxy VM that can attach the replica disks", nil
	}
	mount, ok := t.c.cfg.Datastores[t.cfg.Datastore]
	if !ok {
		return "", fmt.Sprintf("datastore %q is not in local_datastore_paths", t.cfg.Datastore), nil
	}
	if st, err := os.Stat(mount); err != nil || !st.IsDir() {
		return "", fmt.Sprintf("datastore %q is not mounted here at %s", t.cfg.Datastore, mount), nil
	}
	return sdk.TransportDirect, fmt.Sprintf("datastore %q is mounted here at %s", t.cfg.Datastore, mount), nil
}

// unmapped says why a VM's disk files (disk's, or every one for -1) cannot
// be read from this machine's file system; "" when they can.
func (c *conn) unmapped(vm string, files []string, disk int) string {
	for i, f := range files {
		if disk >= 0 && i != disk {
			continue
		}
		p, err := parseDSPath(f)
		if err != nil {
			return fmt.Sprintf("vm %q disk %d: %v", vm, i, err)
		}
		local, ok := c.local(p)
		if !ok {
			return fmt.Sprintf("datastore %q is not in local_datastore_paths", p.Datastore)
		}
		if _, err := os.Stat(local); err != nil {
			return fmt.Sprintf("%s is not there (is datastore %q mounted?)", local, p.Datastore)
		}
	}
	return ""
}

func joinWhy(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// virtualDiskFiles are the backing files of a VM's disks, in disk order.
func virtualDiskFiles(cfg *types.VirtualMachineConfigInfo) []string {
	if cfg == nil {
		return nil
	}
	var files []string
	for _, d := range virtualDisks(cfg.Hardware.Device) {
		files = append(files, backingFile(d.Backing))
	}
	return files
}
