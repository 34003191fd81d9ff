//go:build windows

package wmihost

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/windows"
)

var (
	virtdisk                    = windows.NewLazySystemDLL("virtdisk.dll")
	procOpenVirtualDisk         = virtdisk.NewProc("OpenVirtualDisk")
	procGetVirtualDiskInfo      = virtdisk.NewProc("GetVirtualDiskInformation")
	vendorMicrosoft             = windows.GUID{Data1: 0xec984aec, Data2: 0xa0f9, Data3: 0x47e9, Data4: [8]byte{0x90, 0x1f, 0x71, 0x41, 0x5a, 0x66, 0x34, 0x5b}}
	errInsufficientBuffer  uint = 122
)

// mostRecentRCT reads a disk file's most recent change tracking id with
// virtdisk's GetVirtualDiskInformation (CHANGE_TRACKING_STATE), opened
// for information only (OPEN_VIRTUAL_DISK_VERSION_2, GetInfoOnly), so a
// file a VM holds open can be asked. WMI gives these ids only on
// reference points, after the checkpoint is gone.
func mostRecentRCT(path string) (string, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return "", err
	}
	storage := struct {
		DeviceID uint32
		VendorID windows.GUID
	}{DeviceID: 3 /* VHDX */, VendorID: vendorMicrosoft}
	params := struct {
		Version        uint32
		GetInfoOnly    int32
		ReadOnly       int32
		ResiliencyGUID windows.GUID
	}{Version: 2, GetInfoOnly: 1, ReadOnly: 1}
	var handle windows.Handle
	const noParents = 1 // OPEN_VIRTUAL_DISK_FLAG_NO_PARENTS: tracking is per file
	r, _, _ := procOpenVirtualDisk.Call(uintptr(unsafe.Pointer(&storage)), uintptr(unsafe.Pointer(p)), 0, noParents,
		uintptr(unsafe.Pointer(&params)), uintptr(unsafe.Pointer(&handle)))
	if r != 0 {
		return "", fmt.Errorf("open %s for its change tracking state: %w", path, windows.Errno(r))
	}
	defer windows.CloseHandle(handle)
	buf := make([]uint64, 128) // 8-byte aligned, as the structure wants
	for range 2 {
		size := uint32(len(buf) * 8)
		*(*uint32)(unsafe.Pointer(&buf[0])) = infoChangeTrackingState
		var used uint32
		r, _, _ = procGetVirtualDiskInfo.Call(uintptr(handle), uintptr(unsafe.Pointer(&size)), uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&used)))
		if uint(r) == errInsufficientBuffer {
			buf = make([]uint64, (size+7)/8)
			continue
		}
		if r != 0 {
			return "", fmt.Errorf("change tracking state of %s: %w", path, windows.Errno(r))
		}
		b := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(buf)*8)
		enabled, id, err := changeTrackingState(b)
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if !enabled || id == "" {
			return "", fmt.Errorf("%s: change tracking is off", path)
		}
		return id, nil
	}
	return "", fmt.Errorf("change tracking state of %s: the answer does not fit", path)
}
