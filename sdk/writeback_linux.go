package sdk

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages to
// storage without waiting for it, so that the fsync that makes them
// durable later has little left to do and storage works while the data
// mover reads on.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE) // advice only
}
