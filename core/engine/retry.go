package engine

import (
	"errors"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// permanent are the error classes that waiting does not cure: a request
// that is wrong as made, an object that is not there (or is there when it
// must not be), a state only an operator changes (a committed replica, a
// replica another job owns, a failover to undo), credentials that are
// refused, a feature a component lacks, damaged data, and a call its
// caller cancelled.
var permanent = []error{
	errdefs.ErrInvalidArgument,
	errdefs.ErrNotFound,
	errdefs.ErrAlreadyExists,
	errdefs.ErrFailedPrecondition,
	errdefs.ErrPermissionDenied,
	errdefs.ErrUnimplemented,
	errdefs.ErrDataLoss,
	errdefs.ErrCanceled,
}

// Retryable reports whether a VM that failed with err may succeed when it
// is tried again later, as a job's retry block asks. It is the rule the
// engine applies between the attempts of a session; a server or a CLI
// deciding about a retry calls it too.
//
// An error of a permanent class (see errdefs) is not retryable: invalid
// argument, not found, already exists, failed precondition, permission
// denied, not implemented, data loss, and cancelled. So is an error that
// joins or wraps one of them with others: one cause that will still be
// there is enough to fail again. Every other error is retryable:
// unavailable, plugin exited, a deadline exceeded, and errors of no class
// at all. Unclassified errors go the retrying way because they are mostly
// what crosses no classifying layer (a broken connection, an I/O error of
// a disk, a plugin that does not classify its errors), and a wrong guess
// costs less that way: a needless retry costs the job's wait, a missed
// one a restore point until the next session.
func Retryable(err error) bool {
	return err != nil && permanentClass(err) == nil
}

// permanentClass returns the permanent class err belongs to, or nil.
func permanentClass(err error) error {
	for _, c := range permanent {
		if errors.Is(err, c) {
			return c
		}
	}
	return nil
}
