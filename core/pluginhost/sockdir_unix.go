//go:build unix

package pluginhost

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// sockets is this process's folder for plugin sockets,
// <tmp>/ferry-<uid>/<pid>, shared by its Hosts and removed when the last
// of them closes. Only the user can enter ferry-<uid> (0700), so no other
// user's process reaches a plugin's socket, and a ferry that was killed
// leaves its sockets in a folder named by its pid, which the next ferry
// removes.
var sockets struct {
	mu    sync.Mutex
	users int
	dir   string
}

// acquireSocketDir returns the socket folder, creating it (and removing the
// folders of ferry processes that are gone) for its first user.
func acquireSocketDir() (string, error) {
	sockets.mu.Lock()
	defer sockets.mu.Unlock()
	if sockets.users > 0 {
		sockets.users++
		return sockets.dir, nil
	}
	root := filepath.Join(os.TempDir(), "ferry-"+strconv.Itoa(os.Getuid()))
	if err := privateDir(root); err != nil {
		return "", err
	}
	removeStale(root)
	dir := filepath.Join(root, strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create plugin socket folder: %w", err)
	}
	sockets.dir, sockets.users = dir, 1
	return dir, nil
}

// releaseSocketDir removes the socket folder when its last user is done.
func releaseSocketDir() {
	sockets.mu.Lock()
	defer sockets.mu.Unlock()
	sockets.users--
	if sockets.users == 0 {
		_ = os.RemoveAll(sockets.dir)
	}
}

// privateDir makes sure dir is a folder of this user that only this user
// can enter; anything else (another user's folder, a symbolic link) is
// refused, since the plugins' sockets go inside.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create plugin socket folder: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("check plugin socket folder: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("plugin socket folder %s is not a folder (%s)", dir, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("plugin socket folder %s belongs to uid %d, not to this user (%d)", dir, st.Uid, os.Getuid())
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("restrict plugin socket folder: %w", err)
		}
	}
	return nil
}

// removeStale removes the socket folders of ferry processes that are gone.
// A folder whose pid runs again (reused by another program) stays; it is
// removed once that process is gone too.
func removeStale(root string) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			_ = os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
}
