package sdk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// toStatus turns an error returned by a component into a gRPC status that
// carries its class, so the host can rebuild an error that matches it with
// errors.Is.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && errdefs.Class(err) == "" {
		return err
	}
	class := errdefs.Class(err)
	code := codes.Unknown
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, errdefs.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, errdefs.ErrInvalidArgument):
		code = codes.InvalidArgument
	case errors.Is(err, errdefs.ErrFailedPrecondition), errors.Is(err, errdefs.ErrChangeIDReset):
		code = codes.FailedPrecondition
	case errors.Is(err, errdefs.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, errdefs.ErrPermissionDenied):
		code = codes.PermissionDenied
	case errors.Is(err, errdefs.ErrUnimplemented):
		code = codes.Unimplemented
	case errors.Is(err, errdefs.ErrDataLoss):
		code = codes.DataLoss
	case errors.Is(err, errdefs.ErrCanceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	st := status.New(code, err.Error())
	if class != "" {
		if withInfo, derr := st.WithDetails(&pb.ErrorInfo{Class: class}); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// fromStatus rebuilds the error a plugin returned. plugin names the plugin
// for messages; exited reports whether its process is gone, which turns
// transport noise into one clear errdefs.ErrPluginExited.
func fromStatus(err error, plugin string, exited func() bool) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	for _, d := range st.Details() {
		if info, ok := d.(*pb.ErrorInfo); ok {
			return errdefs.WithClass(st.Message(), errdefs.FromClass(info.GetClass()))
		}
	}
	switch st.Code() {
	case codes.Unavailable, codes.Internal:
		// A crash cuts the connection before the host sees the exit.
		if exited != nil && waitExited(exited, time.Second) {
			return errdefs.WithClass(fmt.Sprintf("plugin %s exited while serving the call", plugin), errdefs.ErrPluginExited)
		}
	case codes.Canceled:
		// Usually the caller's own cancellation: never wait for it.
		if exited != nil && exited() {
			return errdefs.WithClass(fmt.Sprintf("plugin %s exited while serving the call", plugin), errdefs.ErrPluginExited)
		}
	}
	switch st.Code() {
	case codes.Unimplemented:
		return errdefs.WithClass(fmt.Sprintf("plugin %s: %s", plugin, st.Message()), errdefs.ErrUnimplemented)
	case codes.Canceled:
		return errdefs.WithClass(st.Message(), context.Canceled)
	case codes.DeadlineExceeded:
		return errdefs.WithClass(st.Message(), context.DeadlineExceeded)
	case codes.Unavailable:
		return errdefs.WithClass(fmt.Sprintf("plugin %s: %s", plugin, st.Message()), errdefs.ErrUnavailable)
	case codes.DataLoss:
		return errdefs.WithClass(st.Message(), errdefs.ErrDataLoss)
	case codes.Internal:
		return fmt.Errorf("plugin %s: %s", plugin, st.Message())
	}
	return errors.New(st.Message())
}

// waitExited reports whether the plugin process is gone, giving the host a
// moment to notice: a connection cut by a crash is seen before the exit.
func waitExited(exited func() bool, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for !exited() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
