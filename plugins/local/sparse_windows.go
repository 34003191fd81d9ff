package local

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/ferry-dr/ferry/sdk"
)

// allocatedExtents lists the allocated regions of a file below size with
// FSCTL_QUERY_ALLOCATED_RANGES, a window at a time (collectAllocated). On
// NTFS a sparse file answers with its allocated clusters (a superset of
// its data: holes always read as zeros) and a file that is not sparse
// with the whole range. A file system without the control (FAT, some
// network shares) gets the whole file as data: correct, only slower.
func allocatedExtents(f *os.File, size int64) ([]sdk.Extent, error) {
	h := windows.Handle(f.Fd())
	const rangeSize = uint32(unsafe.Sizeof(allocRange{}))
	buf := make([]allocRange, 256)
	ext, err := collectAllocated(size, buf, func(off, length int64, buf []allocRange) (int, bool, error) {
		in := allocRange{Offset: off, Length: length}
		var got uint32
		err := windows.DeviceIoControl(h, windows.FSCTL_QUERY_ALLOCATED_RANGES,
			(*byte)(unsafe.Pointer(&in)), rangeSize,
			(*byte)(unsafe.Pointer(&buf[0])), uint32(len(buf))*rangeSize, &got, nil)
		more := errors.Is(err, windows.ERROR_MORE_DATA)
		if err != nil && !more {
			return 0, false, err
		}
		return int(got / rangeSize), more, nil
	})
	if errors.Is(err, windows.ERROR_INVALID_FUNCTION) || errors.Is(err, windows.ERROR_NOT_SUPPORTED) {
		if size <= 0 {
			return nil, nil
		}
		return []sdk.Extent{{Offset: 0, Length: size}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("query allocated ranges of %s: %w", f.Name(), err)
	}
	return ext, nil
}

// markSparse marks a new, empty file sparse with FSCTL_SET_SPARSE, so that
// extending it leaves holes rather than allocated zeros. It is best
// effort: where the file system cannot (FAT), the file is still correct,
// only as large on disk as it is long.
func markSparse(f *os.File) {
	var got uint32
	_ = windows.DeviceIoControl(windows.Handle(f.Fd()), windows.FSCTL_SET_SPARSE, nil, 0, nil, 0, &got, nil)
}

// statFingerprint reads size, last write time and the NTFS file index
// (the inode's counterpart: it changes when a file is replaced by a
// rename) through a handle that asks for attributes only, so it shares
// with any open and never waits.
func statFingerprint(path string) (fingerprint, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return fingerprint{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	h, err := windows.CreateFile(p, windows.FILE_READ_ATTRIBUTES,
		windows.FILE_SHARE_READ|windows.FILE_SHARE_WRITE|windows.FILE_SHARE_DELETE,
		nil, windows.OPEN_EXISTING, windows.FILE_FLAG_BACKUP_SEMANTICS, 0)
	if err != nil {
		return fingerprint{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	defer windows.CloseHandle(h)
	var fi windows.ByHandleFileInformation
	if err := windows.GetFileInformationByHandle(h, &fi); err != nil {
		return fingerprint{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return fingerprint{
		Size:    int64(fi.FileSizeHigh)<<32 | int64(fi.FileSizeLow),
		MtimeNs: fi.LastWriteTime.Nanoseconds(),
		Inode:   uint64(fi.FileIndexHigh)<<32 | uint64(fi.FileIndexLow),
	}, nil
}

var procGetCompressedFileSizeW = windows.NewLazySystemDLL("kernel32.dll").NewProc("GetCompressedFileSizeW")

// allocatedBytes is the space a file takes on disk: GetCompressedFileSizeW,
// which on NTFS counts the allocated clusters of a sparse or compressed
// file (its size otherwise).
func allocatedBytes(path string) (int64, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	var high uint32
	low, _, callErr := procGetCompressedFileSizeW.Call(uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&high)))
	// INVALID_FILE_SIZE is also a valid low half: only the last error tells.
	if uint32(low) == ^uint32(0) {
		if errno, ok := callErr.(windows.Errno); !ok || errno != windows.ERROR_SUCCESS {
			return 0, &os.PathError{Op: "stat", Path: path, Err: callErr}
		}
	}
	return int64(high)<<32 | int64(uint32(low)), nil
}
