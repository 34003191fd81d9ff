package local

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/windows"
)

// syncDir does nothing on Windows: a folder cannot be opened for writing,
// and FlushFileBuffers needs write access. NTFS journals its metadata, so a
// rename, creation or removal is not lost in pieces, but one done just
// before a power cut may be rolled back whole. The recovery every caller
// already has for a process killed before its syncDir (journals, temp
// file leftovers, retry-able calls) covers that too.
func syncDir(string) error { return nil }

// replaceWait bounds how long replaceFile waits for others to close the
// file it replaces.
const replaceWait = 2 * time.Second

// replaceFile renames oldpath to newpath, replacing newpath. Windows
// (MoveFileEx with MOVEFILE_REPLACE_EXISTING, as os.Rename does) refuses
// to replace a file that someone has open without FILE_SHARE_DELETE, which
// os.Open never shares; where Unix readers keep the old content, here the
// rename waits until the readers, who hold such files only for one read,
// have closed it, for at most replaceWait.
func replaceFile(oldpath, newpath string) error {
	deadline := time.Now().Add(replaceWait)
	wait := time.Millisecond
	for {
		err := os.Rename(oldpath, newpath)
		if err == nil || !(errors.Is(err, windows.ERROR_SHARING_VIOLATION) || errors.Is(err, windows.ERROR_ACCESS_DENIED)) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}
