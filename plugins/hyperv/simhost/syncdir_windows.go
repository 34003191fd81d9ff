package simhost

// syncDir does nothing on Windows: NTFS journals renames, and a folder
// cannot be opened for fsync there.
func syncDir(string) error { return nil }
