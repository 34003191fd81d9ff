//go:build unix

package vmdk

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ferry-dr/ferry/sdk/disk/vmdk/vmdktest"
)

// A FIFO in place of a descriptor or an extent is refused, not read.
func TestFIFO(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.vmdk"), 0o644); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	if _, err := Open(filepath.Join(dir, "fifo.vmdk")); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Open(FIFO) = %v, want ErrUnsupported", err)
	}
	p := filepath.Join(dir, "vm.vmdk")
	writeFile(t, p, vmdktest.Descriptor(1, NoParent, "vmfs", "", `RW 2048 VMFS "fifo.vmdk"`))
	if _, err := Open(p); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Open(extent FIFO) = %v, want ErrUnsupported", err)
	}
}
