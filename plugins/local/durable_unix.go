//go:build unix

package local

import (
	"fmt"
	"os"
)

// syncDir makes the entries of a folder (creations, renames, removals)
// durable.
func syncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

// replaceFile renames oldpath to newpath, replacing newpath atomically
// even while others have it open: they keep reading the old content.
func replaceFile(oldpath, newpath string) error {
	return os.Rename(oldpath, newpath)
}
