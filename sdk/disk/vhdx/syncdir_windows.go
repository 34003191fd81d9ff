package vhdx

// syncDir does nothing on Windows: NTFS journals directory entries, and a
// directory handle cannot be flushed there.
func syncDir(string) error { return nil }
