//go:build !windows

package pki

import (
	"os"
	"syscall"
	"testing"
)

// platformLoadTests: a FIFO in place of a file is refused at once (an
// open that waited for a writer would hang).
var platformLoadTests = []struct {
	name  string
	file  string
	spoil func(t *testing.T, path string)
	want  string
}{
	{name: "FIFO for a certificate", file: CertFile, spoil: func(t *testing.T, p string) {
		os.Remove(p)
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Skip("no FIFO here:", err)
		}
	}, want: "not a regular file (it is a named pipe)"},
}
