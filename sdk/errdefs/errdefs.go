// Package errdefs defines the classes of error that cross the plugin
// boundary intact.
//
// A plugin returns an error wrapping one of the sentinel values below; the
// SDK carries its class over gRPC and the host gets back an error for which
// errors.Is(err, errdefs.ErrNotFound) (and so on) holds. Errors of no class
// arrive as plain errors with their message.
//
// This package must stay free of dependencies on the rest of the SDK so that
// any layer can import it.
package errdefs

import (
	"context"
	"errors"
)

// The error classes. Wrap them with context: fmt.Errorf("vm %q: %w", name,
// errdefs.ErrNotFound).
var (
	// ErrNotFound: the named object (VM, snapshot, replica, restore point,
	// metadata object) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: the object to create exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: the request is malformed; retrying it as is fails
	// again.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrFailedPrecondition: the system is not in the state the request
	// needs (a replica that is failed over, a compare-and-swap that lost).
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrUnavailable: the endpoint cannot be reached now; retrying later may
	// succeed.
	ErrUnavailable = errors.New("unavailable")
	// ErrPermissionDenied: the credentials do not allow the request.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrUnimplemented: the component does not support the request.
	ErrUnimplemented = errors.New("not implemented")
	// ErrChangeIDReset: change tracking cannot answer for the given change
	// id (tracking was reset, or the id belongs to another epoch); the
	// caller must compare digests instead.
	ErrChangeIDReset = errors.New("change id reset")
	// ErrDataLoss: the object exists but is damaged (a checksum that does
	// not match, a torn or unreadable header); its content cannot be
	// trusted. Unlike ErrNotFound it says something is there: a caller
	// that can rebuild the content treats it as lost and replaces it.
	ErrDataLoss = errors.New("data loss")
	// ErrCanceled: the call was cancelled by its caller. It is
	// context.Canceled, so either name matches.
	ErrCanceled = context.Canceled
	// ErrPluginExited: the plugin process is gone; the host restarts it on
	// the next use.
	ErrPluginExited = errors.New("plugin exited")
)

// classes lists each class with its stable wire name.
var classes = []struct {
	name string
	err  error
}{
	{"not_found", ErrNotFound},
	{"already_exists", ErrAlreadyExists},
	{"invalid_argument", ErrInvalidArgument},
	{"failed_precondition", ErrFailedPrecondition},
	{"unavailable", ErrUnavailable},
	{"permission_denied", ErrPermissionDenied},
	{"unimplemented", ErrUnimplemented},
	{"change_id_reset", ErrChangeIDReset},
	{"data_loss", ErrDataLoss},
	{"canceled", ErrCanceled},
	{"plugin_exited", ErrPluginExited},
}

// Class returns the wire name of the first class err belongs to, or "".
func Class(err error) string {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return ""
}

// FromClass returns the sentinel error of a wire name, or nil when the name
// is unknown (a newer peer may send classes this side does not know).
func FromClass(name string) error {
	for _, c := range classes {
		if c.name == name {
			return c.err
		}
	}
	return nil
}

// classed is an error with a message of its own that also belongs to a
// class, as rebuilt on the far side of the wire.
type classed struct {
	msg   string
	class error
}

func (e *classed) Error() string { return e.msg }
func (e *classed) Unwrap() error { return e.class }

// WithClass returns an error that prints msg and matches class with
// errors.Is. It is how the SDK rebuilds an error received over the wire.
func WithClass(msg string, class error) error {
	if class == nil {
		return errors.New(msg)
	}
	return &classed{msg: msg, class: class}
}
