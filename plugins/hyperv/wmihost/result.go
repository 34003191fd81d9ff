package wmihost

import (
	"fmt"
	"strings"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// The return codes of the Msvm_*Service methods (and the ErrorCode of
// their jobs), from the Hyper-V WMI provider's documentation.
const (
	rcCompleted     = 0
	rcJobStarted    = 4096
	rcFailed        = 32768
	rcAccessDenied  = 32769
	rcNotSupported  = 32770
	rcStatusUnknown = 32771
	rcTimeout       = 32772
	rcInvalidParam  = 32773
	rcSystemInUse   = 32774
	rcInvalidState  = 32775
	rcIncorrectType = 32776
	rcNotAvailable  = 32777
	rcOutOfMemory   = 32778
	rcFileNotFound  = 32779
	rcNotReady      = 32780
	rcMachineLocked = 32781
	rcShutdown      = 32782
)

var rcNames = map[int]string{
	rcFailed: "failed", rcAccessDenied: "access denied", rcNotSupported: "not supported",
	rcStatusUnknown: "status unknown", rcTimeout: "timeout", rcInvalidParam: "invalid parameter",
	rcSystemInUse: "system in use", rcInvalidState: "invalid state for this operation",
	rcIncorrectType: "incorrect data type", rcNotAvailable: "system not available",
	rcOutOfMemory: "out of memory", rcFileNotFound: "file not found", rcNotReady: "not ready",
	rcMachineLocked: "machine locked", rcShutdown: "shutdown in progress",
}

// rcClass is the errdefs class of a failed method's return code or a
// failed job's ErrorCode.
func rcClass(rc int) error {
	switch rc {
	case rcAccessDenied:
		return errdefs.ErrPermissionDenied
	case rcNotSupported:
		return errdefs.ErrUnimplemented
	case rcInvalidParam, rcIncorrectType:
		return errdefs.ErrInvalidArgument
	case rcInvalidState, rcMachineLocked:
		return errdefs.ErrFailedPrecondition
	case rcTimeout, rcSystemInUse, rcNotAvailable, rcOutOfMemory, rcNotReady, rcShutdown, rcStatusUnknown:
		return errdefs.ErrUnavailable
	case rcFileNotFound:
		return errdefs.ErrNotFound
	}
	return errdefs.ErrFailedPrecondition
}

// retryable says a method may succeed if called again shortly: the VM is
// busy with another operation (Hyper-V answers these while a merge or a
// state change runs).
func retryable(rc int) bool { return rc == rcSystemInUse || rc == rcInvalidState }

// methodError is the error of a method that returned rc (neither
// completed nor a job); nil for those two.
func methodError(op string, rc int) error {
	if rc == rcCompleted || rc == rcJobStarted {
		return nil
	}
	name := rcNames[rc]
	if name == "" {
		name = "unknown return code"
	}
	return fmt.Errorf("%s: return code %d (%s): %w", op, rc, name, rcClass(rc))
}

// The states of a CIM_ConcreteJob (JobState).
const (
	jobNew          = 2
	jobStarting     = 3
	jobRunning      = 4
	jobSuspended    = 5
	jobShuttingDown = 6
	jobCompleted    = 7
	jobTerminated   = 8
	jobKilled       = 9
	jobException    = 10
)

// jobDone says a job in state has finished (well or not).
func jobDone(state int) bool {
	switch state {
	case jobNew, jobStarting, jobRunning, jobSuspended, jobShuttingDown:
		return false
	}
	return true
}

// job is what a finished Msvm_ConcreteJob says.
type job struct {
	State            int
	ErrorCode        int
	ErrorDescription string
	ErrorSummary     string
}

// jobError is the error of a finished job: nil when it completed, else its
// description with the class of its error code (a terminated or killed job
// is unavailable: someone stopped it, and the call may be repeated).
func jobError(op string, j job) error {
	if j.State == jobCompleted && j.ErrorCode == 0 {
		return nil
	}
	desc := strings.TrimSpace(j.ErrorDescription)
	if desc == "" {
		desc = strings.TrimSpace(j.ErrorSummary)
	}
	if desc == "" {
		desc = "no description"
	}
	class := rcClass(j.ErrorCode)
	switch {
	case j.State == jobTerminated || j.State == jobKilled:
		class = errdefs.ErrUnavailable
	case j.State == jobCompleted && j.ErrorCode != 0, j.State == jobException && j.ErrorCode == 0:
		class = errdefs.ErrFailedPrecondition
	}
	return fmt.Errorf("%s: job state %d, error %d: %s: %w", op, j.State, j.ErrorCode, desc, class)
}
