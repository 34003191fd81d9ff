package vcsimtest

import (
	"fmt"
	"io"
	"os"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// ReadDisk calls fn with a disk of a VM as it is now (its current flat
// file, the whole capacity) while holding the VM's lock, so no guest
// write lands in the middle. It is Disk for code that is not a test (the
// lab): errors name the VM and the disk.
func (s *Site) ReadDisk(vm string, disk int, fn func(r io.ReaderAt, size int64) error) error {
	err := s.withDisk(vm, disk, func(_ *simulator.VirtualMachine, d *types.VirtualDisk, flat string) error {
		size := d.CapacityInBytes
		if size == 0 {
			size = d.CapacityInKB * 1024
		}
		f, err := os.Open(flat)
		if err != nil {
			return err
		}
		return closeWith(f, fn(f, size))
	})
	if err != nil {
		return fmt.Errorf("vcsimtest: read vm %s disk %d: %w", vm, disk, err)
	}
	return nil
}
