package catalog

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// ErrDamaged matches the errors of a catalog file that cannot be read:
// not a bbolt file, a page that bbolt cannot decode, a record that is not
// the JSON it should be, a schema version or bucket gone. They match
// errdefs.ErrDataLoss too.
var ErrDamaged = errors.New("damaged catalog")

// damagedError is a damaged catalog, with what to do about it. Its text is
// what the operator reads, so it says the file, what was found and the way
// out.
type damagedError struct {
	path   string
	detail string
}

func (e *damagedError) Error() string {
	return fmt.Sprintf("catalog %s is damaged (%s): move it aside (for example to %s.damaged) and run the jobs again; "+
		"the replicas and restore points on the targets are intact, each job's next run finds its replicas there "+
		"and records their restore points in a new catalog, and the history of past sessions stays in the moved file",
		e.path, e.detail, e.path)
}

func (e *damagedError) Is(target error) bool {
	return target == ErrDamaged || target == errdefs.ErrDataLoss
}

// damaged turns err, found reading the catalog at path, into the damaged
// catalog error; an err that already is one is returned as is.
func damaged(path string, err error) error {
	var d *damagedError
	if errors.As(err, &d) {
		return err
	}
	return &damagedError{path: path, detail: err.Error()}
}

// corrupt is the error of a damaged record or schema inside a
// transaction; Update, View and Open make it the full damaged error.
func corrupt(format string, args ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, args...)}
}

type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrDamaged }

// guard runs fn, which reads the catalog at path through bbolt's memory
// map, and turns the ways a damaged file breaks bbolt into the damaged
// catalog error: a page that points outside the map faults (a SIGSEGV or
// SIGBUS that would otherwise kill the process: SetPanicOnFault makes it a
// panic of this goroutine), and a page bbolt cannot decode makes it panic.
// Every other panic, such as one of fn's own bugs, goes on as it was.
func guard(path string, fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		// The stack still holds the frames of the panic until this
		// function returns: read them before recover.
		var pcs [64]uintptr
		n := runtime.Callers(1, pcs[:])
		r := recover()
		if r == nil {
			return
		}
		if !fromDamage(r, pcs[:n]) {
			panic(r)
		}
		err = damaged(path, fmt.Errorf("%v", r))
	}()
	return fn()
}

// fromDamage tells whether the panic r, raised where the stack pcs shows,
// comes from reading a damaged file: a memory fault away from nil (bbolt's
// map is never near address 0; a nil dereference is a bug), or a panic
// raised inside bbolt itself.
func fromDamage(r any, pcs []uintptr) bool {
	if f, ok := r.(interface{ Addr() uintptr }); ok && f.Addr() >= 1<<16 {
		return true
	}
	frames := runtime.CallersFrames(pcs)
	panicking := false
	for {
		f, more := frames.Next()
		switch {
		case !panicking:
			panicking = f.Function == "runtime.gopanic"
		case !strings.HasPrefix(f.Function, "runtime."):
			// The first frame below the runtime's is where it panicked.
			return strings.HasPrefix(f.Function, "go.etcd.io/bbolt")
		}
		if !more {
			return false
		}
	}
}
