package lab

import (
	"fmt"
)

// classed is an error of one of the sdk's error classes (errdefs) whose
// message need not repeat the class's name: the lab's messages are read
// by people, and errors.Is still finds the class, on either side of the
// control socket.
type classed struct {
	err   error
	class error
}

func (e *classed) Error() string   { return e.err.Error() }
func (e *classed) Unwrap() []error { return []error{e.err, e.class} }

// classf formats an error (%w wraps as usual) of a class.
func classf(class error, format string, args ...any) error {
	return &classed{err: fmt.Errorf(format, args...), class: class}
}
