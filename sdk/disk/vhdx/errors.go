package vhdx

import (
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The classes of error this package returns, for errors.Is. Each wraps the
// errdefs class it belongs to, so the class survives a plugin boundary.
var (
	// ErrCorrupt: the file breaks the format (a bad checksum, a field out
	// of range, a table pointing outside the file).
	ErrCorrupt = fmt.Errorf("corrupt disk image: %w", errdefs.ErrDataLoss)
	// ErrUnsupported: the file is well formed but uses something this
	// package does not implement (an unknown required region or metadata
	// item, a log version other than 0).
	ErrUnsupported = fmt.Errorf("unsupported disk image: %w", errdefs.ErrUnimplemented)
	// ErrParentMismatch: a differencing disk's parent is not the disk it
	// was created on (its DataWriteGuid or unique id changed since, which
	// means it was written to), so the chain would read wrong data.
	ErrParentMismatch = fmt.Errorf("parent does not match the differencing disk: %w", errdefs.ErrFailedPrecondition)
	// ErrParentNotFound: no path in a differencing disk's parent locator
	// names an existing file.
	ErrParentNotFound = fmt.Errorf("parent of the differencing disk not found: %w", errdefs.ErrNotFound)
	// ErrReadOnly: a write to an image opened read-only, or to a format
	// this package only reads (VHD).
	ErrReadOnly = fmt.Errorf("disk image is read-only: %w", errdefs.ErrFailedPrecondition)
	// ErrInvalidOptions: Create was given options the format cannot hold.
	ErrInvalidOptions = fmt.Errorf("invalid disk image options: %w", errdefs.ErrInvalidArgument)
)

// A FormatError names the file and the on-disk field that is wrong. It
// unwraps to ErrCorrupt or ErrUnsupported.
type FormatError struct {
	Path  string // the file; empty when a byte slice was parsed
	Field string // the structure and field, e.g. "header 1 checksum"
	Msg   string
	Err   error
}

func (e *FormatError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Msg)
	}
	return fmt.Sprintf("%q: %s: %s", e.Path, e.Field, e.Msg)
}

func (e *FormatError) Unwrap() error { return e.Err }

func corrupt(field, format string, args ...any) error {
	return &FormatError{Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrCorrupt}
}

func unsupported(field, format string, args ...any) error {
	return &FormatError{Field: field, Msg: fmt.Sprintf(format, args...), Err: ErrUnsupported}
}

// inFile gives a FormatError from a byte-slice parser the file's name;
// other errors are wrapped with it.
func inFile(path string, err error) error {
	if err == nil {
		return nil
	}
	var fe *FormatError
	if errors.As(err, &fe) {
		if fe.Path == "" {
			fe.Path = path
		}
		return err
	}
	return fmt.Errorf("%q: %w", path, err)
}
