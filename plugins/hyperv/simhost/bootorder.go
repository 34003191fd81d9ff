package simhost

import (
	"fmt"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// checkBootOrder refuses a boot order Hyper-V could not set. Generation
// 1's BIOS orders device kinds: its IDE entry boots the first IDE disk,
// its network entry a legacy adapter, and it lists a DVD drive whether or
// not the VM has one; so a disk entry must be the first IDE disk and a
// network entry a legacy adapter. Generation 2 orders the boot sources
// of the devices the VM has: any disk or adapter, no DVD drive (a VMSpec
// has none). No device twice.
func checkBootOrder(spec host.VMSpec) error {
	firstIDE := -1
	for i, d := range spec.Disks {
		if d.Controller == "ide" && (firstIDE < 0 || d.Bus*2+d.Location < spec.Disks[firstIDE].Bus*2+spec.Disks[firstIDE].Location) {
			firstIDE = i
		}
	}
	seen := map[host.BootDevice]bool{}
	for _, b := range spec.BootOrder {
		if seen[b] {
			return fmt.Errorf("boot order: %s twice: %w", b, errdefs.ErrInvalidArgument)
		}
		seen[b] = true
		switch b.Kind {
		case sdk.BootDisk:
			if b.Index < 0 || b.Index >= len(spec.Disks) {
				return fmt.Errorf("boot order: the VM has no disk %d: %w", b.Index, errdefs.ErrInvalidArgument)
			}
			if spec.Generation == 1 && b.Index != firstIDE {
				return fmt.Errorf("boot order: disk %d: a generation 1 VM boots from its first IDE disk only: %w", b.Index, errdefs.ErrInvalidArgument)
			}
		case sdk.BootNetwork:
			if b.Index < 0 || b.Index >= len(spec.NICs) {
				return fmt.Errorf("boot order: the VM has no adapter %d: %w", b.Index, errdefs.ErrInvalidArgument)
			}
			if spec.Generation == 1 && !spec.NICs[b.Index].Legacy {
				return fmt.Errorf("boot order: adapter %d: a generation 1 VM boots from a legacy adapter only: %w", b.Index, errdefs.ErrInvalidArgument)
			}
		case sdk.BootCDROM:
			if spec.Generation != 1 {
				return fmt.Errorf("boot order: a generation 2 VM boots from the DVD drives it has, and this one has none: %w", errdefs.ErrInvalidArgument)
			}
		default:
			return fmt.Errorf("boot order: unknown device kind %q: %w", b.Kind, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
