package pki

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// maxFileSize caps what this package reads: a PEM certificate or key of
// ours is under 1 KiB; a file much larger is not one.
const maxFileSize = 64 << 10

// tempPrefix starts the name of the temporary files this package writes.
const tempPrefix = ".tmp-"

// readFile reads a small regular file. It opens without blocking (a FIFO
// would otherwise wait for a writer), refuses anything but a regular file
// before reading, and reads at most maxFileSize bytes. Errors name the
// file; a missing file's error matches errdefs.ErrNotFound and
// fs.ErrNotExist.
func readFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &missingError{path}
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (it is %s): %w", path, kind(st.Mode()), errdefs.ErrInvalidArgument)
	}
	if st.Size() > maxFileSize {
		return nil, fmt.Errorf("%s is %d bytes, too large for a certificate or a key (at most %d): %w", path, st.Size(), maxFileSize, errdefs.ErrInvalidArgument)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileSize { // it grew while we read
		return nil, fmt.Errorf("%s is larger than %d bytes, too large for a certificate or a key: %w", path, maxFileSize, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

// missingError is a file that does not exist. It matches both
// errdefs.ErrNotFound and fs.ErrNotExist.
type missingError struct{ path string }

func (e *missingError) Error() string { return e.path + " does not exist" }

func (e *missingError) Is(target error) bool {
	return target == errdefs.ErrNotFound || target == fs.ErrNotExist
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	default:
		return "mode " + m.String()
	}
}

// writeFile replaces path with data, with mode perm, so that a reader or a
// crash sees the old file or the new one: write a temporary file beside it
// (created 0600, so a key is never readable by others, not even for a
// moment), sync it, rename it over path, sync the folder.
func writeFile(path string, data []byte, perm fs.FileMode) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, tempPrefix+base+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	return syncDir(dir)
}

// syncDir makes the entries of a folder durable. Windows cannot sync a
// folder; there it is a no-op.
func syncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	if !canSyncDir {
		return nil
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

// mkdirPrivate creates dir (and its parents) for files that include a
// key: a new folder gets mode 0700. An existing folder is left as it is.
func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create folder %s: %w", dir, err)
	}
	return syncDir(filepath.Dir(dir))
}

// exists reports whether something (of any kind) is at path.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
	return true, nil
}
