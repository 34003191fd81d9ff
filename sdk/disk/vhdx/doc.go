// Package vhdx reads and writes Hyper-V disk images in pure Go: VHDX
// (fixed, dynamic and differencing, written from the public [MS-VHDX]
// specification v1.0) and reads VHD (fixed, dynamic and differencing).
package vhdx
