//go:build unix

package config

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

const okJob = `repository "local" "r" {
  path = "/srv/ferry"
}
`

// loadBounded runs Load on dir and fails the test if it does not return
// within a few seconds, as a FIFO would make it.
func loadBounded(t *testing.T, dir string) hcl.Diagnostics {
	t.Helper()
	done := make(chan hcl.Diagnostics, 1)
	go func() {
		_, diags := Load(dir, testSchemas())
		done <- diags
	}()
	select {
	case diags := <-done:
		return diags
	case <-time.After(10 * time.Second):
		t.Fatalf("Load of %s did not return in 10s", dir)
		return nil
	}
}

func TestLoadReadsOnlyRegularFiles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string)
		want []string // in the one diagnostic
	}{
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, []string{"Configuration file is not a regular file", "x.hcl is a named pipe (FIFO)"}},
		{"symlink to a device", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, []string{"x.hcl is a symbolic link to /dev/zero, which is a device"}},
		{"too large", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(okJob), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, MaxFileSize+1); err != nil {
				t.Fatal(err)
			}
		}, []string{"Configuration file too large", "x.hcl is larger than 4 MiB"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "ok.hcl"), []byte(okJob), 0o600); err != nil {
				t.Fatal(err)
			}
			tc.make(t, filepath.Join(dir, "x.hcl"))
			diags := loadBounded(t, dir)
			if len(diags) != 1 {
				t.Fatalf("diagnostics %v, want one about x.hcl", diags)
			}
			for _, want := range tc.want {
				if !strings.Contains(diags[0].Summary+": "+diags[0].Detail, want) {
					t.Errorf("diagnostic %q does not say %q", diags[0].Error(), want)
				}
			}
		})
	}
}

func TestLoadFollowsSymlinkToRegularFile(t *testing.T) {
	t.Parallel()
	dir, elsewhere := t.TempDir(), t.TempDir()
	real := filepath.Join(elsewhere, "shared.hcl")
	if err := os.WriteFile(real, []byte(okJob), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(dir, "x.hcl")); err != nil {
		t.Fatal(err)
	}
	if diags := loadBounded(t, dir); len(diags) != 0 {
		t.Fatalf("diagnostics %v, want none", diags)
	}
}
