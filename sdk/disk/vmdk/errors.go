package vmdk

import (
	"errors"
	"fmt"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The classes of error this package returns, for errors.Is. Each wraps the
// errdefs class it belongs to, so the class survives a plugin boundary.
var (
	// ErrCorrupt: a file breaks its format (a bad magic, a field out of
	// range, a table pointing outside the file).
	ErrCorrupt = fmt.Errorf("corrupt vmdk: %w", errdefs.ErrDataLoss)
	// ErrUnsupported: the file is well formed but uses something this
	// package does not read (compressed grains, an extent type it does not
	// know, a seSparse journal to replay).
	ErrUnsupported = fmt.Errorf("unsupported vmdk: %w", errdefs.ErrUnimplemented)
	// ErrParentMismatch: a delta's parentCID is not its parent's CID: the
	// parent changed after the delta was made, and the chain would read
	// wrong data.
	ErrParentMismatch = fmt.Errorf("parent does not match the delta disk: %w", errdefs.ErrFailedPrecondition)
	// ErrNotFound: a file the chain names (an extent, a parent) is missing.
	ErrNotFound = fmt.Errorf("vmdk file not found: %w", errdefs.ErrNotFound)
)

// A FormatError names the file and the on-disk field that is wrong. It
// unwraps to ErrCorrupt or ErrUnsupported.
type FormatError struct {
	Path  string // the file; empty when a byte slice was parsed
	Field string // the structure and field, e.g. "COWD header granularity"
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

// inFile gives a FormatError from a parser the file's name; other errors
// are wrapped with it.
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
