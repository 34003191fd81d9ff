package vmdktest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// QemuRead is what qemu-img reads of the VMDK chain whose top is at path,
// as a raw disk: the judge of the chains tests write. It skips the test
// when qemu-img is not installed (Debian: qemu-utils).
func QemuRead(t testing.TB, path string) []byte {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (Debian: qemu-utils)")
	}
	out := filepath.Join(t.TempDir(), "qemu.raw")
	if b, err := exec.Command("qemu-img", "convert", "-f", "vmdk", "-O", "raw", path, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", path, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
