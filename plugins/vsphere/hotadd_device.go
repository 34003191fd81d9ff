package vsphere

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
)

// How a hot-added disk shows up in a Linux guest.
//
// With disk.EnableUUID = "TRUE" in the VM's configuration, ESXi answers the
// guest's SCSI INQUIRY for the device identification page (VPD 0x83) with
// an NAA identifier made of the disk's UUID: the 16 bytes of the backing's
// uuid, "6000C29x-xxxx-...", which start with NAA type 6 and VMware's OUI
// 00:0C:29. udev's persistent-storage rules name the disk after it twice in
// /dev/disk/by-id: "wwn-0x" followed by the 32 lower-case hex digits
// (ID_WWN_WITH_EXTENSION), and "scsi-3" followed by the same digits (the
// "3" is scsi_id's prefix for an NAA designator). Without disk.EnableUUID
// the page is not answered and neither link exists. The setting is read
// when the VM powers on: setting it on a running proxy does nothing until
// it is powered off and on.
//
// The plugin looks for the wwn- link, resolves it to the block device
// (/dev/sdX), and checks that the device is as large as the disk.

// wwnName is the by-id name of a disk with this UUID: wwn-0x<32 hex>.
func wwnName(diskUUID string) (string, error) {
	hexDigits := strings.ToLower(strings.NewReplacer("-", "", " ", "").Replace(diskUUID))
	if len(hexDigits) != 32 {
		return "", fmt.Errorf("disk UUID %q does not have 16 bytes", diskUUID)
	}
	if _, err := hex.DecodeString(hexDigits); err != nil {
		return "", fmt.Errorf("disk UUID %q is not hexadecimal", diskUUID)
	}
	return "wwn-0x" + hexDigits, nil
}

// errNoDevice is a device that did not appear in time.
var errNoDevice = errors.New("no device")

// waitDevice waits until name appears in dir and returns the path it
// resolves to. It gives up after wait (errNoDevice) or when ctx ends.
func waitDevice(ctx context.Context, dir, name string, wait time.Duration) (string, error) {
	link := filepath.Join(dir, name)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		real, err := filepath.EvalSymlinks(link)
		if err == nil {
			return real, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("resolve %s: %w", link, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-deadline.C:
			return "", errNoDevice
		case <-tick.C:
		}
	}
}

// waitGone waits, briefly, until name is gone from dir: udev removes the
// link when the kernel drops the device after a detach. A link that stays
// would make the next attach of the same disk open a stale device.
func waitGone(dir, name string, wait time.Duration) bool {
	link := filepath.Join(dir, name)
	deadline := time.Now().Add(wait)
	for {
		if _, err := os.Lstat(link); errors.Is(err, fs.ErrNotExist) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// smbiosUUIDs reads the BIOS UUID a Linux guest reports
// (/sys/class/dmi/id/product_uuid) and returns it in the two forms vSphere
// may know it by. SMBIOS 2.6 and later store the first three fields of the
// UUID little-endian, and VMware's virtual BIOS does so in newer virtual
// hardware versions: the guest then shows "6B8C2042-0DD1-D037-..." for the
// VM whose config.uuid is "42208c6b-d10d-37d0-...". Older hardware shows
// the same bytes in the same order. Both are asked for.
func smbiosUUIDs(raw string) ([]string, error) {
	u, err := uuid.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("%q is not a UUID", strings.TrimSpace(raw))
	}
	swapped := u
	swapped[0], swapped[1], swapped[2], swapped[3] = u[3], u[2], u[1], u[0]
	swapped[4], swapped[5] = u[5], u[4]
	swapped[6], swapped[7] = u[7], u[6]
	out := []string{u.String()}
	if swapped != u {
		out = append(out, swapped.String())
	}
	return out, nil
}
